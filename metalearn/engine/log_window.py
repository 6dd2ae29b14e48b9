"""A logging window: the per-step metrics behind one row of `metrics.jsonl`, kept across a stop.

Rows are means over windows that end where the step count says (multiples of
`train.log_every`, and `train.num_steps`), never where a run happened to stop. A
checkpoint saved inside a window (SIGTERM, `should_stop`, or a `checkpoint_every` off
the log grid) saves the window's steps so far beside it, and a run resumed from that
checkpoint starts its window from them: its next row averages the same steps, to the
bit, as an uninterrupted run's.
"""

import io
import logging
import os

import numpy as np

from metalearn.engine.workdir import write_atomically

log = logging.getLogger(__name__)

WINDOW_DIR = "log_windows"  # <workdir>/log_windows/<step>.npz, one per checkpoint inside a window
_FIRST_STEP = "__first_step__"


class LogWindow:
  """The host copies of the per-step metrics of steps `first_step`, `first_step + 1`, ..."""

  def __init__(self, first_step: int, metrics: dict[str, np.ndarray] | None = None):
    self.first_step = first_step
    self._chunks = [metrics] if metrics else []

  @property
  def num_steps(self) -> int:
    return sum(len(next(iter(chunk.values()))) for chunk in self._chunks)

  def add(self, metrics: dict[str, np.ndarray]) -> None:
    """Appends one host call's metrics, [steps_per_call] per name."""
    self._chunks.append(metrics)

  def stacked(self) -> dict[str, np.ndarray]:
    return {name: np.concatenate([chunk[name] for chunk in self._chunks])
            for name in self._chunks[0]}

  def check_finite(self, last_saved: int | None) -> None:
    """Raises FloatingPointError at the first step whose loss or gradient is NaN or Inf."""
    stacked = self.stacked()
    # A finite loss with a non-finite gradient would still write NaN into the params.
    losses = np.where(np.isfinite(stacked["grad_norm"]), stacked["loss"], np.nan)
    losses = losses.reshape(len(losses), -1)             # [steps, members] (one: a single run)
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
      step, member = bad[0]
      kept = f"step {last_saved}" if last_saved is not None else "none yet"
      which = f" of sweep member {member}" if losses.shape[1] > 1 else ""
      raise FloatingPointError(
          f"training loss or its gradient{which} became {losses[step, member]} at step "
          f"{self.first_step + int(step)}; stopped without saving. "
          f"The last good checkpoint ({kept}) is untouched: lower train.learning_rate or set "
          "train.grad_clip.")

  def means(self) -> dict[str, float]:
    """Each metric's mean over the window; a sweep's ([steps, members]) also each member's, as
    "<name>/member_<i>" (engine/sweep.py writes them into the members' own rows)."""
    means = {}
    for name, values in self.stacked().items():
      means[name] = float(np.mean(values))
      if values.ndim == 2:
        means.update({member_metric(name, i): float(v) for i, v in
                      enumerate(np.mean(values, axis=0))})
    return means

  def save(self, workdir: str, step: int) -> None:
    """Writes the window so far for the checkpoint at `step` (before that checkpoint).

    Replaced atomically, so a kill leaves the old file or the new one, whole.
    """
    directory = os.path.join(workdir, WINDOW_DIR)
    os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{_FIRST_STEP: np.asarray(self.first_step)}, **self.stacked())
    write_atomically(os.path.join(directory, f"{step}.npz"), buffer.getvalue())


def window_start(step: int, log_every: int) -> int:
  """The first step of the logging window that holds step `step + 1`."""
  return step - step % log_every + 1


def resume_window(workdir: str, step: int, log_every: int) -> LogWindow:
  """The window a run resumed at `step` goes on filling: the saved steps, or none at a boundary.

  A checkpoint inside a window whose steps were not kept (written by an older version)
  is logged, and the next row then averages only the steps after `step`.
  """
  first = window_start(step, log_every)
  if first == step + 1:
    return LogWindow(first)
  path = os.path.join(workdir, WINDOW_DIR, f"{step}.npz")
  if os.path.exists(path):
    with np.load(path) as saved:
      metrics = {name: saved[name] for name in saved.files if name != _FIRST_STEP}
      window = LogWindow(int(saved[_FIRST_STEP]), metrics)
    if window.first_step == first and window.num_steps == step + 1 - first:
      return window
  log.warning("the metrics of steps %d-%d were not kept with the checkpoint at step %d: the "
              "next row of metrics averages only the steps after %d", first, step, step, step)
  return LogWindow(step + 1)


def prune_windows(workdir: str, kept_steps: list[int]) -> None:
  """Deletes the saved windows of checkpoints no longer kept."""
  directory = os.path.join(workdir, WINDOW_DIR)
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    stem = name.split(".")[0]
    if not (name.endswith(".npz") and stem.isdigit() and int(stem) in kept_steps):
      os.remove(os.path.join(directory, name))


def member_metric(name: str, member: int) -> str:
  """The name of a sweep member's metric in the sweep's rows."""
  return f"{name}/member_{member}"
