"""Every field of every smoke config refuses a value of the wrong type, or a NaN or infinity,
with one ConfigError naming the field and the value, before anything is built or compiled."""

import importlib
import json
import math

import numpy as np
import pytest

from metalearn.core import checks
from metalearn.engine.experiment import ConfigError
from metalearn.engine.runs import build_experiment

# The smoke variant of every learner the config files train (omniglot needs its archive).
SMOKE = [("linear_regression", "smoke"), ("gd_layers", "smoke"), ("recurrent", "smoke"),
         ("task_diversity", "smoke")]
SMOKE += [("sinusoid", f"{learner}-smoke") for learner in
          ("maml", "fomaml", "metasgd", "anil", "reptile", "imaml")]
SMOKE += [("fewshot", f"{learner}-{shots}-smoke") for learner in
          ("maml", "fomaml", "anil", "transformer") for shots in ("1shot", "5shot")]


def _config(family: str, variant: str) -> dict:
  return importlib.import_module(f"configs.{family}").get_config(variant).to_dict()


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
  """(dotted path, value) of every field, eval.task_overrides (task fields again) aside."""
  leaves = []
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      if path != "eval.task_overrides":
        leaves += _leaves(value, path + ".")
    else:
      leaves.append((path, value))
  return leaves


def _bad_values(value) -> list[tuple[object, object]]:
  """(the field's new value, the bad value its message must name) for a field's type."""
  if isinstance(value, bool):
    return [(1, 1), ("false", "false"), (None, None)]
  if isinstance(value, int):
    return [("3", "3"), (2.5, 2.5), (True, True), (None, None)]
  if isinstance(value, float):
    return [(math.nan, math.nan), (math.inf, math.inf), (-math.inf, -math.inf),
            ("0.1", "0.1"), (True, True), (None, None)]
  if isinstance(value, (tuple, list)) and value and isinstance(value[0], int):
    return [((*value[:-1], "4"), "4"), ((*value[:-1], 1.5), 1.5), (7, 7)]
  if isinstance(value, str):
    return [(3, 3)]
  return []


# None means "all N pairs before each query" for GD-layer networks (int | None).
_NONE_ALLOWED = {("gd_layers", "model.context_points")}
_CASES = [(family, variant, path, bad, named)
          for family, variant in SMOKE
          for path, value in _leaves(_config(family, variant)) if not path.endswith(".name")
          for bad, named in _bad_values(value)
          if not (bad is None and (family, path) in _NONE_ALLOWED)]


def _set(config: dict, path: str, value) -> None:
  *sections, field = path.split(".")
  for section in sections:
    config = config[section]
  config[field] = value


def test_the_sweep_covers_every_section_and_kind_of_field():
  paths = {path for _, _, path, _, _ in _CASES}
  assert {path.split(".")[0] for path in paths} == {"seed", "task", "model", "data", "train",
                                                    "eval"}
  for path in ("train.learning_rate", "train.grad_clip", "train.batch_size", "seed",
               "data.curriculum.interval", "model.widths", "model.eval_inner_steps",
               "task.w_scale", "task.x_max", "model.momentum", "model.init_std",
               "model.step_size", "model.lam", "eval.seed", "task.rotations"):
    assert path in paths, path
  assert len(_CASES) > 500


@pytest.mark.parametrize("family, variant", SMOKE)
def test_every_field_refuses_a_wrong_type_or_a_non_finite_value(family, variant):
  failures = []
  for _, _, path, bad, named in [case for case in _CASES if case[:2] == (family, variant)]:
    config = _config(family, variant)
    _set(config, path, bad)
    try:
      build_experiment(config)
    except ConfigError as error:
      message = str(error)
      if path not in message or repr(named) not in message or "\n" in message:
        failures.append(f"{path}={bad!r}: {message}")
    else:
      failures.append(f"{path}={bad!r}: accepted")
  assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path, value, message", [
    ("train.learning_rate", math.inf, "train.learning_rate must be a finite number, got inf"),
    ("train.grad_clip", math.nan, "train.grad_clip must be a finite number, got nan"),
    ("train.batch_size", "8", "train.batch_size must be an integer, got '8' (str)"),
    ("train.num_steps", 20.0, "train.num_steps must be an integer, got 20.0 (float)"),
    ("data.points", True, "data.points must be an integer >= 1, got True (bool)"),
    ("seed", "0", "seed must be an integer, got '0' (str)"),
    ("model.hidden", "16", "model.hidden must be an integer, got '16' (str)"),
    ("task.noise_std", math.nan, "task.noise_std must be a finite number, got nan"),
    ("data.curriculum.enabled", "no", "data.curriculum.enabled must be True or False, "
                                      "got 'no' (str)"),
    ("eval.baselines", "knn", "eval.baselines must be a tuple, got 'knn' (str)"),
])
def test_the_message_names_the_field_the_value_its_type_and_what_is_allowed(path, value,
                                                                             message):
  config = _config("linear_regression", "smoke")
  _set(config, path, value)
  with pytest.raises(ConfigError) as error:
    build_experiment(config)
  assert str(error.value) == message


