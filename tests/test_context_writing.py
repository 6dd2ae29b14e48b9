"""Writing a context into fast weights: exact for linear self-attention, one GD step in closed form."""

import jax
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.learners import make_learner
from metalearn.learners.context_writing import predict_written, write_context

DIM, OUT, N, QUERIES = 4, 1, 6, 5


def _prompt(seed, out=OUT):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N + QUERIES, DIM)).astype(np.float32)
  y = rng.normal(size=(N + QUERIES, out)).astype(np.float32)
  return x, y


@pytest.mark.parametrize("options", [
    {"num_layers": 1},
    {"num_layers": 3, "recurrent": True},
    {"num_layers": 2, "num_heads": 2, "layer_norm": True, "mlp": True, "mlp_width": 8},
], ids=["1 layer", "3 recurrent", "2 layers of 2 heads with LayerNorm and MLP"])
def test_written_weights_predict_as_the_context_does_at_every_depth(options):
  learner = make_learner({"name": "gd_layers", "init_std": 0.3, "context_points": N,
                          **options})
  x, y = _prompt(0, out=2)
  episode = episode_from_arrays(x[None], y[None])
  params = learner.init(jax.random.PRNGKey(1), episode)
  # In context: the first N pairs, then every point as a query with y = 0.
  in_context = np.asarray(learner.predict(params, episode))[0]
  fast = write_context(learner, params, x[:N], y[:N])
  assert len(fast) == learner.num_layers
  written = np.asarray(predict_written(learner, params, fast, x))
  np.testing.assert_allclose(written, in_context, rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(written)) > 1e-3  # a real prediction, not two zeros
  # Each head's update has rank at most the number of context tokens.
  for weights in fast:
    assert all(np.linalg.matrix_rank(np.asarray(w, np.float64), tol=1e-5) <= N for w in weights)


def test_the_gd_construction_writes_one_gd_step_in_closed_form():
  eta = 0.7
  learner = make_learner({"name": "gd_layers", "init_from": "gd", "init_step_size": eta})
  x, y = _prompt(2)
  params = learner.construct(DIM, eta)
  (weights,) = write_context(learner, params, x[:N], y[:N])
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  update = eta / N * y64[:N].T @ x64[:N]                                  # (η/N) Σ y_i x_iᵀ
  np.testing.assert_allclose(weights[0, DIM:, :DIM], -update, rtol=1e-5, atol=1e-6)
  # Nothing else is written: the x rows and the y column stay untouched.
  np.testing.assert_allclose(weights[0, :DIM], 0.0, atol=1e-7)
  np.testing.assert_allclose(weights[0, :, DIM:], 0.0, atol=1e-7)
  # One GD step of size η on (1/2N) Σ (wᵀx_i − y_i)² from w = 0, applied to fresh queries.
  w = eta / N * x64[:N].T @ y64[:N]
  np.testing.assert_allclose(predict_written(learner, params, [weights], x[N:]), x64[N:] @ w,
                             rtol=1e-5, atol=1e-6)


def test_what_cannot_be_written_is_refused():
  x, y = _prompt(3)
  softmax = make_learner({"name": "gd_layers", "softmax": True})
  params = softmax.init(jax.random.PRNGKey(0), episode_from_arrays(x[None], y[None]))
  with pytest.raises(ValueError, match="softmax attention has no exact weight update"):
    write_context(softmax, params, x[:N], y[:N])
  with pytest.raises(TypeError, match="needs a gd_layers learner"):
    write_context(make_learner({"name": "least_squares"}), {}, x[:N], y[:N])
  learner = make_learner({"name": "gd_layers", "num_layers": 2})
  params = learner.init(jax.random.PRNGKey(0), episode_from_arrays(x[None], y[None]))
  with pytest.raises(ValueError, match=r"x \[N, D\] and y \[N, O\]; got x \(6, 4\) and y \(5, 1\)"):
    write_context(learner, params, x[:N], y[:N - 1])
  fast = write_context(learner, params, x[:N], y[:N])
  with pytest.raises(ValueError, match="applies 2 layers, got fast weights for 1"):
    predict_written(learner, params, fast[:1], x)
