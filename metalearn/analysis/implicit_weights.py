"""Implicit linear weights: the linear map that best explains a learner's predictions.

Akyürek et al. 2022 (section 4, "ILWD"): fix a prompt's first k pairs as the context, ask the
learner for its prediction at many fresh probe inputs, and fit ŵ = argmin_w Σ_m (x_mᵀw − ŷ_m)²
by least squares. For a learner that is linear in its query (least squares, ridge, k GD steps,
a GD-layer network) ŵ is exactly the weights it applies; for any other it is the best linear
description. The implicit linear weight difference of two learners is ‖ŵ_a − ŵ_b‖².
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.episode import Episode
from metalearn.evaluation.prompts import chunks
from metalearn.evaluation.shots import check_predicts_at
from metalearn.learners import Learner
from metalearn.learners.base import Params
from metalearn.learners.capabilities import PredictsQueries
from metalearn.tasks import TaskFamily


def probe_episodes(episode: Episode, shots: int, probe_x: jax.Array) -> Episode:
  """Per prompt and probe: the first `shots` pairs, then the probe input (its y is never read).

  episode [B, P, ...], probe_x [B, M, D] -> [B·M, shots + 1]; the prediction for the probe is
  the one at position `shots`.
  """
  batch, probes = probe_x.shape[:2]

  def context_then(a, last):
    context = jnp.broadcast_to(a[:, None, :shots], (batch, probes, shots) + a.shape[2:])
    return jnp.concatenate([context, last[:, :, None]], axis=2).reshape(
        (batch * probes, shots + 1) + a.shape[2:])

  y_probe = jnp.zeros(probe_x.shape[:2] + episode.y.shape[2:], episode.y.dtype)
  repeat = lambda a: jnp.repeat(a, probes, axis=0)
  return Episode(x=context_then(episode.x, probe_x), y=context_then(episode.y, y_probe),
                 mask=context_then(episode.mask, jnp.ones(probe_x.shape[:2], episode.mask.dtype)),
                 zero_loss=repeat(episode.zero_loss), info=jax.tree.map(repeat, episode.info))


def least_squares_fit(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per prompt, the least-squares ŵ [B, D, O] of y [B, M, O] on x [B, M, D] (M >= D)."""
  return jnp.einsum("bdm,bmo->bdo", jnp.linalg.pinv(x), y,
                    precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _implicit_weights(learner: Learner, shots: int, params: Params, episode: Episode,
                      probe_x: jax.Array) -> jax.Array:
  if isinstance(learner, PredictsQueries):
    y_hat = learner.predict_queries(params, episode.prefix(shots), probe_x)
  else:
    y_hat = learner.predict(params, probe_episodes(episode, shots, probe_x))[:, shots]
    y_hat = y_hat.reshape(probe_x.shape[:2] + y_hat.shape[-1:])
  return least_squares_fit(probe_x, y_hat)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def probe_inputs(task: TaskFamily, num_prompts: int, num_probes: int, seed: int) -> jax.Array:
  """[prompts, probes, D]: fresh inputs from the task's own input distribution."""
  return task.sample(jax.random.PRNGKey(seed), num_prompts, num_probes).x


def check_probes(shots: int, num_probes: int, points: int, dim: int) -> None:
  if not 0 <= shots < points:
    raise ValueError(f"implicit weights at {shots} examples: allowed 0 to {points - 1} for "
                     f"prompts of {points} points")
  if num_probes < dim:
    raise ValueError(f"implicit weights need at least dim = {dim} probe inputs to determine a "
                     f"linear map, got num_probes={num_probes}")


def implicit_weights(learner: Learner, params: Params, task: TaskFamily, episode: Episode,
                     shots: int, num_probes: int, seed: int, batch_size: int) -> np.ndarray:
  """ŵ [prompts, D, O] per prompt, from `num_probes` probe inputs drawn from the task.

  The probes are the task's own inputs (x ~ N(0, I) for Garg et al.'s linear regression),
  drawn from `seed`, the same for every learner whatever the chunking; prompts run in
  chunks of `batch_size`.
  """
  check_probes(shots, num_probes, episode.num_points, episode.dim)
  check_predicts_at(learner, shots, "its implicit weights exist at {context} examples only, "
                    "asked for {shots}")
  probe_x = probe_inputs(task, episode.batch_size, num_probes, seed)
  parts = [_implicit_weights(learner, shots, params, chunk, probe_x[start:start + batch_size])
           for start, chunk in zip(range(0, episode.batch_size, batch_size),
                                   chunks(episode, batch_size))]
  return np.concatenate([np.asarray(p) for p in parts])


def weight_difference(w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
  """Per prompt, ‖ŵ_a − ŵ_b‖² (Akyürek et al.'s ILWD before averaging)."""
  return np.sum(np.square(w_a - w_b).reshape(w_a.shape[0], -1), axis=-1)
