"""Training on several XLA CPU devices without the all-reduce deadlock, alone and under load."""

import json
import os
import subprocess
import sys

import jax
import pytest

from metalearn.engine.runs import build_experiment
from metalearn.engine.data_parallel import MeshJit, Pmap
from metalearn.engine.train_step import init_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A deadlocked all-reduce aborts the process after this long, instead of XLA's 40 s.
_ABORT_AFTER = ("--xla_cpu_collective_call_warn_stuck_timeout_seconds=10 "
                "--xla_cpu_collective_call_terminate_timeout_seconds=30")


@pytest.mark.parametrize("path", [Pmap, MeshJit])
def test_a_multi_device_cpu_step_returns_finished_work(smoke_config, path):
  # The deadlock needs a second call dispatched while the first still runs: the step must not
  # return before its work is done.
  experiment = build_experiment(smoke_config)
  parallel = path(2)
  step = parallel.train_step(experiment)
  state, metrics = step(parallel.put(init_state(experiment)))
  assert all(leaf.is_ready() for leaf in jax.tree.leaves((state, metrics)))
  state, metrics = step(state)
  assert all(leaf.is_ready() for leaf in jax.tree.leaves((state, metrics)))


@pytest.mark.slow
def test_trainings_side_by_side_on_two_devices_never_abort(tmp_path):
  """Four launches at once on 2 cores, each on 2 host devices: none may abort or hang."""
  environment = dict(os.environ)
  environment["XLA_FLAGS"] = " ".join(
      f for f in environment.get("XLA_FLAGS", "").split()
      if "collective_call" not in f) + " " + _ABORT_AFTER
  launches = []
  for index in range(4):
    command = [sys.executable, os.path.join(ROOT, "launch", "train.py"),
               "--config=" + os.path.join(ROOT, "configs", "linear_regression.py:smoke"),
               f"--workdir={tmp_path / str(index)}", "--host_devices=2", "--metric_writers=",
               "--config.train.num_steps=3000", "--config.train.steps_per_call=50",
               "--config.train.log_every=500", "--config.train.checkpoint_every=1000",
               "--config.train.warmup_steps=100"]
    launches.append(subprocess.Popen(command, cwd=ROOT, env=environment, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  for index, launch in enumerate(launches):
    _, stderr = launch.communicate(timeout=1500)
    assert launch.returncode == 0, f"training {index} exited {launch.returncode}:\n{stderr[-3000:]}"
    assert "Termination timeout" not in stderr and "may be stuck" not in stderr
    with open(tmp_path / str(index) / "metrics.jsonl") as f:
      assert [json.loads(line)["step"] for line in f] == list(range(500, 3001, 500))
