"""Algorithmic baselines against plain-numpy references and closed forms (REFERENCES.md)."""

import functools
import re
import types

import jax
import numpy as np
import pytest

from metalearn.learners import LEARNERS, baseline_names, make_baseline, predict_prefix_by_prefix
from metalearn.tasks import make_task
from tests.episodes import episode_from_arrays

# The closed-form tests' episodes: d = 8, k = 0 .. 2d + 1 examples.
DIM = 8
NUM_PROMPTS = 1000
POINTS = 2 * DIM + 2

SETTINGS = [
    {"name": "least_squares"},
    {"name": "ridge", "lam": 0.5},
    {"name": "averaging"},
    {"name": "knn", "k": 3},
    {"name": "knn", "k": 1},
    {"name": "gd", "steps": 3, "step_size": 0.2},
]


# Plain-numpy references: one prompt, one prefix at a time, in float64.

def _reference_one(setting, x_prefix, y_prefix, query):
  """The prediction for `query` [D] from the pairs x_prefix [k, D], y_prefix [k, O]."""
  k, dim = x_prefix.shape
  if k == 0:
    return np.zeros(y_prefix.shape[1])
  name = setting["name"]
  if name == "least_squares":
    w = np.linalg.lstsq(x_prefix, y_prefix, rcond=None)[0]        # the minimum-norm solution
  elif name == "ridge":
    w = np.linalg.solve(x_prefix.T @ x_prefix + setting["lam"] * np.eye(dim), x_prefix.T @ y_prefix)
  elif name == "averaging":
    w = sum(np.outer(x_prefix[j], y_prefix[j]) for j in range(k)) / k
  elif name == "knn":
    dist = [np.sum((x_prefix[j] - query) ** 2) for j in range(k)]
    nearest = sorted(range(k), key=lambda j: dist[j])[:setting["k"]]
    return np.mean(y_prefix[nearest], axis=0)
  elif name == "gd":
    w = np.zeros((dim, y_prefix.shape[1]))
    for _ in range(setting["steps"]):
      grad = x_prefix.T @ (x_prefix @ w - y_prefix) / k
      w = w - setting["step_size"] * grad
  return query @ w


