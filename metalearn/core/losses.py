"""Per-point losses by name: tasks score predictions with them, inner loops train on them.

Each maps predictions and targets [..., out] to a loss per point [...]. A task names its
loss (`TaskFamily.loss_name`); a learner with an explicit inner loop names the loss it
descends, and building an experiment checks the two agree.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from metalearn.core import checks


def squared_error(y_hat: jax.Array, y: jax.Array) -> jax.Array:
  """Σ_out (ŷ − y)²."""
  return jnp.sum(jnp.square(y_hat - y), axis=-1)


def logistic(y_hat: jax.Array, y: jax.Array) -> jax.Array:
  """Σ_out softplus(−y·ŷ) for labels y ∈ {−1, +1}; predicting 0 costs log 2."""
  return jnp.sum(jax.nn.softplus(-y * y_hat), axis=-1)


def softmax_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """−Σ_out y·log softmax(logits) for one-hot (or soft) labels y."""
  return -jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1)


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "squared_error": squared_error,
    "logistic": logistic,
    "softmax_cross_entropy": softmax_cross_entropy,
}


def masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Σ w·v / Σ w, and 0 where no weight is on (an empty context)."""
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def get(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  checks.check_one_of("loss", name, LOSSES)
  return LOSSES[name]
