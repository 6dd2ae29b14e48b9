"""A config, checked and built into the typed objects a run needs, before anything compiles."""

import dataclasses
import itertools
from typing import Any, Callable, Mapping, NamedTuple

from metalearn.core.checks import (check_fields, check_int, check_number, check_one_of,
                                   check_positive, check_type)
from metalearn.engine.curriculum import Curriculum
from metalearn.learners import Learner, make_baseline, make_learner
from metalearn.learners.base import BaseRun
from metalearn.tasks import TaskFamily, make_task

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "warmup_cosine")
DATA_PARALLEL = ("pmap", "jit")  # engine/data_parallel.py: the two ways a step runs on many devices


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The `train` section of a config (see configs/linear_regression.py for each field)."""

  batch_size: int
  num_steps: int
  learning_rate: float
  optimizer: str
  schedule: str
  warmup_steps: int
  weight_decay: float
  grad_clip: float
  steps_per_call: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  data_parallel: str

  def __post_init__(self):
    check_positive("train.learning_rate", self.learning_rate, name_kind=False)
    check_one_of("train.optimizer", self.optimizer, OPTIMIZERS)
    check_one_of("train.schedule", self.schedule, SCHEDULES)
    check_one_of("train.data_parallel", self.data_parallel, DATA_PARALLEL)
    for name in ("batch_size", "num_steps", "steps_per_call", "log_every", "checkpoint_every",
                 "keep_checkpoints"):
      check_int(f"train.{name}", getattr(self, name), 1, name_kind=False)
    check_int("train.warmup_steps", self.warmup_steps, 0, name_kind=False)
    for name in ("weight_decay", "grad_clip"):
      check_number(f"train.{name}", getattr(self, name), at_least=0, name_kind=False)
    # Host calls run `steps_per_call` steps each; every boundary must fall on one.
    for name in ("num_steps", "log_every", "checkpoint_every"):
      if getattr(self, name) % self.steps_per_call:
        raise ValueError(f"train.{name}={getattr(self, name)} must be a multiple of "
                         f"train.steps_per_call={self.steps_per_call}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """The `eval` section: the held-out episodes and the baselines beside the learner."""

  num_prompts: int
  batch_size: int
  seed: int
  baselines: tuple[str, ...]
  task_overrides: tuple[tuple[str, Any], ...]  # task fields that differ for held-out episodes

  def __post_init__(self):
    for name in ("num_prompts", "batch_size"):
      check_int(f"eval.{name}", getattr(self, name), 1, name_kind=False)


class Member(NamedTuple):
  """One run of a sweep (the `sweep` section): its seed, and its task pool's size (None: the
  task's own). Members are trained together by one vmapped step (engine/train_step.py)."""
  seed: int
  task_size: int | None


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a run is made of, built from a config and checked."""

  seed: int
  learner_name: str
  task: TaskFamily
  eval_task: TaskFamily   # the held-out episodes' family: `task` with eval.task_overrides
  learner: Learner
  points: int
  loss_from: int          # positions before it do not count in the training loss
  curriculum: Curriculum
  train: TrainConfig
  eval: EvalConfig
  members: tuple[Member, ...] = ()  # a sweep's runs, trained as one; () a single run


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
  if name not in config:
    raise ValueError(f"the config has no {name!r} section; it needs: seed, task, model, data, "
                     "train, eval")
  return dict(config[name])


def _exact_fields(section: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
  unknown, missing = sorted(set(section) - allowed), sorted(allowed - set(section))
  if unknown or missing:
    raise ValueError(f"config section {prefix!r}: unknown field(s) {unknown}, missing {missing}; "
                     f"allowed: {', '.join(sorted(allowed))}")


def _typed(cls, section: dict[str, Any], prefix: str):
  """`cls` built from a section that has exactly its fields, each of its field's type."""
  _exact_fields(section, {f.name for f in dataclasses.fields(cls)}, prefix)
  check_fields(cls, section, prefix)
  return cls(**section)


# The curriculum fields a config sets; the ends are the task's dim and data.points.
_CURRICULUM_FIELDS = {"enabled", "dims_start", "dims_increment", "points_start",
                      "points_increment", "interval"}


class ConfigError(ValueError):
  """A config that cannot make a run; the message names the value and what is allowed."""


# Loads the trained run in a work directory that a learner builds on (`Learner.base_run`).
# engine.runs supplies it: it reads checkpoints, and it imports this module.
BaseLoader = Callable[[str], BaseRun]


def build(config: Mapping[str, Any], load_base: BaseLoader) -> Experiment:
  """Checks a config and builds its task, learner and settings; compiles nothing.

  Callers use `engine.runs.build_experiment`, which passes its loader of base runs. Raises
  ConfigError naming the bad value and what is allowed.
  """
  try:
    return _build(config, load_base)
  except ConfigError:
    raise
  except (ValueError, TypeError, KeyError) as error:
    raise ConfigError(str(error).strip("'\"")) from error


