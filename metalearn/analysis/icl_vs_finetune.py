"""In-context learning against fine-tuning, layer by layer: SimAOU (Dai et al. 2022).

Dai, Sun, Dong, Hao, Ma, Sui and Wei 2022, "Why can GPT learn in-context? Language models secretly
perform gradient descent as meta-optimizers", §4. SimAOU measures how alike the change that the
demonstrations make to each attention sublayer's output at the query (ICL) is to the change that
fine-tuning on those same demonstrations makes to it (the cosine of the two updates).

For a prompt of C context pairs then a query x_q, at every layer l and at x_q's token:
  zero-shot    a_l(θ; x_q): the attention output when the prompt is x_q alone (one point);
  ICL update   a_l(θ; pairs, x_q) − a_l(θ; x_q);
  FT update    a_l(θ'; x_q) − a_l(θ; x_q), θ' after `steps` SGD steps on the mean zero-shot
               squared error of the C pairs, each x_i its own one-point prompt (the routine
               of `learners.fine_tuning`, which `learners.finetune.FineTune` runs too).
               Following Dai et al. only the key and value projections move by default. A
               one-point prompt's softmax attends to its own token alone, with weight 1
               whatever the logit, so there the keys (and queries) receive no gradient: under
               softmax attention only the values move.
Untrained models score similarly on such measures (Deutch et al. 2024, "In-context learning and
gradient descent revisited"), so `with_random_control` measures a freshly initialised
transformer of the same architecture beside the trained one.
"""

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.core import losses
from metalearn.core.checks import check_int, check_positive
from metalearn.core.episode import Episode, check_context_points
from metalearn.evaluation.intervals import mean_and_interval
from metalearn.learners import fine_tuning
from metalearn.learners.base import Params
from metalearn.learners.capabilities import exposes
from metalearn.learners.transformer import Transformer
from metalearn.analysis.similarity import cosine_similarity


def _check(transformer: Any, episode: Episode, context_points: Any, steps: Any,
           learning_rate: Any) -> None:
  """Every bad argument fails here, before anything is traced or compiled."""
  if not exposes(transformer, "attention_output"):
    raise TypeError(f"icl_vs_finetune needs a learner whose hidden states include its attention "
                    f"outputs (a transformer), got "
                    f"{type(transformer).__name__}")
  check_context_points(episode, context_points)
  check_int("steps", steps, 0)
  check_positive("learning_rate", learning_rate)
  transformer.check_episode(context_points + 1, episode.dim)


def _finetune(transformer: Transformer, params: Params, x_context: jax.Array,
              y_context: jax.Array, mask_context: jax.Array, steps: int, kv_only: bool,
              learning_rate: jax.Array) -> Params:
  """One prompt's weights after `steps` SGD steps on its context's zero-shot loss [C, D], [C, O]."""
  trainable = (fine_tuning.selected_weights(params, fine_tuning.kv_mask(params)) if kv_only
               else fine_tuning.all_weights(params))
  return fine_tuning.fine_tune(transformer, trainable, x_context, y_context, mask_context,
                               steps=steps, optimizer=optax.sgd(learning_rate),
                               loss=losses.squared_error)


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
  out_dim = params["read_out"]["kernel"].shape[-1]

  def one_prompt(x, y, mask):
    tuned = _finetune(transformer, params, x[:c], y[:c], mask[:c], steps, kv_only, learning_rate)
    # θ and θ' go through one batched pass: with steps = 0 the two outputs are bit for bit
    # equal, so the FT update is exactly 0 rather than the rounding of two kernels.
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, tuned)
    query_alone = fine_tuning.one_point_prompts(x[c:], out_dim)
    zero_shot = jax.vmap(lambda w: transformer.intermediates(w, query_alone)[
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
  check_int("seed", seed, 0)
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
