"""A run's work directory: its file names, the lock that gives it to one process, the config it
was launched with and the changes made to it since, and its metrics log.

Every file that holds finished work is replaced atomically (written beside it, then renamed), so
a process killed at any moment leaves either the old file or the new one, never half of one. The
one exception is the metrics log, appended line by line while training: a kill can tear its
last line, which `rewind_metrics` drops with a warning (that step is logged again on resume).
"""

import dataclasses
import errno
import fcntl
import json
import logging
import os
import time
from typing import Any, Mapping

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"                 # the config the run was launched with
CONFIG_CHANGES_FILE = "config_changes.jsonl"  # one line per relaunch that changed it
METRICS_FILE = "metrics.jsonl"              # one line per logged step
EVAL_DIR = "eval"                           # the final evaluation's tables and plots
LOCK_FILE = "lock"                          # the pid of the process holding the directory
# Config fields added after runs were saved without them, with the value those runs trained under:
# a saved config that lacks one reads as having it, so that relaunching an older run resumes it.
FIELDS_ADDED = {"train.data_parallel": "pmap"}


class WorkdirError(Exception):
  """A work directory that cannot be used as asked; the message says why and what to do."""


class WorkdirBusyError(WorkdirError):
  """The directory is held by another live process (or another call in this one)."""


class ConfigChangedError(WorkdirError):
  """A relaunch whose config differs from the one the run has been trained with."""


class DamagedMetricsError(WorkdirError):
  """A line of metrics.jsonl, other than a torn last one, that does not read."""


def write_atomically(path: str, data: str | bytes) -> None:
  """Replaces `path` by `data`: written beside it, synced, then renamed over it."""
  partial = path + ".partial"
  with open(partial, "wb" if isinstance(data, bytes) else "w") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, path)


# The lock.

class WorkdirLock:
  """Holds a directory for this process while the `with` block runs (creating the directory).

  An exclusive `flock` on `<directory>/lock`, which holds the holder's pid: the OS drops the lock
  when its process dies, however it dies, so a killed run never leaves its directory stuck. A
  second holder is refused with WorkdirBusyError naming the first one's pid; a path that cannot
  be a directory (a file, a path under a file, no write permission) raises WorkdirError.
  `process`: this process's index in a multi-host run, whose processes share the directory
  (each holds its own lock file, `lock.<process>` past the first).
  """

  def __init__(self, directory: str, what: str = "work directory", process: int = 0):
    self.directory, self.what = directory, what
    self.path = os.path.join(directory, LOCK_FILE if process == 0 else f"{LOCK_FILE}.{process}")
    self._fd: int | None = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise WorkdirError(f"cannot use {self.directory!r} as a {self.what}: it is a file")
    while True:
      try:
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as error:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOTDIR, errno.EEXIST):
          reason = "a part of the path is a file, not a directory"
        raise WorkdirError(f"cannot use {self.directory!r} as a {self.what}: {reason}") from error
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _holder_pid(fd)
        os.close(fd)
        raise WorkdirBusyError(
            f"{self.what} {self.directory!r} is in use by process {holder} (its pid is in "
            f"{self.path}); wait for it to finish or stop it, or use another directory") from None
      except OSError as error:  # a file system without locks (some network mounts)
        os.close(fd)
        log.warning("%s %s: the file system cannot lock %s (%s); nothing stops a second "
                    "process from using it at the same time", self.what, self.directory,
                    self.path, error.strerror)
        return
      # The previous holder unlinks the file before it unlocks: a file locked after that is no
      # longer the lock, so take the one now at the path instead.
      if _same_file(fd, self.path):
        break
      os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    if _same_file(self._fd, self.path):
      os.unlink(self.path)
    os.close(self._fd)
    self._fd = None


def lock_holder(directory: str) -> str | None:
  """The pid of the live process holding `directory`, or None; creates nothing."""
  try:
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _holder_pid(fd)
  finally:
    os.close(fd)  # also drops the shared lock, if it was taken
  return None


def _same_file(fd: int, path: str) -> bool:
  try:
    on_disk = os.stat(path)
  except FileNotFoundError:
    return False
  held = os.fstat(fd)
  return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _holder_pid(fd: int) -> str:
  """The pid the holder wrote; it writes it just after locking, so wait for it a moment."""
  for _ in range(20):
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if text:
      return text
    time.sleep(0.05)
  return "(pid not written)"


# The config.

def plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """A config as it reads back from JSON (tuples become lists): the form runs are compared in."""
  to_dict = getattr(config, "to_dict", None)
  return json.loads(json.dumps(to_dict() if to_dict else dict(config), sort_keys=True))


def save_config(directory: str, config: Mapping[str, Any]) -> None:
  """Writes the config a new run is launched with."""
  write_atomically(os.path.join(directory, CONFIG_FILE),
                    json.dumps(plain_config(config), indent=2, sort_keys=True) + "\n")


