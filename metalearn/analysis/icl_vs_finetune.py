"""In-context learning against fine-tuning, layer by layer: SimAOU (Dai et al. 2022).

Dai, Sun, Dong, Hao, Ma, Sui and Wei 2022, "Why can GPT learn in-context? Language models secretly
perform gradient descent as meta-optimizers", §4. SimAOU measures how alike the change that the
demonstrations make to each attention sublayer's output at the query (ICL) is to the change that
fine-tuning on those same demonstrations makes to it (the cosine of the two updates).

For a prompt of C context pairs then a query x_q, at every layer l and at x_q's token:
  zero-shot    a_l(θ; x_q): the attention output when the prompt is x_q alone (one point);
  ICL update   a_l(θ; pairs, x_q) − a_l(θ; x_q);
  FT update    a_l(θ'; x_q) − a_l(θ; x_q), θ' after `steps` SGD steps on the mean zero-shot
               squared error of the C pairs, each x_i its own one-point prompt (as
               `learners.finetune.FineTune`). Following Dai et al. only the key and value
               projections move by default. A one-point prompt's softmax attends to its own
               token alone, with weight 1 whatever the logit, so there the keys (and queries)
               receive no gradient: under softmax attention only the values move.
Untrained models score similarly on such measures (Deutch et al. 2024, "In-context learning and
gradient descent revisited"), so `with_random_control` measures a freshly initialised
transformer of the same architecture beside the trained one.
"""

import functools
import numbers
from typing import Any, Mapping

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import losses
from metalearn.core.episode import Episode, check_context_points
from metalearn.evaluation.evaluate import mean_and_interval
from metalearn.learners.base import Params
from metalearn.learners.transformer import Transformer
from metalearn.analysis.similarity import cosine_similarity


def _check(transformer: Any, episode: Episode, context_points: Any, steps: Any,
           learning_rate: Any) -> None:
  """Every bad argument fails here, before anything is traced or compiled."""
  if not isinstance(transformer, Transformer):
    raise TypeError(f"icl_vs_finetune needs a Transformer learner, got "
                    f"{type(transformer).__name__}")
  check_context_points(episode, context_points)
  if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
    raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
  if (isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real)
      or not learning_rate > 0):  # `not > 0` also refuses NaN
    raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
  transformer.check_episode(context_points + 1, episode.dim)


def _one_point(x: jax.Array, out_dim: int) -> Episode:
  """x [N, D] -> N one-point prompts (x_n): read at x_n's token, before y_n, so y is never seen."""
  num = x.shape[0]
  return Episode(x=x[:, None], y=jnp.zeros((num, 1, out_dim), x.dtype),
                 mask=jnp.ones((num, 1), x.dtype), zero_loss=jnp.ones((num,), x.dtype))


def _out_dim(params: Params) -> int:
  return params["read_out"]["kernel"].shape[-1]


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


def _finetune(transformer: Transformer, params: Params, x_context: jax.Array,
              y_context: jax.Array, mask_context: jax.Array, steps: int, kv_only: bool,
              learning_rate: jax.Array) -> Params:
  """One prompt's weights after `steps` SGD steps on its context's zero-shot loss [C, D], [C, O]."""
  grad_mask = kv_mask(params) if kv_only else None

  def context_loss(weights):
    y_hat = transformer.predict(weights, _one_point(x_context, _out_dim(weights)))[:, 0]
    return losses.masked_mean(losses.squared_error(y_hat, y_context), mask_context)

  def step(weights, _):
    grads = jax.grad(context_loss)(weights)
    if grad_mask is not None:
      grads = jax.tree.map(jnp.multiply, grads, grad_mask)
    return jax.tree.map(lambda w, g: w - learning_rate * g, weights, grads), None

  weights, _ = jax.lax.scan(step, params, None, length=steps)
  return weights


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _finetuned(transformer: Transformer, params: Params, episode: Episode, context_points: int,
               steps: int, kv_only: bool, learning_rate: jax.Array) -> Params:
  tune = functools.partial(_finetune, transformer, params, steps=steps, kv_only=kv_only,
                           learning_rate=learning_rate)
  c = context_points
  return jax.vmap(tune)(episode.x[:, :c], episode.y[:, :c], episode.mask[:, :c])


