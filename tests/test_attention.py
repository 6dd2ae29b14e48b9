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
