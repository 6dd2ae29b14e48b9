"""End-to-end runs of the MAML family: sinusoid and few-shot digits smoke configs."""

import csv
import os

import jax
import numpy as np
import pytest

from configs import fewshot, sinusoid
from metalearn.engine.experiment import build_experiment
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate
from metalearn.engine.train_step import init_state


@pytest.mark.parametrize("variant", ["maml-smoke", "reptile-smoke"])
def test_smoke_run_trains_and_reports_queries_by_inner_steps(variant, tmp_path):
  table = train_and_evaluate(sinusoid.get_config(variant), str(tmp_path))
  name = variant.split("-")[0]
  assert list(table) == [f"{name}, 0 steps", f"{name}, 1 step", f"{name}, 10 steps", "knn"]
  for row in table.values():
    assert np.isfinite(row["loss"]) and row["loss_ci95"] > 0
  with open(tmp_path / "eval" / "query_errors.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["learner"] for r in rows] == list(table)
  assert os.path.exists(tmp_path / "eval" / "query_errors.png")
  learner, params, config = load_run(str(tmp_path))
  assert learner.context_points == config.model.context_points == 10
  initial = init_state(build_experiment(config)).params
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(params))]
  assert all(moved)  # every meta-parameter trained (Reptile's through its surrogate alone)


# The ANIL run is slow (~25 s): the transformer run keeps few-shot accuracy in the fast tests.
@pytest.mark.parametrize("variant", [pytest.param("anil-5shot-smoke", marks=pytest.mark.slow),
                                     "transformer-5shot-smoke"])
def test_fewshot_runs_score_accuracy_on_held_out_classes(variant, tmp_path):
  table = train_and_evaluate(fewshot.get_config(variant), str(tmp_path))
  assert "knn" in table
  for row in table.values():
    assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["loss"])
  # 3-nearest-neighbour votes among 5 shots of 8x8 digits of held-out classes beat chance
  # (0.2) by far: the episodes hold real, correctly labelled images.
  assert table["knn"]["accuracy"] > 0.6
