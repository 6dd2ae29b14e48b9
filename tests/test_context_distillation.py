"""Distilling a context into weights from the model's own predictions: one distillation step in
closed form, convergence to the teacher, no labels used, and the grid against the exact write."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from episodes import episode_from_arrays
from metalearn.analysis.context_distillation import distillation_curves, distillation_grid
from metalearn.analysis.exchange_rate import linear_model
from metalearn.core import losses
from metalearn.learners import make_learner

DIM, K, FRESH, QUERIES = 4, 3, 16, 8


def _linear_teacher(seed):
  """A teacher linear in its query, x ↦ xᵀw_t, with its context, fresh inputs and queries."""
  rng = np.random.default_rng(seed)
  w_teacher = rng.normal(size=(DIM, 1))
  x_context, x_fresh, x_query = (rng.normal(size=(n, DIM)) for n in (K, FRESH, QUERIES))
  y_context, y_query = rng.normal(size=(K, 1)), rng.normal(size=(QUERIES, 1))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  arrays = tuple(map(f32, (x_context, y_context, x_fresh, x_fresh @ w_teacher, x_query,
                           x_query @ w_teacher, y_query)))
  return w_teacher, (x_context, y_context, x_fresh, x_query, y_query), arrays


def test_one_distillation_step_and_one_label_step_in_closed_form():
  eta = 0.05
  w_teacher, (xc, yc, xf, xq, yq), arrays = _linear_teacher(0)
  curves = distillation_curves(linear_model(DIM), *arrays, steps=3, optimizer=optax.sgd(eta),
                               loss=losses.squared_error)
  # From w = 0 a step down (1/M) Σ (x_mᵀw − x_mᵀw_t)² is w = (2η/M) Σ x_m x_mᵀ w_t.
  w = 2 * eta / FRESH * xf.T @ xf @ w_teacher
  np.testing.assert_allclose(curves["distilled"]["gap"][1],
                             np.mean((xq @ w - xq @ w_teacher) ** 2), rtol=1e-5)
  np.testing.assert_allclose(curves["distilled"]["error"][1], np.mean((xq @ w - yq) ** 2),
                             rtol=1e-5)
  # On the labels: w = (2η/k) Σ x_i y_i.
  w = 2 * eta / K * xc.T @ yc
  np.testing.assert_allclose(curves["labels"]["gap"][1],
                             np.mean((xq @ w - xq @ w_teacher) ** 2), rtol=1e-5)
  np.testing.assert_allclose(curves["labels"]["error"][1], np.mean((xq @ w - yq) ** 2),
                             rtol=1e-5)
  # Step 0 is w = 0 on both routes.
  np.testing.assert_allclose(curves["distilled"]["gap"][0], np.mean((xq @ w_teacher) ** 2),
                             rtol=1e-5)
  assert curves["labels"]["gap"][0] == curves["distilled"]["gap"][0]


def test_distillation_reaches_a_linear_teacher_without_its_labels():
  _, _, arrays = _linear_teacher(1)
  curves = distillation_curves(linear_model(DIM), *arrays, steps=200, optimizer=optax.sgd(0.1),
                               loss=losses.squared_error)
  # M = 16 >= D fresh inputs determine w_t: the student becomes the teacher.
  assert curves["distilled"]["gap"][-1] < 1e-8 * curves["distilled"]["gap"][0]
  # Three labels of noise do not: fitting them leaves a gap.
  assert curves["labels"]["gap"][-1] > 1e-2
  # The distilled route never reads a label: other labels, the same curve.
  x_context, y_context, *rest = arrays
  other = distillation_curves(linear_model(DIM), x_context, 5.0 * y_context + 1.0, *rest,
                              steps=200, optimizer=optax.sgd(0.1), loss=losses.squared_error)
  np.testing.assert_array_equal(other["distilled"]["gap"], curves["distilled"]["gap"])


def _tiny_prompts(points=K + QUERIES, prompts=2):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(prompts, points, DIM))
  y = x @ rng.normal(size=(prompts, DIM, 1))
  return episode_from_arrays(x, y), jnp.asarray(rng.normal(size=(prompts, FRESH, DIM)),
                                                jnp.float32)


def test_the_grid_distils_a_linear_attention_context_toward_its_exact_write():
  learner = make_learner({"name": "transformer", "attention": "linear", "hidden": 16,
                          "num_layers": 1, "num_heads": 2, "max_points": K + QUERIES})
  episode, fresh_x = _tiny_prompts()
  params = learner.init(jax.random.PRNGKey(0), episode)
  params = jax.tree.map(lambda w: 8.0 * w, params)  # so that the context moves predictions
  result = distillation_grid(learner, params, episode, fresh_x, [K], steps=30, ranks=[2],
                             learning_rate=1e-2)
  rows = {(row["route"], row["trained_on"]): row for row in result["rows"]}
  exact = rows[("written (exact)", "the context itself")]
  distilled = rows[("LoRA r=2", "in-context predictions at fresh inputs")]
  labels = rows[("LoRA r=2", "the k context labels")]
  # The exact write predicts as in context; distillation closes part of the zero-shot gap.
  assert exact["gap_at_budget"] < 1e-9 * distilled["zero_shot_gap"]
  np.testing.assert_allclose(exact["error_at_budget"], result["in_context"][K], rtol=1e-5)
  assert distilled["zero_shot_gap"] > 1e-2
  assert distilled["gap_at_budget"] < 0.5 * distilled["zero_shot_gap"]
  assert labels["zero_shot_gap"] == distilled["zero_shot_gap"]
  curve = result["curves"][(K, "LoRA r=2", "in-context predictions at fresh inputs")]
  assert curve["gap"].shape == (31,) and curve["error"].shape == (31,)


def test_a_bad_grid_is_refused_before_anything_runs():
  learner = make_learner({"name": "transformer", "hidden": 8, "num_layers": 1,
                          "max_points": K + QUERIES})
  episode, fresh_x = _tiny_prompts()
  with pytest.raises(ValueError, match="ranks must name at least one LoRA rank"):
    distillation_grid(learner, {}, episode, fresh_x, [K], steps=5, ranks=[])
  with pytest.raises(ValueError, match=f"examples k={K + QUERIES} must leave a query"):
    distillation_grid(learner, {}, episode, fresh_x, [K + QUERIES], steps=5, ranks=[1])
  with pytest.raises(ValueError, match=r"fresh inputs must be \[prompts=2, M >= 1, dim=4\], "
                                       r"got \(2, 16, 3\)"):
    distillation_grid(learner, {}, episode, fresh_x[..., :3], [K], steps=5, ranks=[1])
