"""SimAOU, ICL against fine-tuning (Dai et al. 2022): known answers, hand references, errors."""

import functools

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.analysis import icl_vs_finetune as ivf
from metalearn.core.episode import Episode
from metalearn.learners.transformer import Transformer
from tests.episodes import episode_from_arrays

CONTEXT = 4   # context pairs; the query is position 4 of the 6-point prompts
LR = 1e-3     # small enough that one step is linear to ~1e-2, large against float32 rounding
HIDDEN, LAYERS = 32, 2


def _transformer(attention: str = "softmax") -> Transformer:
  return Transformer(hidden=HIDDEN, num_layers=LAYERS, num_heads=2, max_points=16,
                     attention=attention)


@pytest.fixture(scope="module")
def episode() -> Episode:
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 6, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (8, 4, 1))
  return episode_from_arrays(x, x @ w)


@pytest.fixture(scope="module")
def params(episode):
  return _transformer().init(jax.random.PRNGKey(2), episode)


@pytest.fixture(scope="module")
def one_step(params, episode):
  """One SGD step of LR on the key/value projections."""
  return ivf.icl_vs_finetune(_transformer(), params, episode, CONTEXT, steps=1, learning_rate=LR)


def _one_point(x):
  """x [N, D] -> N one-point prompts (x_n), written here independently of the module."""
  return Episode(x=x[:, None], y=jnp.zeros((x.shape[0], 1, 1)), mask=jnp.ones((x.shape[0], 1)),
                 zero_loss=jnp.ones(x.shape[0]))


def _zero_shot_attention(transformer, weights, x_q):
  """x_q [D] -> [layers, hidden]: the attention outputs at x_q's token, prompt (x_q) alone."""
  return transformer.intermediates(weights, _one_point(x_q[None]))["attention_output"][:, 0, 0]


def _hand_kv_mask(params):
  """1 on the last two thirds of the qkv columns (keys, values), 0 on all else, by hand."""
  mask = jax.tree.map(jnp.zeros_like, params)
  for i in range(LAYERS):
    for name in ("kernel", "bias"):
      leaf = params[f"block_{i}"]["attn"]["qkv"][name]
      mask[f"block_{i}"]["attn"]["qkv"][name] = jnp.zeros_like(leaf).at[..., HIDDEN:].set(1.0)
  return mask


def test_zero_steps_give_an_exactly_zero_finetune_update(params, episode):
  result = ivf.icl_vs_finetune(_transformer(), params, episode, CONTEXT, steps=0,
                               learning_rate=0.5)
  assert result["cosine"].shape == (LAYERS, episode.batch_size)
  np.testing.assert_array_equal(result["finetune_update"], 0.0)
  np.testing.assert_array_equal(result["finetune_norm"], 0.0)
  np.testing.assert_array_equal(result["cosine"], 0.0)  # similarity.cosine_similarity's 0
  assert np.all(result["icl_norm"] > 0)


@functools.partial(jax.jit, static_argnums=0)
def _linearised_step(transformer, params, x, y):
  """One prompt's FT update to first order, LR times the derivative of the query's zero-shot
  attention outputs along minus the key/value gradient [layers, hidden]; and the key gradients."""
  def loss(weights):
    y_hat = transformer.predict(weights, _one_point(x[:CONTEXT]))[:, 0]
    return jnp.mean(jnp.sum(jnp.square(y_hat - y[:CONTEXT]), -1))
  grads = jax.grad(loss)(params)
  direction = jax.tree.map(lambda g, m: -g * m, grads, _hand_kv_mask(params))
  _, tangent = jax.jvp(lambda w: _zero_shot_attention(transformer, w, x[CONTEXT]),
                       (params,), (direction,))
  # Softmax over a one-point prompt is 1 whatever the logits: no gradient reaches the keys.
  keys = jnp.stack([grads[f"block_{i}"]["attn"]["qkv"]["kernel"][:, HIDDEN:2 * HIDDEN]
                    for i in range(LAYERS)])
  return LR * tangent, keys                                        # [layers, hidden]


def test_one_small_step_is_the_directional_derivative_along_minus_the_gradient(
    params, episode, one_step):
  transformer = _transformer()
  for b in range(episode.batch_size):
    want, key_grads = _linearised_step(transformer, params, episode.x[b], episode.y[b])
    got = one_step["finetune_update"][:, b]
    np.testing.assert_array_equal(key_grads, 0.0)
    for layer in range(LAYERS):
      error = np.linalg.norm(got[layer] - want[layer]) / np.linalg.norm(want[layer])
      assert error < 1e-2, (b, layer, error)