def finetuned_params(transformer: Transformer, params: Params, episode: Episode,
                     context_points: int, *, steps: int, learning_rate: float,
                     kv_only: bool = True) -> Params:
  """Each prompt's fine-tuned weights, every leaf with a leading [batch] axis."""
  _check(transformer, episode, context_points, steps, learning_rate)
  return _finetuned(transformer, params, episode.prefix(context_points).replace(info={}),
                    context_points, steps, bool(kv_only),
                    jnp.asarray(learning_rate, episode.x.dtype))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _updates(transformer: Transformer, params: Params, prompt: Episode, steps: int,
             kv_only: bool, learning_rate: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(ICL update, FT update) [layers, batch, hidden] for prompts of C pairs and the query."""
  c = prompt.num_points - 1
  out_dim = _out_dim(params)

  def one_prompt(x, y, mask):
    tuned = _finetune(transformer, params, x[:c], y[:c], mask[:c], steps, kv_only, learning_rate)
    # θ and θ' go through one batched pass: with steps = 0 the two outputs are bit for bit
    # equal, so the FT update is exactly 0 rather than the rounding of two kernels.
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, tuned)
    zero_shot = jax.vmap(lambda w: transformer.intermediates(w, _one_point(x[c:], out_dim))[
        "attention_output"][:, 0, 0])(both)                           # [2, layers, hidden]
    return zero_shot[0], zero_shot[1] - zero_shot[0]

  zero_shot, ft_update = jax.vmap(one_prompt, out_axes=1)(prompt.x, prompt.y, prompt.mask)
  icl = transformer.intermediates(params, prompt)["attention_output"][:, :, c]
  return icl - zero_shot, ft_update


def compare_updates(icl_update: jax.Array, ft_update: jax.Array) -> dict[str, np.ndarray]:
  """SimAOU of two updates [layers, batch, hidden]: per layer and prompt [layers, batch].

  Keys: cosine (0 where either update is zero, as `similarity.cosine_similarity`),
  icl_norm, finetune_norm, and the updates themselves.
  """
  if icl_update.shape != ft_update.shape or icl_update.ndim != 3:
    raise ValueError(f"updates must share one shape [layers, batch, hidden], got "
                     f"{icl_update.shape} and {ft_update.shape}")
  cosine = jax.vmap(cosine_similarity)(icl_update, ft_update)
  return {"cosine": np.asarray(cosine),
          "icl_norm": np.asarray(jnp.linalg.norm(icl_update, axis=-1)),
          "finetune_norm": np.asarray(jnp.linalg.norm(ft_update, axis=-1)),
          "icl_update": np.asarray(icl_update), "finetune_update": np.asarray(ft_update)}


def icl_vs_finetune(transformer: Transformer, params: Params, episode: Episode,
                    context_points: int, *, steps: int, learning_rate: float,
                    kv_only: bool = True) -> dict[str, np.ndarray]:
  """SimAOU (Dai et al. 2022, §4) of every layer on every prompt, the query at `context_points`.

  The first `context_points` pairs are the demonstrations; points after the query are ignored.
  The transformer's pass reads no mask, so the ICL update sees every context pair; the FT loss
  weighs them by `episode.mask` (as FineTune): keep the context switched on.
  Returns `compare_updates`' dict: cosine, icl_norm, finetune_norm [layers, batch];
  icl_update, finetune_update [layers, batch, hidden].
  """
  _check(transformer, episode, context_points, steps, learning_rate)
  prompt = episode.prefix(context_points + 1).replace(info={})
  icl, ft = _updates(transformer, params, prompt, steps, bool(kv_only),
                     jnp.asarray(learning_rate, episode.x.dtype))
  return compare_updates(icl, ft)


def with_random_control(transformer: Transformer, params: Params, episode: Episode,
                        context_points: int, *, seed: int, **kwargs
                        ) -> dict[str, dict[str, np.ndarray]]:
  """{"trained": ..., "random_init": ...}: `icl_vs_finetune` of `params` and of the same
  architecture's untrained weights, transformer.init(PRNGKey(seed), episode), on the same
  prompts with the same settings (Deutch et al. 2024: a random model is the baseline).
  """
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
    raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
  trained = icl_vs_finetune(transformer, params, episode, context_points, **kwargs)
  # Only the prompt's length is cut: a transformer's weights do not depend on it.
  random_params = transformer.init(jax.random.PRNGKey(seed), episode.prefix(context_points + 1))
  return {"trained": trained,
          "random_init": icl_vs_finetune(transformer, random_params, episode, context_points,
                                         **kwargs)}


def _summarise_one(result: Mapping[str, np.ndarray]) -> dict[str, Any]:
  cosine = np.asarray(result["cosine"], np.float64)                   # [layers, batch]
  per_layer = [mean_and_interval(layer) for layer in cosine]
  # The mean over layers is taken per prompt first, so its interval is over prompts too.
  mean, ci95 = mean_and_interval(cosine.mean(axis=0))
  return {"cosine_mean": np.array([m for m, _ in per_layer]),
          "cosine_ci95": np.array([h for _, h in per_layer]),
          "cosine_mean_over_layers": mean, "cosine_ci95_over_layers": ci95}


def summarise(result: Mapping[str, Any]) -> dict[str, Any]:
  """Per layer the mean cosine over prompts and its 95% interval, 1.96·std/√n, and the same for
  the mean over layers: cosine_mean, cosine_ci95 [layers]; cosine_mean_over_layers,
  cosine_ci95_over_layers. Takes one `icl_vs_finetune` result, or a dict of them (as from
  `with_random_control`) and then summarises each entry under its name.
  """
  if "cosine" in result:
    return _summarise_one(result)
  if not result or not all(isinstance(r, Mapping) and "cosine" in r for r in result.values()):
    raise ValueError(f"summarise needs an icl_vs_finetune result (a 'cosine' key) or a dict of "
                     f"them, got keys {sorted(result)}")
  return {name: _summarise_one(r) for name, r in result.items()}
