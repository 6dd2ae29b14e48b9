"""The learner interface every inner loop (emergent, explicit, GD-layer) implements."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode

Params = Any


@dataclasses.dataclass(frozen=True)
class BaseRun:
  """A trained run a learner builds on, as the engine loaded it (see `Learner.base_run`).

  Learners are static jit arguments: equality and hash go by the checkpoint (work directory
  and step) and the learner, never by the arrays, so two learners bound to the same run are
  equal exactly when they hold the same checkpoint's params.
  """

  workdir: str        # the run's work directory, absolute
  step: int           # the train state's step in the checkpoint `params` come from
  learner_name: str   # the run's model.name, for messages
  learner: "Learner"  # the run's trained learner
  params: Params = dataclasses.field(compare=False, hash=False, repr=False)


def tree_size(tree: Params) -> int:
  """The number of floats in a pytree (parameters, adapted weights, adapters)."""
  return int(sum(leaf.size for leaf in jax.tree.leaves(tree)))


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

  def state_floats(self, params: Params, episode: Episode) -> int:
    """The floats it carries per prompt about the context, for prompts shaped like `episode`:
    what its next prediction reads of everything before it (a transformer's key/value cache,
    which grows with the prompt; a recurrent state or fast-weight matrix, which does not; a
    baseline's sufficient statistics; an inner loop's adapted weights)."""
    raise NotImplementedError(f"{type(self).__name__} does not report its state; define "
                              "state_floats")

  def check_loss(self, loss_name: str) -> None:
    """Raises if the learner's own inner loop descends a loss other than the task's."""

  def base_run(self) -> str | None:
    """The work directory of a trained run this learner builds on; None: it builds on none.

    The engine loads that run when it builds the experiment and binds it with `with_base`
    before any check that needs it (`check_episode`): a learner never reads a run itself.
    """
    return None

  def with_base(self, base: BaseRun) -> "Learner":
    """A copy of this learner bound to its loaded base run (only if `base_run` names one)."""
    raise TypeError(f"{type(self).__name__} builds on no trained run; it takes no base run")

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

  A learner's all-prefix `predict` must agree with this; the tests hold it so. Each call is
  compiled (once per prefix length): run op by op, a transformer's pass takes seconds a prefix.
  """
  predict = jax.jit(learner.predict)
  outputs = [predict(params, episode.prefix(i + 1))[:, i] for i in range(episode.num_points)]
  return jnp.stack(outputs, axis=1)
