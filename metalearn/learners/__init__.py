"""Learners: every inner loop behind one interface (`init`, `predict`)."""

import dataclasses

from metalearn.core import checks
from metalearn.learners.base import Learner, predict_prefix_by_prefix
from metalearn.learners.registry import LEARNERS
from metalearn.learners import transformer  # noqa: F401  (registers its learners)
from metalearn.learners import baselines  # noqa: F401  (registers its learners)
from metalearn.learners import gd_layers  # noqa: F401  (registers its learners)
from metalearn.learners import gd_solvers  # noqa: F401  (registers its learners)
from metalearn.learners import inner_loop  # noqa: F401  (registers its learners)
from metalearn.learners import imaml  # noqa: F401  (registers its learners)
from metalearn.learners import reptile  # noqa: F401  (registers its learners)
from metalearn.learners import finetune  # noqa: F401  (registers its learners)
from metalearn.learners import recurrent  # noqa: F401  (registers its learners)
from metalearn.learners import selective_ssm  # noqa: F401  (registers its learners)
from metalearn.learners import lasso  # noqa: F401  (registers its learners)
from metalearn.learners.bayes_mixture import BayesMixture, components_of
from metalearn.learners.dmmse import DiscreteMMSE


def make_learner(section) -> Learner:
  """Builds the learner a config's `model` section names."""
  return LEARNERS.build(section)


def _is_baseline(cls: type) -> bool:
  """No meta-parameters, and every field has a default, so the name alone builds it."""
  return not cls.trainable and all(
      f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
      for f in dataclasses.fields(cls))


def _bayes_ridge(task) -> Learner:
  """Ridge with λ = σ²/τ² read from the task, the posterior mean (Akyürek et al. 2022); with
  no noise, minimum-norm least squares."""
  lam = getattr(task, "ridge_lambda", None)
  if lam is None:
    raise ValueError(f"baseline 'bayes_ridge' needs a task with a Gaussian prior and noise "
                     f"(linear_regression); {type(task).__name__} has none")
  if lam == 0:
    return LEARNERS.build({"name": "least_squares"})
  return LEARNERS.build({"name": "ridge", "lam": lam})


# Baselines whose settings come from the task they score (its prior, its noise, its pool):
# name -> builder(task), which raises a ValueError naming the task when it has no such prior.
_TASK_BASELINES = {"bayes_ridge": _bayes_ridge,
                   "bayes_mixture": lambda task: BayesMixture(components_of(task)),
                   "dmmse": lambda task: DiscreteMMSE(pool=task)}  # a pool's posterior mean


def baseline_names() -> list[str]:
  """The learners without meta-parameters that their name alone builds, and those whose
  settings the task gives (bayes_ridge, ...)."""
  return sorted([n for n in LEARNERS.names if _is_baseline(LEARNERS.get(n))]
                + list(_TASK_BASELINES))


def make_baseline(name: str, task) -> Learner:
  """A baseline by name: its default settings, or those the task gives (`_TASK_BASELINES`)."""
  checks.check_one_of("baseline", name, baseline_names())
  if name in _TASK_BASELINES:
    return _TASK_BASELINES[name](task)
  return LEARNERS.build({"name": name})
