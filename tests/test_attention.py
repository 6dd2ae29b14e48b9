"""Attention variants: each against a plain numpy loop, and each causal in the transformer."""

import jax
import numpy as np
import pytest

from metalearn.learners import make_learner, predict_prefix_by_prefix
from metalearn.learners.attention import causal_mix
from metalearn.tasks import make_task


def _reference(q, k, v, kind, momentum):
  """Token by token: query t mixes the values of tokens 0..t."""
  b_size, length, heads, _ = q.shape
  out = np.zeros_like(v, dtype=np.float64)
  for b in range(b_size):
    for h in range(heads):
      for t in range(length):
        scores = np.array([q[b, t, h] @ k[b, i, h] for i in range(t + 1)], np.float64)
        if kind in ("softmax", "momentum"):
          weights = np.exp(scores - scores.max())
          weights /= weights.sum()
        elif kind == "linear":
          weights = scores
        else:
          weights = np.maximum(scores, 0.0) / (t + 1)
        out[b, t, h] = weights @ v[b, :t + 1, h]
        if kind == "momentum":
          out[b, t, h] += sum(momentum ** (t - i) * v[b, i, h] for i in range(t))
  return out


@pytest.mark.parametrize("kind", ["softmax", "linear", "relu", "momentum"])
def test_causal_mix_matches_a_token_by_token_loop(kind):
  q, k, v = (np.asarray(jax.random.normal(jax.random.PRNGKey(i), (2, 7, 3, 4))) for i in range(3))
  out = causal_mix(q, k, v, np.arange(7), kind, 0.8)
  np.testing.assert_allclose(out, _reference(q, k, v, kind, 0.8), rtol=1e-5, atol=1e-5)
  # Queries at a subset of positions (the last block's x tokens) give those rows.
  rows = causal_mix(q[:, ::2], k, v, np.arange(7)[::2], kind, 0.8)
  np.testing.assert_allclose(rows, out[:, ::2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["softmax", "linear", "relu", "momentum"])
def test_every_variant_keeps_the_all_prefix_pass_exact(kind):
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 2, 5)
  learner = make_learner({"name": "transformer", "hidden": 16, "num_layers": 2, "num_heads": 2,
                          "max_points": 5, "attention": kind, "momentum": 0.5})
  params = learner.init(jax.random.PRNGKey(1), episode)
  np.testing.assert_allclose(learner.predict(params, episode),
                             predict_prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-6)


def test_bad_attention_settings_are_refused():
  with pytest.raises(ValueError, match="unknown attention 'cosine'; allowed: softmax, linear"):
    make_learner({"name": "transformer", "attention": "cosine"})
  with pytest.raises(ValueError, match="needs 0 < momentum < 1, got 1.5"):
    make_learner({"name": "transformer", "attention": "momentum", "momentum": 1.5})


def test_private_keys_are_seen_by_their_own_position_alone():
  q, k, v = (np.asarray(jax.random.normal(jax.random.PRNGKey(i), (1, 6, 2, 3))) for i in range(3))
  private = np.arange(6) % 2 == 0
  for kind in ("softmax", "linear", "relu", "momentum"):
    out = causal_mix(q, k, v, np.arange(6), kind, 0.8, private)
    # Changing a private key/value changes its own output and no later one.
    v2, k2 = v.copy(), k.copy()
    v2[:, 2] += 100.0
    k2[:, 2] -= 3.0
    changed = causal_mix(q, k2, v2, np.arange(6), kind, 0.8, private)
    np.testing.assert_allclose(changed[:, 3:], out[:, 3:], rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed[:, 2], out[:, 2])
    # A public key still reaches later positions.
    v3 = v.copy()
    v3[:, 1] += 100.0
    assert not np.allclose(causal_mix(q, k, v3, np.arange(6), kind, 0.8, private)[:, 4], out[:, 4])


@pytest.mark.parametrize("layout", ["akyurek", "concatenated"])
@pytest.mark.parametrize("kind", ["softmax", "relu", "momentum"])
def test_every_layout_keeps_the_all_prefix_pass_exact(layout, kind):
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 2, 5)
  learner = make_learner({"name": "transformer", "hidden": 16, "num_layers": 2, "num_heads": 2,
                          "max_points": 5, "attention": kind, "momentum": 0.5,
                          "layout": layout})
  params = learner.init(jax.random.PRNGKey(1), episode)
  np.testing.assert_allclose(learner.predict(params, episode),
                             predict_prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-6)


def test_layout_tokens():
  from metalearn.learners.transformer import tokens_for
  x = np.arange(12, dtype=np.float32).reshape(1, 2, 6)[:, :, :3] + 1.0
  y = np.array([[[7.0], [8.0]]], np.float32)
  akyurek = np.asarray(tokens_for("akyurek", x, y))
  np.testing.assert_array_equal(akyurek[0, 0], [0.0, *x[0, 0]])
  np.testing.assert_array_equal(akyurek[0, 1], [7.0, 0.0, 0.0, 0.0])
  concatenated = np.asarray(tokens_for("concatenated", x, y))
  np.testing.assert_array_equal(concatenated[0, 2], [*x[0, 1], 0.0])
  np.testing.assert_array_equal(concatenated[0, 3], [*x[0, 1], 8.0])
  with pytest.raises(ValueError, match="unknown transformer layout 'flat'; allowed: interleaved"):
    make_learner({"name": "transformer", "layout": "flat"})


def test_concatenated_layout_hides_earlier_query_tokens():
  """Position i's prediction does not change when an earlier query token (x_j, 0) is replaced,
  as long as the full pair (x_j, y_j) stays: only pairs and the own query inform it."""
  import jax.numpy as jnp
  from metalearn.learners import transformer as transformer_lib
  learner = make_learner({"name": "transformer", "hidden": 16, "num_layers": 2, "num_heads": 2,
                          "max_points": 5, "layout": "concatenated"})
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 2, 5)
  params = learner.init(jax.random.PRNGKey(1), episode)
  tokens = transformer_lib.tokens_for("concatenated", episode.x, episode.y)
  decoder = learner.decoder(1)
  out = decoder.apply({"params": params}, tokens)
  tampered = tokens.at[:, 2].set(jnp.asarray(jax.random.normal(jax.random.PRNGKey(5), (2, 4))))
  changed = decoder.apply({"params": params}, tampered)
  np.testing.assert_allclose(changed[:, 2:], out[:, 2:], rtol=1e-5, atol=1e-6)
  assert not np.allclose(changed[:, 1], out[:, 1])
