"""Evaluation: normalised error by number of examples, tables and plots."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.evaluation import evaluate, plots
from metalearn.learners import Learner
from metalearn.tasks import make_task


@dataclasses.dataclass(frozen=True)
class _Oracle(Learner):
  """Predicts with the task's true weights (read from the episode, as no real learner may)."""

  trainable = False
  scale: float = 1.0

  def init(self, rng, episode):
    return {}

  def predict(self, params, episode):
    return self.scale * jnp.einsum("bpd,bdo->bpo", episode.x, episode.info["w"])


def test_zero_predictor_scores_one_and_the_oracle_zero():
  task = make_task({"name": "linear_regression", "dim": 4})
  episode = evaluate.held_out_episodes(task, 4000, 6, 0)
  errors = evaluate.error_by_shots({"zero": (_Oracle(scale=0.0), {}), "oracle": (_Oracle(), {})},
                                   task, episode, batch_size=1000)
  assert errors["zero"].shape == (6,)
  # Each position averages 4,000 heavy-tailed ratios (standard error ~0.03); all 24,000 ~0.012.
  assert np.all(np.abs(errors["zero"] - 1.0) < 0.15)
  assert abs(errors["zero"].mean() - 1.0) < 0.04
  np.testing.assert_allclose(errors["oracle"], 0.0, atol=1e-10)
  # Predicting half the truth leaves a quarter of the zero predictor's error.
  half = evaluate.error_by_shots({"half": (_Oracle(scale=0.5), {})}, task, episode, 1000)
  np.testing.assert_allclose(half["half"], errors["zero"] / 4, rtol=1e-5)


def test_chunked_evaluation_equals_one_pass():
  task = make_task({"name": "linear_regression", "dim": 3, "noise_std": 0.5})
  episode = evaluate.held_out_episodes(task, 30, 5, 1)
  one = evaluate.normalised_errors(_Oracle(), {}, task, episode, batch_size=30)
  chunked = evaluate.normalised_errors(_Oracle(), {}, task, episode, batch_size=7)
  np.testing.assert_allclose(one, chunked, rtol=1e-6)
  expected = np.square(np.einsum("bpd,bdo->bpo", episode.x, episode.info["w"]) - episode.y)
  np.testing.assert_allclose(one, expected[..., 0] / (3 + 0.25), rtol=1e-4, atol=1e-8)


