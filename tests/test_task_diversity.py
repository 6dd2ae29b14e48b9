"""Task-diversity distances: against float64 closed forms of ridge and dMMSE, the threshold, and
a sweep's members through the launcher and the comparison script."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import task_diversity as config_file
from metalearn.analysis.task_diversity import bayes_distances, threshold
from metalearn.comparison import CompareSettings, compare
from metalearn.evaluation import prompts
from metalearn.learners import make_baseline
from metalearn.tasks import make_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, NOISE, POINTS = 3, 0.5, 6


def _pool(size=5):
  return make_task({"name": "task_pool", "size": size, "seed": 1,
                    "base": {"name": "linear_regression", "dim": DIM, "noise_std": NOISE}})


def _closed_forms(pool, x, y):
  """float64 ridge (λ = σ²) and dMMSE at every prefix of one prompt."""
  weights = np.asarray(pool.pool_weights(), np.float64)[..., 0]          # [M, D]
  ridge, dmmse = np.zeros(len(x)), np.zeros(len(x))
  for k in range(len(x)):
    xs, ys = x[:k], y[:k]
    w = np.linalg.solve(xs.T @ xs + NOISE**2 * np.eye(DIM), xs.T @ ys)
    ridge[k] = x[k] @ w
    log_lik = -np.sum(np.square(ys[None] - weights @ xs.T), axis=1) / (2 * NOISE**2)
    post = np.exp(log_lik - log_lik.max())
    dmmse[k] = (post / post.sum()) @ (weights @ x[k])
  return ridge, dmmse


def test_distances_are_the_squared_prediction_differences_per_dimension():
  pool = _pool()
  ridge_learner = make_baseline("bayes_ridge", pool)
  got = bayes_distances(ridge_learner, {}, pool, POINTS, num_prompts=24, seed=2, batch_size=8)
  assert set(got) == {"pretrain", "latent"}
  for split, family in pool.held_out_families().items():
    episode = prompts.held_out_episodes(family, 24, POINTS, 2)
    x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)[..., 0]
    gaps = np.array([np.square(np.subtract(*_closed_forms(pool, x[b], y[b])))
                     for b in range(len(x))]).mean(axis=0) / DIM
    np.testing.assert_allclose(got[split]["dmmse"]["by_position"], gaps, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got[split]["ridge"]["by_position"], 0.0, atol=1e-12)
    assert got[split]["dmmse"]["mean"] == pytest.approx(gaps.mean(), rel=1e-3)


def test_the_threshold_is_where_the_model_stays_closer_to_ridge():
  def d(to_dmmse, to_ridge):
    return {"pretrain": {"dmmse": {"mean": to_dmmse}, "ridge": {"mean": to_ridge}}}
  sizes = [16, 1, 4, 64]
  assert threshold(sizes, [d(0.3, 0.1), d(0.01, 0.5), d(0.2, 0.3), d(0.4, 0.05)]) == 16
  # Closer to ridge at M = 1 by chance, then to dMMSE: the threshold is after the last flip.
  assert threshold(sizes, [d(0.3, 0.1), d(0.5, 0.4), d(0.1, 0.3), d(0.4, 0.05)]) == 16
  assert threshold(sizes, [d(0.1, 0.3)] * 4) is None


def test_non_pools_are_refused_naming_the_task():
  with pytest.raises(ValueError, match="task pool of linear_regression.*LinearRegression"):
    bayes_distances(make_baseline("ridge", None), {}, make_task(
        {"name": "linear_regression", "dim": DIM}), POINTS, num_prompts=4, seed=0, batch_size=4)


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("diversity") / "sweep")
  config = ml_collections.ConfigDict(config_file.get_config("smoke").to_dict())
  config.eval.update(num_prompts=16, baselines=())
  config.sweep = ml_collections.ConfigDict({"seeds": (), "task_sizes": (1, 8)})
  from metalearn.engine.train import train_and_evaluate
  train_and_evaluate(config, workdir, writers=())
  return workdir


def test_the_launcher_reports_a_sweep_against_its_pool_sizes(smoke_sweep, tmp_path):
  report = tmp_path / "report"
  done = subprocess.run([sys.executable, "launch/task_diversity.py", f"--sweep={smoke_sweep}",
                         f"--report_dir={report}", "--prompts=16", "--batch_size=16"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert {"task_diversity.csv", "task_diversity.json", "task_diversity.png"} <= set(
      os.listdir(report))
  rows = open(report / "task_diversity.csv").read().splitlines()
  assert rows[0] == ("pool size,pretrain to dmmse,pretrain to ridge,latent to dmmse,"
                     "latent to ridge") and [r.split(",")[0] for r in rows[1:]] == ["1", "8"]
  assert "threshold:" in done.stderr
  refused = subprocess.run([sys.executable, "launch/task_diversity.py",
                            f"--sweep={smoke_sweep}/members/seed_0-size_1",
                            f"--report_dir={tmp_path / 'other'}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert refused.returncode == 1 and "is a single run, not a sweep" in refused.stderr


def test_the_comparison_script_holds_a_member_to_both_bayes_predictors(smoke_sweep, tmp_path):
  member = os.path.join(smoke_sweep, "members", "seed_0-size_8")
  results = compare({"tf": member}, ["dmmse"], str(tmp_path / "report"),
                    CompareSettings(num_prompts=16, batch_size=16,
                                    analyses=("errors", "task_diversity")))
  table = results["task_diversity"]
  assert list(table) == ["tf"] and set(table["tf"]) == {"pretrain", "latent"}
  assert all(table["tf"][s][b]["mean"] > 0 for s in table["tf"] for b in ("dmmse", "ridge"))
