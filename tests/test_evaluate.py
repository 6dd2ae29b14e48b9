"""Evaluation: the held-out prompts, the K-shot rule, normalised error by number of examples,
query metrics, intervals, tables and plots."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.evaluation import device_split, intervals, plots, prompts, scores, shots, tables
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
  episode = prompts.held_out_episodes(task, 4000, 6, 0)
  errors = scores.evaluate_learners({"zero": (_Oracle(scale=0.0), {}),
                                     "oracle": (_Oracle(), {})}, task, episode, 1000).errors
  assert errors["zero"].shape == (6,)
  # Each position averages 4,000 heavy-tailed ratios (standard error ~0.03); all 24,000 ~0.012.
  assert np.all(np.abs(errors["zero"] - 1.0) < 0.15)
  assert abs(errors["zero"].mean() - 1.0) < 0.04
  np.testing.assert_allclose(errors["oracle"], 0.0, atol=1e-10)
  # Predicting half the truth leaves a quarter of the zero predictor's error.
  half = scores.evaluate_learners({"half": (_Oracle(scale=0.5), {})}, task, episode, 1000).errors
  np.testing.assert_allclose(half["half"], errors["zero"] / 4, rtol=1e-5)


def test_chunked_evaluation_equals_one_pass():
  task = make_task({"name": "linear_regression", "dim": 3, "noise_std": 0.5})
  episode = prompts.held_out_episodes(task, 30, 5, 1)
  one = scores.predictions(_Oracle(), {}, episode, batch_size=30)
  chunked = scores.predictions(_Oracle(), {}, episode, batch_size=7)
  np.testing.assert_allclose(one, chunked, rtol=1e-6)
  errors = scores.normalised_errors(_Oracle(), task, episode, chunked)
  expected = np.square(np.einsum("bpd,bdo->bpo", episode.x, episode.info["w"]) - episode.y)
  np.testing.assert_allclose(errors, expected[..., 0] / (3 + 0.25), rtol=1e-4, atol=1e-8)


def test_each_device_predicts_its_share_of_the_prompts_as_one_device_would():
  """On the 2 test devices a chunk splits over both, with no communication: a transformer, least
  squares, and MAML, whose inner gradient must stay each prompt's own, predict and score their
  queries as one jitted call on one device does; 7 prompts in chunks of 4 pad the odd chunk.
  A learner calling LAPACK is not split."""
  from metalearn.learners import LEARNERS, make_baseline
  from metalearn.learners.inner_loop import MAML
  assert device_split.local_mesh().size == 2
  linear = make_task({"name": "linear_regression", "dim": 3})
  sinusoid = make_task({"name": "sinusoid"})
  transformer = LEARNERS.build({"name": "transformer", "hidden": 16, "num_layers": 1,
                                "num_heads": 2})
  maml = MAML(widths=(8,), context_points=4, inner_steps=2, step_size=0.1)
  for learner, task in ((transformer, linear), (make_baseline("least_squares", linear), linear),
                        (maml, sinusoid)):
    episode = prompts.held_out_episodes(task, 7, 9, 3)
    params = learner.init(jax.random.PRNGKey(0), episode)
    alone = np.asarray(jax.jit(learner.predict)(params, episode))
    np.testing.assert_allclose(scores.predictions(learner, params, episode, batch_size=4), alone,
                               rtol=1e-5, atol=1e-6, err_msg=type(learner).__name__)
    # The queries after a context of 4, through query_episodes for the prefix learners.
    alone = scores._query_metrics(learner, task, 4, params, episode, None)
    split = scores.query_metrics(learner, params, task, episode, 4, batch_size=4)
    for name, value in alone.items():
      np.testing.assert_allclose(split[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(scores.query_predictions(learner, params, episode, 4, 4),
                               scores._jitted_query_predictions(learner, 4, params, episode, None),
                               rtol=1e-5, atol=1e-6)
  mesh = device_split.local_mesh()
  split = scores._predict(maml, params, device_split.padded(episode, 2), mesh)
  assert len(split.sharding.device_set) == 2
  # A learner that calls LAPACK (jnp.linalg.inv) predicts on one host device: split, such calls
  # hang XLA's CPU thread pool.
  preconditioned = make_baseline("preconditioned_gd", linear)
  episode = prompts.held_out_episodes(linear, 8, 9, 3)
  alone = np.asarray(jax.jit(preconditioned.predict)({}, episode))
  np.testing.assert_allclose(scores.predictions(preconditioned, {}, episode, batch_size=4), alone,
                             rtol=1e-5, atol=1e-6)
  assert len(scores._predict(preconditioned, {}, episode, mesh).sharding.device_set) == 1


def test_tables_and_plot_are_written(tmp_path):
  errors = {"a": np.array([1.0, 0.5, 0.25]), "b": np.array([1.0, 0.9, 0.8])}
  tables.write_error_table(errors, str(tmp_path))
  with open(tmp_path / "errors.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["examples", "a", "b"] and rows[2] == ["1", "0.5", "0.9"]
  assert json.loads((tmp_path / "errors.json").read_text())["a"] == [1.0, 0.5, 0.25]
  plots.plot_error_by_shots(errors, str(tmp_path / "errors.png"), dim=2, title="t")
  assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_query_episodes_predict_each_query_from_the_context_alone():
  from metalearn.learners import make_baseline
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = prompts.held_out_episodes(task, 5, 8, 2)
  split = prompts.query_episodes(episode, 3)
  assert split.x.shape == (5 * 5, 4, 3) and split.zero_loss.shape == (25,)
  np.testing.assert_array_equal(split.x[7, :3], episode.x[1, :3])   # prompt 1, query 2
  np.testing.assert_array_equal(split.x[7, 3], episode.x[1, 5])
  np.testing.assert_array_equal(split.info["w"][7], episode.info["w"][1])
  ridge = make_baseline("ridge", task)
  metrics = scores.query_metrics(ridge, {}, task, episode, context_points=3, batch_size=2)
  assert metrics["loss"].shape == (5, 5)
  for b in range(5):
    x, y = np.asarray(episode.x[b], np.float64), np.asarray(episode.y[b], np.float64)
    w = np.linalg.solve(x[:3].T @ x[:3] + np.eye(3), x[:3].T @ y[:3])   # ridge, λ = 1
    np.testing.assert_allclose(metrics["loss"][b], ((x[3:] @ w - y[3:]) ** 2)[:, 0], rtol=1e-4)


def _linear_maml_closed_form(learner, params, episode):
  """One inner SGD step of a linear model x·W + b on the mean squared error of the first K pairs,
  then its predictions at every position, in numpy (float64)."""
  k, rate = learner.context_points, learner.step_size
  head = params["net"]["head"]
  w, b = np.asarray(head["kernel"], np.float64), np.asarray(head["bias"], np.float64)
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  residual = x[:, :k] @ w + b - y[:, :k]                                   # [B, K, out]
  w_adapted = w - rate * 2 / k * np.einsum("bkd,bko->bdo", x[:, :k], residual)
  b_adapted = b - rate * 2 / k * residual.sum(axis=1)                      # [B, out]
  return np.einsum("bpd,bdo->bpo", x, w_adapted) + b_adapted[:, None]


def test_query_metrics_of_a_fixed_context_learner_read_its_query_positions():
  from metalearn.learners.inner_loop import MAML
  task = make_task({"name": "sinusoid"})
  episode = prompts.held_out_episodes(task, 6, 9, 3)
  # No hidden layer: MAML adapts a linear model, whose one inner step has a closed form.
  learner = MAML(widths=(), context_points=4, inner_steps=1, step_size=0.1)
  params = {"net": {"body": {}, "head": {"kernel": jnp.array([[0.7]]), "bias": jnp.array([0.3])}}}
  y_hat = _linear_maml_closed_form(learner, params, episode)
  loss = np.square(y_hat - np.asarray(episode.y, np.float64))[..., 0]      # [prompts, points]
  metrics = scores.query_metrics(learner, params, task, episode, 4, batch_size=4)
  np.testing.assert_allclose(metrics["loss"], loss[:, 4:], rtol=1e-4)
  np.testing.assert_allclose(metrics["normalised"], loss[:, 4:] / task.zero_loss, rtol=1e-4)
  # By number of examples it makes a 4-shot prediction only: NaN at every other position.
  evaluation = scores.evaluate_learners({"maml": (learner, params)}, task, episode, 4,
                                        contexts=(4, 5))
  errors = evaluation.normalised_errors["maml"]
  assert np.isnan(np.delete(errors, 4, axis=1)).all()
  np.testing.assert_allclose(errors[:, 4], loss[:, 4] / task.zero_loss, rtol=1e-4)
  # Its queries are scored after its own context; after 5 examples it predicts nothing.
  assert evaluation.query_tables[5] == {}
  assert evaluation.query_tables[4]["maml"]["loss"] == pytest.approx(loss[:, 4:].mean(), rel=1e-4)
  with pytest.raises(ValueError, match="adapts on 4 context points; allowed here: 5"):
    scores.query_metrics(learner, params, task, episode, 5, batch_size=4)


def test_the_k_shot_rule():
  """A prefix learner predicts from k examples at every k; a fixed-context one (N) only at N."""
  @dataclasses.dataclass(frozen=True)
  class Fixed:
    context_points: int | None

  prefix, fixed = Fixed(None), Fixed(3)
  assert [shots.predicts_at(prefix, k) for k in range(5)] == [True] * 5
  np.testing.assert_array_equal(shots.valid_positions(fixed, 5), [False, False, False, True, False])
  shots.check_predicts_at(fixed, 3)
  with pytest.raises(ValueError,
                     match=r"^the learner adapts on 3 context points; allowed here: 2$"):
    shots.check_predicts_at(fixed, 2)
  with pytest.raises(ValueError, match="adapts on 3 context points; only 3, not 4"):
    shots.check_predicts_at(fixed, 4, "only {context}, not {shots}")
  linear = make_task({"name": "linear_regression", "dim": 2})
  assert shots.query_contexts([prefix, fixed, Fixed(1), Fixed(3)], linear) == (1, 3)
  assert shots.query_contexts([prefix], linear) == ()
  assert shots.run_context(prefix, linear) is None and shots.run_context(fixed, linear) == 3


def test_an_evaluation_gives_its_one_query_table_or_none():
  table = {"a": {"loss": 1.0, "loss_ci95": 0.1}}
  by_shots = scores.Evaluation({"a": np.array([[1.0, 0.5], [3.0, 0.0]])}, {})
  np.testing.assert_array_equal(by_shots.errors["a"], [2.0, 0.25])
  assert by_shots.queries == {}
  assert scores.Evaluation({}, {4: table}).queries == table
  with pytest.raises(ValueError, match=r"after 2 contexts \(4, 5\); pick one of query_tables"):
    scores.Evaluation({}, {4: table, 5: table}).queries


def test_mean_and_interval_is_finns_196_std_over_root_n():
  values = np.array([1.0, 2.0, 3.0, 6.0])
  mean, half = intervals.mean_and_interval(values)
  assert mean == 3.0
  np.testing.assert_allclose(half, 1.96 * np.sqrt(np.mean((values - 3.0) ** 2)) / 2.0)
  # z = 1: the standard error, of the prompts' own std (ddof = 0): √(14/4) / √4.
  assert intervals.mean_and_interval(values, z=1.0) == (3.0, pytest.approx(np.sqrt(3.5) / 2))
  table = scores.summarise_queries({"a": {"loss": np.array([[1.0, 3.0], [5.0, 7.0]])}})
  assert table["a"]["loss"] == 4.0
  np.testing.assert_allclose(table["a"]["loss_ci95"], 1.96 * 2.0 / np.sqrt(2))


def test_bootstrap_interval_matches_the_normal_theory_interval():
  """For a mean of n normal values the 90% interval is mean ± 1.645·σ/√n."""
  rng = np.random.default_rng(0)
  n = 4000
  values = np.stack([rng.normal(0.0, 1.0, n), rng.normal(3.0, 2.0, n),
                     np.full(n, np.nan)], axis=1)                    # [prompts, 3]
  low, high = intervals.bootstrap_interval(values, resamples=2000, seed=1)
  mean = values.mean(axis=0)
  half = 1.645 * values.std(axis=0) / np.sqrt(n)
  np.testing.assert_allclose(low[:2], (mean - half)[:2], atol=0.12 * half[0] * 2)
  np.testing.assert_allclose(high[:2], (mean + half)[:2], atol=0.12 * half[0] * 2)
  assert np.all(low[:2] < mean[:2]) and np.all(mean[:2] < high[:2])
  assert np.isnan(low[2]) and np.isnan(high[2])
  wider_low, wider_high = intervals.bootstrap_interval(values, resamples=2000, seed=1,
                                                       level=0.99)
  assert np.all(wider_high[:2] - wider_low[:2] > high[:2] - low[:2])


def test_bootstrap_bad_inputs():
  with pytest.raises(ValueError, match="resamples must be >= 1, got 0"):
    intervals.bootstrap_interval(np.ones(5), resamples=0, seed=0)
  with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 90"):
    intervals.bootstrap_interval(np.ones(5), resamples=10, seed=0, level=90)


def test_query_predictions_see_only_the_context():
  """A prefix learner (least squares) and a fixed-context one (GD-layers, the GD construction)
  predict each query from the first K pairs alone: with K >= d noiseless least squares is exact,
  and one GD step is (η/K)·x_qᵀXᵀy over those K pairs."""
  from metalearn.learners import make_learner
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 10, 9)
  k = 4
  least_squares = scores.query_predictions(make_learner({"name": "least_squares"}), {},
                                           episode, k, batch_size=4)
  assert least_squares.shape == (10, 5, 1)
  np.testing.assert_allclose(least_squares, episode.y[:, k:], atol=1e-4)
  gd = make_learner({"name": "gd_layers", "context_points": k})
  params = gd.construct(3, 0.5)
  found = scores.query_predictions(gd, params, episode, k, batch_size=4)
  x, y = np.asarray(episode.x), np.asarray(episode.y)
  w = 0.5 / k * np.einsum("bpd,bpo->bdo", x[:, :k], y[:, :k])
  np.testing.assert_allclose(found, np.einsum("bqd,bdo->bqo", x[:, k:], w), rtol=1e-4,
                             atol=1e-5)
  with pytest.raises(ValueError, match="adapts on 4 context points; allowed here: 3"):
    scores.query_predictions(gd, params, episode, 3, batch_size=4)
