"""How alike two learners are on the same episodes, for any learner with `predict(params, episode)`.

- Squared prediction difference, Σ_out (ŷ_a − ŷ_b)² per point (Akyürek et al. 2022's SPD
  before averaging), and its square root, the L2 difference of predictions.
- Sensitivity: the gradient of the prediction at one position with respect to that position's
  own input, ∂ŷ_i/∂x_i with the context pairs held fixed (von Oswald et al. 2022 compare it
  between a trained LSA network and GD); for a linear predictor ŷ = x_qᵀŵ it is ŵ itself,
  the weights the learner implicitly applies. Taken with `jax.jacrev`, one prompt at a time
  (vmapped), so it is exact and holds whatever the learner does inside `predict`.
- The cosine similarity and L2 difference of two learners' sensitivities, per prompt.

Every function returns per-prompt (or per-point) values: average them, or keep them for
standard errors.
"""

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode
from metalearn.learners.base import Learner, Params


def prediction_difference(learner_a: Learner, params_a: Params, learner_b: Learner,
                          params_b: Params, episode: Episode) -> jax.Array:
  """Σ_out (ŷ_a − ŷ_b)² at every point [batch, points]."""
  y_a = learner_a.predict(params_a, episode)
  y_b = learner_b.predict(params_b, episode)
  return jnp.sum(jnp.square(y_a - y_b), axis=-1)


def _check_position(episode: Episode, position: int) -> None:
  if not 0 <= position < episode.num_points:
    raise ValueError(f"position must be in [0, {episode.num_points - 1}] for episodes of "
                     f"{episode.num_points} points, got {position}")


def sensitivity(learner: Learner, params: Params, episode: Episode, position: int) -> jax.Array:
  """∂ŷ/∂x_q [batch, out, dim] at `position`: the query's own input, its context held fixed.

  Only the first `position + 1` points are passed to the learner: the prediction at
  `position` is made from the pairs before it, and the points after it play no part.
  """
  _check_position(episode, position)
  prefix = episode.prefix(position + 1)

  def one_prompt(prompt: Episode) -> jax.Array:
    def prediction(x_q):
      single = jax.tree.map(lambda a: a[None], prompt.replace(x=prompt.x.at[position].set(x_q)))
      return learner.predict(params, single)[0, position]          # [out]
    return jax.jacrev(prediction)(prompt.x[position])               # [out, dim]

  return jax.vmap(one_prompt)(prefix)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per prompt, ⟨a, b⟩/(‖a‖‖b‖) over all but the leading axis; 0 where either is zero."""
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return jnp.sum(a * b, axis=-1) / jnp.where(norms > 0, norms, 1.0)


def l2_difference(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per prompt, ‖a − b‖ over all but the leading axis."""
  return jnp.linalg.norm((a - b).reshape(a.shape[0], -1), axis=-1)


def compare(learner_a: Learner, params_a: Params, learner_b: Learner, params_b: Params,
            episode: Episode, position: int) -> dict[str, jax.Array]:
  """Per prompt [batch], at `position`: how alike two learners' predictions and sensitivities are.

  Keys: prediction_sq_diff (Σ_out (ŷ_a − ŷ_b)²), prediction_l2 (its square root),
  sensitivity_cosine, sensitivity_l2 (‖∂ŷ_a/∂x_q − ∂ŷ_b/∂x_q‖).
  """
  _check_position(episode, position)
  prefix = episode.prefix(position + 1)
  sq_diff = prediction_difference(learner_a, params_a, learner_b, params_b, prefix)[:, position]
  s_a = sensitivity(learner_a, params_a, prefix, position)
  s_b = sensitivity(learner_b, params_b, prefix, position)
  return {"prediction_sq_diff": sq_diff, "prediction_l2": jnp.sqrt(sq_diff),
          "sensitivity_cosine": cosine_similarity(s_a, s_b),
          "sensitivity_l2": l2_difference(s_a, s_b)}