def test_tables_and_plot_are_written(tmp_path):
  errors = {"a": np.array([1.0, 0.5, 0.25]), "b": np.array([1.0, 0.9, 0.8])}
  evaluate.write_error_table(errors, str(tmp_path))
  with open(tmp_path / "errors.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["examples", "a", "b"] and rows[2] == ["1", "0.5", "0.9"]
  assert json.loads((tmp_path / "errors.json").read_text())["a"] == [1.0, 0.5, 0.25]
  plots.plot_error_by_shots(errors, str(tmp_path / "errors.png"), dim=2, title="t")
  assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_query_episodes_predict_each_query_from_the_context_alone():
  from metalearn.learners import make_baseline
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = evaluate.held_out_episodes(task, 5, 8, 2)
  split = evaluate.query_episodes(episode, 3)
  assert split.x.shape == (5 * 5, 4, 3) and split.zero_loss.shape == (25,)
  np.testing.assert_array_equal(split.x[7, :3], episode.x[1, :3])   # prompt 1, query 2
  np.testing.assert_array_equal(split.x[7, 3], episode.x[1, 5])
  np.testing.assert_array_equal(split.info["w"][7], episode.info["w"][1])
  ridge = make_baseline("ridge", task)
  metrics = evaluate.query_metrics(ridge, {}, task, episode, context_points=3, batch_size=2)
  assert metrics["loss"].shape == (5, 5)
  for b in range(5):
    x, y = np.asarray(episode.x[b], np.float64), np.asarray(episode.y[b], np.float64)
    w = np.linalg.solve(x[:3].T @ x[:3] + np.eye(3), x[:3].T @ y[:3])   # ridge, λ = 1
    np.testing.assert_allclose(metrics["loss"][b], ((x[3:] @ w - y[3:]) ** 2)[:, 0], rtol=1e-4)


def test_query_metrics_of_a_fixed_context_learner_read_its_query_positions():
  from metalearn.learners.inner_loop import MAML
  task = make_task({"name": "sinusoid"})
  episode = evaluate.held_out_episodes(task, 6, 9, 3)
  learner = MAML(widths=(4,), context_points=4, inner_steps=1)
  params = learner.init(jax.random.PRNGKey(0), episode)
  metrics = evaluate.query_metrics(learner, params, task, episode, 4, batch_size=4)
  y_hat = learner.predict(params, episode)
  np.testing.assert_allclose(metrics["loss"], np.square(y_hat - episode.y)[:, 4:, 0], rtol=1e-5)
  np.testing.assert_allclose(metrics["normalised"], metrics["loss"] / task.zero_loss, rtol=1e-5)
  with pytest.raises(ValueError, match="adapts on 4 context points; allowed here: 5"):
    evaluate.query_metrics(learner, params, task, episode, 5, batch_size=4)


def test_mean_and_interval_is_finns_196_std_over_root_n():
  values = np.array([1.0, 2.0, 3.0, 6.0])
  mean, half = evaluate.mean_and_interval(values)
  assert mean == 3.0
  np.testing.assert_allclose(half, 1.96 * np.sqrt(np.mean((values - 3.0) ** 2)) / 2.0)
  table = evaluate.summarise_queries({"a": {"loss": np.array([[1.0, 3.0], [5.0, 7.0]])}})
  assert table["a"]["loss"] == 4.0
  np.testing.assert_allclose(table["a"]["loss_ci95"], 1.96 * 2.0 / np.sqrt(2))


def test_bootstrap_interval_matches_the_normal_theory_interval():
  """For a mean of n normal values the 90% interval is mean ± 1.645·σ/√n."""
  rng = np.random.default_rng(0)
  n = 4000
  values = np.stack([rng.normal(0.0, 1.0, n), rng.normal(3.0, 2.0, n),
                     np.full(n, np.nan)], axis=1)                    # [prompts, 3]
  low, high = evaluate.bootstrap_interval(values, resamples=2000, seed=1)
  mean = values.mean(axis=0)
  half = 1.645 * values.std(axis=0) / np.sqrt(n)
  np.testing.assert_allclose(low[:2], (mean - half)[:2], atol=0.12 * half[0] * 2)
  np.testing.assert_allclose(high[:2], (mean + half)[:2], atol=0.12 * half[0] * 2)
  assert np.all(low[:2] < mean[:2]) and np.all(mean[:2] < high[:2])
  assert np.isnan(low[2]) and np.isnan(high[2])
  wider_low, wider_high = evaluate.bootstrap_interval(values, resamples=2000, seed=1,
                                                      level=0.99)
  assert np.all(wider_high[:2] - wider_low[:2] > high[:2] - low[:2])


def test_bootstrap_bad_inputs():
  with pytest.raises(ValueError, match="resamples must be >= 1, got 0"):
    evaluate.bootstrap_interval(np.ones(5), resamples=0, seed=0)
  with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 90"):
    evaluate.bootstrap_interval(np.ones(5), resamples=10, seed=0, level=90)


def test_query_predictions_see_only_the_context():
  """A prefix learner (least squares) and a fixed-context one (GD-layers, the GD construction)
  predict each query from the first K pairs alone: with K >= d noiseless least squares is exact,
  and one GD step is (η/K)·x_qᵀXᵀy over those K pairs."""
  from metalearn.learners import make_learner
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 10, 9)
  k = 4
  least_squares = evaluate.query_predictions(make_learner({"name": "least_squares"}), {},
                                             episode, k, batch_size=4)
  assert least_squares.shape == (10, 5, 1)
  np.testing.assert_allclose(least_squares, episode.y[:, k:], atol=1e-4)
  gd = make_learner({"name": "gd_layers", "context_points": k})
  params = gd.construct(3, 0.5)
  found = evaluate.query_predictions(gd, params, episode, k, batch_size=4)
  x, y = np.asarray(episode.x), np.asarray(episode.y)
  w = 0.5 / k * np.einsum("bpd,bpo->bdo", x[:, :k], y[:, :k])
  np.testing.assert_allclose(found, np.einsum("bqd,bdo->bqo", x[:, k:], w), rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match="adapts on 4 context points; allowed here: 3"):
    evaluate.query_predictions(gd, params, episode, 3, batch_size=4)
