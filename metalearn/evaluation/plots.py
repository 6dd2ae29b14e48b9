"""Plots of evaluation results, written as PNG files."""

from typing import Mapping

# Figures are made without pyplot: no backend is chosen or changed, so a training machine
# needs no display and a notebook importing the library keeps its inline plots.
import matplotlib.figure
import matplotlib.ticker
import numpy as np


def plot_error_by_shots(errors: Mapping[str, np.ndarray], path: str, dim: int | None = None,
                        title: str = "") -> None:
  """Normalised error against the number of in-context examples, one line per learner."""
  fig = matplotlib.figure.Figure(figsize=(6, 4))
  ax = fig.subplots()
  for name, values in errors.items():
    ax.plot(np.arange(len(values)), values, marker=".", label=name)
  if dim is not None:
    ax.axvline(dim, color="gray", linestyle=":", label=f"k = d = {dim}")
  ax.axhline(1.0, color="black", linewidth=0.5)
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel("in-context examples k")
  ax.set_ylabel("error / error of predicting zero")
  ax.set_ylim(bottom=0.0, top=max(1.25, min(2.0, max(float(np.max(v)) for v in errors.values()))))
  ax.set_title(title)
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def plot_query_errors(table: Mapping[str, Mapping[str, float]], metric: str, path: str,
                      title: str = "") -> None:
  """One bar per learner: a metric's mean over held-out prompts with its 95% interval."""
  names = list(table)
  fig = matplotlib.figure.Figure(figsize=(max(4.0, 1.1 * len(names)), 4))
  ax = fig.subplots()
  ax.bar(np.arange(len(names)), [table[n][metric] for n in names],
         yerr=[table[n][f"{metric}_ci95"] for n in names], capsize=4, color="tab:blue")
  ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize="small")
  ax.set_ylabel(f"{metric} (mean ± 95% interval)")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
