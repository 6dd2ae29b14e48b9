"""How sure a mean over held-out prompts is: normal-theory and percentile bootstrap intervals."""

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import checks


def mean_and_interval(per_prompt: np.ndarray, z: float = 1.96) -> tuple[float, float]:
  """The mean over prompts and the half-width z·std/√n of its interval.

  z = 1.96 gives the 95% interval (Finn et al. report theirs so), z = 1 the standard error.
  The std is the prompts' own (ddof = 0), as every table of the evaluation reports it.
  """
  per_prompt = np.asarray(per_prompt, np.float64)
  return float(per_prompt.mean()), float(z * per_prompt.std() / np.sqrt(len(per_prompt)))


def bootstrap_interval(per_prompt: np.ndarray, resamples: int, seed: int, level: float = 0.9
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The percentile bootstrap interval of the mean over prompts (axis 0) at `level`.

  per_prompt [prompts, ...] -> (low, high), each [...]: prompts resampled with replacement
  `resamples` times, as counts per prompt (one matrix product, no loop over resamples).
  NaN entries (positions a learner does not predict) stay NaN.
  """
  checks.check_int("bootstrap resamples", resamples, 1, name_kind=False)
  checks.check_number("bootstrap level", level, above=0, below=1, name_kind=False)
  values = np.asarray(per_prompt, np.float64)
  n = values.shape[0]
  picks = jax.random.randint(jax.random.PRNGKey(seed), (resamples, n), 0, n)
  counts = np.asarray(jnp.zeros((resamples, n)).at[jnp.arange(resamples)[:, None], picks]
                      .add(1.0), np.float64)
  means = counts @ values.reshape(n, -1) / n                       # [resamples, ...]
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(means, [tail, 100 - tail], axis=0)
  return low.reshape(values.shape[1:]), high.reshape(values.shape[1:])


def bootstrap_curve(per_prompt: np.ndarray, resamples: int, seed: int
                    ) -> dict[str, np.ndarray]:
  """per_prompt [prompts, points] -> {mean, low, high} [points]: the mean over prompts at each
  position and its 90% percentile bootstrap interval (NaN where nothing was predicted)."""
  low, high = bootstrap_interval(per_prompt, resamples, seed)
  return {"mean": per_prompt.mean(axis=0), "low": low, "high": high}
