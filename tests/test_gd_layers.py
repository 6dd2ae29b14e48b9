"""GD-layer networks: the constructed LSA network is K steps of GD (and GD++), exactly."""

import jax
import numpy as np
import pytest

from metalearn.learners import make_learner, predict_prefix_by_prefix
from metalearn.tasks import make_task


def _gd_reference(x, y, steps, eta):
  """Prediction at every position i from K GD steps on (1/2i) Σ_{j<i} (wᵀx_j − y_j)², w0 = 0."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]
  out = np.zeros(len(x))
  for i in range(1, len(x)):
    w = np.zeros(x.shape[1])
    for _ in range(steps):
      w -= eta * x[:i].T @ (x[:i] @ w - y[:i]) / i
    out[i] = w @ x[i]
  return out


def _gd_plus_plus_reference(x, y, steps, eta, gamma):
  """GD++ (von Oswald et al.): each step updates residuals by GD and maps x <- (I - γ S) x."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]
  out = np.zeros(len(x))
  for i in range(1, len(x)):
    xc, yc, xq, yq = x[:i].copy(), y[:i].copy(), x[i].copy(), 0.0
    for _ in range(steps):
      w_step = eta * xc.T @ yc / i            # one GD step's weights on the current data
      s = xc.T @ xc / i
      yc, yq = yc - xc @ w_step, yq - xq @ w_step
      xc, xq = xc - gamma * xc @ s.T, xq - gamma * s @ xq
    out[i] = -yq
  return out


@pytest.mark.parametrize("steps, dim, points", [(1, 3, 6), (2, 5, 9), (4, 2, 12), (3, 10, 11)])
@pytest.mark.parametrize("recurrent", [False, True])
def test_constructed_network_is_k_gd_steps(steps, dim, points, recurrent):
  task = make_task({"name": "linear_regression", "dim": dim})
  episode = task.sample(jax.random.PRNGKey(steps + dim), 4, points)
  learner = make_learner({"name": "gd_layers", "num_layers": steps, "recurrent": recurrent})
  eta = 0.4
  y_hat = np.asarray(learner.predict(learner.construct(dim, eta), episode))[..., 0]
  for b in range(4):
    expected = _gd_reference(episode.x[b], episode.y[b], steps, eta)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("steps, dim, points", [(1, 3, 7), (2, 4, 10), (3, 6, 11)])
def test_constructed_network_is_k_gd_plus_plus_steps(steps, dim, points):
  task = make_task({"name": "linear_regression", "dim": dim})
  episode = task.sample(jax.random.PRNGKey(7 * steps), 4, points)
  learner = make_learner({"name": "gd_layers", "num_layers": steps})
  eta, gamma = 0.5, 0.2
  y_hat = np.asarray(learner.predict(learner.construct(dim, eta, gamma), episode))[..., 0]
  for b in range(4):
    expected = _gd_plus_plus_reference(episode.x[b], episode.y[b], steps, eta, gamma)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
  # The x map acts from the second layer on: one GD++ step is one GD step.
  plain = np.asarray(learner.predict(learner.construct(dim, eta), episode))[..., 0]
  assert np.allclose(plain, y_hat, rtol=1e-5) == (steps == 1)


def test_one_step_is_eta_over_n_x_transpose_y():
  """One layer from w = 0: ŷ = x_qᵀ (η/N) Xᵀy (REFERENCES.md)."""
  task = make_task({"name": "linear_regression", "dim": 4})
  episode = task.sample(jax.random.PRNGKey(3), 2, 11)
  learner = make_learner({"name": "gd_layers", "num_layers": 1})
  y_hat = learner.predict(learner.construct(4, 0.7), episode)
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  n = 10
  w = 0.7 / n * np.einsum("bnd,bno->bdo", x[:, :n], y[:, :n])
  np.testing.assert_allclose(y_hat[:, n], np.einsum("bd,bdo->bo", x[:, n], w), rtol=1e-5)


def test_random_network_all_prefix_equals_prefix_by_prefix():
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 2, 6)
  learner = make_learner({"name": "gd_layers", "num_layers": 2, "num_heads": 2,
                          "init_std": 0.3})
  params = learner.init(jax.random.PRNGKey(1), episode)
  assert params["layer_0"]["query"].shape == (2, 4, 4)
  np.testing.assert_allclose(learner.predict(params, episode),
                             predict_prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("num_layers", 0, "num_layers must be >= 1, got 0"),
    ("num_heads", -1, "num_heads must be >= 1, got -1"),
    ("init_std", 0.0, "init_std must be > 0, got 0.0"),
])
def test_bad_settings_are_refused(field, value, message):
  with pytest.raises(ValueError, match=message):
    make_learner({"name": "gd_layers", field: value})


def test_construction_needs_one_head_and_a_positive_step():
  with pytest.raises(ValueError, match="one head, got num_heads=2"):
    make_learner({"name": "gd_layers", "num_heads": 2}).construct(3, 0.1)
  with pytest.raises(ValueError, match="step_size must be > 0, got -0.1"):
    make_learner({"name": "gd_layers"}).construct(3, -0.1)


def test_lsa_network_trains_through_the_shared_step(tmp_path):
  from configs.gd_layers import get_config
  from metalearn.train import train_and_evaluate
  import json
  errors = train_and_evaluate(get_config("smoke"), str(tmp_path / "run"))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    losses = [json.loads(line)["normalised_loss"] for line in f]
  assert losses[-1] < 0.9 * losses[0]
  assert errors["gd_layers"][-1] < errors["gd_layers"][0]
