"""Orbax checkpoints of the train state, with fallback past a damaged latest one."""

import logging
import os
import shutil
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def checkpoint_directory(workdir: str) -> str:
  """Where a work directory's checkpoints live, one subdirectory per saved step."""
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def saved_steps(workdir: str) -> tuple[int, ...]:
  """The steps saved in `workdir`, read from the directory listing alone (no orbax manager)."""
  directory = checkpoint_directory(workdir)
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return tuple(sorted(int(name) for name in names if name.isdigit()))


class CheckpointMismatchError(ValueError):
  """A readable checkpoint that holds a different train state than the config builds."""


class Checkpoints:
  """The checkpoints of one work directory (`<workdir>/checkpoints/<step>`).

  Saves are synchronous: when `save` returns, the step is on disk, so a
  preempted or failing run has lost nothing it reported as saved.
  """

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_directory(workdir)
    self.damaged_directory = os.path.join(os.path.abspath(workdir), "checkpoints_damaged")
    self._keep, self._read_only = keep, read_only
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self._keep, create=not self._read_only, read_only=self._read_only,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=options)

  @property
  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest checkpoint that restores, shaped like `abstract_state`; None if none.

    A checkpoint whose data cannot be read is reported by its step and moved to
    `checkpoints_damaged/`, and the one before it is tried. One that reads but
    does not fit `abstract_state` (the config changed the model or optimizer) is
    left alone and raises CheckpointMismatchError.
    """
    for step in reversed(self.steps):
      try:
        self._manager.restore(step, args=ocp.args.StandardRestore())
      except Exception as error:  # orbax raises many types for unreadable data
        self._set_aside(step, error)
        continue
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except ValueError as error:
        raise CheckpointMismatchError(
            f"the checkpoint at step {step} in {self.directory} does not fit this config's "
            f"train state (was the model or optimizer changed?); use a new workdir. "
            f"Orbax says: {error}") from error
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    log.warning("checkpoint at step %d is damaged (%s: %s); trying the one before it",
                step, type(error).__name__, error)
    if self._read_only:
      return
    os.makedirs(self.damaged_directory, exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)),
                os.path.join(self.damaged_directory, str(step)))
    self._manager.close()
    self._manager = self._open()

  def close(self) -> None:
    self._manager.close()
