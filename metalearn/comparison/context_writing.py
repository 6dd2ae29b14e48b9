"""The reports of writing contexts into weights: distillation (metalearn/analysis/
context_distillation.py) and accumulation (metalearn/analysis/context_accumulation.py), each a
table (csv, json, markdown) and plots."""

import os
from typing import Any

import numpy as np

from metalearn.comparison import plots, report

DISTILLATION = ["k", "route", "trained_on", "in_context_error", "zero_shot_gap",
                "gap_at_budget", "error_at_budget"]
ACCUMULATION = ["decay", "task", "writes_after", "error_after_all", "error_alone",
                "error_nothing_written"]


def write_distillation_report(result: dict[str, Any], directory: str,
                              title: str) -> list[str]:
  """context_distillation.{csv,json} and, per k, distillation_gap_k<k>.png (the gap to in
  context against steps, log scale) and distillation_error_k<k>.png (the task error, with the
  in-context error as a line); returns the table as markdown lines."""
  os.makedirs(directory, exist_ok=True)
  curves = {f"{k} / {route} / {trained_on}": curve
            for (k, route, trained_on), curve in result["curves"].items()}
  report.write_table(directory, "context_distillation", DISTILLATION,
                     [[row[name] for name in DISTILLATION] for row in result["rows"]],
                     {"rows": result["rows"], "in_context": result["in_context"],
                      "curves": curves})
  for k, in_context in result["in_context"].items():
    mine = {f"{route}, on {trained_on}": curve
            for (kk, route, trained_on), curve in result["curves"].items() if kk == k}
    steps = np.arange(len(next(iter(mine.values()))["gap"]))
    exact = [row for row in result["rows"] if row["k"] == k and row["route"] == "written (exact)"]
    gaps = {name: curve["gap"] for name, curve in mine.items()}
    if exact:
      gaps["written (exact)"] = np.full(len(steps), max(exact[0]["gap_at_budget"], 1e-12))
    plots.lines(steps, gaps, os.path.join(directory, f"distillation_gap_k{k}.png"),
                "optimizer steps", "squared gap to the in-context predictions",
                f"{title}: k = {k}", log=True)
    errors = {name: curve["error"] for name, curve in mine.items()}
    errors["in context (no training)"] = np.full(len(steps), in_context)
    plots.lines(steps, errors, os.path.join(directory, f"distillation_error_k{k}.png"),
                "optimizer steps", "normalised error at the queries", f"{title}: k = {k}")
  shown = [[row["k"], row["route"], row["trained_on"], f"{row['in_context_error']:.4g}",
            f"{row['zero_shot_gap']:.3g}", f"{row['gap_at_budget']:.3g}",
            f"{row['error_at_budget']:.4g}"] for row in result["rows"]]
  return report.markdown_table(["k", "route", "trained on", "in context", "gap zero-shot",
                                "gap at budget", "error at budget"], shown).splitlines()


def write_accumulation_report(result: dict[str, Any], directory: str,
                              title: str) -> list[str]:
  """context_accumulation.{csv,json} and accumulation.png (each task's error after all writes
  against the writes after it, per decay, beside written alone and nothing written); returns
  the table and the memory as markdown lines."""
  os.makedirs(directory, exist_ok=True)
  rows = result["rows"]
  report.write_table(directory, "context_accumulation", ACCUMULATION,
                     [[row[name] for name in ACCUMULATION] for row in rows], result)
  ages = sorted({row["writes_after"] for row in rows})
  by_age = lambda selected, key: [next(r[key] for r in selected if r["writes_after"] == age)
                                  for age in ages]
  first_decay = [row for row in rows if row["decay"] == rows[0]["decay"]]
  table = {f"after all, decay {decay:g}": by_age([r for r in rows if r["decay"] == decay],
                                                 "error_after_all")
           for decay in dict.fromkeys(row["decay"] for row in rows)}
  table["written alone (= in context)"] = by_age(first_decay, "error_alone")
  table["nothing written"] = by_age(first_decay, "error_nothing_written")
  plots.lines(np.asarray(ages), table, os.path.join(directory, "accumulation.png"),
              "tasks written after it", "normalised error on the task", title)
  memory = result["memory"]
  shown = [[f"{row['decay']:g}", row["task"], row["writes_after"],
            f"{row['error_after_all']:.4g}", f"{row['error_alone']:.4g}",
            f"{row['error_nothing_written']:.4g}"] for row in rows]
  return report.markdown_table(["decay", "task", "written after it", "after all", "alone",
                                "nothing written"], shown).splitlines() + [
      "", f"{memory['context_tokens']} context tokens: fast weights "
      f"{memory['fast_weight_bytes']:,} bytes, KV cache {memory['kv_cache_bytes']:,} bytes"]
