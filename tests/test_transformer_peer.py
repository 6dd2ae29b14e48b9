"""The benchmark's PyTorch transformer peer computes our transformer's function.

Garg et al.'s TransformerModel (benchmarks/peers/garg_transformer.py) with our initial weights
copied in gives our predictions at every x token, so the transformer suite times the same
model on both sides. Skipped where torch or transformers is not installed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.peers import garg_transformer  # noqa: E402  (after the torch check)
from metalearn.core.episode import Episode  # noqa: E402
from metalearn.learners.transformer import Transformer, interleave  # noqa: E402

HIDDEN, LAYERS, HEADS, POINTS, DIM, BATCH = 16, 2, 2, 5, 3, 4


def _episode() -> Episode:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((BATCH, POINTS, DIM)).astype(np.float32)
  w = rng.standard_normal((BATCH, DIM, 1)).astype(np.float32)
  return Episode(x=jnp.asarray(x), y=jnp.asarray(x @ w), mask=jnp.ones((BATCH, POINTS)),
                 zero_loss=jnp.ones(BATCH))


def _copy(params, model: garg_transformer.TransformerModel) -> None:
  """Our flax parameters into the torch model (nn.Linear stores its kernel transposed)."""
  tensor = lambda a: torch.from_numpy(np.array(a))
  linear = lambda module, p: (module.weight.copy_(tensor(p["kernel"]).T),
                              module.bias.copy_(tensor(p["bias"])))
  conv1d = lambda module, p: (module.weight.copy_(tensor(p["kernel"])),
                              module.bias.copy_(tensor(p["bias"])))
  norm = lambda module, p: (module.weight.copy_(tensor(p["scale"])),
                            module.bias.copy_(tensor(p["bias"])))
  backbone = model._backbone
  with torch.no_grad():
    linear(model._read_in, params["read_in"])
    linear(model._read_out, params["read_out"])
    backbone.wpe.weight.copy_(tensor(params["positions"]))
    norm(backbone.ln_f, params["ln_final"])
    for i, block in enumerate(backbone.h):
      ours = params[f"block_{i}"]
      norm(block.ln_1, ours["ln_attn"])
      norm(block.ln_2, ours["ln_mlp"])
      conv1d(block.attn.c_attn, ours["attn"]["qkv"])
      conv1d(block.attn.c_proj, ours["attn"]["out"])
      conv1d(block.mlp.c_fc, ours["mlp_in"])
      conv1d(block.mlp.c_proj, ours["mlp_out"])


def test_combine_is_our_interleaved_layout():
  episode = _episode()
  combined = garg_transformer.TransformerModel._combine(
      torch.from_numpy(np.array(episode.x)), torch.from_numpy(np.array(episode.y[..., 0])))
  np.testing.assert_array_equal(combined.numpy(), np.array(interleave(episode.x, episode.y)))


def test_peer_with_our_weights_predicts_as_ours():
  episode = _episode()
  learner = Transformer(hidden=HIDDEN, num_layers=LAYERS, num_heads=HEADS, max_points=POINTS)
  params = learner.init(jax.random.PRNGKey(0), episode)
  model = garg_transformer.TransformerModel(DIM, POINTS, HIDDEN, LAYERS, HEADS)
  _copy(params, model)
  with torch.no_grad():
    theirs = model(torch.from_numpy(np.array(episode.x)),
                   torch.from_numpy(np.array(episode.y[..., 0]))).numpy()
  ours = np.array(learner.predict(params, episode))[..., 0]
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_training_call_continues_one_run():
  run, model = garg_transformer.make_training(HIDDEN, LAYERS, HEADS, steps=3, batch=BATCH,
                                              points=POINTS, dim=DIM)
  before = model._read_in.weight.detach().clone()
  losses = [run(), run()]
  assert all(np.isfinite(losses))
  assert not torch.equal(before, model._read_in.weight)  # Adam stepped the model in place
