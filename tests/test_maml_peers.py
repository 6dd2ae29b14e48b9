"""The benchmark's PyTorch MAML peers compute configs/sinusoid.py's meta-gradient, as ours does.

One fixed meta-batch of 25 sinusoid tasks, our initial weights copied into the torch MLP: the
peer's meta-gradient (after `backward()`) equals jax.grad of our train step's query loss, so
the benchmark times the same algorithm on both sides. Skipped where torch is not installed.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.peers import maml_torch, optional  # noqa: E402  (after the torch check)
from configs import sinusoid  # noqa: E402
from metalearn.core import losses  # noqa: E402
from metalearn.core.episode import Episode  # noqa: E402
from metalearn.engine.runs import build_experiment  # noqa: E402

CASES = [(2, False), (2, True)]  # (inner steps, first order): two steps chain the inner loop


def _meta_batch():
  """25 sinusoid tasks of 10 + 10 points (numpy: our sampler is not what is compared)."""
  rng = np.random.default_rng(3)
  tasks, points = maml_torch.META_BATCH, maml_torch.CONTEXT_POINTS + maml_torch.QUERY_POINTS
  amplitude = rng.uniform(*maml_torch.AMPLITUDE, (tasks, 1, 1))
  phase = rng.uniform(*maml_torch.PHASE, (tasks, 1, 1))
  x = rng.uniform(*maml_torch.X_RANGE, (tasks, points, 1))
  return Episode(x=jnp.asarray(x, jnp.float32),
                 y=jnp.asarray(amplitude * np.sin(x - phase), jnp.float32),
                 mask=jnp.ones((tasks, points)), zero_loss=jnp.ones(tasks))


@functools.cache
def _ours(inner_steps: int, first_order: bool):
  """A meta-batch, initial weights and our meta-gradient for configs/sinusoid.py:maml."""
  config = sinusoid.get_config("maml")
  config.model.update(inner_steps=inner_steps, first_order=first_order)
  experiment = build_experiment(config)
  episode = _meta_batch()
  # Random weights of the learner's shapes (traced, not compiled: the test stays fast).
  shapes = jax.eval_shape(experiment.learner.init, jax.random.PRNGKey(0), episode)
  rng = np.random.default_rng(4)
  # Kernels [in, out] at LeCun's scale, as Flax initialises them; biases small, not zero.
  scale = lambda s: 1 / np.sqrt(s.shape[0]) if len(s.shape) == 2 else 0.1
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, scale(s), s.shape), jnp.float32),
                        shapes)
  loss_from = experiment.loss_from

  def meta_loss(params):
    y_hat = experiment.learner.predict(params, episode)
    return jnp.mean(losses.squared_error(y_hat[:, loss_from:], episode.y[:, loss_from:]))

  return episode, params, jax.jit(jax.grad(meta_loss))(params)


def _dense_layers(tree):
  """Our {"body": {"dense_i"}, "head"} parameters as the torch MLP's (weight, bias) pairs."""
  layers = [tree["body"][name] for name in sorted(tree["body"])] + [tree["head"]]
  return [(np.asarray(layer["kernel"]).T, np.asarray(layer["bias"])) for layer in layers]


def _peer_loss(style, model, inner_steps, first_order):
  if style == "clone_and_adapt":
    return maml_torch.clone_and_adapt_loss(model, inner_steps, first_order)
  if style == "torch_func":
    return maml_torch.torch_func_loss(model, inner_steps, first_order)
  l2l = optional("learn2learn")
  if l2l is None:
    pytest.skip("learn2learn is not installed")
  maml = l2l.algorithms.MAML(model, lr=maml_torch.STEP_SIZE, first_order=first_order)
  return maml_torch.learn2learn_loss(maml, inner_steps)


@pytest.mark.parametrize("style", maml_torch.STYLES)
@pytest.mark.parametrize("inner_steps, first_order", CASES)
def test_peer_meta_gradient_equals_ours(style, inner_steps, first_order):
  episode, params, grads = _ours(inner_steps, first_order)
  model = maml_torch.make_mlp()
  linears = [m for m in model if isinstance(m, torch.nn.Linear)]
  with torch.no_grad():
    for linear, (weight, bias) in zip(linears, _dense_layers(params["net"])):
      linear.weight.copy_(torch.tensor(weight))
      linear.bias.copy_(torch.tensor(bias))
  meta_loss = _peer_loss(style, model, inner_steps, first_order)
  meta_loss(torch.tensor(np.asarray(episode.x)), torch.tensor(np.asarray(episode.y))
            ).backward()
  for linear, (weight_grad, bias_grad) in zip(linears, _dense_layers(grads["net"])):
    np.testing.assert_allclose(linear.weight.grad.numpy(), weight_grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(linear.bias.grad.numpy(), bias_grad, rtol=1e-4, atol=1e-5)


def test_first_order_differs_from_second_order():
  """The comparison above can tell the two orders apart on this batch."""
  _, _, second = _ours(2, False)
  _, _, first = _ours(2, True)
  difference = max(float(jnp.max(jnp.abs(a - b)))
                   for a, b in zip(jax.tree.leaves(second), jax.tree.leaves(first)))
  assert difference > 1e-3
