"""Linear regression prompts (Garg et al. 2022; Akyürek et al. 2022)."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.tasks.base import ParametricTaskFamily
from metalearn.tasks.registry import TASKS

# E[x_i²] of each input distribution.
_X_VARIANCE = {"normal": 1.0, "uniform": 1.0 / 12.0}

# The most supports a sparse family's prior is written out as (C(20, 3) = 1,140 is Garg et
# al.'s setting); the Bayes predictor holds one fit per support.
_MAX_SUPPORTS = 10_000


@TASKS.register("linear_regression")
@dataclasses.dataclass(frozen=True)
class LinearRegression(ParametricTaskFamily):
  """y = wᵀx + σε with w ~ N(0, τ²I), x ~ N(0, I) (or U(−0.5, 0.5)), ε ~ N(0, 1).

  The zero predictor's expected loss is τ²·E[x_i²]·(active dims) + σ², which is
  Garg et al.'s normaliser d when τ = 1, σ = 0 and x is normal. von Oswald et al.
  2022's reported losses are for x ~ U(−0.5, 0.5) (their code; the text says U(−1, 1)).
  """

  w_scale: float = 1.0           # τ, the prior standard deviation of each weight
  noise_std: float = 0.0         # σ, the output noise standard deviation
  x_distribution: str = "normal"  # normal: N(0, I); uniform: U(−0.5, 0.5) per coordinate

  def __post_init__(self):
    super().__post_init__()
    checks.check_positive("w_scale", self.w_scale, name_kind=False)
    checks.check_number("noise_std", self.noise_std, at_least=0, name_kind=False)
    checks.check_one_of("x_distribution", self.x_distribution, _X_VARIANCE)

  @property
  def ridge_lambda(self) -> float:
    """λ = σ²/τ², for which ridge regression is the posterior mean."""
    return self.noise_std**2 / self.w_scale**2

  def gaussian_components(self) -> list[tuple[float, tuple[float, ...], float]]:
    """The prior as (probability, prior std of each weight, noise std): one Gaussian."""
    return [(1.0, (self.w_scale,) * self.dim, self.noise_std)]

  def draw_task(self, rng, dim_mask):
    kw = jax.random.split(rng, 3)[1]
    return {"w": self.w_scale * jax.random.normal(kw, (self.dim, 1)) * dim_mask[:, None]}

  def sample_for_task(self, rng, points, dim_mask, task):
    kx, _, kn = jax.random.split(rng, 3)
    if self.x_distribution == "normal":
      x = jax.random.normal(kx, (points, self.dim))
    else:
      x = jax.random.uniform(kx, (points, self.dim), minval=-0.5, maxval=0.5)
    x = x * dim_mask
    y = x @ task["w"] + self.noise_std * jax.random.normal(kn, (points, 1))
    zero_loss = (self.w_scale**2 * _X_VARIANCE[self.x_distribution] * jnp.sum(dim_mask)
                 + self.noise_std**2)
    return x, y, zero_loss, task


@TASKS.register("sparse_linear_regression")
@dataclasses.dataclass(frozen=True)
class SparseLinearRegression(ParametricTaskFamily):
  """Garg et al. 2022's sparse linear functions: y = wᵀx + σε with s non-zero weights.

  The support is s coordinates drawn uniformly without replacement among the
  active ones (all of them while fewer than s are active), each weight N(0, τ²).
  The zero predictor's expected loss is τ²·min(s, active dims) + σ², Garg et
  al.'s normaliser s when τ = 1 and σ = 0.
  """

  sparsity: int = 3       # s, the number of non-zero weights
  w_scale: float = 1.0    # τ, the prior standard deviation of each non-zero weight
  noise_std: float = 0.0  # σ, the output noise standard deviation

  def __post_init__(self):
    super().__post_init__()
    if not 1 <= self.sparsity <= self.dim:
      raise ValueError(f"sparsity must be in [1, dim={self.dim}], got {self.sparsity}")
    checks.check_positive("w_scale", self.w_scale, name_kind=False)
    checks.check_number("noise_std", self.noise_std, at_least=0, name_kind=False)

  def gaussian_components(self) -> list[tuple[float, tuple[float, ...], float]]:
    """The prior as one Gaussian per support, each equally likely (with every dimension
    active, as at evaluation): (probability, prior std of each weight, noise std)."""
    count = math.comb(self.dim, self.sparsity)
    if count > _MAX_SUPPORTS:
      raise ValueError(f"sparse_linear_regression with dim={self.dim}, sparsity="
                       f"{self.sparsity} has {count} supports; a Gaussian mixture over them "
                       f"allows at most {_MAX_SUPPORTS}")
    return [(1.0 / count, tuple(self.w_scale * (i in support) for i in range(self.dim)),
             self.noise_std) for support in itertools.combinations(range(self.dim),
                                                                   self.sparsity)]

  def draw_task(self, rng, dim_mask):
    _, ks, kw, _ = jax.random.split(rng, 4)
    # The s smallest of i.i.d. uniform scores form a uniform s-subset; inactive
    # coordinates score above every active one, so they are chosen last.
    scores = jnp.where(dim_mask > 0, jax.random.uniform(ks, (self.dim,)), 2.0)
    rank = jnp.argsort(jnp.argsort(scores))
    support = (rank < self.sparsity) * dim_mask                       # [dim]
    return {"w": self.w_scale * jax.random.normal(kw, (self.dim, 1)) * support[:, None]}

  def sample_for_task(self, rng, points, dim_mask, task):
    kx, _, _, kn = jax.random.split(rng, 4)
    x = jax.random.normal(kx, (points, self.dim)) * dim_mask
    y = x @ task["w"] + self.noise_std * jax.random.normal(kn, (points, 1))
    num_nonzero = jnp.minimum(self.sparsity, jnp.sum(dim_mask))
    zero_loss = self.w_scale**2 * num_nonzero + self.noise_std**2
    return x, y, zero_loss, task
