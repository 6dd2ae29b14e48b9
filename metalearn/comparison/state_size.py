"""The state-size report (metalearn/analysis/state_size.py): a table, the error after k
examples against the floats each learner carries, and the error curves on longer prompts."""

import os
from typing import Any

import numpy as np

from metalearn.comparison import plots, report

HEADER = ["learner", "kind", "parameters", "state_floats", "state_floats_long", "error_at_k",
          "error_at_last_long", "long_prompts"]


def write_state_report(result: dict[str, Any], directory: str, title: str) -> list[str]:
  """state_size.{csv,json}, state_size.png (error at k against state floats, log scale),
  errors.png (error by k at the training length) and long_prompts.png (error by k on the long
  prompts, the training length marked); returns the table as markdown lines."""
  os.makedirs(directory, exist_ok=True)
  rows = result["rows"]
  report.write_table(directory, "state_size", HEADER,
                     [[row[name] for name in HEADER] for row in rows], result)
  k, train, long = result["examples"], result["train_points"], result["long_points"]
  plots.labelled_points({row["learner"]: (row["state_floats"], row["error_at_k"])
                         for row in rows if row["state_floats"] > 0},
                        os.path.join(directory, "state_size.png"),
                        f"floats carried about the context (at {train} points)",
                        f"normalised error after k = {k} examples", title, log_x=True)
  plots.lines(np.arange(train), {name: curve["train"]
                                  for name, curve in result["curves"].items()},
              os.path.join(directory, "errors.png"), "in-context examples k",
              "normalised error", f"{title}: prompts of {train} points")
  read = {name: curve["long"] for name, curve in result["curves"].items()
          if curve["long"] is not None}
  if read:
    plots.lines(np.arange(long), read, os.path.join(directory, "long_prompts.png"),
                f"in-context examples k (trained on prompts of {train} points)",
                "normalised error", f"{title}: prompts of {long} points", vertical=train - 1)
  shown = [[row["learner"], f"{row['parameters']:,}", f"{row['state_floats']:,}",
            f"{row['state_floats_long']:,}", f"{row['error_at_k']:.4g}",
            "" if row["error_at_last_long"] is None else f"{row['error_at_last_long']:.4g}",
            row["long_prompts"]] for row in rows]
  return report.markdown_table(
      ["learner", "parameters", f"state at {train}", f"state at {long}", f"error at k = {k}",
       f"error at k = {long - 1}", f"prompts of {long}"], shown).splitlines()
