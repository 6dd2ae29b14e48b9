"""A selective state-space in-context learner in the style of Mamba (Gu and Dao 2023).

Each layer widens the stream to E = expand·hidden channels u and a gate z; every channel c holds
a state h_c of `state_size` N numbers, updated by an input-dependent diagonal recurrence,

    Δ_t = softplus(W_Δ u_t + b_Δ)   [E]          Ā_t = exp(Δ_t A)   [E, N],  A = −exp(A_log) < 0
    h_t = Ā_t ⊙ h_{t−1} + (Δ_t u_t) B_tᵀ          B_t = W_B u_t, C_t = W_C u_t   [N]
    y_t = h_t C_t + D ⊙ u_t,   out_t = W_out (y_t ⊙ silu(z_t)),

the zero-order-hold step of Mamba's selective scan with its simplified B̄ = Δ B. The parallel
pass computes every h_t at once by an associative scan (sequence_model.linear_recurrence); a test
holds it equal to the step-by-step recurrence. Left out of Mamba's block: the short causal
convolution before the scan and the low-rank Δ projection (Δ is a full Dense here); A starts
at the S4D-real values A_cn = −(n + 1).

The state carried between tokens: E·N floats per layer.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.core.episode import Episode
from metalearn.learners.base import Params
from metalearn.learners.registry import LEARNERS
from metalearn.learners.sequence_model import SequenceLearner, linear_recurrence


class SelectiveSSMLayer(nn.Module):
  """[B, T, hidden] -> [B, T, hidden], causal (module docstring)."""

  hidden: int
  expand: int
  state_size: int
  parallel: bool = True

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    width = self.expand * self.hidden
    u, z = jnp.split(nn.Dense(2 * width, name="in_proj")(h), 2, axis=-1)   # [B, T, E] each
    delta = jax.nn.softplus(nn.Dense(width, name="delta")(u))             # [B, T, E]
    b = nn.Dense(self.state_size, name="B")(u)                            # [B, T, N]
    c = nn.Dense(self.state_size, name="C")(u)                            # [B, T, N]
    a_log = self.param("A_log", lambda _, shape: jnp.log(jnp.broadcast_to(
        jnp.arange(1, self.state_size + 1, dtype=jnp.float32), shape)), (width, self.state_size))
    decay = jnp.exp(delta[..., None] * -jnp.exp(a_log))                   # [B, T, E, N]
    states = linear_recurrence(decay, (delta * u)[..., None] * b[:, :, None, :], self.parallel)
    y = jnp.einsum("bten,btn->bte", states, c)
    y = y + self.param("D", nn.initializers.ones, (width,)) * u
    return nn.Dense(self.hidden, name="out_proj")(y * jax.nn.silu(z))


@LEARNERS.register("ssm")
@dataclasses.dataclass(frozen=True)
class SelectiveSSM(SequenceLearner):
  """Stacked residual selective state-space layers (module docstring)."""

  state_size: int = 16   # N: the state numbers per channel (the state: expand·hidden·N)
  expand: int = 2        # channels per stream dimension inside a layer

  def __post_init__(self):
    super().__post_init__()
    for field in ("state_size", "expand"):
      checks.check_int(f"ssm {field}", getattr(self, field), 1, name_kind=False)

  def layer(self, index: int) -> nn.Module:
    return SelectiveSSMLayer(self.hidden, self.expand, self.state_size, name=f"ssm_{index}")

  def state_floats(self, params: Params, episode: Episode) -> int:
    return self.num_layers * self.expand * self.hidden * self.state_size
