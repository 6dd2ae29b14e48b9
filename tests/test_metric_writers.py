"""Rows of metrics in metrics.jsonl, TensorBoard and W&B agree; the progress bar is TTY-only."""

import glob
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs.linear_regression import get_config
from metalearn.engine import checkpoints, metric_writers, progress
from metalearn.engine.runs import build_experiment
from metalearn.engine.train import train, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _tensorboard_scalars(workdir):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  events = EventAccumulator(os.path.join(workdir, metric_writers.TENSORBOARD_DIR))
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in events.Tags()["scalars"]}


def _as_logged(rows):
  """metrics.jsonl's rows as TensorBoard keeps them: per name, (step, float32 value)."""
  names = {name for row in rows for name in row if name != "step"}
  return {name: [(row["step"], float(np.float32(row[name]))) for row in rows
                 if row.get(name) is not None] for name in names}


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
  pytest.importorskip("tensorboard")
  config = get_config("smoke")
  config.unlock()
  workdir = str(tmp_path_factory.mktemp("tensorboard_run"))
  train(build_experiment(config), workdir, writer_names=("tensorboard",))
  return config, workdir


def test_tensorboard_events_hold_the_scalars_of_metrics_jsonl(tensorboard_run):
  _, workdir = tensorboard_run
  scalars = _tensorboard_scalars(workdir)
  assert set(scalars) >= {"loss", "normalised_loss", "grad_norm", "steps_per_sec"}
  assert scalars == _as_logged(_rows(workdir))


def test_a_resumed_run_purges_what_tensorboard_had_past_its_checkpoint(tensorboard_run,
                                                                       tmp_path):
  # A kill after the rows at steps 15 and 20 but before the checkpoint at 20: the relaunch
  # resumes at 10 and logs 15 and 20 again; TensorBoard must show each step once.
  config, finished_run = tensorboard_run
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir)
  shutil.rmtree(os.path.join(checkpoints.checkpoint_directory(workdir), "20"))
  train(build_experiment(config), workdir, writer_names=("tensorboard",))
  scalars = _tensorboard_scalars(workdir)
  assert [step for step, _ in scalars["loss"]] == [5, 10, 15, 20]
  assert scalars["loss"] == _as_logged(_rows(workdir))["loss"]


def test_unknown_writer_is_refused_before_anything_is_written(smoke_config, tmp_path):
  with pytest.raises(ValueError, match="unknown metric writer 'tensorbord'; allowed: "
                                       "tensorboard, wandb"):
    train_and_evaluate(smoke_config, str(tmp_path / "run"), writers=("tensorbord",))
  assert not (tmp_path / "run").exists()


def test_wandb_asked_for_but_not_installed_says_how_to_install_it(monkeypatch, smoke_config,
                                                                  tmp_path):
  monkeypatch.setitem(sys.modules, "wandb", None)  # what importing a missing package sees
  with pytest.raises(ValueError, match="'wandb' needs the wandb package, which is not "
                                       "installed: pip install wandb"):
    train_and_evaluate(smoke_config, str(tmp_path / "run"), writers=("wandb",))
  assert not (tmp_path / "run").exists()


def test_wandb_writer_logs_offline_into_one_run_per_workdir(monkeypatch, tmp_path):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  workdir = str(tmp_path)
  writer = metric_writers.WandbWriter(workdir)
  writer.write(5, {"loss": 1.625, "steps_per_sec": None})
  writer.write(10, {"loss": 1.3125, "steps_per_sec": 42.5})
  writer.close()
  run_id = open(os.path.join(workdir, metric_writers.WANDB_ID_FILE)).read().strip()
  # A resumed run goes on logging into the same W&B run.
  metric_writers.WandbWriter(workdir).close()
  runs = glob.glob(os.path.join(workdir, "wandb", f"offline-run-*-{run_id}"))
  assert len(runs) == 2
  logged = b"".join(open(os.path.join(run, f"run-{run_id}.wandb"), "rb").read()
                   for run in runs)  # wandb's offline records: binary, the values as JSON text
  assert all(text in logged for text in (b"loss", b"1.625", b"1.3125", b"42.5"))


@pytest.mark.slow  # a launcher process; the library's refusal is tested fast
def test_launcher_refuses_an_unknown_writer_in_one_line(tmp_path):
  process = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "train.py"),
       "--config=" + os.path.join(ROOT, "configs", "linear_regression.py:smoke"),
       f"--workdir={tmp_path / 'run'}", "--metric_writers=tensorboard,tb", "--nohugepages"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert process.returncode == 1
  assert "unknown metric writer 'tb'; allowed: tensorboard, wandb" in process.stderr
  assert "Traceback" not in process.stderr and not (tmp_path / "run").exists()


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_only_on_a_terminal(monkeypatch):
  assert progress.wanted(_Terminal())
  assert not progress.wanted(io.StringIO())
  monkeypatch.setattr(sys, "stderr", io.StringIO())  # as under a scheduler or in a file
  with progress.progress_bar(20, 0) as bar:
    bar.update(5)
  assert sys.stderr.getvalue() == ""
  monkeypatch.setattr(sys, "stderr", _Terminal())
  with progress.progress_bar(20, 10) as bar:
    bar.update(5)
  drawn = sys.stderr.getvalue()
  assert "15/20" in drawn and "step/s" in drawn
