"""Writing a context into fast weights: exact for linear attention (GD-layer networks and the
transformer), one GD step in closed form, and several contexts accumulated."""

import jax
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.learners import make_learner
from metalearn.learners.context_writing import predict_written, write_context

DIM, OUT, N, QUERIES = 4, 1, 6, 5


def _prompt(seed, out=OUT, points=N + QUERIES):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(points, DIM)).astype(np.float32)
  y = rng.normal(size=(points, out)).astype(np.float32)
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
  written = write_context(learner, params, x[:N], y[:N])
  assert len(written.layers) == learner.num_layers and written.tokens == N
  predicted = np.asarray(predict_written(learner, params, written, x))
  np.testing.assert_allclose(predicted, in_context, rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(predicted)) > 1e-3  # a real prediction, not two zeros
  # Each head's update has rank at most the number of context tokens.
  for weights in written.layers:
    assert all(np.linalg.matrix_rank(np.asarray(w, np.float64), tol=1e-5) <= N for w in weights)


@pytest.mark.parametrize("layers,layout", [(1, "interleaved"), (3, "interleaved"),
                                           (2, "akyurek"), (2, "concatenated")])
def test_a_linear_attention_transformer_predicts_from_written_weights_as_in_context(
    layers, layout):
  learner = make_learner({"name": "transformer", "attention": "linear", "hidden": 16,
                          "num_layers": layers, "num_heads": 2, "max_points": N + 1,
                          "layout": layout})
  x, y = _prompt(4, points=N + 1)
  params = learner.init(jax.random.PRNGKey(2), episode_from_arrays(x[None], y[None]))
  # Larger weights than GPT-2's init, so that attention moves the prediction visibly.
  params = jax.tree.map(lambda w: 8.0 * w, params)
  written = write_context(learner, params, x[:N], y[:N])
  assert written.tokens == 2 * N and len(written.layers) == layers
  heads, head_dim = 2, 16 // 2
  assert all(w.shape == (heads, head_dim, head_dim) for w in written.layers)
  # In context: each query at slot N after the same N pairs (its own y is never seen).
  queries = np.random.default_rng(5).normal(size=(QUERIES, DIM)).astype(np.float32)
  prompts_x = np.concatenate([np.broadcast_to(x[:N], (QUERIES, N, DIM)), queries[:, None]], 1)
  prompts_y = np.broadcast_to(y[None], (QUERIES, N + 1, OUT)).copy()
  in_context = np.asarray(learner.predict(params, episode_from_arrays(prompts_x, prompts_y)))
  predicted = np.asarray(predict_written(learner, params, written, queries))
  np.testing.assert_allclose(predicted, in_context[:, N], rtol=1e-5, atol=1e-5)
  # The context matters: the query alone at the same position predicts something else.
  empty = write_context(learner, params, x[:N], y[:N], decay=0.0)
  empty = empty.replace(layers=[0.0 * w for w in empty.layers])
  alone = np.asarray(predict_written(learner, params, empty, queries))
  assert np.max(np.abs(alone - predicted)) > 1e-2


def test_the_gd_construction_writes_one_gd_step_in_closed_form():
  eta = 0.7
  learner = make_learner({"name": "gd_layers", "init_from": "gd", "init_step_size": eta})
  x, y = _prompt(2)
  params = learner.construct(DIM, eta)
  written = write_context(learner, params, x[:N], y[:N])
  (weights,) = written.layers
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  update = eta / N * y64[:N].T @ x64[:N]                                  # (η/N) Σ y_i x_iᵀ
  np.testing.assert_allclose(weights[0, DIM:, :DIM], -update, rtol=1e-5, atol=1e-6)
  # Nothing else is written: the x rows and the y column stay untouched.
  np.testing.assert_allclose(weights[0, :DIM], 0.0, atol=1e-7)
  np.testing.assert_allclose(weights[0, :, DIM:], 0.0, atol=1e-7)
  # One GD step of size η on (1/2N) Σ (wᵀx_i − y_i)² from w = 0, applied to fresh queries.
  w = eta / N * x64[:N].T @ y64[:N]
  np.testing.assert_allclose(predict_written(learner, params, written, x[N:]), x64[N:] @ w,
                             rtol=1e-5, atol=1e-6)


