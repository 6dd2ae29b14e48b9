"""Configs build into checked experiments; the curriculum is a pure function of the step."""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import pytest

from metalearn.engine.curriculum import Curriculum
from metalearn.engine.experiment import ConfigError
from metalearn.engine.runs import build_experiment
from metalearn.learners import LEARNERS
from metalearn.tasks import TASKS

FAMILIES = ("linear_regression", "gd_layers", "sinusoid", "fewshot", "recurrent",
            "task_diversity")
# Every variant each config file declares; Omniglot's need its archive (--config.task.data_dir).
CONFIGS = {family: [v for v in importlib.import_module(f"configs.{family}").VARIANTS
                    if not v.startswith("omniglot-")] for family in FAMILIES}


@pytest.mark.parametrize("family, variant",
                         [(f, v) for f, variants in CONFIGS.items() for v in variants])
def test_every_config_variant_builds_what_its_sections_say(family, variant):
  """Each section lands, field by field, in the typed object it configures."""
  config = importlib.import_module(f"configs.{family}").get_config(variant)
  experiment = build_experiment(config)
  config = config.to_dict()
  assert (experiment.seed, experiment.learner_name) == (config["seed"], config["model"]["name"])
  task, model, data = dict(config["task"]), dict(config["model"]), config["data"]
  assert type(experiment.task) is TASKS.get(task.pop("name"))
  assert type(experiment.learner) is LEARNERS.get(model.pop("name"))
  for built, section in ((experiment.task, task), (experiment.learner, model)):
    _assert_lands(built, section)
  overrides = config["eval"]["task_overrides"]
  _assert_lands(experiment.eval_task, {**task, **overrides})
  assert (experiment.eval_task is experiment.task) == (not overrides)
  assert (experiment.points, experiment.loss_from) == (data["points"], data["loss_from"])
  assert dataclasses.asdict(experiment.train) == config["train"]
  assert dataclasses.asdict(experiment.eval) == _hashable(
      {**config["eval"], "task_overrides": tuple(sorted(overrides.items()))})
  # Where the curriculum starts and ends: at the task's dims and data.points unless enabled.
  curriculum = data["curriculum"]
  start = ((curriculum["dims_start"], curriculum["points_start"]) if curriculum["enabled"]
           else (experiment.task.dim, data["points"]))
  assert tuple(int(v) for v in experiment.curriculum(0)) == start
  assert tuple(int(v) for v in experiment.curriculum(10**9)) == (experiment.task.dim,
                                                                 data["points"])


def _assert_lands(built, section):
  """Every field of the section is the built object's; a nested task section (a pool's base, a
  mixture's components) is a family built from its own fields."""
  for field, value in section.items():
    got = getattr(built, field)
    nested = [value] if isinstance(value, dict) else list(value) if (
        isinstance(value, (list, tuple)) and value and isinstance(value[0], dict)) else None
    if nested is None:
      assert got == _hashable({field: value})[field], field
      continue
    for got_one, inner in zip([got] if isinstance(value, dict) else got, nested, strict=True):
      inner = dict(inner)
      assert type(got_one) is TASKS.get(inner.pop("name")), field
      _assert_lands(got_one, inner)