def _build(config: Mapping[str, Any], load_base: BaseLoader) -> Experiment:
  if "seed" not in config:
    raise ValueError("the config has no 'seed'; it needs: seed, task, model, data, train, eval")
  check_int("seed", config["seed"])
  task = make_task(_section(config, "task"))
  learner = make_learner(_section(config, "model"))
  data = _section(config, "data")
  _exact_fields(data, {"points", "loss_from", "curriculum"}, "data")
  points, loss_from = data["points"], data["loss_from"]
  check_int("data.points", points, minimum=1)
  check_int("data.loss_from", loss_from)
  if not 0 <= loss_from < points:
    raise ValueError(f"data.loss_from must be an integer in [0, data.points={points}), "
                     f"got {loss_from!r}")
  task.check_points(points)
  _check_context(learner, points, loss_from)
  learner.check_loss(task.loss_name)
  curriculum = _curriculum(dict(data["curriculum"]), task.dim, points)
  base_run = learner.base_run()
  if base_run is not None:  # bound before check_episode, which may read the base's weights
    learner = learner.with_base(load_base(base_run))
  learner.check_episode(points, task.dim)
  train = _typed(TrainConfig, _section(config, "train"), "train")
  eval_section = _section(config, "eval")
  if isinstance(eval_section.get("baselines"), list):  # a JSON round trip makes the tuple one
    eval_section["baselines"] = tuple(eval_section["baselines"])
  if "task_overrides" in eval_section:  # hashable, as the experiment is a static argument
    eval_section["task_overrides"] = tuple(sorted(dict(eval_section["task_overrides"]).items()))
  evaluation = _typed(EvalConfig, eval_section, "eval")
  eval_task = _eval_task(config, task, evaluation.task_overrides)
  eval_task.check_points(points)
  for name in evaluation.baselines:
    make_baseline(name, task)
  members = _members(dict(config["sweep"]), config["seed"], task) if "sweep" in config else ()
  return Experiment(int(config["seed"]), config["model"]["name"], task, eval_task, learner,
                    points, loss_from, curriculum, train, evaluation, members)


# The axes a sweep may vary: what one vmapped step can carry as data (a seed's keys, a pool's
# size as the count of its tasks drawn from), not a shape.
SWEEP_FIELDS = {"seeds", "task_sizes"}


def _members(section: dict[str, Any], seed: int, task: TaskFamily) -> tuple[Member, ...]:
  """The sweep section's members: every seed with every pool size (() each: the run's own).

  An empty section (both ()) is a single run. Raises naming the bad value.
  """
  _exact_fields(section, SWEEP_FIELDS, "sweep")
  seeds, sizes = (tuple(section[name]) for name in ("seeds", "task_sizes"))
  for name, values in (("seeds", seeds), ("task_sizes", sizes)):
    for i, value in enumerate(values):
      check_int(f"sweep.{name}[{i}]", value, 1 if name == "task_sizes" else None)
  if not seeds and not sizes:
    return ()
  if sizes and not hasattr(task, "with_size"):
    raise ValueError(f"sweep.task_sizes={sizes} needs a task pool (task.name = 'task_pool'); "
                     f"the task is {type(task).__name__}; allowed with it: sweep.seeds only")
  for name, values in (("seeds", seeds), ("task_sizes", sizes)):
    if len(set(values)) < len(values):
      raise ValueError(f"sweep.{name}={values} repeats a value; allowed: distinct values")
  return tuple(Member(s, m) for s, m in itertools.product(seeds or (seed,), sizes or (None,)))


def _curriculum(section: dict[str, Any], dims: int, points: int) -> Curriculum:
  """The data.curriculum section, checked whether or not it is enabled."""
  _exact_fields(section, _CURRICULUM_FIELDS, "data.curriculum")
  enabled = section.pop("enabled")
  check_type("data.curriculum.enabled", enabled, bool)
  check_fields(Curriculum, section, "data.curriculum")
  if enabled:
    return Curriculum(dims_end=dims, points_end=points, **section)
  return Curriculum.constant(dims, points)


def _eval_task(config: Mapping[str, Any], task: TaskFamily,
               overrides: tuple[tuple[str, Any], ...]) -> TaskFamily:
  """The held-out family (e.g. a few-shot task's test classes); its shapes must be the task's."""
  if not overrides:
    return task
  if "name" in dict(overrides):
    raise ValueError("eval.task_overrides may change a task's fields, not its name")
  try:
    eval_task = make_task({**dict(config["task"]), **dict(overrides)})
  except ValueError as error:
    raise ValueError(f"eval.task_overrides: {error}") from error
  for attribute in ("dim", "out_dim", "loss_name"):
    if getattr(eval_task, attribute) != getattr(task, attribute):
      raise ValueError(f"eval.task_overrides change the task's {attribute} from "
                       f"{getattr(task, attribute)!r} to {getattr(eval_task, attribute)!r}; "
                       "held-out episodes must have the training episodes' shapes")
  return eval_task


def _check_context(learner: Learner, points: int, loss_from: int) -> None:
  """A fixed-context learner needs query points after its context, and only they may count."""
  context = learner.context_points
  if context is None:
    return
  if not context < points:
    raise ValueError(f"model.context_points={context} leaves no query among data.points="
                     f"{points}; allowed: context_points < points")
  if loss_from < context:
    raise ValueError(f"data.loss_from={loss_from} would train on the model's fit to its own "
                     f"context (model.context_points={context}); allowed: loss_from >= {context}")


def check_devices(train: TrainConfig, num_devices: int) -> None:
  """The global batch must split evenly over the devices that train it (of every process)."""
  if train.batch_size % num_devices:
    raise ValueError(f"train.batch_size={train.batch_size} must be a multiple of the "
                     f"{num_devices} devices")
