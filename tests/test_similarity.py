"""Similarity of two learners: known answers (self, the GD construction, one GD step)."""

import re

import jax
import numpy as np
import pytest

from metalearn.analysis import similarity
from metalearn.learners import LEARNERS, make_learner
from metalearn.tasks import make_task

DIM, N = 4, 7

_compare = jax.jit(similarity.compare, static_argnums=(0, 2, 5))
_sensitivity = jax.jit(similarity.sensitivity, static_argnums=(0, 3))


@pytest.fixture(scope="module")
def episode():
  task = make_task({"name": "linear_regression", "dim": DIM})
  return jax.jit(lambda key: task.sample(key, 16, N + 3))(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def trained_like():
  """A random 2-layer LSA network with every option on: nothing linear about it."""
  learner = make_learner({"name": "gd_layers", "num_layers": 2, "init_std": 0.4,
                          "layer_norm": True, "mlp": True, "mlp_width": 8, "softmax": True})
  return learner


def test_a_learner_against_itself(episode, trained_like):
  params = trained_like.init(jax.random.PRNGKey(1), episode)
  result = _compare(trained_like, params, trained_like, params, episode, N)
  np.testing.assert_array_equal(result["prediction_sq_diff"], 0.0)
  np.testing.assert_array_equal(result["sensitivity_l2"], 0.0)
  np.testing.assert_allclose(result["sensitivity_cosine"], 1.0, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 3])
def test_gd_construction_against_the_gd_baseline(episode, steps):
  """The constructed LSA network is K GD steps: same predictions, cosine 1 (von Oswald et al.)."""
  network = make_learner({"name": "gd_layers", "num_layers": steps, "recurrent": True})
  gd = LEARNERS.build({"name": "gd", "steps": steps, "step_size": 0.3})
  result = _compare(network, network.construct(DIM, 0.3), gd, {}, episode, N)
  np.testing.assert_allclose(result["sensitivity_cosine"], 1.0, rtol=1e-5)
  assert np.max(result["prediction_l2"]) < 1e-5 and np.max(result["sensitivity_l2"]) < 1e-5


def test_one_gd_step_sensitivity_is_eta_over_n_x_transpose_y(episode):
  """ŷ = x_qᵀ(η/N)Xᵀy, so ∂ŷ/∂x_q = (η/N)Xᵀy, whatever x_q is."""
  gd = LEARNERS.build({"name": "gd", "step_size": 0.6})
  s = np.asarray(_sensitivity(gd, {}, episode, N))                       # [batch, out, dim]
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  expected = 0.6 / N * np.einsum("bnd,bno->bod", x[:, :N], y[:, :N])
  np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-6)


def test_least_squares_sensitivity_is_the_true_weights(episode):
  """Noiseless, N ≥ d: least squares recovers w, and a linear predictor's gradient is its w."""
  s = np.asarray(_sensitivity(LEARNERS.build({"name": "least_squares"}), {}, episode, N))
  np.testing.assert_allclose(s, np.swapaxes(episode.info["w"], 1, 2), rtol=1e-3, atol=1e-3)


def test_sensitivity_matches_finite_differences_of_a_nonlinear_learner(episode, trained_like):
  params = trained_like.init(jax.random.PRNGKey(1), episode)
  s = np.asarray(_sensitivity(trained_like, params, episode, N))[:4]
  predict = jax.jit(lambda x: trained_like.predict(params, episode.replace(x=x))[:4, N, 0])
  h = 1e-2
  for d in range(DIM):
    step = np.zeros(episode.x.shape, np.float32)
    step[:, N, d] = h
    central = (predict(episode.x + step) - predict(episode.x - step)) / (2 * h)
    np.testing.assert_allclose(s[:, 0, d], central, rtol=2e-2, atol=2e-3)


def test_sensitivity_holds_the_context_fixed(episode):
  """Only the query's own x moves: a later point's x changes nothing at this position."""
  gd = LEARNERS.build({"name": "gd", "step_size": 0.6})
  later = episode.replace(x=episode.x.at[:, N + 1].set(100.0))
  np.testing.assert_array_equal(_sensitivity(gd, {}, episode, N),
                                _sensitivity(gd, {}, later, N))


def test_cosine_and_l2_of_known_vectors():
  a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
  b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]])
  np.testing.assert_allclose(similarity.cosine_similarity(a, b), [0.0, 1.0, 0.0], atol=1e-7)
  np.testing.assert_allclose(similarity.l2_difference(a, b), [np.sqrt(5), np.sqrt(2), 1.0],
                             rtol=1e-6)


def test_prediction_difference_is_per_point(episode):
  zero_step = LEARNERS.build({"name": "gd", "step_size": 1e-30})
  least_squares = LEARNERS.build({"name": "least_squares"})
  diff = np.asarray(similarity.prediction_difference(zero_step, {}, least_squares, {}, episode))
  assert diff.shape == (16, N + 3)
  # Noiseless and N ≥ d: least squares predicts y exactly, the tiny step predicts ~0.
  np.testing.assert_allclose(diff[:, N:], np.sum(np.square(episode.y[:, N:]), -1), rtol=1e-3)


@pytest.mark.parametrize("position", [-1, N + 3])
def test_bad_position_is_refused(episode, position):
  gd = LEARNERS.build({"name": "gd"})
  message = re.escape(f"position must be in [0, {N + 2}] for episodes of {N + 3} points, got "
                      f"{position}")
  with pytest.raises(ValueError, match=message):
    similarity.sensitivity(gd, {}, episode, position)
  with pytest.raises(ValueError, match=message):
    similarity.compare(gd, {}, gd, {}, episode, position)
