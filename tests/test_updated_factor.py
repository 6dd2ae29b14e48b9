"""Least squares and ridge at every prefix (learners/updated_factor.py) against float64 numpy.

Garg et al.'s shape (41 points, d = 20) on fewer prompts: every prefix of every prompt is
solved again in float64 with a pseudo-inverse or a ridge solve, one at a time.
"""

import functools

import jax
import numpy as np
import pytest

from metalearn.analysis.implicit_weights import implicit_weights
from metalearn.learners import LEARNERS
from metalearn.learners.capabilities import PredictsQueries
from metalearn.tasks import make_task
from tests.episodes import episode_from_arrays

PROMPTS, POINTS, DIM = 48, 41, 20


def _every_prefix_float64(x, y, lam=None):
  """[B, P, O]: position i from pairs 0..i-1, minimum-norm least squares or ridge λ."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  out = np.zeros(y.shape)
  for b in range(x.shape[0]):
    for i in range(1, x.shape[1]):
      design, targets = x[b, :i], y[b, :i]
      if lam is None:
        w = np.linalg.pinv(design, rcond=1e-10) @ targets
      else:
        w = np.linalg.solve(design.T @ design + lam * np.eye(x.shape[2]), design.T @ targets)
      out[b, i] = x[b, i] @ w
  return out


@functools.partial(jax.jit, static_argnums=0)
def _predict(learner, episode):
  return learner.predict({}, episode)


def _normalised_errors(y_hat, y, dim):
  """Per position, the mean over prompts of |ŷ − y|² / d (Garg et al.'s normalisation)."""
  return np.mean(np.sum(np.square(np.asarray(y_hat, np.float64) - y), -1), 0) / dim


@pytest.fixture(scope="module")
def garg_prompts():
  """Noiseless linear regression, x ~ N(0, I), w ~ N(0, I)."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((PROMPTS, POINTS, DIM)).astype(np.float32)
  w = rng.standard_normal((PROMPTS, DIM, 1))
  return x, (x @ w).astype(np.float32)


def test_least_squares_error_past_d_is_within_1e7_of_float64_and_min_norm_below(garg_prompts):
  x, y = garg_prompts
  y_hat = np.asarray(_predict(LEARNERS.build({"name": "least_squares"}),
                              episode_from_arrays(x, y)))
  reference = _every_prefix_float64(x, y)
  errors, reference_errors = (_normalised_errors(p, y, DIM) for p in (y_hat, reference))
  np.testing.assert_array_less(np.abs(errors[DIM:] - reference_errors[DIM:]), 1e-7)
  # Below d the fit is underdetermined: the minimum-norm interpolant's predictions.
  np.testing.assert_allclose(y_hat[:, :DIM], reference[:, :DIM], rtol=1e-4, atol=1e-4)
  assert reference_errors[DIM - 1] > 0.01  # the test can tell: one example short of exact


@pytest.mark.parametrize("lam", [0.5, 1e-3])
def test_ridge_at_every_prefix_matches_float64(garg_prompts, lam):
  x, y = garg_prompts
  noisy = y + 0.1 * np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
  y_hat = np.asarray(_predict(LEARNERS.build({"name": "ridge", "lam": lam}),
                              episode_from_arrays(x, noisy)))
  reference = _every_prefix_float64(x, noisy, lam)
  np.testing.assert_allclose(y_hat, reference, rtol=1e-4, atol=2e-4)
  np.testing.assert_array_less(np.abs(_normalised_errors(y_hat, noisy, DIM)
                                      - _normalised_errors(reference, noisy, DIM)), 1e-6)


def test_least_squares_with_repeated_inputs_and_unused_dimensions_is_min_norm():
  """Inputs in a 4-dim subspace of 8 (zero-padded), each shown twice: the rank stays 4 and
  the repeated rows must count as inside the span, not as new directions."""
  rng = np.random.default_rng(2)
  active = rng.standard_normal((6, 8, 4))
  x = np.concatenate([active, np.zeros((6, 8, 4))], -1)
  x = np.repeat(x, 2, axis=1).astype(np.float32)                        # 16 points, pairs
  y = (x @ rng.standard_normal((6, 8, 2)) + 0.3 * rng.standard_normal((6, 16, 2)))
  y = y.astype(np.float32)
  y_hat = np.asarray(_predict(LEARNERS.build({"name": "least_squares"}),
                              episode_from_arrays(x, y)))
  np.testing.assert_allclose(y_hat, _every_prefix_float64(x, y), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("setting", [{"name": "least_squares"}, {"name": "ridge", "lam": 0.5}])
def test_more_prompts_than_one_chunk_are_each_their_own_fit(setting):
  """300 prompts go in chunks of 128 and a padded last one: the same predictions as three
  calls of 100 prompts (one fit each), and as float64 on the well-conditioned positions."""
  rng = np.random.default_rng(4)
  x = rng.standard_normal((300, 7, 3)).astype(np.float32)
  y = rng.standard_normal((300, 7, 1)).astype(np.float32)
  learner = LEARNERS.build(setting)
  y_hat = np.asarray(_predict(learner, episode_from_arrays(x, y)))
  alone = np.concatenate([np.asarray(_predict(learner, episode_from_arrays(x[i:i + 100],
                                                                           y[i:i + 100])))
                          for i in range(0, 300, 100)])
  np.testing.assert_allclose(y_hat, alone, rtol=1e-5, atol=1e-5)
  reference = _every_prefix_float64(x, y, setting.get("lam"))
  assert np.mean(np.abs(y_hat - reference) < 1e-4) > 0.99


@pytest.mark.parametrize("setting", [{"name": "least_squares"}, {"name": "ridge", "lam": 0.5}])
def test_predicting_queries_from_a_fitted_context_is_the_context_weights(setting):
  rng = np.random.default_rng(3)
  x = rng.standard_normal((5, 12, 6)).astype(np.float32)
  y = rng.standard_normal((5, 12, 1)).astype(np.float32)
  queries = rng.standard_normal((5, 9, 6)).astype(np.float32)
  learner = LEARNERS.build(setting)
  assert isinstance(learner, PredictsQueries)
  for shots in (4, 6, 12):                                              # below, at, past d
    y_hat = np.asarray(learner.predict_queries({}, episode_from_arrays(x[:, :shots],
                                                                       y[:, :shots]), queries))
    design, targets = x[:, :shots].astype(np.float64), y[:, :shots].astype(np.float64)
    if setting["name"] == "ridge":
      gram = np.swapaxes(design, 1, 2) @ design + setting["lam"] * np.eye(6)
      w = np.linalg.solve(gram, np.swapaxes(design, 1, 2) @ targets)
    else:
      w = np.linalg.pinv(design) @ targets
    np.testing.assert_allclose(y_hat, queries @ w, rtol=1e-4, atol=1e-4)


def test_implicit_weights_of_least_squares_are_its_weights():
  """The analysis's fast path (one fit per prompt) recovers ŵ = X⁺y of the first k pairs."""
  task = make_task({"name": "linear_regression", "dim": 5})
  episode = task.sample(jax.random.PRNGKey(0), 4, 9)
  learner = LEARNERS.build({"name": "least_squares"})
  for shots in (3, 5, 8):
    w_hat = implicit_weights(learner, {}, task, episode, shots, 12, 0, 2)
    x, y = (np.asarray(a[:, :shots], np.float64) for a in (episode.x, episode.y))
    np.testing.assert_allclose(w_hat, np.linalg.pinv(x) @ y, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("setting", [{"name": "least_squares"}, {"name": "ridge"},
                                     {"name": "gd", "steps": 3}])
def test_the_compiled_baseline_calls_no_library_kernel(setting):
  """No LAPACK (or other custom) call: jaxlib's CPU kernels share XLA's thread pool, and
  several of them in one program have deadlocked it."""
  episode = episode_from_arrays(np.ones((4, 41, 20), np.float32), np.ones((4, 41, 1), np.float32))
  text = _predict.lower(LEARNERS.build(setting), episode).as_text()
  assert "custom_call" not in text