def test_contexts_written_one_after_another_add_up_with_their_decay():
  eta, decay = 0.5, 0.25
  learner = make_learner({"name": "gd_layers", "init_from": "gd", "init_step_size": eta})
  params = learner.construct(DIM, eta)
  (xa, ya), (xb, yb) = _prompt(6), _prompt(7)
  first = write_context(learner, params, xa[:N], ya[:N])
  both = write_context(learner, params, xb[:N], yb[:N], prior=first, decay=decay)
  assert both.tokens == 2 * N
  # One GD layer: each write is its own GD step, the earlier one scaled by the decay.
  w = (decay * eta / N * xa[:N].astype(np.float64).T @ ya[:N]
       + eta / N * xb[:N].astype(np.float64).T @ yb[:N])
  np.testing.assert_allclose(predict_written(learner, params, both, xa[N:]), xa[N:] @ w,
                             rtol=1e-5, atol=1e-6)
  # Deeper linear attention: a context read through what is written, at the positions after
  # it, predicts as the two contexts in one prompt (decay 1; the transformer does not
  # normalise by the context's length).
  transformer = make_learner({"name": "transformer", "attention": "linear", "hidden": 16,
                              "num_layers": 2, "max_points": 2 * N + 1})
  x, y = np.concatenate([xa[:N], xb[:N + 1]]), np.concatenate([ya[:N], yb[:N + 1]])
  episode = episode_from_arrays(x[None], y[None])
  params = jax.tree.map(lambda p: 8.0 * p, transformer.init(jax.random.PRNGKey(3), episode))
  in_context = np.asarray(transformer.predict(params, episode))[0, 2 * N]
  first = write_context(transformer, params, xa[:N], ya[:N])
  both = write_context(transformer, params, xb[:N], yb[:N], prior=first)
  assert both.tokens == 4 * N
  np.testing.assert_allclose(predict_written(transformer, params, both, xb[N:N + 1])[0],
                             in_context, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="do not fit the transformer's max_points=13"):
    write_context(transformer, params, xb[:N], yb[:N], prior=both)


def test_what_cannot_be_written_is_refused():
  x, y = _prompt(3)
  softmax = make_learner({"name": "gd_layers", "softmax": True})
  params = softmax.init(jax.random.PRNGKey(0), episode_from_arrays(x[None], y[None]))
  with pytest.raises(ValueError, match="softmax attention has no exact weight update"):
    write_context(softmax, params, x[:N], y[:N])
  with pytest.raises(TypeError, match="needs gd_layers, or transformer with attention='linear'"):
    write_context(make_learner({"name": "least_squares"}), {}, x[:N], y[:N])
  transformer = make_learner({"name": "transformer", "hidden": 8, "num_layers": 1})
  with pytest.raises(ValueError, match="softmax attention .* allowed: attention='linear'"):
    write_context(transformer, {}, x[:N], y[:N])
  learner = make_learner({"name": "gd_layers", "num_layers": 2})
  params = learner.init(jax.random.PRNGKey(0), episode_from_arrays(x[None], y[None]))
  with pytest.raises(ValueError, match=r"x \[N, D\] and y \[N, O\]; got x \(6, 4\) and y \(5, 1\)"):
    write_context(learner, params, x[:N], y[:N - 1])
  written = write_context(learner, params, x[:N], y[:N])
  with pytest.raises(ValueError, match=r"decay must be in \[0, 1\], got 1.5"):
    write_context(learner, params, x[:N], y[:N], prior=written, decay=1.5)
  with pytest.raises(ValueError, match="applies 2 layers, got fast weights for 1"):
    predict_written(learner, params, written.replace(layers=written.layers[:1]), x)
