"""Fine-tuning a transformer's weights on one prompt's examples, predicting each zero-shot.

The one routine behind the `finetune` learner (learners/finetune.py) and the ICL-vs-fine-tuning
measure (analysis/icl_vs_finetune.py), after Dai et al. 2022, "Why can GPT learn in-context?":
the weights take `steps` optimizer steps on the mean loss of their *zero-shot* predictions for the
context pairs, pair i predicted from the one-point prompt (x_i) alone, which sees no examples.
Which weights move is a `Trainable`: all of them, a selection (a 0/1 mask on the gradients, such
as the key and value projections Dai et al. fine-tune), or low-rank adapters (LoRA, Hu et al.
2021) on every 2-D Dense kernel.
"""

import math
from typing import Any, Callable, NamedTuple

import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

from metalearn.core import losses
from metalearn.core.episode import Episode
from metalearn.learners.base import Params
from metalearn.learners.transformer import Transformer

Adapters = dict[str, dict[str, jax.Array]]  # {'/'.join(kernel path): {'a': [in, r], 'b': [r, out]}}


class Trainable(NamedTuple):
  """What a fine-tuning run descends: `start`, the leaves it moves; `to_weights`, those leaves
  -> the transformer's weights; `grad_mask`, None or a pytree like `start` that multiplies the
  gradients (0 freezes a weight: an optimizer step from a zero gradient is zero, Adam's too)."""

  start: Params
  to_weights: Callable[[Params], Params]
  grad_mask: Params | None = None


def all_weights(params: Params) -> Trainable:
  """Every weight of the transformer moves."""
  return Trainable(params, lambda weights: weights)


def selected_weights(params: Params, mask: Params) -> Trainable:
  """Only the weights where `mask` (a pytree like `params`) is 1 move."""
  return Trainable(params, lambda weights: weights, mask)


def kv_mask(params: Params) -> Params:
  """1.0 on the key and value projections, 0.0 on every other weight (a pytree like `params`).

  A block's attn/qkv Dense computes q, k, v as the first, middle and last thirds of its columns.
  """
  def mask(path: tuple[str, ...], leaf: jax.Array) -> jax.Array:
    if path[-3:-1] != ("attn", "qkv"):
      return jnp.zeros_like(leaf)
    hidden = leaf.shape[-1] // 3
    return jnp.broadcast_to(jnp.arange(3 * hidden) >= hidden, leaf.shape).astype(leaf.dtype)

  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({p: mask(p, leaf) for p, leaf in flat.items()})


def _lora_kernels(params: Params) -> list[tuple[str, ...]]:
  """The paths of every 2-D Dense kernel, in a fixed (sorted) order."""
  flat = flax.traverse_util.flatten_dict(params)
  return sorted(path for path, leaf in flat.items() if path[-1] == "kernel" and leaf.ndim == 2)


def lora_adapters(params: Params, rank: int, seed: int) -> Adapters:
  """The initial rank-`rank` adapters of every 2-D Dense kernel W [in, out].

  A [in, r] ~ N(0, 1/in) from fold_in(PRNGKey(seed), kernel index), B [r, out] = 0, so the
  adapted weights start as `params`. LoRA's α/r scale is left out: it only rescales the
  learning rate.
  """
  flat = flax.traverse_util.flatten_dict(params)
  root = jax.random.PRNGKey(seed)
  adapters = {}
  for index, path in enumerate(_lora_kernels(params)):
    fan_in, fan_out = flat[path].shape
    a = jax.random.normal(jax.random.fold_in(root, index), (fan_in, rank), flat[path].dtype)
    adapters["/".join(path)] = {"a": a / math.sqrt(fan_in),
                                "b": jnp.zeros((rank, fan_out), flat[path].dtype)}
  return adapters


def merge_adapters(params: Params, adapters: Adapters) -> Params:
  """The transformer weights with every adapted kernel W replaced by W + A·B."""
  flat = dict(flax.traverse_util.flatten_dict(params))
  for name, adapter in adapters.items():
    path = tuple(name.split("/"))
    flat[path] = flat[path] + adapter["a"] @ adapter["b"]
  return flax.traverse_util.unflatten_dict(flat)


def lora(params: Params, rank: int, seed: int) -> Trainable:
  """Only low-rank adapters move (`lora_adapters`); the weights are W + A·B."""
  return Trainable(lora_adapters(params, rank, seed),
                   lambda adapters: merge_adapters(params, adapters))


def one_point_prompts(x: jax.Array, out_dim: int) -> Episode:
  """x [N, D] -> N one-point prompts (x_n), which see no examples.

  The prediction for x_n is read at x_n's token, before y_n: the zeros are never seen.
  """
  num = x.shape[0]
  return Episode(x=x[:, None], y=jnp.zeros((num, 1, out_dim), x.dtype),
                 mask=jnp.ones((num, 1), x.dtype), zero_loss=jnp.ones((num,), x.dtype))


def zero_shot(transformer: Transformer, weights: Params, x: jax.Array) -> jax.Array:
  """x [N, D] -> [N, O]: the transformer on N one-point prompts (x_n)."""
  out_dim = weights["read_out"]["kernel"].shape[-1]
  return transformer.predict(weights, one_point_prompts(x, out_dim))[:, 0]


def fine_tune(transformer: Transformer, trainable: Trainable, x_context: jax.Array,
              y_context: jax.Array, context_mask: jax.Array, *, steps: int,
              optimizer: optax.GradientTransformation,
              loss: Callable[[jax.Array, jax.Array], jax.Array]) -> Params:
  """One prompt's transformer weights after `steps` steps of `optimizer` (fresh state) on the
  masked mean `loss` (per point, as metalearn.core.losses) of the zero-shot predictions.

  x_context [C, D], y_context [C, O], context_mask [C]: the pairs with mask 0 do not count.
  """
  def context_loss(leaves: Params) -> jax.Array:
    y_hat = zero_shot(transformer, trainable.to_weights(leaves), x_context)   # [C, O]
    return losses.masked_mean(loss(y_hat, y_context), context_mask)

  leaves, _ = descend(context_loss, trainable.start, trainable.grad_mask, steps=steps,
                      optimizer=optimizer)
  return trainable.to_weights(leaves)


def descend(objective: Callable[[Params], jax.Array], start: Params, grad_mask: Params | None,
            *, steps: int, optimizer: optax.GradientTransformation,
            observe: Callable[[Params], Any] | None = None) -> tuple[Params, Any]:
  """`steps` steps of `optimizer` (fresh state) down `objective` from `start`, the gradients
  times `grad_mask` (None: all move); returns the last leaves and `observe(leaves)` after every
  step, stacked (None without `observe`)."""
  def step(carry, _):
    leaves, opt_state = carry
    grads = jax.grad(objective)(leaves)
    if grad_mask is not None:
      grads = jax.tree.map(jnp.multiply, grads, grad_mask)
    updates, opt_state = optimizer.update(grads, opt_state, leaves)
    leaves = optax.apply_updates(leaves, updates)
    return (leaves, opt_state), (None if observe is None else observe(leaves))

  (leaves, _), observed = jax.lax.scan(step, (start, optimizer.init(start)), None, length=steps)
  return leaves, observed
