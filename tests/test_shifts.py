"""Distribution shifts (Garg et al. 2022, section 4): each against its definition and a known answer."""

import functools

import jax
import numpy as np
import pytest

from metalearn.evaluation import prompts
from metalearn.tasks import shifts
from metalearn.tasks.linear import LinearRegression, SparseLinearRegression
from metalearn.tasks.sinusoid import Sinusoid

DIM, POINTS, CONTEXT = 6, 10, 4
TASK = LinearRegression(dim=DIM, w_scale=0.7, noise_std=0.5)
NOISELESS = LinearRegression(dim=DIM)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5, 6))
def sample(task, shift, seed, batch, points=POINTS, context=CONTEXT,
           settings=shifts.ShiftSettings()):
  """shifts.sample_shifted under jit (eager sampling dispatches op by op and is slow)."""
  return shifts.sample_shifted(task, shift, jax.random.PRNGKey(seed), batch, points, context,
                               settings)


def test_shapes_and_batch_order():
  ep = shifts.shift_episodes(TASK, shifts.SHIFTS, 3, POINTS, CONTEXT, seed=1)
  n = len(shifts.SHIFTS) * 3
  assert ep.x.shape == (n, POINTS, DIM) and ep.y.shape == (n, POINTS, 1)
  assert ep.zero_loss.shape == (n,) and ep.info["w"].shape == (n, DIM, 1)
  np.testing.assert_array_equal(ep.mask, 1.0)
  blocks = shifts.by_shift(np.asarray(ep.x), shifts.SHIFTS)
  # Every shift starts from the same base prompts, so known relations fix the order.
  np.testing.assert_allclose(blocks["scaled_x"], 2.0 * blocks["none"], rtol=1e-6)
  np.testing.assert_array_equal(blocks["noisy_y"], blocks["none"])
  np.testing.assert_array_equal(np.abs(blocks["orthants"]), np.abs(blocks["none"]))
  # Each block is what sample_shifted gives on the same key.
  for shift in shifts.SHIFTS:
    one = sample(TASK, shift, 1, 3)
    np.testing.assert_allclose(blocks[shift], one.x, rtol=1e-5, atol=1e-6)
  reversed_ep = shifts.shift_episodes(TASK, ("scaled_x", "none"), 3, POINTS, CONTEXT, seed=1)
  np.testing.assert_allclose(reversed_ep.x[:3], 2.0 * reversed_ep.x[3:], rtol=1e-6)


def test_orthonormal_columns_are_numpys_qr_with_a_positive_diagonal():
  a = np.random.default_rng(0).normal(size=(7, 5))
  q, r = np.linalg.qr(a)
  np.testing.assert_allclose(shifts._orthonormal_columns(a.astype(np.float32)),
                             q * np.sign(np.diag(r)), atol=1e-5)


def test_the_shifts_call_no_lapack_kernel():
  """Several batched LAPACK kernels in one compiled call can deadlock XLA's CPU thread pool."""
  hlo = jax.jit(shifts.shift_episodes, static_argnums=(0, 1, 2, 3, 4)).lower(
      TASK, shifts.SHIFTS, 3, POINTS, CONTEXT).as_text()
  assert "lapack" not in hlo.lower()


def test_none_is_the_task_itself():
  ep = sample(TASK, "none", 2, 5)
  base = jax.jit(TASK.sample, static_argnums=(1, 2))(jax.random.PRNGKey(2), 5, POINTS)
  for a, b in zip(jax.tree.leaves(ep), jax.tree.leaves(base)):
    np.testing.assert_array_equal(a, b)
  stacked = shifts.shift_episodes(TASK, ("none", "scaled_w"), 4, POINTS, CONTEXT, seed=3)
  held_out = prompts.held_out_episodes(TASK, 4, POINTS, 3)
  np.testing.assert_array_equal(stacked.x[:4], held_out.x)
  np.testing.assert_array_equal(stacked.y[:4], held_out.y)


def test_skewed_covariance_spectrum():
  ep = sample(NOISELESS, "skewed_covariance", 0, 3, points=4000, context=1)
  expected = np.arange(1, DIM + 1) ** -2.0
  expected *= DIM / expected.sum()                                 # trace Σ = DIM
  top = []
  for x in np.asarray(ep.x, np.float64):
    eigenvalues, vectors = np.linalg.eigh(x.T @ x / len(x))
    # 4,000 points: each sample eigenvalue within a few percent of λ_i ∝ i^-2.
    np.testing.assert_allclose(eigenvalues[::-1], expected, rtol=0.1)
    top.append(vectors[:, -1])
  assert abs(top[0] @ top[1]) < 0.99                               # U is drawn per prompt
  np.testing.assert_allclose(np.mean(np.sum(np.asarray(ep.x) ** 2, -1)), DIM, rtol=0.05)


