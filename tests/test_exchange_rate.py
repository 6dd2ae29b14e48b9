"""The exchange rate between context and training: one step for the GD construction, in closed
form; fine-tuning curves of a transformer; the FLOP break-even."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from episodes import episode_from_arrays
from metalearn.analysis.exchange_rate import (break_even_queries, errors_by_step,
                                              fewest_steps, fine_tuning_flops, linear_model,
                                              transformer_adaptable)
from metalearn.learners import make_learner
from metalearn.learners.fine_tuning import all_weights, lora, zero_shot

DIM, N, QUERIES = 4, 20, 30


def _half_squared(y_hat, y):  # the loss whose GD step the construction takes: (1/2N) Σ (ŷ − y)²
  return 0.5 * jnp.sum(jnp.square(y_hat - y), axis=-1)


def _task(seed):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(DIM, 1))
  x = rng.normal(size=(N + QUERIES, DIM)).astype(np.float32)
  return x, (x @ w).astype(np.float32)


@pytest.mark.parametrize("eta", [0.3, 0.8])
def test_the_gd_construction_is_worth_exactly_one_gd_step(eta):
  x, y = _task(0)
  learner = make_learner({"name": "gd_layers", "init_from": "gd", "init_step_size": eta,
                          "context_points": N})
  params = learner.construct(DIM, eta)
  in_context = np.asarray(learner.predict(params, episode_from_arrays(x[None], y[None])))[0, N:]
  in_context_error = float(np.mean(0.5 * np.sum((in_context - y[N:]) ** 2, axis=-1)))
  errors = np.asarray(errors_by_step(linear_model(DIM), x[:N], y[:N], x[N:], y[N:], steps=4,
                                     optimizer=optax.sgd(eta), loss=_half_squared))
  # Step 1 is the construction's prediction (w = (η/N) Σ x_i y_i), in float64 too.
  w = eta / N * x[:N].astype(np.float64).T @ y[:N]
  np.testing.assert_allclose(errors[1], np.mean(0.5 * (x[N:] @ w - y[N:]) ** 2), rtol=1e-5)
  np.testing.assert_allclose(errors[1], in_context_error, rtol=1e-5)
  assert errors[0] > in_context_error * 1.05  # zero steps (w = 0) is worse than the context
  assert fewest_steps(in_context_error, errors, rtol=1e-5) == 1


def test_fewest_steps_says_when_the_budget_does_not_reach():
  assert fewest_steps(0.5, np.array([1.0, 0.8, 0.6])) is None
  assert fewest_steps(0.5, np.array([1.0, 0.5, 0.2])) == 1
  assert fewest_steps(1.0, np.array([1.0, 0.5])) == 0


@pytest.mark.slow  # the grid test below covers the all-weights route's first step
@pytest.mark.parametrize("how", ["all", "lora"])
def test_a_transformer_fine_tunes_on_its_context_from_its_zero_shot_error(how):
  learner = make_learner({"name": "transformer", "hidden": 16, "num_layers": 1, "num_heads": 2,
                          "max_points": 8})
  x, y = _task(1)
  params = learner.init(jax.random.PRNGKey(0), episode_from_arrays(x[None, :8], y[None, :8]))
  trainable = all_weights(params) if how == "all" else lora(params, rank=2, seed=0)
  adaptable = transformer_adaptable(learner, trainable)
  loss = lambda y_hat, t: jnp.sum(jnp.square(y_hat - t), axis=-1)
  context, queries = slice(0, 5), slice(N, N + QUERIES)
  errors = np.asarray(errors_by_step(adaptable, x[context], y[context], x[queries], y[queries],
                                     steps=3, optimizer=optax.adam(1e-2), loss=loss))
  zero = np.asarray(zero_shot(learner, params, x[queries]))
  np.testing.assert_allclose(errors[0], np.mean(np.sum((zero - y[queries]) ** 2, -1)),
                             rtol=1e-5)
  # Fitting the context itself: its own error falls with the steps.
  fit = np.asarray(errors_by_step(adaptable, x[context], y[context], x[context], y[context],
                                  steps=30, optimizer=optax.adam(1e-2), loss=loss))
  assert fit.shape == (31,) and fit[-1] < 0.5 * fit[0]


def test_fine_tuning_pays_off_after_its_cost_over_the_context_per_query():
  # 10 steps on 4 one-point prompts of 100 FLOPs: 3 · 100 · 4 · 10 = 12,000 FLOPs; each query
  # read with its context costs 500 instead of 100: after 12,000 / 400 = 30 queries.
  cost = fine_tuning_flops(100.0, examples=4, steps=10)
  assert cost == 12_000.0
  assert break_even_queries(cost, 500.0, 100.0) == 30.0
  assert break_even_queries(cost, 100.0, 100.0) == float("inf")


def test_the_grid_scores_every_start_and_route_against_the_same_in_context_error():
  from metalearn.analysis.exchange_grid import exchange_grid
  learner = make_learner({"name": "transformer", "hidden": 16, "num_layers": 1, "num_heads": 2,
                          "max_points": 6})
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3, 6, 2)).astype(np.float32)
  y = x @ rng.normal(size=(2, 1)).astype(np.float32)
  episode = episode_from_arrays(x, y)
  trained = learner.init(jax.random.PRNGKey(0), episode)
  other = learner.init(jax.random.PRNGKey(1), episode)
  # (LoRA routes: test_a_transformer_fine_tunes_...; each route compiles its own curve.)
  result = exchange_grid(learner, {"trained": trained, "other": other}, episode, [3], steps=2,
                         learning_rate=1e-2)
  direct = np.asarray(learner.predict(trained, episode))[:, 3]
  np.testing.assert_allclose(result["in_context"][3], np.mean((direct - y[:, 3]) ** 2),
                             rtol=1e-5)
  assert [(r["start"], r["route"]) for r in result["rows"]] == [
      ("trained", "all weights"), ("other", "all weights")]
  for (k, start, route), curve in result["curves"].items():
    assert k == 3 and curve.shape == (3,)
    params = trained if start == "trained" else other
    zero = np.asarray(zero_shot(learner, params, x[:, 3]))  # step 0: each start's own zero shot
    np.testing.assert_allclose(curve[0], np.mean((zero - y[:, 3]) ** 2), rtol=1e-5)
  with pytest.raises(ValueError, match="examples k=6 must leave a query in prompts of 6 points"):
    exchange_grid(learner, {"trained": trained}, episode, [6], steps=2)
  with pytest.raises(ValueError, match="starts must hold 'trained'"):
    exchange_grid(learner, {"other": other}, episode, [3], steps=2)


def test_the_report_writes_the_table_and_a_plot_per_k(tmp_path):
  import csv
  from metalearn.comparison.exchange_rate import write_exchange_report
  result = {"in_context": {2: 0.5},
            "curves": {(2, "trained", "all weights"): np.array([1.0, 0.4, 0.3]),
                       (2, "random init", "all weights"): np.array([1.0, 0.9, 0.8])},
            "rows": [{"k": 2, "start": "trained", "route": "all weights",
                      "in_context_error": 0.5, "error_at_budget": 0.3, "steps_to_match": 1,
                      "fine_tune_flops": 600.0, "break_even_queries": 1.5},
                     {"k": 2, "start": "random init", "route": "all weights",
                      "in_context_error": 0.5, "error_at_budget": 0.8, "steps_to_match": None,
                      "fine_tune_flops": None, "break_even_queries": None}]}
  lines = write_exchange_report(result, str(tmp_path), "test")
  assert "not within the budget" in lines[-1] and "| 1 | 1.5 |" in lines[-2]
  with open(tmp_path / "exchange_rate.csv") as f:
    table = list(csv.reader(f))
  assert table[0][:3] == ["k", "start", "route"] and len(table) == 3
  assert (tmp_path / "exchange_rate_k2.png").stat().st_size > 1000


def test_the_launcher_names_a_k_that_leaves_no_query(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = os.path.join(root, "metalearn", "pretrained", "linear_regression")
  done = subprocess.run([sys.executable, os.path.join(root, "launch", "exchange_rate.py"),
                         f"--run={run}", f"--report_dir={tmp_path / 'report'}", "--examples=30"],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 1
  assert done.stderr.strip().endswith(
      "metalearn: examples k=30 must leave a query in prompts of 21 points")
  assert not (tmp_path / "report").exists()
