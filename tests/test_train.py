"""End-to-end runs on the smoke config: devices, resume, NaN, damage, bad input."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from metalearn.engine.checkpoints import CheckpointMismatchError
from metalearn.engine.experiment import ConfigError, build_experiment
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate
from metalearn.engine.train_step import init_state, make_train_step, replicate, unreplicate


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(row["step"], row["loss"]) for row in map(json.loads, f)]


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_one_and_two_devices_give_the_same_parameters(smoke_config):
  assert jax.local_device_count() == 2
  experiment = build_experiment(smoke_config)
  params = {}
  for devices in (1, 2):
    step = make_train_step(experiment, devices)
    state = replicate(init_state(experiment), devices)
    for _ in range(2):
      state, metrics = step(state)
    params[devices] = unreplicate(state).params
    assert metrics["loss"].shape == (devices, smoke_config.train.steps_per_call)
  for a, b in zip(jax.tree.leaves(params[1]), jax.tree.leaves(params[2]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # summation order differs
  initial = jax.tree.leaves(init_state(experiment).params)
  assert any(not np.allclose(a, b) for a, b in zip(initial, jax.tree.leaves(params[1])))


def test_resumed_run_equals_uninterrupted_run_bit_for_bit(smoke_config, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  errors = train_and_evaluate(smoke_config, straight)
  assert train_and_evaluate(smoke_config, resumed, should_stop=lambda step: step >= 10) is None
  assert _losses(resumed)[-1][0] == 10
  resumed_errors = train_and_evaluate(smoke_config, resumed)
  assert _losses(resumed) == _losses(straight)
  _assert_trees_equal(load_run(straight)[1], load_run(resumed)[1])
  for name in errors:
    np.testing.assert_array_equal(errors[name], resumed_errors[name])
  for name in ("errors.csv", "errors.json", "errors.png"):
    assert os.path.exists(os.path.join(straight, "eval", name))


def test_load_run_gives_learner_params_and_config(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  errors = train_and_evaluate(smoke_config, workdir)
  learner, params, config = load_run(workdir)
  assert config.model.name == "transformer" and config.task.dim == smoke_config.task.dim
  from metalearn.evaluation import evaluate
  experiment = build_experiment(config)
  episode = evaluate.held_out_episodes(experiment.task, config.eval.num_prompts,
                                       config.data.points, config.eval.seed)
  again = evaluate.error_by_shots({"transformer": (learner, params)}, experiment.task, episode,
                                  config.eval.batch_size)
  np.testing.assert_allclose(again["transformer"], errors["transformer"], rtol=1e-6)
  with pytest.raises(FileNotFoundError, match="not a metalearn run"):
    load_run(str(tmp_path / "nothing"))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  smoke_config.train.num_steps = 10
  train_and_evaluate(smoke_config, workdir)
  smoke_config.train.update(num_steps=20, learning_rate=1e30, grad_clip=0.0)
  with pytest.raises(FloatingPointError, match=r"last good checkpoint \(step 10\) is untouched"):
    train_and_evaluate(smoke_config, workdir, allow_config_change=True)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10"]
  assert _losses(workdir)[-1][0] == 10


def test_damaged_latest_checkpoint_is_reported_and_the_one_before_is_used(
    smoke_config, tmp_path, caplog):
  straight, damaged = str(tmp_path / "straight"), str(tmp_path / "damaged")
  train_and_evaluate(smoke_config, straight)
  train_and_evaluate(smoke_config, damaged)
  latest = os.path.join(damaged, "checkpoints", "20")
  for root, _, files in os.walk(latest):
    for name in files:
      if name not in ("commit_success.txt", "_CHECKPOINT_METADATA"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    train_and_evaluate(smoke_config, damaged)
  assert "checkpoint at step 20 is damaged" in caplog.text
  assert os.path.isdir(os.path.join(damaged, "checkpoints_damaged", "20"))
  _assert_trees_equal(load_run(straight)[1], load_run(damaged)[1])


def test_checkpoint_of_another_config_is_refused_and_kept(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  smoke_config.train.num_steps = 10
  train_and_evaluate(smoke_config, workdir)
  smoke_config.train.update(num_steps=20, optimizer="sgd")
  with pytest.raises(CheckpointMismatchError, match="checkpoint at step 10 .* does not fit"):
    train_and_evaluate(smoke_config, workdir, allow_config_change=True)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10"]


@pytest.mark.parametrize("section, field, value, message", [
    ("task", "name", "linear_regresion", "unknown task 'linear_regresion'; allowed:"),
    ("model", "name", "transformr", "unknown learner 'transformr'; allowed:"),
    ("task", "noise_sd", 0.1, "has no field.*'noise_sd'.*allowed:"),
    ("train", "learning_rate", 0.0, "learning_rate must be > 0, got 0.0"),
    ("train", "learning_rate", -1e-3, "learning_rate must be > 0, got -0.001"),
    ("train", "optimizer", "adagrad", "unknown train.optimizer 'adagrad'; allowed: adam"),
    ("data", "points", 50, "prompts of 50 points do not fit.*max_points=7"),
    ("train", "checkpoint_every", 7, "checkpoint_every=7 must be a multiple of"),
    ("train", "batch_sise", 8, r"unknown field\(s\) \['batch_sise'\]"),
])
def test_bad_config_is_refused_before_anything_runs(smoke_config, tmp_path, section, field,
                                                    value, message):
  smoke_config[section][field] = value
  workdir = str(tmp_path / "run")
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(smoke_config, workdir)
  assert not os.path.exists(workdir)


def test_unknown_baseline_is_refused_before_anything_runs(smoke_config, tmp_path):
  smoke_config.eval.baselines = ("least_squares", "oracle")
  with pytest.raises(ConfigError, match="unknown baseline 'oracle'; allowed: .*least_squares"):
    train_and_evaluate(smoke_config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_batch_that_does_not_split_over_devices_is_refused(smoke_config, tmp_path):
  smoke_config.train.batch_size = 63
  with pytest.raises(ValueError, match="batch_size=63 must be a multiple of the 2 devices"):
    train_and_evaluate(smoke_config, str(tmp_path / "run"))
