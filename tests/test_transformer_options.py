"""The transformer's options beyond GPT-2 (positions, norm, mlp) against closed forms, their
causality and context writing, their refusals, and the defaults' parameters unchanged."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.learners import make_learner, predict_prefix_by_prefix
from metalearn.learners import rotary
from metalearn.learners.context_writing import predict_written, write_context
from metalearn.learners.transformer import (MLPS, NORMS, POSITIONS, Block, Transformer,
                                            tokens_for)
from metalearn.tasks import make_task

DIM = 4


def _episode(batch=2, points=5, seed=1):
  task = make_task({"name": "linear_regression", "dim": DIM})
  return task.sample(jax.random.PRNGKey(seed), batch, points)


def _normal(seed, shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# Rotary positions.

@pytest.mark.parametrize("dims", [8, 4])
def test_rotary_turns_each_pair_by_position_times_its_frequency(dims):
  head_dim, positions = 8, np.array([0, 3, 7, 40])
  x = _normal(0, (2, len(positions), 3, head_dim))
  rotated = np.asarray(rotary.rotate(jnp.asarray(x), jnp.asarray(positions), dims), np.float64)
  half = dims // 2
  for i in range(half):  # the pair (i, i + dims/2), turned by p·θ_i, θ_i = 10000^(−2i/dims)
    theta = 10000.0 ** (-2.0 * i / dims)
    for t, p in enumerate(positions):
      turn = np.array([[np.cos(p * theta), -np.sin(p * theta)],
                       [np.sin(p * theta), np.cos(p * theta)]])
      pair = x[:, t][..., [i, i + half]].astype(np.float64)          # [2, heads, 2]
      np.testing.assert_allclose(rotated[:, t][..., [i, i + half]], pair @ turn.T,
                                 rtol=1e-5, atol=1e-5)
  # The dimensions past `dims` pass unchanged; position 0 is no rotation at all.
  np.testing.assert_array_equal(rotated[..., dims:], x[..., dims:])
  np.testing.assert_allclose(rotated[:, 0], x[:, 0], rtol=1e-6, atol=1e-6)


def test_rotary_logits_depend_on_relative_position_only():
  q, k = jnp.asarray(_normal(1, (2, 6, 2, 8))), jnp.asarray(_normal(2, (2, 6, 2, 8)))
  positions = jnp.arange(6)

  def logits(shift):
    return np.asarray(jnp.einsum("bqhd,bkhd->bhqk", rotary.rotate(q, positions + shift),
                                 rotary.rotate(k, positions + shift)))

  for shift in (1, 5, 17):
    np.testing.assert_allclose(logits(shift), logits(0), rtol=1e-5, atol=1e-4)
  # Not because nothing turned: the rotated logits are not the plain ones.
  plain = np.asarray(jnp.einsum("bqhd,bkhd->bhqk", q, k))
  assert np.max(np.abs(logits(0) - plain)) > 0.1


@pytest.mark.parametrize("positions,moves", [("rotary", False), ("none", False),
                                             ("learned", True)])
def test_only_learned_positions_see_where_the_prompt_starts(positions, moves):
  learner = Transformer(hidden=16, num_layers=2, num_heads=2, max_points=12,
                        positions=positions)
  episode = _episode()
  params = learner.init(jax.random.PRNGKey(0), episode)
  params = jax.tree.map(lambda w: 8.0 * w, params)  # attention visibly mixes the tokens
  decoder = learner.decoder(1)
  tokens = tokens_for(learner.layout, episode.x, episode.y)
  at_start = np.asarray(decoder.apply({"params": params}, tokens))
  later = np.asarray(decoder.apply({"params": params}, tokens, None, 7))
  if moves:
    assert np.max(np.abs(later - at_start)) > 1e-3
  else:
    np.testing.assert_allclose(later, at_start, rtol=1e-5, atol=1e-5)


# Norms and MLPs against their closed forms.

def test_rmsnorm_is_x_over_root_mean_square_times_scale():
  learner = Transformer(hidden=16, num_layers=1, num_heads=2, max_points=5, norm="rmsnorm")
  episode = _episode()
  params = learner.init(jax.random.PRNGKey(0), episode)
  for name in ("ln_attn", "ln_mlp"):
    assert set(params["block_0"][name]) == {"scale"}   # no centring, no bias
  scale = _normal(3, (16,))
  params = {**params, "ln_final": {"scale": jnp.asarray(scale)}}
  # The prediction is read_out(norm(h)), with h the residual stream after the last block.
  h = np.asarray(learner.intermediates(params, episode)["residual"][-1], np.float64)
  normed = h / np.sqrt(np.mean(h ** 2, axis=-1, keepdims=True) + 1e-5) * scale
  read_out = params["read_out"]
  expected = normed @ np.asarray(read_out["kernel"]) + np.asarray(read_out["bias"])
  np.testing.assert_allclose(learner.predict(params, episode), expected, rtol=1e-5, atol=1e-6)


def test_swiglu_mlp_is_out_of_silu_gate_times_up():
  hidden, ratio = 8, 2
  block = Block(hidden, 2, ratio, nn.initializers.normal(0.02), "softmax", 0.0, False,
                mlp="swiglu")
  h = jnp.asarray(_normal(4, (2, 6, hidden)))
  params = block.init(jax.random.PRNGKey(0), h, True)["params"]
  assert {name: params[name]["kernel"].shape for name in ("mlp_gate", "mlp_up", "mlp_out")} == {
      "mlp_gate": (hidden, ratio * hidden), "mlp_up": (hidden, ratio * hidden),
      "mlp_out": (ratio * hidden, hidden)}
  assert "mlp_in" not in params and all(set(params[name]) == {"kernel"}
                                        for name in ("mlp_gate", "mlp_up", "mlp_out"))
  params = jax.tree.map(lambda w: 10.0 * w, params)  # an MLP term far above rounding
  out, state = block.apply({"params": params}, h, True, mutable=["intermediates"])
  # x_only: the x tokens' residual after attention, then the MLP on its LayerNorm.
  attended = np.asarray(h[:, ::2] + state["intermediates"]["attention_output"][0], np.float64)
  centred = attended - attended.mean(-1, keepdims=True)
  ln = params["ln_mlp"]
  normed = (centred / np.sqrt(np.mean(centred ** 2, -1, keepdims=True) + 1e-5)
            * np.asarray(ln["scale"]) + np.asarray(ln["bias"]))
  gate = normed @ np.asarray(params["mlp_gate"]["kernel"])
  up = normed @ np.asarray(params["mlp_up"]["kernel"])
  mlp = (gate / (1.0 + np.exp(-gate)) * up) @ np.asarray(params["mlp_out"]["kernel"])
  assert np.max(np.abs(mlp)) > 1e-2
  np.testing.assert_allclose(np.asarray(out) - attended, mlp, rtol=1e-4, atol=1e-5)


# Every combination, causality, context writing, long prompts.

# Every value of each option, each beside values of the others (the default is tested elsewhere).
COMBINATIONS = [("learned", "rmsnorm", "swiglu"), ("rotary", "layernorm", "swiglu"),
                ("rotary", "rmsnorm", "gelu"), ("none", "layernorm", "gelu"),
                ("none", "rmsnorm", "swiglu")]


def test_the_combinations_hold_every_value_of_every_option():
  for values, allowed in zip(zip(*COMBINATIONS), (POSITIONS, NORMS, MLPS)):
    assert set(values) == set(allowed)


@pytest.mark.parametrize("positions,norm,mlp", COMBINATIONS)
def test_each_option_value_predicts_finite_values(positions, norm, mlp):
  learner = Transformer(hidden=8, num_layers=1, num_heads=2, max_points=5, positions=positions,
                        norm=norm, mlp=mlp)
  episode = _episode()
  params = learner.init(jax.random.PRNGKey(0), episode)
  assert ("positions" in params) == (positions == "learned")
  predictions = learner.predict(params, episode)
  assert predictions.shape == (2, 5, 1) and np.all(np.isfinite(predictions))


def test_rotary_rmsnorm_swiglu_all_prefix_pass_equals_prefix_by_prefix():
  learner = Transformer(hidden=16, num_layers=2, num_heads=2, max_points=3, positions="rotary",
                        rotary_dims=4, norm="rmsnorm", mlp="swiglu")
  episode = _episode(points=5)  # longer than max_points: rotary has no table to outgrow
  params = jax.tree.map(lambda w: 8.0 * w, learner.init(jax.random.PRNGKey(0), episode))
  fast = learner.predict(params, episode)
  np.testing.assert_allclose(fast, predict_prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers,layout", [(1, "interleaved"), (2, "concatenated")])
def test_rotary_linear_attention_predicts_from_written_weights_as_in_context(layers, layout):
  n, queries = 6, 5
  learner = make_learner({"name": "transformer", "attention": "linear", "hidden": 16,
                          "num_layers": layers, "num_heads": 2, "max_points": 2,
                          "layout": layout, "positions": "rotary"})
  rng = np.random.default_rng(4)
  x = rng.normal(size=(n + 1, DIM)).astype(np.float32)
  y = rng.normal(size=(n + 1, 1)).astype(np.float32)
  params = learner.init(jax.random.PRNGKey(2), episode_from_arrays(x[None], y[None]))
  params = jax.tree.map(lambda w: 8.0 * w, params)
  predict = jax.jit(learner.predict)  # run op by op, its hundreds of small compiles take 10 s
  written = write_context(learner, params, x[:n], y[:n])
  query_x = rng.normal(size=(queries, DIM)).astype(np.float32)
  prompts_x = np.concatenate([np.broadcast_to(x[:n], (queries, n, DIM)), query_x[:, None]], 1)
  prompts_y = np.broadcast_to(y[None], (queries, n + 1, 1)).copy()
  in_context = np.asarray(predict(params, episode_from_arrays(prompts_x, prompts_y)))
  predicted = np.asarray(predict_written(learner, params, written, query_x))
  np.testing.assert_allclose(predicted, in_context[:, n], rtol=1e-5, atol=1e-5)
  # A second context is written at the positions after the first: the two predict as one
  # prompt of both (where rotated keys at the wrong positions would not).
  both = write_context(learner, params, x[:n], y[:n], prior=written)
  twice = episode_from_arrays(np.concatenate([x[:n], prompts_x[0]])[None],
                              np.concatenate([y[:n], prompts_y[0]])[None])
  np.testing.assert_allclose(predict_written(learner, params, both, query_x[:1])[0],
                             np.asarray(predict(params, twice))[0, 2 * n],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", ["rotary", "none"])
def test_prompts_longer_than_max_points_need_learned_positions_alone(positions):
  episode = _episode(points=6)
  learner = Transformer(hidden=8, num_layers=1, num_heads=2, max_points=3, positions=positions)
  predictions = learner.predict(learner.init(jax.random.PRNGKey(0), episode), episode)
  assert predictions.shape == (2, 6, 1) and np.all(np.isfinite(predictions))
  learned = Transformer(hidden=8, num_layers=1, num_heads=2, max_points=3)
  with pytest.raises(ValueError, match=r"^prompts of 6 points do not fit the transformer's "
                                       r"max_points=3; allowed: at most 3$"):
    learned.init(jax.random.PRNGKey(0), episode)


# Refusals and the defaults.

HEAD_8 = "a positive even integer that divides the head size hidden // num_heads = 8"


@pytest.mark.parametrize("options,message", [
    ({"positions": "sinusoid"},
     "unknown transformer positions 'sinusoid'; allowed: learned, rotary, none"),
    ({"norm": "batchnorm"}, "unknown transformer norm 'batchnorm'; allowed: layernorm, rmsnorm"),
    ({"mlp": "relu"}, "unknown transformer mlp 'relu'; allowed: gelu, swiglu"),
    ({"positions": "rotary", "rotary_dims": 3},
     f"transformer rotary_dims must be None or {HEAD_8}, got 3"),
    ({"positions": "rotary", "rotary_dims": 16},
     f"transformer rotary_dims must be None or {HEAD_8}, got 16"),
    ({"positions": "rotary", "rotary_dims": 0},
     "transformer rotary_dims must be None or an integer >= 1, got 0"),
    ({"rotary_dims": 4},
     "transformer rotary_dims=4 is for positions='rotary' only, got positions='learned'; "
     "allowed: rotary_dims=None"),
], ids=["positions", "norm", "mlp", "odd rotary_dims", "rotary_dims not dividing the head",
        "zero rotary_dims", "rotary_dims without rotary"])
def test_bad_options_are_refused_naming_the_value(options, message):
  with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
    Transformer(hidden=16, num_heads=2, **options)


def test_a_config_value_of_the_wrong_type_is_refused_before_the_learner_is_built():
  with pytest.raises(ValueError, match=r"model.rotary_dims must be an integer, got '4' \(str\)"):
    make_learner({"name": "transformer", "positions": "rotary", "rotary_dims": "4"})


def test_the_default_transformer_keeps_gpt2s_parameters():
  learner = Transformer()
  episode = episode_from_arrays(np.zeros((1, 41, 5)), np.zeros((1, 41, 1)))
  shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0), episode)
  assert sorted(shapes) == ["block_0", "block_1", "block_2", "ln_final", "positions",
                            "read_in", "read_out"]
  hidden, width = 64, 4 * 64
  block = {"attn": {"qkv": {"kernel": (hidden, 3 * hidden), "bias": (3 * hidden,)},
                    "out": {"kernel": (hidden, hidden), "bias": (hidden,)}},
           "ln_attn": {"scale": (hidden,), "bias": (hidden,)},
           "ln_mlp": {"scale": (hidden,), "bias": (hidden,)},
           "mlp_in": {"kernel": (hidden, width), "bias": (width,)},
           "mlp_out": {"kernel": (width, hidden), "bias": (hidden,)}}
  expected = {**{f"block_{i}": block for i in range(3)},
              "ln_final": {"scale": (hidden,), "bias": (hidden,)},
              "positions": (82, hidden),
              "read_in": {"kernel": (5, hidden), "bias": (hidden,)},
              "read_out": {"kernel": (hidden, 1), "bias": (1,)}}
  assert jax.tree.map(lambda a: a.shape, shapes) == expected
