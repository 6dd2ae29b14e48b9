"""Garg et al. 2022's least-squares baseline as their evaluation runs it (their src/models.py,
`LeastSquaresModel`): for every prefix length i, one `torch.linalg.lstsq` on the first i pairs of
all prompts at once (LAPACK's default driver, gelsy on CPU), and the prediction at point i."""

import os

import numpy as np


def prefix_least_squares(torch, x: np.ndarray, y: np.ndarray, threads: int | None = None):
  """A callable that predicts every position of x [B, P, D], y [B, P] (float32) from the pairs
  before it, and returns the predictions [B, P] as a torch tensor; it runs at `threads`
  threads (default: one per core)."""
  threads = threads or os.cpu_count() or 1
  xs, ys = (torch.from_numpy(np.array(a, np.float32)) for a in (x, y))

  def run():
    torch.set_num_threads(threads)
    predictions = [torch.zeros_like(ys[:, 0])]
    for i in range(1, xs.shape[1]):
      weights = torch.linalg.lstsq(xs[:, :i], ys[:, :i].unsqueeze(2)).solution
      predictions.append((xs[:, i:i + 1] @ weights)[:, 0, 0])
    return torch.stack(predictions, dim=1)
  return run