@pytest.mark.parametrize("shift", ["scaled_x", "scaled_w"])
def test_scaling_is_exact(shift):
  settings = shifts.ShiftSettings(x_scale=3.0, w_scale=0.5)
  base, ep = sample(TASK, "none", 4, 8), sample(TASK, shift, 4, 8, settings=settings)
  scale = 3.0 if shift == "scaled_x" else 0.5
  np.testing.assert_allclose(ep.zero_loss, scale**2 * 0.7**2 * DIM + 0.5**2, rtol=1e-6)
  if shift == "scaled_x":
    np.testing.assert_allclose(ep.x, 3.0 * base.x, rtol=1e-6)
  else:
    np.testing.assert_allclose(ep.info["w"], 0.5 * base.info["w"], rtol=1e-6)
  clean = sample(NOISELESS, shift, 4, 8, settings=settings)
  np.testing.assert_allclose(clean.y, clean.x @ clean.info["w"], rtol=1e-5, atol=1e-5)


def test_noisy_y_residual_std():
  settings = shifts.ShiftSettings(noise_std=0.7)
  for task, std in [(NOISELESS, 0.7), (TASK, np.hypot(0.5, 0.7))]:
    ep = sample(task, "noisy_y", 5, 200, settings=settings)
    residual = np.asarray(ep.y - ep.x @ ep.info["w"])
    # 2,000 residuals: the sample std is within ~1.6% (one standard error) of σ.
    np.testing.assert_allclose(residual.std(), std, rtol=0.05)
    np.testing.assert_allclose(ep.zero_loss, task.w_scale**2 * DIM + std**2, rtol=1e-6)


def test_orthants():
  ep = sample(TASK, "orthants", 6, 16, points=40, context=10)
  signs = np.sign(np.asarray(ep.x))
  np.testing.assert_array_equal(signs[:, :10], np.broadcast_to(signs[:, :1], signs[:, :10].shape))
  assert len({tuple(s) for s in signs[:, 0]}) > 4                  # one random orthant per prompt
  for prompt in signs[:, 10:]:                                      # queries keep their own signs
    assert len({tuple(s) for s in prompt}) > 1
  clean = sample(NOISELESS, "orthants", 6, 4, points=40, context=10)
  np.testing.assert_allclose(clean.y, clean.x @ clean.info["w"], rtol=1e-5, atol=1e-5)


def test_orthogonal_query():
  base, ep = sample(TASK, "none", 7, 8), sample(TASK, "orthogonal_query", 7, 8)
  x = np.asarray(ep.x, np.float64)
  context, queries = x[:, :CONTEXT], x[:, CONTEXT:]
  cosines = np.einsum("bqd,bcd->bqc", queries, context) / (
      np.linalg.norm(queries, axis=-1)[:, :, None] * np.linalg.norm(context, axis=-1)[:, None])
  assert np.max(np.abs(cosines)) < 1e-4
  np.testing.assert_array_equal(ep.x[:, :CONTEXT], base.x[:, :CONTEXT])
  np.testing.assert_allclose(np.linalg.norm(queries, axis=-1),
                             np.linalg.norm(base.x[:, CONTEXT:], axis=-1), rtol=1e-5)


def test_repeated_query():
  ep = sample(NOISELESS, "repeated_query", 8, 200, points=12, context=4)
  x, y = np.asarray(ep.x), np.asarray(ep.y)
  chosen = []
  for xp, yp in zip(x, y):
    for q in range(4, 12):
      matches = np.flatnonzero(np.all(xp[:4] == xp[q], axis=-1))
      assert len(matches) == 1
      np.testing.assert_allclose(yp[q], yp[matches[0]], rtol=1e-5, atol=1e-6)   # noiseless
      chosen.append(matches[0])
  # 1,600 uniform draws over 4 context points: each ~400 ± 17.
  np.testing.assert_allclose(np.bincount(chosen, minlength=4) / len(chosen), 0.25, atol=0.04)


