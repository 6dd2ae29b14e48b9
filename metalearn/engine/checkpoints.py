"""Orbax checkpoints of the train state, checksummed, with fallback past damaged ones."""

import hashlib
import logging
import os
import re
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

# The two items of a checkpoint: orbax's single-item name for the train state (so checkpoints
# written before checksums existed restore unchanged) and the state's checksums beside it.
_STATE, _CHECKSUMS = "default", "checksums"
_CHECKSUM_FORMAT = "sha256 of dtype, shape and bytes, per leaf"


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


class ChecksumError(ValueError):
  """A checkpoint whose arrays read back differently from the checksums saved with them."""


class DamagedCheckpointsError(RuntimeError):
  """A work directory whose checkpoints are all damaged: resuming would start over from step 0.

  `summary` says which steps were damaged and where they are now; `advice`, what the caller
  can do about it.
  """

  def __init__(self, summary: str, advice: str = ""):
    super().__init__(f"{summary}. {advice}" if advice else summary)
    self.summary = summary


def _leaf_name(path: tuple[Any, ...]) -> str:
  # Names only ("opt_state/1/0/mu/..."), not keystr's brackets and dots: a checkpoint restored
  # without a target comes back as nested dicts and lists, where the train state has dataclasses
  # and named tuples, and the two must name each leaf alike.
  return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
                  for key in path)


def state_checksums(state: Any) -> dict[str, str]:
  """A sha256 per leaf of `state` (its dtype, shape and bytes on the host), keyed by leaf path."""
  checksums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    checksums[_leaf_name(path)] = digest.hexdigest()
  return checksums


def _verify(step: int, state: Any, saved: Any) -> None:
  """Raises ChecksumError unless `state` has exactly the leaves and bytes `saved` records."""
  if not isinstance(saved, dict) or saved.get("format") != _CHECKSUM_FORMAT:
    raise ChecksumError(f"the checksums saved at step {step} are unreadable")
  actual, expected = state_checksums(state), saved.get("leaves")
  if actual != expected:
    expected = expected if isinstance(expected, dict) else {}
    differing = sorted(set(actual) ^ set(expected)
                       | {k for k in set(actual) & set(expected) if actual[k] != expected[k]})
    raise ChecksumError(f"arrays differ from the checksums saved with them: {_shown(differing)}")


