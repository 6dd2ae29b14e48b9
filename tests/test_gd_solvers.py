"""GD-family solvers against hand-written numpy steps and closed forms; the line search's η*."""

import functools
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.learners import LEARNERS, make_baseline, predict_prefix_by_prefix
from metalearn.learners import gd_solvers
from metalearn.tasks import make_task
from tests.episodes import episode_from_arrays


@functools.partial(jax.jit, static_argnums=0)
def _predict(learner, episode):
  return learner.predict({}, episode)


@pytest.fixture(scope="module")
def small_episode():
  """3 prompts of 9 points in 4 dims, 2 outputs not linear in x: k < D, = D, > D all occur."""
  rng = np.random.default_rng(0)
  return episode_from_arrays(rng.normal(size=(3, 9, 4)), rng.normal(size=(3, 9, 2)))


# Hand-written references, one prompt and one prefix at a time, in float64 matrices (not the
# spectral filters the solvers use).

def _gd_plus_plus_one(xc, yc, xq, steps, eta, gamma):
  """von Oswald et al.'s GD++ as its layers act on tokens: residual GD step, then x ← (I − γS)x."""
  k, yq = len(xc), np.zeros(yc.shape[1])
  for _ in range(steps):
    w = eta * xc.T @ yc / k                    # one GD step from 0 on the current residuals
    s = xc.T @ xc / k
    yc, yq = yc - xc @ w, yq - xq @ w
    xc, xq = xc @ (np.eye(len(s)) - gamma * s).T, (np.eye(len(s)) - gamma * s) @ xq
  return -yq


def _preconditioned_gd_one(xc, yc, xq, steps, eta, damping):
  k = len(xc)
  s, b = xc.T @ xc / k, xc.T @ yc / k
  p = np.linalg.inv(s + damping * np.eye(len(s)))
  w = np.zeros_like(b)
  for _ in range(steps):
    w = w - eta * p @ (s @ w - b)
  return xq @ w


def _newton_schulz_one(xc, yc, xq, steps):
  k = len(xc)
  s, b = xc.T @ xc / k, xc.T @ yc / k
  m = np.eye(len(s)) / np.linalg.norm(s)       # Frobenius norm
  for _ in range(steps):
    m = m @ (2 * np.eye(len(s)) - s @ m)
  return xq @ m @ b


def _reference(one, x, y, **settings):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  out = np.zeros(y.shape)
  for b in range(x.shape[0]):
    for i in range(1, x.shape[1]):
      out[b, i] = one(x[b, :i], y[b, :i], x[b, i], **settings)
  return out


