"""End-to-end runs of the MAML family: sinusoid and few-shot digits smoke configs."""

import csv
import os

import jax
import numpy as np
import pytest

from configs import fewshot, sinusoid
from metalearn.engine.runs import build_experiment
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate
from metalearn.engine.train_step import init_state
from metalearn.evaluation.prompts import held_out_episodes
from tests import numpy_mlp


@pytest.mark.parametrize("variant", ["maml-smoke", "reptile-smoke"])
def test_smoke_run_trains_and_reports_queries_by_inner_steps(variant, tmp_path):
  config = sinusoid.get_config(variant)
  table = train_and_evaluate(config, str(tmp_path)).queries
  name = variant.split("-")[0]
  assert list(table) == [f"{name}, 0 steps", f"{name}, 1 step", f"{name}, 10 steps", "knn"]
  with open(tmp_path / "eval" / "query_errors.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["learner"] for r in rows] == list(table)
  for row in rows:  # written to 6 significant digits
    for column, value in row.items():
      if column != "learner":
        np.testing.assert_allclose(float(value), table[row["learner"]][column], rtol=1e-5)
  assert os.path.exists(tmp_path / "eval" / "query_errors.png")
  learner, params, loaded = load_run(str(tmp_path))
  assert learner.context_points == loaded.model.context_points == 10
  initial = init_state(build_experiment(loaded)).params
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(params))]
  assert all(moved)  # every meta-parameter trained (Reptile's through its surrogate alone)
  # The table by hand on the same held-out prompts: the trained MLP after 0, 1 and 10 numpy
  # SGD steps on each prompt's 10 context pairs, and 3 nearest neighbours among those pairs.
  episode = held_out_episodes(build_experiment(config).eval_task, config.eval.num_prompts,
                              config.data.points, config.eval.seed)
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  theta = numpy_mlp.from_flax(params["net"])
  predictions = {f"{name}, {k} step{'' if k == 1 else 's'}": np.stack(
      [numpy_mlp.forward(numpy_mlp.sgd(theta, x[b, :10], y[b, :10], config.model.step_size, k),
                         x[b, 10:]) for b in range(len(x))]) for k in (0, 1, 10)}
  distances = np.square(x[:, 10:, None, 0] - x[:, None, :10, 0])  # [prompts, queries, context]
  nearest = np.argsort(distances, axis=-1)[..., :3]
  neighbours_y = np.take_along_axis(y[:, None, :10, 0], nearest, axis=-1)
  predictions["knn"] = neighbours_y.mean(axis=-1, keepdims=True)
  for learner_name, y_hat in predictions.items():
    loss = np.sum(np.square(y_hat - y[:, 10:]), axis=-1).mean(axis=1)  # per prompt
    for metric, per_prompt in (("loss", loss), ("normalised", loss / np.asarray(episode.zero_loss))):
      row = table[learner_name]
      np.testing.assert_allclose(row[metric], per_prompt.mean(), rtol=1e-4)
      np.testing.assert_allclose(row[f"{metric}_ci95"],
                                 1.96 * per_prompt.std() / np.sqrt(len(per_prompt)), rtol=1e-3)


# The ANIL run is slow (~25 s): the transformer run keeps few-shot accuracy in the fast tests.
@pytest.mark.parametrize("variant", [pytest.param("anil-5shot-smoke", marks=pytest.mark.slow),
                                     "transformer-5shot-smoke"])
def test_fewshot_runs_score_accuracy_on_held_out_classes(variant, tmp_path):
  table = train_and_evaluate(fewshot.get_config(variant), str(tmp_path)).queries
  assert "knn" in table
  for row in table.values():
    assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["loss"])
  # 3-nearest-neighbour votes among 5 shots of 8x8 digits of held-out classes beat chance
  # (0.2) by far: the episodes hold real, correctly labelled images.
  assert table["knn"]["accuracy"] > 0.6