def _leaves(tree: Any) -> dict[str, Any]:
  return {_leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shown(names: list[str]) -> str:
  """The first three of `names`, and how many more."""
  return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _misfits(saved: Any, target: Any) -> str:
  """How a state restored as saved does not fit `target` (leaf names, shapes, dtypes): a
  sentence for the error, or "" when it fits."""
  saved, target = _leaves(saved), _leaves(target)
  missing, extra = sorted(set(target) - set(saved)), sorted(set(saved) - set(target))
  differing = [f"{name} {np.shape(saved[name])} {np.dtype(saved[name].dtype)} saved, "
               f"{np.shape(target[name])} {np.dtype(target[name].dtype)} here"
               for name in sorted(set(saved) & set(target))
               if (np.shape(saved[name]) != np.shape(target[name])
                   or np.dtype(saved[name].dtype) != np.dtype(target[name].dtype))]
  parts = ([f"it lacks {_shown(missing)}"] if missing else []) + (
      [f"it has {_shown(extra)}, which this config lacks"] if extra else []) + (
      [f"its shapes or dtypes differ: {_shown(differing)}"] if differing else [])
  return "; ".join(parts)


def _laid_out(saved: Any, target: Any) -> Any:
  """A state restored as saved, in `target`'s tree, each leaf placed as its target leaf is."""
  arrays = _leaves(saved)
  paths, treedef = jax.tree_util.tree_flatten_with_path(target)

  def placed(path, leaf):
    array = arrays[_leaf_name(path)]
    sharding = getattr(leaf, "sharding", None)  # a numpy leaf asks for a host array
    return np.asarray(array) if sharding is None else jax.device_put(array, sharding)

  return jax.tree_util.tree_unflatten(treedef, [placed(path, leaf) for path, leaf in paths])


# Tensorstore ends its messages with the whole JSON spec of the array it opened (about 1.5 KB).
_SPEC = re.compile(r"\s*\[tensorstore_spec=.*", re.S)


def _reason(error: Exception, limit: int = 240) -> str:
  """`error` in one short line: its type and message, without tensorstore's JSON spec.

  Tensorstore nests its causes as "outer: ...: innermost"; past `limit` characters the innermost
  (the end) is kept, as it names what is wrong with the bytes.
  """
  text = " ".join(_SPEC.sub("", str(error)).split())
  if len(text) > limit:
    text = "..." + text[-limit:]
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


# When one array of a damaged checkpoint fails to read, orbax's `run_sync` closes its event loop at
# once, while the reads of the other arrays are still in flight. Their leftovers, which nobody can
# catch, used to print a traceback per array (up to 120 lines after one damaged checkpoint):
# - tensorstore's late callbacks call `loop.call_soon_threadsafe` on the closed loop: a
#   RuntimeError("Event loop is closed") on a tensorstore thread, sent to `sys.unraisablehook`;
# - abandoned orbax read coroutines that failed too are finalised with their error unretrieved
#   (`sys.unraisablehook` again, with tensorstore's whole JSON spec);
# - futures that did get their error before the loop closed log "Future exception was never
#   retrieved" to the `asyncio` logger when collected.
# Nothing is lost by dropping exactly these: the restore has already failed and is reported in one
# line. Both filters are installed once, before the first restore, and left in place, as the
# leftovers arrive on tensorstore's threads or at garbage collection, after the restore returned.


def _is_abandoned_read(unraisable) -> bool:
  error, source = unraisable.exc_value, unraisable.object
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True
  code = getattr(source, "cr_code", None)
  return code is not None and f"{os.sep}orbax{os.sep}checkpoint{os.sep}" in code.co_filename


def _drop_abandoned_reads(previous_hook):
  """An unraisable hook that drops a failed restore's leftovers, passing on everything else."""

  def hook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous_hook(unraisable)

  hook.drops_abandoned_reads = True
  return hook


class _AbandonedReadFilter(logging.Filter):
  """Drops asyncio's "exception was never retrieved" for a tensorstore read, keeps the rest."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not (str(record.msg).split("\n", 1)[0].endswith("exception was never retrieved")
                and "tensorstore" in str(error).lower())


def _quiet_abandoned_reads() -> None:
  if not getattr(sys.unraisablehook, "drops_abandoned_reads", False):
    sys.unraisablehook = _drop_abandoned_reads(sys.unraisablehook)
  asyncio_log = logging.getLogger("asyncio")
  if not any(isinstance(f, _AbandonedReadFilter) for f in asyncio_log.filters):
    asyncio_log.addFilter(_AbandonedReadFilter())


def _items() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  """The two items of a checkpoint, each with the handler that saves and restores it."""
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for item, handler, save, restore in (
      (_STATE, ocp.StandardCheckpointHandler(), ocp.args.StandardSave, ocp.args.StandardRestore),
      (_CHECKSUMS, ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore)):
    registry.add(item, save, handler)
    registry.add(item, restore, handler)
  return registry


class Checkpoints:
  """The checkpoints of one work directory (`<workdir>/checkpoints/<step>`).

  Saves are synchronous: when `save` returns, the step is on disk, so a
  preempted or failing run has lost nothing it reported as saved.

  Every checkpoint holds, beside the train state, a sha256 of each of its arrays
  (a second orbax item, committed atomically with the state); a restore returns
  only arrays whose bytes match them. A checkpoint saved before checksums existed
  (its step has no checksums item, in its directory or its orbax metadata) is
  restored with a warning that it could not be verified; one that names a
  checksums item but cannot produce it is damaged.

  `read_only`: restores only (as `load_run` does): nothing is saved or moved.

  In a run of several processes (`jax.distributed`), every process saves and restores, as orbax
  needs: orbax writes each replicated array once, from process 0, and waits for all of them.
  Only process 0 moves a damaged checkpoint aside.
  """

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_directory(workdir)
    self.damaged_directory = os.path.join(os.path.abspath(workdir), "checkpoints_damaged")
    self._keep, self._read_only = keep, read_only
    self._manager = self._open()
    # Restores read a step's directory through a checkpointer of both items, not through the
    # manager: configured by its handler registry, a manager takes a step that holds an item
    # named "default" (orbax's name for a single unnamed item) for a single-item checkpoint,
    # which ours are not, and refuses to restore the two items of one.
    self._reader = ocp.Checkpointer(ocp.CompositeCheckpointHandler(handler_registry=_items()))

  def _open(self) -> ocp.CheckpointManager:
    # A read-only instance never saves, deletes or moves, so orbax's own read_only mode (which
    # warns three times on every open, as if something were wrong) is not needed: the same
    # manager, opened without creating the directory and keeping every step, writes nothing.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(
            None if self._read_only else self._keep),
        create=not self._read_only, enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=options, handler_registry=_items())

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @property
  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    if self._read_only:
      raise PermissionError(f"{self.directory} was opened read-only; cannot save step {step}")
    checksums = {"format": _CHECKSUM_FORMAT, "leaves": state_checksums(state)}
    self._manager.save(step, force=True, args=ocp.args.Composite(**{
        _STATE: ocp.args.StandardSave(state), _CHECKSUMS: ocp.args.JsonSave(checksums)}))
    self._manager.wait_until_finished()

  def _has_checksums(self, step: int) -> bool:
    path = os.path.join(self.directory, str(step))
    if os.path.isdir(os.path.join(path, _CHECKSUMS)):
      return True
    return _CHECKSUMS in (self._reader.metadata(path).item_handlers or {})

  def _restore(self, step: int, checked: bool) -> Any:
    """The state saved at `step`, as saved (nested dicts and lists), verified if `checked`."""
    items = {_STATE: ocp.args.StandardRestore()}
    if checked:
      items[_CHECKSUMS] = ocp.args.JsonRestore()
    restored = self._reader.restore(os.path.join(self.directory, str(step)),
                                    args=ocp.args.Composite(**items))
    if checked:
      _verify(step, restored[_STATE], restored[_CHECKSUMS])
    return restored[_STATE]

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest checkpoint that restores, shaped like `abstract_state`; None if none was saved.

    Each checkpoint is read once, as saved, and then laid out as `abstract_state`
    (its leaves' shapes, dtypes and shardings; arrays or `jax.ShapeDtypeStruct`s).
    A checkpoint whose data cannot be read, or reads back different from its
    checksums, is reported by its step in one line and moved to
    `checkpoints_damaged/`, and the one before it is tried. If every checkpoint
    is damaged (or none is left beside ones set aside before), raises
    DamagedCheckpointsError rather than return None, which would start over.
    One that reads but does not fit `abstract_state` (the config changed the
    model or optimizer) is left alone and raises CheckpointMismatchError.
    """
    _quiet_abandoned_reads()
    earlier, damaged = self._set_aside_before(), []
    for step in reversed(self.steps):
      try:
        checked = self._has_checksums(step)
        # Restored as saved: unreadable or altered bytes mean damage, while saved arrays that
        # do not fit this config's train state mean the config changed.
        saved = self._restore(step, checked)
      except Exception as error:  # orbax and tensorstore raise many types for unreadable data
        damaged.append(step)
        self._set_aside(step, error)
        continue
      if not checked:
        log.warning("checkpoint at step %d was saved before checkpoints had checksums: restored "
                    "without verifying its arrays", step)
      misfits = _misfits(saved, abstract_state)
      if misfits:
        raise CheckpointMismatchError(
            f"the checkpoint at step {step} in {self.directory} does not fit this config's "
            f"train state (was the model or optimizer changed?): {misfits}. Use a new workdir")
      return _laid_out(saved, abstract_state)
    if not damaged and not earlier:
      return None
    where = (f"left in {self.directory} (read-only)" if self._read_only
             else f"moved to {self.damaged_directory}")
    found = (f"steps {', '.join(map(str, sorted(damaged)))} {where}" if damaged
             else "no checkpoint left")
    before = f"; set aside earlier: {', '.join(earlier)}" if earlier else ""
    raise DamagedCheckpointsError(
        f"every checkpoint in {self.directory} is damaged ({found}{before})")

  def _set_aside_before(self) -> list[str]:
    """The checkpoints an earlier restore moved to `checkpoints_damaged/`."""
    if not os.path.isdir(self.damaged_directory):
      return []
    return sorted(os.listdir(self.damaged_directory),
                  key=lambda name: [int(part) for part in name.split(".") if part.isdigit()])

  def _set_aside(self, step: int, error: Exception) -> None:
    log.debug("checkpoint at step %d failed to restore", step, exc_info=error)
    if self._read_only:
      log.warning("checkpoint at step %d is damaged (%s); trying the one before it", step,
                  _reason(error))
      return
    if jax.process_index() != 0:
      # Process 0 moves it; every process reopens its manager, as orbax's may wait for all.
      log.warning("checkpoint at step %d is damaged (%s); process 0 moves it aside, trying the "
                  "one before it", step, _reason(error))
      self._manager.close()
      self._manager = self._open()
      return
    os.makedirs(self.damaged_directory, exist_ok=True)
    # A step damaged a second time (after a restart) must not land inside the first one.
    name, copy = str(step), 0
    while os.path.exists(os.path.join(self.damaged_directory, name)):
      copy += 1
      name = f"{step}.{copy}"
    shutil.move(os.path.join(self.directory, str(step)), os.path.join(self.damaged_directory, name))
    log.warning("checkpoint at step %d is damaged (%s); moved to %s, trying the one before it",
                step, _reason(error), os.path.join(os.path.basename(self.damaged_directory), name))
    self._manager.close()
    self._manager = self._open()

  def close(self) -> None:
    self._manager.close()
    self._reader.close()
