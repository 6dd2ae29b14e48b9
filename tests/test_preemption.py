"""A run stopped between two logged steps resumes to the uninterrupted run's loss curve."""

import json
import logging
import os
import shutil
import signal

import pytest

from configs.linear_regression import get_config
from metalearn.engine import checkpoints
from metalearn.engine.runs import build_experiment
from metalearn.engine.log_window import WINDOW_DIR
from metalearn.engine.train import PREEMPTED_EXIT_CODE, train


def _config():
  # Rows every 10 steps, host calls of 5 and a checkpoint at step 15 as well as 20: stops and
  # checkpoints fall between two rows.
  config = get_config("smoke")
  config.unlock()
  config.train.update(num_steps=30, log_every=10, checkpoint_every=15, keep_checkpoints=5)
  return config


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for row in rows:
    row.pop("steps_per_sec")  # timing: the one field that may differ
  return rows


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  _, finished = train(build_experiment(_config()), workdir, writer_names=())
  assert finished
  return workdir


def _sigterm_after(stop_after):
  """should_stop that sends this process a real SIGTERM once step `stop_after` is reached."""
  def should_stop(step):
    if step == stop_after:
      os.kill(os.getpid(), signal.SIGTERM)
    return False
  return should_stop


@pytest.mark.parametrize("how", ["sigterm", "should_stop"])
def test_stop_between_rows_then_resume_logs_the_uninterrupted_rows(straight, tmp_path, how):
  workdir = str(tmp_path / "stopped")
  experiment = build_experiment(_config())
  # SIGTERM during the host call that ends at step 10 is read after the next one: step 15.
  should_stop = _sigterm_after(10) if how == "sigterm" else (lambda step: step == 5)
  stop_step = 15 if how == "sigterm" else 5
  _, finished = train(experiment, workdir, should_stop, writer_names=())
  assert not finished
  # Nothing finished is lost: the stop step is checkpointed, its partial window kept beside it.
  assert checkpoints.saved_steps(workdir)[-1] == stop_step
  assert os.path.exists(os.path.join(workdir, WINDOW_DIR, f"{stop_step}.npz"))
  # No row for a partial window: the rows so far are the uninterrupted run's.
  assert _rows(workdir) == [row for row in _rows(straight) if row["step"] <= stop_step]
  _, finished = train(experiment, workdir, writer_names=())
  assert finished
  assert _rows(workdir) == _rows(straight)
  # A window is kept for each checkpoint on disk inside a window (the stop's, and 15's).
  assert sorted(os.listdir(os.path.join(workdir, WINDOW_DIR))) == sorted(
      {f"{stop_step}.npz", "15.npz"})


def test_resume_from_a_checkpoint_off_the_log_grid_after_a_kill(straight, tmp_path):
  # A kill after the row at step 20 but before the checkpoint at 30: the relaunch resumes
  # from the regular checkpoint at step 15, inside the window (10, 20].
  workdir = str(tmp_path / "killed")
  experiment = build_experiment(_config())
  train(experiment, workdir, lambda step: step == 20, writer_names=())
  assert checkpoints.saved_steps(workdir) == (15, 20)
  # What a kill at step 20 before its save leaves: the checkpoint at 20 was never written.
  shutil.rmtree(os.path.join(checkpoints.checkpoint_directory(workdir), "20"))
  _, finished = train(experiment, workdir, writer_names=())
  assert finished
  assert _rows(workdir) == _rows(straight)


def test_a_lost_window_is_named_and_the_next_row_covers_only_the_resumed_steps(
    straight, tmp_path, caplog):
  workdir = str(tmp_path / "lost")
  experiment = build_experiment(_config())
  train(experiment, workdir, lambda step: step == 5, writer_names=())
  os.remove(os.path.join(workdir, WINDOW_DIR, "5.npz"))  # as a run of an older version left it
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    train(experiment, workdir, writer_names=())
  assert "the metrics of steps 1-5 were not kept with the checkpoint at step 5" in caplog.text
  rows, expected = _rows(workdir), _rows(straight)
  assert [row["step"] for row in rows] == [row["step"] for row in expected]
  assert rows[0] != expected[0] and rows[1:] == expected[1:]


def test_the_preempted_exit_code_is_neither_success_nor_failure():
  # The launcher exits with it on SIGTERM (tests/test_launch.py sends a real one).
  assert PREEMPTED_EXIT_CODE not in (0, 1, 2) and 0 < PREEMPTED_EXIT_CODE < 128