def test_a_held_out_override_of_the_wrong_type_names_eval_task_overrides():
  config = _config("fewshot", "maml-1shot-smoke")
  config["eval"]["task_overrides"] = {"seed": "1"}
  with pytest.raises(ConfigError, match=r"^eval.task_overrides: task.seed must be an integer, "
                                        r"got '1' \(str\)$"):
    build_experiment(config)


@pytest.mark.parametrize("family, variant", SMOKE)
def test_right_types_still_build_after_a_json_round_trip(family, variant):
  """A saved config.json (tuples become lists) and integers for float fields are fine."""
  config = json.loads(json.dumps(_config(family, variant)))
  config["train"]["learning_rate"] = 1
  assert build_experiment(config).train.learning_rate == 1


def test_a_disabled_curriculum_still_has_exactly_its_fields():
  config = _config("linear_regression", "smoke")
  config["data"]["curriculum"]["intervall"] = 5
  with pytest.raises(ConfigError, match=r"config section 'data.curriculum': unknown field\(s\) "
                                        r"\['intervall'\]"):
    build_experiment(config)


def test_the_checks_refuse_numpy_values_only_when_they_are_bad():
  checks.check_int("n", np.int64(3), minimum=1)
  checks.check_finite("x", np.float32(0.5))
  with pytest.raises(ValueError, match=r"x must be a finite number, got .*nan"):
    checks.check_finite("x", np.float64("nan"))
  with pytest.raises(ValueError, match=r"n must be an integer >= 1, got .*0"):
    checks.check_int("n", np.int32(0), minimum=1)


@pytest.mark.parametrize("check, message", [
    (lambda: checks.check_int("knn k", 0, 1), "knn k must be an integer >= 1, got 0"),
    (lambda: checks.check_int("knn k", "3", 1), "knn k must be an integer >= 1, got '3' (str)"),
    (lambda: checks.check_int("n", 2.5), "n must be an integer, got 2.5 (float)"),
    (lambda: checks.check_int("c", 0, 1, optional=True),
     "c must be None or an integer >= 1, got 0"),
    (lambda: checks.check_int("c", "x", 1, optional=True),
     "c must be None or an integer >= 1, got 'x' (str)"),
    (lambda: checks.check_int("task dim", 0, 1, name_kind=False), "task dim must be >= 1, got 0"),
    (lambda: checks.check_int("task dim", 1.0, 1, name_kind=False),
     "task dim must be an integer >= 1, got 1.0 (float)"),
    (lambda: checks.check_positive("lam", 0.0), "lam must be a number > 0, got 0.0"),
    (lambda: checks.check_positive("lam", math.nan), "lam must be a number > 0, got nan"),
    (lambda: checks.check_positive("lam", math.inf), "lam must be a finite number > 0, got inf"),
    (lambda: checks.check_positive("lam", True), "lam must be a number > 0, got True (bool)"),
    (lambda: checks.check_positive("train.learning_rate", -0.1, name_kind=False),
     "train.learning_rate must be > 0, got -0.1"),
    (lambda: checks.check_number("gamma", -0.5, at_least=0),
     "gamma must be a number >= 0, got -0.5"),
    (lambda: checks.check_number("noise_std", -0.1, at_least=0, name_kind=False),
     "noise_std must be >= 0, got -0.1"),
    (lambda: checks.check_number("level", 90, above=0, below=1, name_kind=False),
     "level must be in (0, 1), got 90"),
    (lambda: checks.check_number("level", 1.0, above=0, below=1),
     "level must be a number in (0, 1), got 1.0"),
    (lambda: checks.check_number("i", 5, at_least=0, below=5, integer=True),
     "i must be an integer in [0, 5), got 5"),
    (lambda: checks.check_number("x", 2.0, below=1), "x must be a number < 1, got 2.0"),
    (lambda: checks.check_number("x", -math.inf, below=1),
     "x must be a finite number < 1, got -inf"),
    (lambda: checks.check_finite("x", "0.1"), "x must be a finite number, got '0.1' (str)"),
    (lambda: checks.check_one_of("train.optimizer", "adagrad", ("adam", "sgd")),
     "unknown train.optimizer 'adagrad'; allowed: adam, sgd"),
    (lambda: checks.check_one_of("x_distribution", "cauchy", {"normal": 1, "uniform": 2}),
     "unknown x_distribution 'cauchy'; allowed: normal, uniform"),
])
def test_each_check_names_the_field_the_value_and_what_is_allowed(check, message):
  with pytest.raises(ValueError) as error:
    check()
  assert str(error.value) == message


def test_the_checks_pass_values_in_range_at_their_bounds():
  checks.check_int("n", 1, 1)
  checks.check_int("c", None, 1, optional=True)
  checks.check_number("gamma", 0, at_least=0)
  checks.check_number("level", 0.5, above=0, below=1)
  checks.check_number("i", 0, at_least=0, below=5, integer=True)
  checks.check_positive("lam", np.float32(1e-30))
  checks.check_one_of("train.optimizer", "sgd", ("adam", "sgd"))
  with pytest.raises(TypeError, match="at_least or above, not both"):
    checks.check_number("x", 1, at_least=0, above=0)
