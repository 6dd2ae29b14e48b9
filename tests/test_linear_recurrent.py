"""Linear attention in its recurrent form: a fast-weight state updated token by token, equal to
the transformer's parallel linear attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.learners import attention, make_learner


@pytest.mark.parametrize("private", [False, True])
def test_the_fast_weight_recurrence_is_causal_linear_attention(private):
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 8, 2, 3)), jnp.float32) for _ in range(3))
  positions = jnp.arange(0, 8, 2)  # queries at the even tokens only, as the last block asks
  keys = (jnp.arange(8) % 2 == 0) if private else None
  expected = attention.causal_mix(q[:, ::2], k, v, positions, "linear", 0.0, keys)
  np.testing.assert_allclose(attention.linear_recurrent_mix(q[:, ::2], k, v, positions, keys),
                             expected, rtol=1e-5, atol=1e-5)
  # And against the sum written out: out_t = Σ_{j<=t, j kept or j = t} (q_t · k_j) v_j.
  t = 6
  seen = [j for j in range(t + 1) if not private or j % 2 == 1 or j == t]
  by_hand = sum(jnp.einsum("bhd,bhd->bh", q[:, t], k[:, j])[..., None] * v[:, j] for j in seen)
  np.testing.assert_allclose(expected[:, t // 2], by_hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout,positions", [("interleaved", "learned"),
                                              ("concatenated", "rotary"),
                                              ("akyurek", "none")])
def test_the_recurrent_transformer_predicts_as_the_parallel_one(layout, positions):
  options = {"name": "transformer", "attention": "linear", "hidden": 16, "num_layers": 2,
             "num_heads": 2, "max_points": 7, "layout": layout, "positions": positions}
  parallel = make_learner(options)
  recurrent = make_learner({**options, "linear_pass": "recurrent"})
  rng = np.random.default_rng(1)
  episode = episode_from_arrays(rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 7, 1)))
  params = jax.tree.map(lambda w: 8.0 * w, parallel.init(jax.random.PRNGKey(0), episode))
  expected = np.asarray(parallel.predict(params, episode))
  np.testing.assert_allclose(recurrent.predict(params, episode), expected, rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(expected)) > 1e-2
  assert recurrent.state_floats(params, episode) == 2 * 2 * 8 * 8


def test_without_a_position_table_the_recurrent_form_reads_any_length():
  learner = make_learner({"name": "transformer", "attention": "linear", "hidden": 8,
                          "num_layers": 1, "max_points": 4, "positions": "none",
                          "linear_pass": "recurrent"})
  rng = np.random.default_rng(2)
  episode = episode_from_arrays(rng.normal(size=(1, 20, 2)), rng.normal(size=(1, 20, 1)))
  params = learner.init(jax.random.PRNGKey(0), episode)
  assert np.all(np.isfinite(learner.predict(params, episode)))
  assert learner.state_floats(params, episode) == 1 * 2 * 4 * 4


@pytest.mark.parametrize("options,message", [
    ({"linear_pass": "recurrent"}, "linear_pass='recurrent' runs linear attention token by "
                                   "token; got attention='softmax'; allowed: attention='linear'"),
    ({"attention": "linear", "linear_pass": "sideways"}, "sideways"),
])
def test_a_bad_linear_pass_is_refused(options, message):
  with pytest.raises(ValueError, match=message):
    make_learner({"name": "transformer", **options})
