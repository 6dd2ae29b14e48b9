"""The transformer learner: its all-prefix pass, causality, GPT-2 init, sizes, bad input."""

import jax
import numpy as np
import pytest

from configs.linear_regression import SIZES
from metalearn.learners import make_learner, predict_prefix_by_prefix
from metalearn.learners.transformer import Transformer, tokens_for
from metalearn.tasks import make_task


def _episode(batch=3, points=6, dim=4, seed=1):
  task = make_task({"name": "linear_regression", "dim": dim})
  return task.sample(jax.random.PRNGKey(seed), batch, points)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_all_prefix_pass_equals_prefix_by_prefix(num_layers):
  learner = Transformer(hidden=16, num_layers=num_layers, num_heads=2, max_points=8)
  episode = _episode()
  params = learner.init(jax.random.PRNGKey(0), episode)
  fast = learner.predict(params, episode)
  assert fast.shape == (3, 6, 1)
  np.testing.assert_allclose(fast, predict_prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-5)


def test_prediction_at_i_ignores_later_points():
  learner = Transformer(hidden=16, num_layers=2, num_heads=4, max_points=8)
  episode = _episode(points=8)
  params = learner.init(jax.random.PRNGKey(0), episode)
  before = learner.predict(params, episode)
  i = 4  # change x and y of every point after i, and y at i (x_i's prediction must not see it)
  x = episode.x.at[:, i + 1:].add(3.0)
  y = episode.y.at[:, i:].add(-5.0)
  after = learner.predict(params, episode.replace(x=x, y=y))
  np.testing.assert_allclose(after[:, :i + 1], before[:, :i + 1], rtol=1e-6, atol=1e-6)
  assert not np.allclose(after[:, i + 1:], before[:, i + 1:])


def test_gpt2_init_statistics():
  layers = 3
  learner = Transformer(hidden=64, num_layers=layers, num_heads=2, max_points=41)
  params = jax.jit(learner.init)(jax.random.PRNGKey(0), _episode(points=41, dim=20))
  residual = 0.02 / np.sqrt(2 * layers)
  for i in range(layers):
    block = params[f"block_{i}"]
    for kernel in (block["attn"]["qkv"]["kernel"], block["mlp_in"]["kernel"]):
      assert np.std(kernel) == pytest.approx(0.02, rel=0.05)
    for kernel in (block["attn"]["out"]["kernel"], block["mlp_out"]["kernel"]):
      assert np.std(kernel) == pytest.approx(residual, rel=0.05)
    assert np.all(block["mlp_in"]["bias"] == 0) and np.all(block["ln_attn"]["scale"] == 1)
  assert np.std(params["read_in"]["kernel"]) == pytest.approx(0.02, rel=0.05)
  assert np.std(params["positions"]) == pytest.approx(0.02, rel=0.05)
  assert "embedding" not in str(jax.tree_util.tree_structure(params))


@pytest.mark.parametrize("size", ["tiny", "small", "standard"])
def test_parameter_count_of_garg_sizes(size):
  hidden, layers, heads = SIZES[size]
  dim, points = 20, 41
  learner = make_learner({"name": "transformer", "hidden": hidden, "num_layers": layers,
                          "num_heads": heads, "max_points": points})
  shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0), _episode(1, points, dim))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
  per_block = (12 * hidden**2 + 9 * hidden) + 4 * hidden  # qkv, out, MLP (+biases); 2 LayerNorms
  expected = ((dim + 1) * hidden + 2 * points * hidden + layers * per_block + 2 * hidden
              + hidden + 1)  # read-in, positions, blocks, final LayerNorm, read-out
  assert count == expected
  assert count == {"tiny": 156_737, "small": 1_203_201, "standard": 9_504_257}[size]


def test_hidden_not_divisible_by_heads_names_the_values():
  with pytest.raises(ValueError, match="hidden=10 is not divisible by num_heads=4"):
    Transformer(hidden=10, num_heads=4)


def test_prompt_longer_than_max_points_names_the_limit():
  learner = Transformer(hidden=16, num_layers=1, num_heads=2, max_points=5)
  with pytest.raises(ValueError, match="prompts of 6 points .* max_points=5"):
    learner.init(jax.random.PRNGKey(0), _episode(points=6))
  params = learner.init(jax.random.PRNGKey(0), _episode(points=5))
  with pytest.raises(ValueError, match="prompts of 6 points .* max_points=5"):
    learner.predict(params, _episode(points=6))


def test_zero_sizes_are_refused():
  with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
    Transformer(num_layers=0)


@pytest.mark.parametrize("layout", ["interleaved", "akyurek", "concatenated"])
def test_intermediates_are_the_residual_stream_that_gives_the_prediction(layout):
  """The last residual entry, through the final LayerNorm and read-out, is the prediction;
  each block's residual is the one before it plus its attention output plus its MLP's."""
  learner = Transformer(hidden=16, num_layers=2, num_heads=2, max_points=8, layout=layout)
  episode = _episode()
  params = learner.init(jax.random.PRNGKey(0), episode)
  found = learner.intermediates(params, episode)
  residual, attention = np.asarray(found["residual"]), np.asarray(found["attention_output"])
  assert residual.shape == (3, 3, 6, 16) and attention.shape == (2, 3, 6, 16)
  final = params["ln_final"]
  h = residual[-1]
  normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
  y_hat = (normed * final["scale"] + final["bias"]) @ params["read_out"]["kernel"] \
      + params["read_out"]["bias"]
  np.testing.assert_allclose(y_hat, learner.predict(params, episode), rtol=1e-4, atol=1e-5)
  # Layer 0 is the embedding of the x tokens (even tokens): read_in plus positions.
  tokens = np.asarray(tokens_for(layout, episode.x, episode.y))[:, ::2]
  embedded = (tokens @ params["read_in"]["kernel"] + params["read_in"]["bias"]
              + np.asarray(params["positions"])[:12:2])
  np.testing.assert_allclose(residual[0], embedded, rtol=1e-5, atol=1e-6)
  # Block 0 at the x tokens: h = residual[0] + attention output, then h + MLP(LayerNorm(h)).
  block = params["block_0"]
  h = residual[0] + attention[0]
  normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
  m = normed * block["ln_mlp"]["scale"] + block["ln_mlp"]["bias"]
  m = np.asarray(jax.nn.gelu(m @ block["mlp_in"]["kernel"] + block["mlp_in"]["bias"]))
  m = m @ block["mlp_out"]["kernel"] + block["mlp_out"]["bias"]
  np.testing.assert_allclose(residual[1], h + m, rtol=1e-4, atol=1e-5)
