"""Base networks that explicit inner loops adapt: an MLP, and the 4-layer conv net of MAML.

Each maps inputs [n, dim] to outputs [n, out] and keeps its last layer in a separate
`head` parameter collection, so that ANIL can adapt the head alone: params are
{"body": ..., "head": ...} and `features(params["body"], x)` feeds `head(params["head"], f)`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.core import checks

NETWORKS = ("mlp", "conv4")


class MLPBody(nn.Module):
  """Dense + ReLU layers of the given widths (Finn et al.'s 1-40-40-1 has widths (40, 40))."""

  widths: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Dense(width, name=f"dense_{i}")(x))
    return x


class BatchStatNorm(nn.Module):
  """Batch normalisation by the statistics of the batch in hand, never running averages.

  MAML's conv net normalises every batch (support or query) by its own statistics
  (Finn et al.'s code keeps batch norm in training mode), which keeps the network a
  pure function of its parameters and inputs.
  """

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (h.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (h.shape[-1],))
    mean = jnp.mean(h, axis=(0, 1, 2))
    var = jnp.var(h, axis=(0, 1, 2))
    return (h - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class Conv4Body(nn.Module):
  """Four blocks of 3x3 conv, batch-statistics norm, ReLU and 2x2 max-pool (Vinyals et al.)."""

  filters: int
  image_size: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], self.image_size, self.image_size, -1)
    for i in range(4):
      h = nn.Conv(self.filters, (3, 3), padding="SAME", name=f"conv_{i}")(h)
      h = nn.relu(BatchStatNorm(name=f"norm_{i}")(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME")
    return h.reshape(h.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class BaseNetwork:
  """A body and a linear head as pure functions over {"body", "head"} params."""

  kind: str                  # mlp | conv4
  widths: tuple[int, ...]    # mlp hidden widths
  filters: int               # conv4 filters per layer
  image_size: int            # conv4 input side; inputs are [n, image_size² · channels]

  def __post_init__(self):
    checks.check_one_of("network", self.kind, NETWORKS)
    if self.kind == "mlp" and any(w < 1 for w in self.widths):
      raise ValueError(f"mlp widths must all be >= 1, got {self.widths}")
    if self.kind == "conv4" and (self.filters < 1 or self.image_size < 1):
      raise ValueError(f"conv4 needs filters >= 1 and image_size >= 1, got filters="
                       f"{self.filters}, image_size={self.image_size}")

  def check_dim(self, dim: int) -> None:
    if self.kind == "conv4" and dim % (self.image_size ** 2):
      raise ValueError(f"conv4 with image_size={self.image_size} takes inputs of a multiple "
                       f"of {self.image_size ** 2} values (image_size² · channels), got dim={dim}")

  def _body(self) -> nn.Module:
    if self.kind == "mlp":
      return MLPBody(tuple(self.widths))
    return Conv4Body(self.filters, self.image_size)

  def init(self, rng: jax.Array, x: jax.Array, out_dim: int):
    body_key, head_key = jax.random.split(rng)
    body = self._body().init(body_key, x)["params"]
    features = self.features(body, x)
    head = nn.Dense(out_dim).init(head_key, features)["params"]
    return {"body": body, "head": head}

  def features(self, body_params, x: jax.Array) -> jax.Array:
    return self._body().apply({"params": body_params}, x)

  def head(self, head_params, features: jax.Array) -> jax.Array:
    return features @ head_params["kernel"] + head_params["bias"]

  def apply(self, params, x: jax.Array) -> jax.Array:
    return self.head(params["head"], self.features(params["body"], x))
