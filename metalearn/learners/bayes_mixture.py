"""The Bayes predictor of a mixture of Gaussian priors over linear weights (Bai et al. 2023):
noise levels, sparse supports, or both.

Component c has probability π_c, prior w ~ N(0, diag(s_c)²) and noise σ_c. Given the pairs
before position i, the posterior over components weighs each by its marginal likelihood, which
the chain rule writes as a product of one-step predictive densities,
  p(y_<i | x_<i, c) = Π_{j<i} N(y_j; x_jᵀ ŵ_c,<j, σ_c²(1 + x_jᵀ T T ᵀ x_j)),
where ŵ_c,<j is the component's posterior mean (ridge with its own prior) and σ_c² T Tᵀ its
posterior covariance after the pairs before j. Both come from updated_factor.py's square-root
filter started at T = diag(s_c)/σ_c: the posterior-mean prediction is Σ_c p(c | ·) x_iᵀ ŵ_c,<i.
No LAPACK call; every component of every prompt is one row of one batched scan.
"""

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode
from metalearn.learners import updated_factor
from metalearn.learners.base import Learner
from metalearn.learners.registry import LEARNERS

# Floats of the [prompts × components, D, D] filter roots one compiled chunk holds (~32 MB).
_CHUNK_FLOATS = 1 << 23


@runtime_checkable
class GaussianMixturePrior(Protocol):
  """A task whose prior is a mixture of Gaussians over linear weights (tasks/linear.py's
  families, tasks/mixture.py's mixtures of them)."""

  def gaussian_components(self) -> list[tuple[float, tuple[float, ...], float]]:
    """(probability, prior std of each weight, noise std) per component."""


def components_of(task: Any) -> tuple[tuple[float, tuple[float, ...], float], ...]:
  """The task's Gaussian components, or a ValueError naming the task and what is allowed."""
  if not isinstance(task, GaussianMixturePrior):
    raise ValueError(f"baseline 'bayes_mixture' needs a task with a Gaussian prior over linear "
                     f"weights (linear_regression, sparse_linear_regression, a mixture of "
                     f"them); {type(task).__name__} has none")
  return tuple((float(p), tuple(map(float, std)), float(noise))
               for p, std, noise in task.gaussian_components())


@LEARNERS.register("bayes_mixture")
@dataclasses.dataclass(frozen=True)
class BayesMixture(Learner):
  """The posterior mean under `components`: ((probability, prior stds [D], noise std), ...)."""

  components: tuple

  trainable = False

  def __post_init__(self):
    if not self.components:
      raise ValueError("bayes_mixture needs at least one component")
    for i, (p, std, noise) in enumerate(self.components):
      if not (noise > 0 and math.isfinite(noise)):
        raise ValueError(f"bayes_mixture component {i} has noise std {noise!r}; allowed: a "
                         "finite noise std > 0 (a noiseless component has no density)")
      if not p >= 0 or min(std) < 0:
        raise ValueError(f"bayes_mixture component {i} has probability {p!r} and prior stds "
                         f"{std!r}; allowed: non-negative values")
    total = sum(p for p, _, _ in self.components)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
      raise ValueError(f"bayes_mixture probabilities sum to {total:.9g}; allowed: 1")

  def init(self, rng, episode: Episode):
    return {}

  def state_floats(self, params, episode: Episode) -> int:
    """Per component: the filter's root and mean, and the log-likelihood so far."""
    dim, out = episode.dim, episode.y.shape[-1]
    return len(self.components) * (dim * dim + dim * out + 1)

  def predict(self, params, episode: Episode) -> jax.Array:
    """[batch, points, out], prompts in chunks that bound the filters' roots."""
    num, dim = len(self.components), episode.dim
    if any(len(std) != dim for _, std, _ in self.components):
      raise ValueError(f"bayes_mixture prior stds have lengths "
                       f"{sorted({len(s) for _, s, _ in self.components})}; the prompts have "
                       f"dim {dim}")
    chunk = max(1, min(episode.batch_size, _CHUNK_FLOATS // (num * dim * dim)))
    return jax.lax.map(lambda xy: self._predict_prompt(*xy), (episode.x, episode.y),
                       batch_size=chunk)

  def _predict_prompt(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """x [P, D], y [P, O] -> [P, O]; the components are the rows of one filter."""
    dim, out = x.shape[-1], y.shape[-1]
    log_prior = jnp.log(jnp.asarray([p for p, _, _ in self.components], jnp.float32))
    noise = jnp.asarray([n for _, _, n in self.components], jnp.float32)        # [C]
    scale = jnp.asarray([s for _, s, _ in self.components], jnp.float32)        # [C, D]
    num = noise.shape[0]
    start = updated_factor.Fit(
        jnp.zeros((num, dim, out), x.dtype), jax.vmap(jnp.diag)(scale / noise[:, None]),
        jnp.zeros((num, dim, dim), x.dtype), jnp.full((num,), dim, jnp.int32))

    def step(carry, pair):
      fit, log_lik = carry
      xp, yp = (jnp.broadcast_to(v, (num,) + v.shape) for v in pair)
      a = jnp.einsum("ced,ce->cd", fit.root, xp, precision=jax.lax.Precision.HIGHEST)
      variance = noise**2 * (1 + jnp.sum(a * a, axis=-1))                       # [C]
      fit, prediction = updated_factor.add(fit, xp, yp, rtol=0.0, explore=False)
      posterior = jax.nn.softmax(log_prior + log_lik)     # from the pairs before this one
      mean = jnp.einsum("c,co->o", posterior, prediction, precision=jax.lax.Precision.HIGHEST)
      density = -0.5 * jnp.sum(jnp.log(2 * jnp.pi * variance)[:, None]
                               + jnp.square(yp - prediction) / variance[:, None], axis=-1)
      return (fit, log_lik + density), mean

    _, means = jax.lax.scan(step, (start, jnp.zeros((num,), x.dtype)), (x, y))
    return means
