"""The state-size report: parameters, state floats and errors per learner at the training
length and on longer prompts, with least squares exact in closed form; the launcher writes it."""

import csv
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.analysis.state_size import state_table
from metalearn.learners import make_baseline, make_learner
from metalearn.tasks import make_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 3


def test_each_learner_at_the_training_length_and_twice_it():
  task = make_task({"name": "linear_regression", "dim": DIM})
  shape = episode_from_arrays(np.zeros((1, 6, DIM)), np.zeros((1, 6, 1)))
  transformer = make_learner({"name": "transformer", "hidden": 8, "num_layers": 1,
                              "max_points": 6})
  lstm = make_learner({"name": "lstm", "hidden": 8, "num_layers": 1})
  entries = {"transformer": (transformer, transformer.init(jax.random.PRNGKey(0), shape)),
             "lstm": (lstm, lstm.init(jax.random.PRNGKey(0), shape)),
             "least squares": (make_baseline("least_squares", task), {})}
  result = state_table(entries, task, train_points=6, long_points=12, examples=4,
                       num_prompts=8, seed=0, batch_size=8)
  rows = {row["learner"]: row for row in result["rows"]}
  # Noiseless prompts: least squares is exact from k = d examples, at any length.
  assert rows["least squares"]["error_at_k"] < 1e-10
  np.testing.assert_allclose(result["curves"]["least squares"]["long"][DIM:], 0.0, atol=1e-10)
  assert result["curves"]["least squares"]["long"][0] > 0.1
  assert rows["least squares"]["state_floats"] == DIM * DIM + DIM
  # A learned position table ends at max_points; the LSTM reads on with the same state.
  assert rows["transformer"]["long_prompts"] == ("prompts of 12 points do not fit the "
                                                 "transformer's max_points=6; allowed: at most 6")
  assert result["curves"]["transformer"]["long"] is None
  assert rows["transformer"]["state_floats"] == 1 * 2 * 12 * 8  # keys and values of 12 tokens
  assert rows["transformer"]["state_floats_long"] == 1 * 2 * 24 * 8
  assert rows["lstm"]["state_floats"] == rows["lstm"]["state_floats_long"] == 2 * 8
  assert result["curves"]["lstm"]["long"].shape == (12,)
  assert rows["lstm"]["parameters"] == sum(
      leaf.size for leaf in jax.tree.leaves(entries["lstm"][1]))
  with pytest.raises(ValueError, match="long_points=4 must be at least train_points=6"):
    state_table(entries, task, train_points=6, long_points=4, examples=2, num_prompts=8,
                seed=0, batch_size=8)
  with pytest.raises(ValueError, match="examples=6: allowed 0 to 5"):
    state_table(entries, task, train_points=6, long_points=12, examples=6, num_prompts=8,
                seed=0, batch_size=8)


def test_the_launcher_reports_a_shipped_run_beside_least_squares(tmp_path):
  run = os.path.join(ROOT, "metalearn", "pretrained", "linear_regression")
  report = tmp_path / "report"
  done = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "state_size.py"),
                         f"--runs=transformer={run}", "--baselines=least_squares",
                         f"--report_dir={report}", "--prompts=16", "--batch_size=16"],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(report / "state_size.csv") as f:
    rows = {row["learner"]: row for row in csv.DictReader(f)}
  assert rows["transformer"]["long_prompts"].endswith("max_points=21; allowed: at most 21")
  assert rows["least_squares"]["long_prompts"] == "read at 42 points"
  assert float(rows["least_squares"]["error_at_k"]) < 1e-10
  assert int(rows["transformer"]["state_floats"]) == 3 * 2 * 42 * 64
  assert (report / "state_size.png").stat().st_size > 1000
  assert (report / "long_prompts.png").stat().st_size > 1000
  assert (report / "errors.png").stat().st_size > 1000
