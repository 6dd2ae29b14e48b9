"""The learner interface every inner loop (emergent, explicit, GD-layer) implements."""

from typing import Any

import jax
import jax.numpy as jnp

from metalearn.episode import Episode

Params = Any


class Learner:
  """A pair of pure functions over a pytree of meta-parameters.

  `predict(params, episode)[:, i]` is the prediction for `episode.x[:, i]` made
  from the pairs before it (`x[:, :i]`, `y[:, :i]`) alone: every prefix at once.
  Learners without meta-parameters (the baselines) have `trainable = False` and
  return `{}` from `init`.
  """

  trainable: bool = True

  def init(self, rng: jax.Array, episode: Episode) -> Params:
    raise NotImplementedError

  def predict(self, params: Params, episode: Episode) -> jax.Array:
    raise NotImplementedError

  def check_episode(self, num_points: int, dim: int) -> None:
    """Raises a clear error, before anything compiles, for shapes it cannot take."""


def predict_prefix_by_prefix(learner: Learner, params: Params, episode: Episode) -> jax.Array:
  """The slow reference path: one call per prefix length, each on its own prefix.

  A learner's all-prefix `predict` must agree with this; the tests hold it so.
  """
  outputs = [learner.predict(params, episode.prefix(i + 1))[:, i]
             for i in range(episode.num_points)]
  return jnp.stack(outputs, axis=1)
