"""End-to-end runs on the smoke config: devices, resume, NaN, damage, bad input."""

import json
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metalearn.engine import train as train_module, train_step as train_step_module
from metalearn.engine.checkpoints import CheckpointMismatchError
from metalearn.engine.experiment import ConfigError
from metalearn.engine.runs import build_experiment
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate
from metalearn.engine.data_parallel import Pmap
from metalearn.engine.train_step import init_state
from tests import compiles


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
    parallel = Pmap(devices)
    step = parallel.train_step(experiment)
    state = parallel.put(init_state(experiment))
    for _ in range(2):
      state, metrics = step(state)
    params[devices] = parallel.get(state).params
    assert metrics["loss"].shape == (devices, smoke_config.train.steps_per_call)
  for a, b in zip(jax.tree.leaves(params[1]), jax.tree.leaves(params[2]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # summation order differs
  initial = jax.tree.leaves(init_state(experiment).params)
  assert any(not np.allclose(a, b) for a, b in zip(initial, jax.tree.leaves(params[1])))


def test_resumed_run_equals_uninterrupted_run_bit_for_bit(smoke_config, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  errors = train_and_evaluate(smoke_config, straight).errors
  assert train_and_evaluate(smoke_config, resumed, should_stop=lambda step: step >= 10) is None
  assert _losses(resumed)[-1][0] == 10
  resumed_errors = train_and_evaluate(smoke_config, resumed).errors
  assert _losses(resumed) == _losses(straight)
  _assert_trees_equal(load_run(straight)[1], load_run(resumed)[1])
  assert list(errors) == ["transformer", "least_squares", "averaging", "knn"]
  for name in errors:
    np.testing.assert_array_equal(errors[name], resumed_errors[name])
  for name in ("errors.csv", "errors.json", "errors.png"):
    assert os.path.exists(os.path.join(straight, "eval", name))


def test_load_run_gives_learner_params_and_config(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  evaluation = train_and_evaluate(smoke_config, workdir)
  learner, params, config = load_run(workdir)
  assert config.model.name == "transformer" and config.task.dim == smoke_config.task.dim
  assert evaluation.queries == {}  # a prefix learner on a task without a support set
  # The evaluation against numpy on the same held-out prompts: the loaded learner's predictions
  # in one pass (the evaluation chunks them), and least squares on every prefix by pinv.
  episode = build_experiment(config).eval_task.sample(
      jax.random.PRNGKey(config.eval.seed), config.eval.num_prompts, config.data.points)
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  least_squares = np.stack([np.einsum("bd,bdo->bo", x[:, k], np.linalg.pinv(x[:, :k]) @ y[:, :k])
                            for k in range(x.shape[1])], axis=1)
  zero = np.asarray(episode.zero_loss, np.float64)[:, None]
  for name, y_hat in (("transformer", np.asarray(learner.predict(params, episode), np.float64)),
                      ("least_squares", least_squares)):
    expected = (np.sum(np.square(y_hat - y), axis=-1) / zero).mean(axis=0)   # [points]
    np.testing.assert_allclose(evaluation.errors[name], expected, rtol=2e-4, atol=1e-6)
  with open(os.path.join(workdir, "eval", "errors.json")) as f:
    assert json.load(f) == {name: [float(v) for v in values]
                            for name, values in evaluation.errors.items()}
  with pytest.raises(FileNotFoundError, match="not a metalearn run"):
    load_run(str(tmp_path / "nothing"))
  # Loaded params are laid out as a fresh init's: a jitted function compiles once for both.
  predict = jax.jit(learner.predict)
  with compiles.counted() as compiled:
    predict(init_state(build_experiment(config)).params, episode)
    predict(params, episode)
  assert len(compiled) == 1


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


class _Watched:
  """One metric of a host call: records, by the call's index, when the loop waits for it or
  reads it on the host."""

  def __init__(self, array, call, events):
    self._array, self._call, self._events = array, call, events

  def __getitem__(self, index):
    return _Watched(self._array[index], self._call, self._events)

  def is_ready(self):
    return self._array.is_ready()

  def block_until_ready(self):
    self._events.append(("wait", self._call))
    self._array.block_until_ready()
    return self

  def __array__(self, dtype=None, copy=None):
    self._events.append(("read", self._call))
    return np.asarray(self._array, dtype)


def test_a_log_step_is_read_only_after_the_next_call_is_dispatched(smoke_config, tmp_path,
                                                                    monkeypatch):
  events, outputs = [], []

  class WatchedPmap(Pmap):
    def train_step(self, experiment):
      step = super().train_step(experiment)

      def call(state):
        events.append(("dispatch", len(outputs)))
        state, metrics = step(state)
        outputs.append(metrics)
        return state, {name: _Watched(v, len(outputs) - 1, events) for name, v in metrics.items()}
      return call

    def get(self, tree):
      return jax.tree.map(lambda a: np.asarray(a)[0], tree)

  # One device, whose calls are dispatched ahead (several CPU devices wait for each call).
  monkeypatch.setattr(train_module, "make_data_parallel", lambda name: WatchedPmap(1))
  smoke_config.train.update(num_steps=20, steps_per_call=5, log_every=5, checkpoint_every=20)
  workdir = str(tmp_path / "run")
  _, finished = train_module.train(build_experiment(smoke_config), workdir, writer_names=())
  assert finished and len(outputs) == 4
  # How many calls had been dispatched when each call's metrics were first read on the host.
  dispatched, first_read = 0, {}
  for kind, call in events:
    dispatched += kind == "dispatch"
    if kind == "read":
      first_read.setdefault(call, dispatched)
  # The rows at steps 5, 10 and 15 are read once the next call is queued behind them; step 20
  # ends the run, whose checkpoint needs that call's state anyway.
  assert first_read == {0: 2, 1: 3, 2: 4, 3: 4}
  assert events[:2] == [("dispatch", 0), ("wait", 0)]  # the first, compiling call is timed
  # Each row is the mean of its call's per-step losses, as the device returned them.
  expected = [(5 * (k + 1), float(np.mean(np.asarray(metrics["loss"])[0])))
              for k, metrics in enumerate(outputs)]
  assert _losses(workdir) == expected


def test_a_resume_runs_no_init_and_reads_its_checkpoint_once(smoke_config, tmp_path,
                                                             monkeypatch):
  inits, reads = [], []
  real_init, real_restore = train_step_module.init_state, ocp.CompositeCheckpointHandler.restore

  def counted_init(experiment):
    state = real_init(experiment)
    inits.append("traced" if isinstance(state.step, jax.core.Tracer) else "run")
    return state

  def counted_restore(handler, directory, *args, **kwargs):  # every orbax read of a step
    reads.append(int(os.path.basename(directory)))
    return real_restore(handler, directory, *args, **kwargs)

  for module in (train_module, train_step_module):
    monkeypatch.setattr(module, "init_state", counted_init)
  monkeypatch.setattr(ocp.CompositeCheckpointHandler, "restore", counted_restore)
  workdir = str(tmp_path / "run")
  assert train_and_evaluate(smoke_config, workdir, should_stop=lambda step: step == 10) is None
  assert inits.count("run") == 1 and reads == []  # a fresh start compiles and runs the init
  inits.clear()
  # A relaunch under a changed config, which records the step the change takes effect at.
  smoke_config.train.learning_rate *= 2
  train_and_evaluate(smoke_config, workdir, allow_config_change=True)
  assert reads == [10]
  assert inits and set(inits) == {"traced"}  # the restore target: traced, neither compiled nor run


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