def _reference(setting, x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return np.stack([np.stack([_reference_one(setting, x[b, :i], y[b, :i], x[b, i])
                             for i in range(x.shape[1])]) for b in range(x.shape[0])])


@pytest.fixture(scope="module")
def small_episode():
  """3 prompts of 7 points in 3 dims with 2 outputs: k < D, k = D and k > D all occur.

  y is not a linear function of x, so the least-squares prefixes past D are truly
  overdetermined.
  """
  rng = np.random.default_rng(0)
  return episode_from_arrays(rng.normal(size=(3, 7, 3)), rng.normal(size=(3, 7, 2)))


@functools.partial(jax.jit, static_argnums=0)
def _predict(learner, episode):
  """Compiled once per (learner, shape): learners are frozen, hashable dataclasses."""
  return learner.predict({}, episode)


@functools.partial(jax.jit, static_argnums=0)
def _sample(task, seed, active_dims):
  """NUM_PROMPTS prompts of POINTS points; one compile serves every seed and active_dims."""
  return task.sample(jax.random.PRNGKey(seed), NUM_PROMPTS, POINTS, active_dims)


def _errors(learner, episode):
  """Per-prompt normalised error [batch, points]: squared error / the zero predictor's."""
  y_hat = _predict(learner, episode)
  return np.asarray(np.sum((y_hat - episode.y) ** 2, axis=-1) / episode.zero_loss[:, None])


def _mean_and_standard_error(errors):
  return errors.mean(axis=0), errors.std(axis=0, ddof=1) / np.sqrt(errors.shape[0])


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_all_prefix_predict_matches_numpy_reference(setting, small_episode):
  learner = LEARNERS.build(setting)
  y_hat = np.asarray(_predict(learner, small_episode))
  assert y_hat.shape == small_episode.y.shape
  np.testing.assert_array_equal(y_hat[:, 0], 0.0)  # no examples: predict zero
  np.testing.assert_allclose(y_hat, _reference(setting, small_episode.x, small_episode.y),
                             rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("setting", SETTINGS[:-2] + SETTINGS[-1:],  # one knn
                         ids=lambda s: "-".join(map(str, s.values())))
def test_all_prefix_predict_matches_prefix_by_prefix(setting, small_episode):
  learner = LEARNERS.build(setting)
  # 5 points (one compile per prefix length) still reach k > D = 3.
  episode = small_episode.prefix(5)
  jitted = types.SimpleNamespace(predict=lambda params, episode: _predict(learner, episode))
  np.testing.assert_allclose(jitted.predict({}, episode),
                             predict_prefix_by_prefix(jitted, {}, episode), rtol=1e-4, atol=1e-4)


def test_the_baselines_are_the_learners_without_meta_parameters():
  """eval.baselines may name exactly these (test_gd_solvers.py checks the GD solvers')."""
  assert baseline_names() == ["averaging", "bayes_mixture", "bayes_ridge", "dmmse", "gd",
                              "gd_plus_plus", "knn", "lasso", "least_squares", "newton_schulz",
                              "preconditioned_gd", "ridge"]


# Each baseline a name alone builds (what eval.baselines gives) and its settings then; on a
# noiseless task 'bayes_ridge' (λ = σ²/τ² = 0) is minimum-norm least squares.
DEFAULTS = {"least_squares": {"name": "least_squares"}, "ridge": {"name": "ridge", "lam": 1.0},
            "averaging": {"name": "averaging"}, "knn": {"name": "knn", "k": 3},
            "gd": {"name": "gd", "steps": 1, "step_size": 1.0},
            "bayes_ridge": {"name": "least_squares"}}


@pytest.mark.parametrize("name", DEFAULTS)
def test_a_baseline_built_by_name_has_no_parameters_and_its_default_settings(name,
                                                                           small_episode):
  learner = make_baseline(name, make_task({"name": "linear_regression", "dim": 3}))
  assert learner.init(jax.random.PRNGKey(0), small_episode) == {}
  np.testing.assert_allclose(_predict(learner, small_episode),
                             _reference(DEFAULTS[name], small_episode.x, small_episode.y),
                             rtol=2e-4, atol=2e-4)


# Closed forms: noiseless linear regression, x ~ N(0, I), w ~ N(0, I), d = DIM = 8.
# One episode shape throughout, so each learner compiles once.

@pytest.fixture(scope="module")
def noiseless_episode():
  task = make_task({"name": "linear_regression", "dim": DIM})
  return _sample(task, 2, DIM)


@pytest.fixture(scope="module")
def noiseless_least_squares(noiseless_episode):
  """Least-squares predictions on `noiseless_episode`, shared by the tests below."""
  return _predict(LEARNERS.build({"name": "least_squares"}), noiseless_episode)


def test_least_squares_takes_zero_padded_dimensions():
  """With dims switched off (a curriculum), x has zero columns and the fit stays finite."""
  task = make_task({"name": "linear_regression", "dim": DIM})
  episode = _sample(task, 1, 3)
  errors = _errors(LEARNERS.build({"name": "least_squares"}), episode)
  assert np.all(np.isfinite(errors))
  assert errors[:, 3:].max() < 1e-6  # 3 active dims: exact from 3 examples on


def test_least_squares_error_is_the_missing_fraction_of_dimensions(noiseless_episode,
                                                                  noiseless_least_squares):
  """E[error] / d = (d − k)/d for k < d: the min-norm fit is w projected on k random directions."""
  errors = np.sum((noiseless_least_squares - noiseless_episode.y) ** 2, axis=-1) / DIM
  mean, stderr = _mean_and_standard_error(np.asarray(errors))
  k = np.arange(DIM)
  assert np.all(np.abs(mean[:DIM] - (DIM - k) / DIM) < 4.5 * stderr[:DIM])
  assert mean[DIM] < 1e-3 and mean[DIM + 1:].max() < 1e-6


def test_averaging_error_is_d_plus_one_over_k(noiseless_episode):
  """ŵ = S w with S = (1/k) Σ x xᵀ, so E‖ŵ − w‖² = tr E[(S − I)²] = tr E[S²] − d.

  E[S²] = ((k − 1)I + E[‖x‖² x xᵀ]) / k = (1 + (d + 1)/k) I, as E[‖x‖² x xᵀ] = (d + 2)I;
  the normalised error is exactly (d + 1)/k at every k ≥ 1, not only for large k.
  """
  mean, stderr = _mean_and_standard_error(_errors(LEARNERS.build({"name": "averaging"}),
                                                  noiseless_episode))
  k = np.arange(1, mean.shape[0])
  assert np.all(np.abs(mean[1:] - (DIM + 1) / k) < 4.5 * stderr[1:])
  assert abs(mean[0] - 1.0) < 4.5 * stderr[0]  # no examples: the zero predictor


def test_one_gd_step_is_eta_over_n_times_xty(noiseless_episode):
  """One step from w = 0 on (1/2N)Σ(wᵀx − y)² gives ŵ = (η/N) Xᵀy (von Oswald et al. 2022)."""
  eta = 0.3
  episode = jax.tree.map(lambda a: a[:64], noiseless_episode)
  y_hat = np.asarray(_predict(LEARNERS.build({"name": "gd", "step_size": eta}), episode))
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  for n in range(1, x.shape[1]):
    w = eta / n * np.einsum("bnd,bno->bdo", x[:, :n], y[:, :n])
    np.testing.assert_allclose(y_hat[:, n], np.einsum("bd,bdo->bo", x[:, n], w),
                               rtol=1e-4, atol=1e-4)


def test_ridge_with_tiny_lambda_is_least_squares_past_d(noiseless_episode,
                                                       noiseless_least_squares):
  ridge = _predict(LEARNERS.build({"name": "ridge", "lam": 1e-6}), noiseless_episode)
  np.testing.assert_allclose(ridge[:, DIM + 2:], noiseless_least_squares[:, DIM + 2:],
                             rtol=1e-3, atol=1e-3)


def test_bayes_ridge_beats_least_squares_on_noisy_data_near_k_equals_d(noiseless_episode):
  """With λ = σ²/τ² ridge is the posterior mean (Akyürek et al. 2022), hence no worse
  at any k; near k = d, where least squares interpolates the noise, by a wide margin."""
  task = make_task({"name": "linear_regression", "dim": DIM, "noise_std": 0.5})
  # The task's distribution, built from the noiseless prompts (one sampler compile for all tests).
  noise = 0.5 * jax.random.normal(jax.random.PRNGKey(3), noiseless_episode.y.shape)
  episode = noiseless_episode.replace(y=noiseless_episode.y + noise,
                                      zero_loss=noiseless_episode.zero_loss + 0.5**2)
  ridge = make_baseline("bayes_ridge", task)
  assert ridge == LEARNERS.build({"name": "ridge", "lam": 0.25})
  ridge_mean, ridge_stderr = _mean_and_standard_error(_errors(ridge, episode))
  ls_mean, ls_stderr = _mean_and_standard_error(
      _errors(LEARNERS.build({"name": "least_squares"}), episode))
  assert np.all(ridge_mean[1:] < ls_mean[1:] + 3 * np.hypot(ridge_stderr, ls_stderr)[1:])
  near_d = slice(DIM - 1, DIM + 2)
  assert np.all(ridge_mean[near_d] < 0.5 * ls_mean[near_d])


# Bad inputs.

@pytest.mark.parametrize("section, message", [
    ({"name": "ridge", "lam": 0.0}, "ridge lam must be a number > 0, got 0.0"),
    ({"name": "ridge", "lam": -1}, "ridge lam must be a number > 0, got -1"),
    ({"name": "ridge", "lam": float("nan")}, "model.lam must be a finite number, got nan"),
    ({"name": "knn", "k": 0}, "knn k must be an integer >= 1, got 0"),
    ({"name": "knn", "k": 2.5}, "model.k must be an integer, got 2.5 (float)"),
    ({"name": "gd", "steps": 0}, "gd steps must be an integer >= 1, got 0"),
    ({"name": "gd", "step_size": -0.1}, "gd step_size must be a number > 0, got -0.1"),
    ({"name": "least_squares", "rtol": 0}, "least_squares rtol must be a number > 0, got 0"),
])
def test_bad_settings_are_refused_with_the_value_and_what_is_allowed(section, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    LEARNERS.build(section)
