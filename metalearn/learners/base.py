"""The learner interface every inner loop (emergent, explicit, GD-layer) implements."""

from typing import Any

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode

Params = Any


class Learner:
  """A pair of pure functions over a pytree of meta-parameters.

  `predict(params, episode)[:, i]` is the prediction for `episode.x[:, i]` made
  from the pairs before it (`x[:, :i]`, `y[:, :i]`) alone: every prefix at once.
  Learners without meta-parameters (the baselines) have `trainable = False` and
  return `{}` from `init`.
  """

  trainable: bool = True
  # None: position i is predicted from the pairs before it (every prefix at once). An int
  # (learners that take a fixed context): every position is predicted by the model adapted
  # on the first `context_points` pairs, so only the later positions are held-out queries.
  context_points: int | None = None

  def init(self, rng: jax.Array, episode: Episode) -> Params:
    raise NotImplementedError

  def predict(self, params: Params, episode: Episode) -> jax.Array:
    raise NotImplementedError

  def check_episode(self, num_points: int, dim: int) -> None:
    """Raises a clear error, before anything compiles, for shapes it cannot take."""

  def check_loss(self, loss_name: str) -> None:
    """Raises if the learner's own inner loop descends a loss other than the task's."""

  def evaluation_variants(self, name: str) -> dict[str, "Learner"]:
    """The settings an evaluation reports, by display name (inner loops: per step count)."""
    return {name: self}

  def training_terms(self, params: Params, episode: Episode) -> tuple[jax.Array, jax.Array]:
    """(predictions, surrogate): the train step differentiates task loss + surrogate.

    By default the predictions of `predict` and a surrogate of 0. A learner whose
    meta-update is not the gradient of its query loss (Reptile) returns predictions
    with gradients stopped and a surrogate whose value is 0 and whose gradient is its
    update direction.
    """
    return self.predict(params, episode), jnp.zeros(())


def predict_prefix_by_prefix(learner: Learner, params: Params, episode: Episode) -> jax.Array:
  """The slow reference path: one call per prefix length, each on its own prefix.

  A learner's all-prefix `predict` must agree with this; the tests hold it so.
  """
  outputs = [learner.predict(params, episode.prefix(i + 1))[:, i]
             for i in range(episode.num_points)]
  return jnp.stack(outputs, axis=1)