@pytest.mark.parametrize("kv_only", [True, False])
def test_kv_only_moves_the_keys_and_values_alone(episode, kv_only):
  # Linear attention: a one-point prompt's queries and keys do get gradients (not so
  # under softmax), so leaving the queries alone is the mask's doing.
  transformer = _transformer("linear")
  params = transformer.init(jax.random.PRNGKey(3), episode)
  tuned = ivf.finetuned_params(transformer, params, episode, CONTEXT, steps=2,
                               learning_rate=0.1, kv_only=kv_only)
  moved = lambda a, b: bool(jnp.any(a != b[None]))
  kernel = tuned["block_0"]["attn"]["qkv"]["kernel"]            # [batch, hidden, 3·hidden]
  base = params["block_0"]["attn"]["qkv"]["kernel"]
  assert moved(kernel[..., HIDDEN:2 * HIDDEN], base[:, HIDDEN:2 * HIDDEN])      # keys
  assert moved(kernel[..., 2 * HIDDEN:], base[:, 2 * HIDDEN:])                  # values
  others = {"queries": (kernel[..., :HIDDEN], base[:, :HIDDEN]),
            "mlp_in": (tuned["block_0"]["mlp_in"]["kernel"], params["block_0"]["mlp_in"]["kernel"]),
            "mlp_out": (tuned["block_1"]["mlp_out"]["kernel"],
                        params["block_1"]["mlp_out"]["kernel"]),
            "attn_out": (tuned["block_1"]["attn"]["out"]["kernel"],
                         params["block_1"]["attn"]["out"]["kernel"]),
            "read_in": (tuned["read_in"]["kernel"], params["read_in"]["kernel"]),
            "positions": (tuned["positions"], params["positions"]),
            "read_out": (tuned["read_out"]["kernel"], params["read_out"]["kernel"])}
  for name, (after, before) in others.items():
    assert moved(after, before) == (not kv_only), name
  if kv_only:  # and nothing else anywhere: only the attn/qkv leaves differ
    flat_tuned = flax.traverse_util.flatten_dict(tuned)
    for path, before in flax.traverse_util.flatten_dict(params).items():
      assert moved(flat_tuned[path], before) == ("qkv" in path), path


