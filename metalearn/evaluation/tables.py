"""A run's evaluation as files: `errors.csv`/`.json` and `query_errors.csv`/`.json`."""

import csv
import json
import os
from typing import Mapping

import numpy as np


def write_error_table(errors: Mapping[str, np.ndarray], directory: str) -> None:
  """Writes `errors.csv` (a row per number of examples) and `errors.json`."""
  os.makedirs(directory, exist_ok=True)
  names = list(errors)
  with open(os.path.join(directory, "errors.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["examples"] + names)
    for k in range(len(next(iter(errors.values())))):
      writer.writerow([k] + [f"{float(errors[name][k]):.6g}" for name in names])
  with open(os.path.join(directory, "errors.json"), "w") as f:
    json.dump({name: [float(v) for v in values] for name, values in errors.items()}, f, indent=1)


def write_query_table(table: Mapping[str, Mapping[str, float]], directory: str) -> None:
  """Writes `query_errors.csv` (a row per learner) and `query_errors.json`."""
  os.makedirs(directory, exist_ok=True)
  columns = list(next(iter(table.values())))
  with open(os.path.join(directory, "query_errors.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["learner"] + columns)
    for name, row in table.items():
      writer.writerow([name] + [f"{row[c]:.6g}" for c in columns])
  with open(os.path.join(directory, "query_errors.json"), "w") as f:
    json.dump(table, f, indent=1)