@pytest.mark.parametrize("steps, eta, gamma", [(1, 0.5, 0.3), (2, 0.5, 0.2), (4, 0.3, 0.1)])
def test_gd_plus_plus_matches_hand_written_steps(small_episode, steps, eta, gamma):
  learner = LEARNERS.build({"name": "gd_plus_plus", "steps": steps, "step_size": eta,
                            "gamma": gamma})
  expected = _reference(_gd_plus_plus_one, small_episode.x, small_episode.y, steps=steps,
                        eta=eta, gamma=gamma)
  np.testing.assert_allclose(_predict(learner, small_episode), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("steps, eta", [(1, 0.3), (3, 0.2)])
def test_gd_plus_plus_with_gamma_zero_is_the_gd_baseline(small_episode, steps, eta):
  plus = LEARNERS.build({"name": "gd_plus_plus", "steps": steps, "step_size": eta})
  gd = LEARNERS.build({"name": "gd", "steps": steps, "step_size": eta})
  np.testing.assert_allclose(_predict(plus, small_episode), _predict(gd, small_episode),
                             rtol=1e-4, atol=1e-5)


def test_one_gd_step_is_eta_over_n_times_xty(small_episode):
  """ŵ = (η/N) Xᵀy after one step from w = 0 (REFERENCES.md), through the spectral filter."""
  learner = LEARNERS.build({"name": "gd_plus_plus", "step_size": 0.7})
  y_hat = np.asarray(_predict(learner, small_episode))
  x, y = np.asarray(small_episode.x, np.float64), np.asarray(small_episode.y, np.float64)
  for n in range(1, x.shape[1]):
    w = 0.7 / n * np.einsum("bnd,bno->bdo", x[:, :n], y[:, :n])
    np.testing.assert_allclose(y_hat[:, n], np.einsum("bd,bdo->bo", x[:, n], w), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("steps, eta, damping", [(1, 1.0, 0.1), (3, 0.5, 0.01)])
def test_preconditioned_gd_matches_hand_written_steps(small_episode, steps, eta, damping):
  learner = LEARNERS.build({"name": "preconditioned_gd", "steps": steps, "step_size": eta,
                            "damping": damping})
  expected = _reference(_preconditioned_gd_one, small_episode.x, small_episode.y, steps=steps,
                        eta=eta, damping=damping)
  np.testing.assert_allclose(_predict(learner, small_episode), expected, rtol=2e-4, atol=2e-5)


def test_one_preconditioned_step_is_ridge_with_lambda_k_epsilon(small_episode):
  """(S + εI)⁻¹b with S = XᵀX/k, b = Xᵀy/k is (XᵀX + kεI)⁻¹Xᵀy: ridge with λ = kε."""
  y_hat = np.asarray(_predict(LEARNERS.build({"name": "preconditioned_gd", "damping": 0.05}),
                              small_episode))
  for k in (2, 5, 8):
    ridge = _predict(LEARNERS.build({"name": "ridge", "lam": 0.05 * k}), small_episode)
    np.testing.assert_allclose(y_hat[:, k], ridge[:, k], rtol=1e-4, atol=1e-5)


def test_newton_schulz_matches_hand_written_iterations(small_episode):
  learner = LEARNERS.build({"name": "newton_schulz", "steps": 4})
  expected = _reference(_newton_schulz_one, small_episode.x, small_episode.y, steps=4)
  np.testing.assert_allclose(_predict(learner, small_episode), expected, rtol=2e-4, atol=2e-5)


def test_newton_schulz_and_preconditioned_gd_converge_to_least_squares():
  """Well-conditioned X (k ≥ 8 pairs in 3 dims): both reach the least-squares solution."""
  rng = np.random.default_rng(1)
  episode = episode_from_arrays(rng.normal(size=(8, 24, 3)), rng.normal(size=(8, 24, 1)))
  least_squares = np.asarray(_predict(LEARNERS.build({"name": "least_squares"}), episode))
  ns = np.asarray(_predict(LEARNERS.build({"name": "newton_schulz", "steps": 20}), episode))
  pgd = np.asarray(_predict(LEARNERS.build({"name": "preconditioned_gd", "steps": 30,
                                            "damping": 1e-3}), episode))
  np.testing.assert_allclose(ns[:, 8:], least_squares[:, 8:], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(pgd[:, 8:], least_squares[:, 8:], rtol=1e-4, atol=1e-4)
  # Quadratic convergence: few iterations are far off, the error then drops to rounding.
  few = np.asarray(_predict(LEARNERS.build({"name": "newton_schulz", "steps": 2}), episode))
  assert np.abs(few[:, 8:] - least_squares[:, 8:]).max() > 1e-2


@pytest.mark.parametrize("setting", [
    {"name": "gd_plus_plus", "steps": 2, "step_size": 0.4, "gamma": 0.2},
    {"name": "preconditioned_gd", "steps": 2, "damping": 0.1},
    {"name": "newton_schulz", "steps": 3}], ids=lambda s: s["name"])
def test_all_prefix_predict_matches_prefix_by_prefix(setting, small_episode):
  learner = LEARNERS.build(setting)
  episode = small_episode.prefix(6)
  jitted = types.SimpleNamespace(predict=lambda params, e: _predict(learner, e))
  np.testing.assert_allclose(_predict(learner, episode),
                             predict_prefix_by_prefix(jitted, {}, episode), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(_predict(learner, episode))[:, 0], 0.0)


@pytest.mark.parametrize("name, one, settings", [
    ("gd_plus_plus", _gd_plus_plus_one, {"steps": 1, "eta": 1.0, "gamma": 0.0}),
    ("preconditioned_gd", _preconditioned_gd_one, {"steps": 1, "eta": 1.0, "damping": 1e-3}),
    ("newton_schulz", _newton_schulz_one, {"steps": 10})],
    ids=lambda v: v if isinstance(v, str) else "")
def test_a_solver_built_by_name_has_no_parameters_and_its_default_settings(name, one, settings,
                                                                         small_episode):
  """What eval.baselines gives for each name: no meta-parameters, the documented defaults."""
  learner = make_baseline(name, make_task({"name": "linear_regression", "dim": 4}))
  assert learner.init(jax.random.PRNGKey(0), small_episode) == {}
  expected = _reference(one, small_episode.x, small_episode.y, **settings)
  # Looser than above: with the default damping (1e-3) and the many Newton–Schulz steps, the
  # float32 iterations on the k < D prefixes' singular S round to about 1e-3.
  np.testing.assert_allclose(_predict(learner, small_episode), expected, rtol=1e-3, atol=5e-3)


@pytest.mark.parametrize("steps", [1, 3])
def test_spectral_filters_equal_the_matrix_iterations(steps):
  """The tuner's filters c(λ) on S's eigenvalues give the learners' weights ŵ = U c(Λ) Uᵀ b."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 12, 4))
  gram = jnp.asarray(np.einsum("bnd,bne->bde", x, x) / 12, jnp.float32)
  xty = jnp.asarray(rng.normal(size=(5, 4, 2)), jnp.float32)
  lam, basis = np.linalg.eigh(np.asarray(gram, np.float64))
  spectral = lambda c: np.einsum("bde,be,bfe,bfo->bdo", basis, np.asarray(c, np.float64),
                                 basis, np.asarray(xty, np.float64))
  lam = jnp.asarray(lam, jnp.float32)
  pairs = [(gd_solvers.gd_plus_plus_weights(gram, xty, 0.4, 0.2, steps),
            gd_solvers.gd_plus_plus_filter(lam, 0.4, 0.2, steps)),
           (gd_solvers.gd_plus_plus_weights(gram, xty, 0.4, 0.0, steps),
            gd_solvers.gd_filter(lam, 0.4, steps)),
           (gd_solvers.preconditioned_gd_weights(gram, xty, 0.8, steps, 0.1),
            gd_solvers.preconditioned_gd_filter(lam, 0.8, steps, 0.1)),
           (gd_solvers.newton_schulz_weights(gram, xty, steps),
            gd_solvers.newton_schulz_filter(lam, steps))]
  for matrix, filtered in pairs:
    np.testing.assert_allclose(matrix, spectral(filtered), rtol=1e-4, atol=1e-5)


# The line search.

@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample(task, seed, prompts, points):
  return task.sample(jax.random.PRNGKey(seed), prompts, points)


def test_line_search_finds_the_closed_form_step_for_gaussian_x():
  """x ~ N(0, I): the best single step is η* = N/(N + d + 1) (REFERENCES.md), with loss
  d(d + 1)/(N + d + 1): E‖(ηS − I)w‖² = η²·d(N + d + 1)/N − 2ηd + d."""
  dim, n = 4, 8
  task = make_task({"name": "linear_regression", "dim": dim})
  tuned = gd_solvers.tune_gd(_sample(task, 0, 16384, n + 8), n, steps=1)
  assert abs(tuned.step_size - n / (n + dim + 1)) < 0.02 * n / (n + dim + 1)
  assert abs(tuned.loss - dim * (dim + 1) / (n + dim + 1)) < 0.03 * tuned.loss
  assert tuned.grid.shape == (41, 2) and np.all(tuned.losses >= tuned.loss)


def test_line_search_finds_the_closed_form_step_for_uniform_x():
  """x ~ U(−0.5, 0.5) (σ² = 1/12, E x⁴ = 1/80): η* = dσ²/E tr S², where
  E tr S² = [d/80 + d(d − 1)σ⁴]/N + (N − 1)dσ⁴/N; von Oswald et al.'s d = N = 10 gives 6.06."""
  dim, n = 10, 10
  task = make_task({"name": "linear_regression", "dim": dim, "x_distribution": "uniform"})
  tr_s2 = (dim / 80 + dim * (dim - 1) / 144) / n + (n - 1) * dim / 144 / n
  eta = dim / 12 / tr_s2
  tuned = gd_solvers.tune_gd(_sample(task, 1, 16384, n + 8), n, steps=1)
  assert abs(tuned.step_size - eta) < 0.02 * eta
  assert abs(tuned.loss - (dim - (dim / 12) ** 2 / tr_s2) / 12) < 0.03 * tuned.loss


def test_gd_plus_plus_search_beats_gd_and_finds_a_positive_gamma():
  """von Oswald et al.'s setting (bounded x: with Gaussian x, GD++'s loss is ruled by the rare
  prompts with a large eigenvalue, a degree-5 polynomial of it at K = 2)."""
  dim, n = 10, 10
  task = make_task({"name": "linear_regression", "dim": dim, "x_distribution": "uniform"})
  episode = _sample(task, 2, 4096, n + 8)
  gd = gd_solvers.tune_gd(episode, n, steps=2)
  plus = gd_solvers.tune_gd_plus_plus(episode, n, steps=2, points=21)
  assert plus.gamma > 0 and plus.loss < 0.85 * gd.loss
  # The tuned values score as tuned through the learner too (held-out position n).
  learner = LEARNERS.build({"name": "gd_plus_plus", "steps": 2, "step_size": plus.step_size,
                            "gamma": plus.gamma})
  y_hat = _predict(learner, episode)[:, n]
  np.testing.assert_allclose(jnp.mean(jnp.sum((y_hat - episode.y[:, n]) ** 2, -1)), plus.loss,
                             rtol=0.1)


def test_grid_search_finds_a_quadratic_minimum():
  loss = lambda v, centre: jnp.sum((v - centre) ** 2 * jnp.array([1.0, 3.0]))
  best, value, grid, losses = gd_solvers.grid_search(loss, jnp.array([0.37, 1.62]), [0, 0],
                                                     [1, 2], points=11, rounds=10)
  np.testing.assert_allclose(best, [0.37, 1.62], atol=1e-4)
  assert grid.shape == (121, 2) and value == losses.min() < 1e-7


# Bad inputs.

@pytest.mark.parametrize("section, message", [
    ({"name": "gd_plus_plus", "steps": 0}, "gd_plus_plus steps must be an integer >= 1, got 0"),
    ({"name": "gd_plus_plus", "step_size": 0}, "gd_plus_plus step_size must be a number > 0, "
                                               "got 0"),
    ({"name": "gd_plus_plus", "gamma": -0.1}, "gd_plus_plus gamma must be a number >= 0, "
                                              "got -0.1"),
    ({"name": "preconditioned_gd", "damping": 0.0}, "preconditioned_gd damping must be a number "
                                                    "> 0, got 0.0"),
    ({"name": "newton_schulz", "steps": 1.5}, "model.steps must be an integer, got 1.5 "
                                              "(float)"),
])
def test_bad_settings_are_refused(section, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    LEARNERS.build(section)


@pytest.mark.parametrize("context_points", [0, 6])
def test_tuning_needs_a_query_after_the_context(small_episode, context_points):
  episode = small_episode.prefix(6)
  with pytest.raises(ValueError, match=re.escape(
      f"context_points must be in [1, 5] for episodes of 6 points (a query must follow), got "
      f"{context_points}")):
    gd_solvers.tune_gd(episode, context_points, steps=1)
