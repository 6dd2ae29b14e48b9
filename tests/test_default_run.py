"""The README's default run shows in-context learning (slow: it trains for minutes)."""

import numpy as np
import pytest

from configs.linear_regression import get_config
from metalearn.engine.train import train_and_evaluate


@pytest.mark.slow
def test_default_run_learns_linear_regression_in_context(tmp_path):
  config = get_config()
  errors = train_and_evaluate(config, str(tmp_path / "run")).errors
  d = config.task.dim
  past_d = slice(d + 2, None)
  transformer = errors["transformer"]
  # Well below averaging, and close to least squares (exact past k = d) once k > d.
  assert np.all(transformer[past_d] < 0.5 * errors["averaging"][past_d])
  assert np.all(transformer[past_d] - errors["least_squares"][past_d] < 0.1)
  assert transformer[-1] < 0.03