def _hashable(section):
  """A config section's values as the built dataclasses hold them: lists become tuples."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def test_unknown_variant_names_the_allowed_ones():
  from configs.linear_regression import get_config
  with pytest.raises(ValueError, match="unknown variant 'tiny' of configs/linear_regression.py; "
                                       "allowed: default, smoke, garg, small, standard, akyurek, rotary$"):
    get_config("tiny")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_config_file_declares_its_variants_once(family):
  """The declared VARIANTS are the ones get_config builds and the ones its error lists."""
  module = importlib.import_module(f"configs.{family}")
  assert len(set(module.VARIANTS)) == len(module.VARIANTS) >= 2  # a default and a smoke
  assert module.get_config(None).to_dict() == module.get_config(module.VARIANTS[0]).to_dict()
  with pytest.raises(ValueError) as error:
    module.get_config("nope")
  assert str(error.value).endswith("allowed: " + ", ".join(module.VARIANTS))


def test_garg_curriculum_schedule():
  """Garg et al.: dims 5 -> 20 by 1 and points 11 -> 41 by 2 every 2,000 steps."""
  curriculum = Curriculum(dims_start=5, dims_end=20, dims_increment=1, points_start=11,
                          points_end=41, points_increment=2, interval=2000)
  expected = {0: (5, 11), 1999: (5, 11), 2000: (6, 13), 10_000: (10, 21), 29_999: (19, 39),
              30_000: (20, 41), 500_000: (20, 41)}
  for step, (dims, points) in expected.items():
    assert tuple(int(v) for v in curriculum(step)) == (dims, points), step


def test_curriculum_is_traced_so_advancing_it_never_recompiles(smoke_config):
  experiment = build_experiment(smoke_config)
  curriculum = Curriculum(1, 3, 1, 2, 7, 2, 10)
  traces = []

  @jax.jit
  def sample(step):
    traces.append(step)
    dims, points = curriculum(step)
    return experiment.task.sample(jax.random.PRNGKey(0), 4, 7, dims, points)

  for step in (0, 10, 20, 30):
    episode = sample(jnp.int32(step))
    dims, points = (int(v) for v in curriculum(step))
    assert float(jnp.abs(episode.x[..., dims:]).max(initial=0.0)) == 0.0
    assert float(episode.mask[0].sum()) == points
  assert len(traces) == 1


def test_curriculum_start_past_its_end_is_refused(smoke_config):
  smoke_config.data.curriculum.enabled = True
  smoke_config.data.curriculum.dims_start = 9
  with pytest.raises(ConfigError, match=r"dims_start=9 must be in \[1, 3\]"):
    build_experiment(smoke_config)


@pytest.mark.parametrize("overrides, message", [
    ({"data.loss_from": 20}, r"data.loss_from must be an integer in \[0, data.points=20\), got 20"),
    ({"data.loss_from": 5}, r"data.loss_from=5 would train on the model's fit to its own context "
                            r"\(model.context_points=10\); allowed: loss_from >= 10"),
    ({"model.context_points": 20}, r"model.context_points=20 leaves no query among "
                                   r"data.points=20; allowed: context_points < points"),
    ({"model.inner_loss": "logistic"}, "inner_loss='logistic' differs from the task's loss "
                                       "'squared_error'"),
])
def test_fixed_context_settings_are_checked(overrides, message):
  from configs.sinusoid import get_config
  config = get_config("maml-smoke")
  for path, value in overrides.items():
    section, field = path.split(".")
    config[section][field] = value
  with pytest.raises(ConfigError, match=message):
    build_experiment(config)


def test_the_data_section_must_name_loss_from():
  from configs.linear_regression import get_config
  config = get_config("smoke").to_dict()
  del config["data"]["loss_from"]
  with pytest.raises(ConfigError, match=r"config section 'data'.*missing \['loss_from'\]"):
    build_experiment(config)


def test_held_out_episodes_come_from_the_overridden_task():
  from configs.fewshot import get_config
  experiment = build_experiment(get_config("maml-1shot-smoke"))
  assert experiment.task.split == "train" and experiment.eval_task.split == "test"
  assert experiment.eval_task.ways == experiment.task.ways


@pytest.mark.parametrize("overrides, message", [
    ({"name": "sinusoid"}, "eval.task_overrides may change a task's fields, not its name"),
    ({"ways": 3}, "eval.task_overrides change the task's out_dim from 5 to 3"),
    ({"colour": True}, "has no field.*'colour'"),
])
def test_bad_task_overrides_are_named(overrides, message):
  from configs.fewshot import get_config
  config = get_config("anil-1shot-smoke")
  config.eval.task_overrides = overrides
  with pytest.raises(ConfigError, match=message):
    build_experiment(config)


def test_unknown_fewshot_variant_names_the_variants():
  from configs.fewshot import get_config
  with pytest.raises(ValueError, match=r"unknown variant 'maml-2shot' of configs/fewshot.py; "
                                       r"allowed: maml-1shot, maml-1shot-smoke, .*, "
                                       r"omniglot-transformer-5shot-smoke$"):
    get_config("maml-2shot")
