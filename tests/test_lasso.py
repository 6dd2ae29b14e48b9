"""Lasso on every prefix against scikit-learn's coordinate descent run to convergence."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import Lasso as SklearnLasso

from metalearn.core.episode import Episode
from metalearn.learners import LEARNERS, predict_prefix_by_prefix


def _sparse_prompts(seed, batch, points, dim, noise_std):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, points, dim))
  w = rng.normal(size=(batch, dim, 1)) * (rng.random((batch, dim, 1)) < 0.4)
  y = x @ w + noise_std * rng.normal(size=(batch, points, 1))
  return x.astype(np.float32), y.astype(np.float32)


def _episode(x, y):
  return Episode(x=x, y=y, mask=np.ones(x.shape[:2], np.float32),
                 zero_loss=np.ones(x.shape[0], np.float32), info={})


def _reference(x, y, alpha):
  """Each prefix fitted in float64 by scikit-learn; position 0 predicts 0."""
  out = np.zeros(y.shape, np.float64)
  for b in range(x.shape[0]):
    for i in range(1, x.shape[1]):
      fit = SklearnLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000)
      fit.fit(x[b, :i].astype(np.float64), y[b, :i, 0].astype(np.float64))
      out[b, i, 0] = x[b, i].astype(np.float64) @ fit.coef_
  return out


@pytest.mark.parametrize("dim, noise_std, alpha", [(5, 0.0, 0.1), (8, 0.5, 0.05), (8, 0.1, 0.5)])
def test_every_prefix_is_scikit_learns_lasso(dim, noise_std, alpha):
  """k < d, k = d and k > d all appear. 1e-4: FISTA's float32 iterates after 500 steps against
  a float64 fit converged to 1e-12 (the gap is the solver's, not float32's ~1e-6)."""
  x, y = _sparse_prompts(dim, 4, 2 * dim + 3, dim, noise_std)
  lasso = LEARNERS.build({"name": "lasso", "alpha": alpha})
  got = jax.jit(lasso.predict)({}, _episode(x, y))
  np.testing.assert_allclose(got, _reference(x, y, alpha), rtol=1e-4, atol=1e-4)


def test_nothing_known_predicts_zero():
  x, y = _sparse_prompts(0, 3, 9, 5, 0.1)
  got = np.asarray(jax.jit(LEARNERS.build({"name": "lasso"}).predict)({}, _episode(x, y)))
  np.testing.assert_array_equal(got[:, 0], 0.0)                 # no examples yet
  huge = LEARNERS.build({"name": "lasso", "alpha": 1e6})        # α above |Xᵀy|/k: w = 0
  np.testing.assert_array_equal(jax.jit(huge.predict)({}, _episode(x, y)), 0.0)


def test_all_prefixes_at_once_equal_prefix_by_prefix():
  x, y = _sparse_prompts(1, 3, 8, 4, 0.2)
  lasso = LEARNERS.build({"name": "lasso", "alpha": 0.1})
  episode = _episode(x, y)
  np.testing.assert_allclose(jax.jit(lasso.predict)({}, episode),
                             predict_prefix_by_prefix(lasso, {}, episode), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fields, match", [
    ({"alpha": 0.0}, "lasso alpha.*0.0"), ({"alpha": -1.0}, "lasso alpha.*-1.0"),
    ({"iterations": 0}, "lasso iterations.*0"), ({"iterations": 1.5}, "iterations must be an integer, got 1.5"),
])
def test_bad_settings_are_refused_naming_the_value(fields, match):
  with pytest.raises(ValueError, match=match):
    LEARNERS.build({"name": "lasso", **fields})
