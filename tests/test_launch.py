"""The launcher as a user runs it: flags, overrides, bad input, preemption."""

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, *overrides, config="linear_regression.py:smoke"):
  command = [sys.executable, os.path.join(ROOT, "launch", "train.py"),
             "--config=" + os.path.join(ROOT, "configs", config),
             f"--workdir={workdir}", *overrides]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def test_misspelt_config_field_stops_the_launch_naming_it(tmp_path):
  process = _launch(tmp_path / "run", "--config.train.lerning_rate=0.1")
  _, stderr = process.communicate(timeout=120)
  assert process.returncode != 0
  assert "lerning_rate" in stderr and 'Did you mean "learning_rate"' in stderr
  assert not (tmp_path / "run").exists()


def test_bad_value_stops_the_launch_with_the_allowed_range(tmp_path):
  process = _launch(tmp_path / "run", "--config.train.learning_rate=-0.1")
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 1
  assert "bad config: train.learning_rate must be > 0, got -0.1" in stderr
  assert "Traceback" not in stderr


def test_sigterm_writes_a_checkpoint_before_exiting(tmp_path):
  workdir = tmp_path / "run"
  process = _launch(workdir, "--config.train.num_steps=100000", "--config.train.log_every=5",
                    "--config.train.checkpoint_every=50000", "--config.eval.baselines=()")
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().strip()):
    assert process.poll() is None, process.communicate()[1]
    assert time.time() < deadline, "the run logged no metrics in 120 s"
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  saved = [int(step) for step in os.listdir(workdir / "checkpoints")]
  assert len(saved) == 1 and 0 < saved[0] < 100000
  assert f"stopping at step {saved[0]} on request" in stderr
  assert not (workdir / "eval").exists()


def test_a_maml_run_launches_and_prints_its_query_table(tmp_path):
  process = _launch(tmp_path / "run", config="sinusoid.py:fomaml-smoke")
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr
  assert "maml, 10 steps" in stderr and "loss " in stderr and "knn" in stderr
  assert (tmp_path / "run" / "eval" / "query_errors.csv").exists()
