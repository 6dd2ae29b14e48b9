"""Implicit linear weights against closed forms: least squares, averaging, one GD step."""

import jax
import numpy as np
import pytest

from metalearn.analysis import implicit_weights as iw
from metalearn.learners import make_learner
from metalearn.tasks import make_task

DIM, POINTS, PROMPTS = 4, 9, 24


@pytest.fixture(scope="module")
def task():
  return make_task({"name": "linear_regression", "dim": DIM})


@pytest.fixture(scope="module")
def episode(task):
  return task.sample(jax.random.PRNGKey(3), PROMPTS, POINTS)


def _weights(name, task, episode, shots, **fields):
  learner = make_learner({"name": name, **fields})
  return iw.implicit_weights(learner, {}, task, episode, shots, num_probes=2 * DIM, seed=0,
                             batch_size=10)


@pytest.mark.parametrize("shots", [2, DIM, POINTS - 1])
def test_least_squares_weights_are_the_minimum_norm_fit(task, episode, shots):
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  expected = np.stack([np.linalg.pinv(x[b, :shots]) @ y[b, :shots] for b in range(PROMPTS)])
  found = _weights("least_squares", task, episode, shots)
  assert found.shape == (PROMPTS, DIM, 1)
  np.testing.assert_allclose(found, expected, rtol=1e-3, atol=1e-3)
  if shots >= DIM:  # noiseless and determined: the task's own weights
    np.testing.assert_allclose(found, episode.info["w"], rtol=1e-3, atol=1e-3)


def test_averaging_and_one_gd_step_are_scaled_xty(task, episode):
  shots, eta = 5, 0.7
  x, y = np.asarray(episode.x[:, :shots]), np.asarray(episode.y[:, :shots])
  xty = np.einsum("bpd,bpo->bdo", x, y)
  np.testing.assert_allclose(_weights("averaging", task, episode, shots), xty / shots,
                             rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(_weights("gd", task, episode, shots, step_size=eta),
                             eta / shots * xty, rtol=1e-3, atol=1e-4)


def test_identical_learners_have_zero_difference_and_others_do_not(task, episode):
  a = _weights("least_squares", task, episode, 3)
  b = _weights("least_squares", task, episode, 3)
  np.testing.assert_array_equal(iw.weight_difference(a, b), 0.0)
  c = _weights("averaging", task, episode, 3)
  assert np.all(iw.weight_difference(a, c) > 0)
  np.testing.assert_allclose(iw.weight_difference(a, c),
                             np.sum((a - c) ** 2, axis=(1, 2)), rtol=1e-6)


def test_chunking_does_not_change_the_probes(task, episode):
  learner = make_learner({"name": "transformer", "hidden": 16, "num_layers": 1, "num_heads": 2,
                          "max_points": POINTS})
  params = learner.init(jax.random.PRNGKey(0), episode)
  whole = iw.implicit_weights(learner, params, task, episode, 4, 8, 0, PROMPTS)
  chunked = iw.implicit_weights(learner, params, task, episode, 4, 8, 0, 7)
  np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)


def test_bad_inputs(task, episode):
  with pytest.raises(ValueError, match=r"at least dim = 4 probe inputs.*num_probes=3"):
    iw.implicit_weights(make_learner({"name": "averaging"}), {}, task, episode, 2, 3, 0, 8)
  with pytest.raises(ValueError, match=r"at 9 examples: allowed 0 to 8"):
    iw.implicit_weights(make_learner({"name": "averaging"}), {}, task, episode, 9, 8, 0, 8)
  fixed = make_learner({"name": "gd_layers", "context_points": 5})
  with pytest.raises(ValueError, match=r"adapts on 5 context points.*asked for 3"):
    iw.implicit_weights(fixed, {}, task, episode, 3, 8, 0, 8)