@pytest.mark.parametrize("dim", [6, pytest.param(7, marks=pytest.mark.slow)])
def test_half_subspace(dim):
  task = LinearRegression(dim=dim)
  ep = sample(task, "half_subspace", 9, 200, points=12, context=3)
  x = np.asarray(ep.x, np.float64)
  for prompt in x[:5]:
    assert np.linalg.matrix_rank(prompt, tol=1e-4) == dim // 2
  assert np.linalg.matrix_rank(np.concatenate(x[:2]), tol=1e-4) == min(dim, 2 * (dim // 2))
  # 2,400 points, ‖x‖² ~ (dim/k)·χ²_k: the mean is within ~2.5% (one standard error) of dim.
  np.testing.assert_allclose(np.mean(np.sum(x**2, -1)), dim, rtol=0.08)


@pytest.mark.parametrize("task", [
    TASK,
    pytest.param(SparseLinearRegression(dim=DIM, sparsity=2, noise_std=0.3),
                 marks=pytest.mark.slow),
    pytest.param(LinearRegression(dim=DIM, w_scale=1.5, x_distribution="uniform"),
                 marks=pytest.mark.slow),
], ids=["linear", "sparse", "uniform_x"])
def test_zero_predictor_scores_one(task):
  names = tuple(s for s in shifts.SHIFTS
                if not (s == "orthogonal_query" and getattr(task, "x_distribution", "") == "uniform"))
  ep = shifts.shift_episodes(task, names, 4000, 8, 3, seed=10)
  ratio = np.asarray(ep.y[:, 3:, 0] ** 2 / ep.zero_loss[:, None]).mean(axis=1)
  for shift, per_prompt in shifts.by_shift(ratio, names).items():
    # 4,000 prompts whose ratio varies by ~1 (w and U or B per prompt): standard error ~1.6%.
    assert abs(per_prompt.mean() - 1.0) < 0.05, (shift, per_prompt.mean())


@pytest.mark.parametrize("settings, match", [
    (dict(x_scale=0.0), "x_scale must be > 0, got 0.0"),
    (dict(w_scale=-1.0), "w_scale must be > 0, got -1.0"),
    (dict(skew_power=0.0), "skew_power must be > 0, got 0.0"),
    (dict(noise_std=-0.1), "noise_std must be >= 0, got -0.1"),
])
def test_bad_settings(settings, match):
  with pytest.raises(ValueError, match=match):
    shifts.ShiftSettings(**settings)


@pytest.mark.parametrize("task, names, context, error, match", [
    (TASK, ("none", "bogus"), 4, ValueError, r"unknown shift 'bogus'; allowed: none, skewed_cov"),
    (TASK, (), 4, ValueError, "no shifts given"),
    (TASK, ("none", "none"), 4, ValueError, "each shift may be named once"),
    (Sinusoid(), ("none",), 4, TypeError, "LinearRegression or SparseLinearRegression .* Sinusoid"),
    (TASK, ("none",), 10, ValueError, r"context_points must be in \[0, points=10\).*got 10"),
    (TASK, ("orthogonal_query",), 6, ValueError, "context_points < dim.*context_points=6, dim=6"),
    (LinearRegression(dim=DIM, x_distribution="uniform"), ("orthogonal_query",), 4, ValueError,
     "x_distribution='normal'; got 'uniform'"),
    (TASK, ("repeated_query",), 0, ValueError, "context_points >= 1, got 0"),
    (LinearRegression(dim=1), ("half_subspace",), 0, ValueError, "dim >= 2.*got 1"),
])
def test_bad_inputs_fail_before_any_jax_work(monkeypatch, task, names, context, error, match):
  def compiled(*args):
    raise AssertionError("reached the compiled sampler")
  monkeypatch.setattr(shifts, "_shift_episodes", compiled)
  with pytest.raises(error, match=match):
    shifts.shift_episodes(task, names, 2, POINTS, context)
  if len(names) == 1:
    with pytest.raises(error, match=match):
      shifts.sample_shifted(task, names[0], jax.random.key(0), 2, POINTS, context)


def test_bad_prompt_count_and_settings_type():
  with pytest.raises(ValueError, match="number of prompts must be >= 1, got 0"):
    shifts.shift_episodes(TASK, ("none",), 0, POINTS, CONTEXT)
  with pytest.raises(TypeError, match="settings must be a ShiftSettings, got dict"):
    shifts.shift_episodes(TASK, ("none",), 2, POINTS, CONTEXT, settings={"x_scale": 2.0})
  with pytest.raises(ValueError, match="do not split evenly over 2 shifts"):
    shifts.by_shift(np.zeros(5), ("none", "scaled_x"))