def _read_json_lines(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as error:
        raise WorkdirError(f"{path} line {number} is damaged ({error.msg})") from error
  return rows


def read_config_changes(directory: str) -> list[dict[str, Any]]:
  """The recorded relaunches that changed the config, oldest first: each
  `{"step": s, "changes": [{"field": "train.learning_rate", "old": .., "new": ..}, ...]}`,
  the config in effect from step `s` on (a field without "old" was added, one without "new"
  removed)."""
  return _read_json_lines(os.path.join(directory, CONFIG_CHANGES_FILE))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for field, value in sorted(flat.items()):
    *parents, name = field.split(".")
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[name] = value
  return tree


def config_in_effect(directory: str) -> dict[str, Any] | None:
  """The saved config with every recorded change applied: the config the latest steps were
  trained under. None if the directory holds no run."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      flat = _flatten(json.load(f))
    except json.JSONDecodeError as error:
      raise WorkdirError(f"{path} is damaged ({error.msg} at line {error.lineno})") from error
  if any(field.startswith("train.") for field in flat):
    for field, value in FIELDS_ADDED.items():
      flat.setdefault(field, value)
  for record in read_config_changes(directory):
    for change in record["changes"]:
      if "new" in change:
        flat[change["field"]] = change["new"]
      else:
        flat.pop(change["field"], None)
  return _unflatten(flat)


_ABSENT = object()


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]
                       ) -> list[dict[str, Any]]:
  """Every field that differs between two plain configs, as dotted paths with old/new values."""
  old_flat, new_flat = _flatten(old), _flatten(new)
  changes = []
  for field in sorted(set(old_flat) | set(new_flat)):
    if old_flat.get(field, _ABSENT) != new_flat.get(field, _ABSENT):
      change = {"field": field}
      if field in old_flat:
        change["old"] = old_flat[field]
      if field in new_flat:
        change["new"] = new_flat[field]
      changes.append(change)
  return changes


def describe_differences(changes: list[dict[str, Any]]) -> str:
  """`train.learning_rate 0.001 -> 0.01; task.dim 5 -> 8`, absent values as `(absent)`."""
  def show(change, key):
    return json.dumps(change[key]) if key in change else "(absent)"
  return "; ".join(f"{c['field']} {show(c, 'old')} -> {show(c, 'new')}" for c in changes)


def check_config(directory: str, config: Mapping[str, Any], allow_change: bool
                 ) -> list[dict[str, Any]] | None:
  """How a launch's config stands against the run in `directory`; writes nothing.

  None: no run there yet. []: the same config, a plain resume. Otherwise the differences,
  allowed only with `allow_change`; without it raises ConfigChangedError listing them.
  """
  saved = config_in_effect(directory)
  if saved is None:
    return None
  changes = config_differences(saved, plain_config(config))
  if changes and not allow_change:
    raise ConfigChangedError(
        f"the config differs from the one the run in {directory!r} was trained with: "
        f"{describe_differences(changes)}. Relaunch with that config, use a new workdir, or "
        "allow the change (launch/train.py --allow_config_change) to record it and resume "
        "under it")
  return changes


def record_config_change(directory: str, step: int, changes: list[dict[str, Any]]) -> None:
  """Records that the config changed as `changes` say from `step` on; config.json is kept."""
  lines = [json.dumps(record, sort_keys=True) + "\n" for record in read_config_changes(directory)]
  lines.append(json.dumps({"step": step, "changes": changes}, sort_keys=True) + "\n")
  write_atomically(os.path.join(directory, CONFIG_CHANGES_FILE), "".join(lines))
  log.info("the config changed from step %d on (recorded in %s): %s", step,
           CONFIG_CHANGES_FILE, describe_differences(changes))


# The metrics log.

@dataclasses.dataclass(frozen=True)
class MetricsLog:
  """A metrics file as read once at a run's start: its whole lines, each as (text, row), and
  whether a torn last line (cut by a kill) was left out. `lines` is None when there is no file."""
  path: str
  lines: tuple[tuple[str, dict[str, Any]], ...] | None
  torn: bool = False

  @property
  def rows(self) -> list[dict[str, Any]]:
    return [row for _, row in self.lines or ()]

  def rewind(self, step: int) -> None:
    """Rewrites the file without the lines logged after `step`, and without a torn last line:
    a resumed run logs them again."""
    if self.lines is None:
      return
    if self.torn:
      log.warning("%s: dropped its last line, cut off mid-write (the run was killed while "
                  "logging); the resumed run logs that step again", self.path)
    write_atomically(self.path,
                     "".join(text + "\n" for text, row in self.lines if row["step"] <= step))


def read_metrics_log(path: str) -> MetricsLog:
  """The logged lines of a metrics file; raises DamagedMetricsError naming any line, other than
  a torn last one (being written now, or cut by a kill), that does not read."""
  if not os.path.exists(path):
    return MetricsLog(path, None)
  with open(path, "rb") as f:
    data = f.read()
  pieces = data.split(b"\n")  # the last piece is empty when the file ends with a newline
  kept = []
  for number, raw in enumerate(pieces, 1):
    if not raw.strip():
      continue
    try:
      text = raw.decode()
      row = json.loads(text)
      int(row["step"])
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError):
      # Each line is written with its newline in one write: a cut one has lost its newline.
      if number == len(pieces):
        return MetricsLog(path, tuple(kept), torn=True)
      raise DamagedMetricsError(
          f"{path} line {number} is damaged ({raw[:60]!r}); it is a finished step's record, so "
          "the run does not discard it: repair or delete that line, then relaunch") from None
    kept.append((text, row))
  return MetricsLog(path, tuple(kept))


def read_metrics(path: str) -> list[dict[str, Any]]:
  """The logged rows of a metrics file, in order, without a torn last line (one being written
  now, or cut by a kill); raises DamagedMetricsError naming any other line that does not read."""
  return read_metrics_log(path).rows


def rewind_metrics(path: str, step: int) -> None:
  """Drops the lines logged after `step`, and a torn last line: a resumed run logs them again."""
  read_metrics_log(path).rewind(step)