def test_icl_update_is_full_prompt_minus_one_point_prompt(params, episode, one_step):
  transformer = _transformer()
  # The whole 6-point episode: causal attention, so the points after the query play no part.
  full = transformer.intermediates(params, episode)["attention_output"][:, :, CONTEXT]
  alone = transformer.intermediates(params, _one_point(episode.x[:, CONTEXT]))["attention_output"]
  np.testing.assert_allclose(one_step["icl_update"], full - alone[:, :, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(one_step["icl_norm"],
                             np.linalg.norm(full - alone[:, :, 0], axis=-1), rtol=1e-4, atol=1e-6)


def test_compare_updates_known_cosines():
  u = jax.random.normal(jax.random.PRNGKey(4), (LAYERS, 5, HIDDEN))
  np.testing.assert_allclose(ivf.compare_updates(u, u)["cosine"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(ivf.compare_updates(u, 3.0 * u)["cosine"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(ivf.compare_updates(u, -u)["cosine"], -1.0, rtol=1e-6)
  e0, e1 = jnp.zeros((1, 1, 3)).at[..., 0].set(2.0), jnp.zeros((1, 1, 3)).at[..., 1].set(5.0)
  result = ivf.compare_updates(e0, e1)
  np.testing.assert_array_equal(result["cosine"], [[0.0]])
  np.testing.assert_allclose(result["icl_norm"], [[2.0]])
  np.testing.assert_allclose(result["finetune_norm"], [[5.0]])


def _hand_updates(transformer, weights, episode):
  """(ICL update, first-order FT update) [layers, batch, hidden] of every prompt, by hand."""
  full = transformer.intermediates(weights, episode)["attention_output"][:, :, CONTEXT]
  alone = transformer.intermediates(weights, _one_point(episode.x[:, CONTEXT]))[
      "attention_output"][:, :, 0]
  ft = [_linearised_step(transformer, weights, episode.x[b], episode.y[b])[0]
        for b in range(episode.batch_size)]
  return np.asarray(full - alone), np.stack(ft, axis=1)


def test_with_random_control_and_summarise(params, episode):
  both = ivf.with_random_control(_transformer(), params, episode, CONTEXT, seed=0, steps=1,
                                 learning_rate=LR)
  assert set(both) == {"trained", "random_init"}
  for result in both.values():
    for value in result.values():
      assert np.all(np.isfinite(value))
  # Each entry against updates written out by hand from its own weights: the ICL update
  # exactly, the one small step to first order (as above), so the cosine to about 1e-2.
  random_params = _transformer().init(jax.random.PRNGKey(0), episode)  # seed=0, whole prompt
  for name, weights in (("trained", params), ("random_init", random_params)):
    icl, ft = _hand_updates(_transformer(), weights, episode)
    np.testing.assert_allclose(both[name]["icl_update"], icl, rtol=1e-5, atol=1e-6)
    error = (np.linalg.norm(both[name]["finetune_update"] - ft, axis=-1)
             / np.linalg.norm(ft, axis=-1))
    assert np.all(error < 1e-2), (name, error)
    cosine = np.sum(icl * ft, -1) / (np.linalg.norm(icl, axis=-1) * np.linalg.norm(ft, axis=-1))
    np.testing.assert_allclose(both[name]["cosine"], cosine, atol=2e-2)
    np.testing.assert_allclose(ivf.summarise(both[name])["cosine_mean"], cosine.mean(axis=1),
                               atol=2e-2)
  assert not np.allclose(both["trained"]["icl_update"], both["random_init"]["icl_update"])
  assert not np.allclose(both["trained"]["cosine"], both["random_init"]["cosine"])
  summary = ivf.summarise(both)
  assert set(summary) == {"trained", "random_init"}
  assert summary["trained"]["cosine_mean"].shape == (LAYERS,)
  # Known answer: layer 0 all ones (interval 0); layer 1 is 0, 1 (mean 1/2, std 1/2).
  known = ivf.summarise({"cosine": np.array([[1.0, 1.0], [0.0, 1.0]])})
  np.testing.assert_allclose(known["cosine_mean"], [1.0, 0.5])
  np.testing.assert_allclose(known["cosine_ci95"], [0.0, 1.96 * 0.5 / np.sqrt(2)])
  assert known["cosine_mean_over_layers"] == pytest.approx(0.75)
  assert known["cosine_ci95_over_layers"] == pytest.approx(1.96 * 0.25 / np.sqrt(2))


def test_bad_inputs_fail_with_clear_errors(params, episode):
  transformer = _transformer()
  call = lambda **kw: ivf.icl_vs_finetune(**{
      "transformer": transformer, "params": params, "episode": episode,
      "context_points": CONTEXT, "steps": 1, "learning_rate": LR, **kw})
  with pytest.raises(TypeError, match=r"hidden states include its attention outputs "
                                      r"\(a transformer\), got object"):
    call(transformer=object())
  for bad in (0, 6, -1, 2.5, True):
    with pytest.raises(ValueError, match=r"context_points must be an integer in \[1, 5\]"):
      call(context_points=bad)
  for bad in (-1, 1.5, None):
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
      call(steps=bad)
  for bad in (0.0, -1e-3, float("nan"), "0.1"):
    with pytest.raises(ValueError, match="learning_rate must be a number > 0"):
      call(learning_rate=bad)
  with pytest.raises(ValueError, match="max_points=2"):
    ivf.icl_vs_finetune(Transformer(hidden=HIDDEN, num_layers=LAYERS, max_points=2), params,
                        episode, CONTEXT, steps=1, learning_rate=LR)
  with pytest.raises(ValueError, match="context_points must be an integer"):
    ivf.finetuned_params(transformer, params, episode, 6, steps=1, learning_rate=LR)
  with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
    ivf.with_random_control(transformer, params, episode, CONTEXT, seed=-1, steps=1,
                            learning_rate=LR)
  with pytest.raises(ValueError, match="updates must share one shape"):
    ivf.compare_updates(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5)))
  with pytest.raises(ValueError, match="summarise needs an icl_vs_finetune result"):
    ivf.summarise({"trained": {"icl_norm": np.zeros((2, 3))}})
