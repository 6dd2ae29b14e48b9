"""Writing a comparison to its report directory: CSV and JSON tables, PNGs, a Markdown summary.

Each measure is written as soon as it is computed, so a comparison stopped part-way keeps what
it finished; `summary.md` is written last and embeds every table and figure present.
"""

import csv
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from metalearn.engine import workdir

SUMMARY = "summary.md"


def check_report_dir(directory: str) -> None:
  """A report never overwrites another: the directory must be new or empty (but for the lock
  of the compare that holds it), and not held by another compare."""
  holder = workdir.lock_holder(directory)
  if holder is not None and holder != str(os.getpid()):
    raise workdir.WorkdirBusyError(f"report directory {directory!r} is being written by "
                                   f"compare process {holder}; give another directory")
  if os.path.exists(directory) and (not os.path.isdir(directory) or
                                    set(os.listdir(directory)) - {workdir.LOCK_FILE}):
    raise FileExistsError(f"report directory {directory!r} already holds files; give a new or "
                          "empty directory (an earlier report is never overwritten)")


def _plain(value: Any) -> Any:
  """JSON-ready: arrays to lists, NaN to None, int keys kept as strings by json."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, (float, np.floating)):
    return None if not math.isfinite(float(value)) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def _cell(value: Any) -> str:
  if isinstance(value, (float, np.floating)):
    return "nan" if not math.isfinite(float(value)) else f"{float(value):.6g}"
  return str(value)


def write_table(directory: str, name: str, header: Sequence[str],
                rows: Sequence[Sequence[Any]], data: Any) -> None:
  """`name`.csv from header + rows, `name`.json from `data` (the same numbers, nested)."""
  with open(os.path.join(directory, f"{name}.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
  with open(os.path.join(directory, f"{name}.json"), "w") as f:
    json.dump(_plain(data), f, indent=1)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_cell(v).replace("|", "/") for v in row) + " |" for row in rows]
  return "\n".join(lines)


def write_summary(directory: str, title: str, sections: Sequence[tuple[str, str, str]]) -> None:
  """summary.md: the title, then per section its heading, text and figure (if written)."""
  parts = [f"# {title}", ""]
  for heading, text, figure in sections:
    parts += [f"## {heading}", "", text, ""]
    if figure and os.path.exists(os.path.join(directory, figure)):
      parts += [f"![{heading}]({figure})", ""]
  with open(os.path.join(directory, SUMMARY), "w") as f:
    f.write("\n".join(parts))
