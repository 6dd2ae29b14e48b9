"""The comparison report's figures, one PNG per measure."""

from typing import Mapping

# Figures are made without pyplot: no backend is chosen or changed, so a training machine
# needs no display and a notebook importing the library keeps its inline plots.
import matplotlib.figure
import matplotlib.ticker
import numpy as np


def _save(fig, ax, path: str, legend: bool = True) -> None:
  if legend and ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def error_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str, dim: int,
                 title: str) -> None:
  """Mean normalised error by number of examples with its 90% band; a fixed-context learner
  (one valid position) is a point with an error bar."""
  fig = matplotlib.figure.Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for name, curve in curves.items():
    k = np.arange(len(curve["mean"]))
    valid = np.isfinite(curve["mean"])
    if valid.sum() == 1:
      i = int(np.flatnonzero(valid)[0])
      ax.errorbar([i], curve["mean"][valid], yerr=[[curve["mean"][i] - curve["low"][i]],
                                                   [curve["high"][i] - curve["mean"][i]]],
                  marker="o", capsize=4, label=name)
      continue
    line, = ax.plot(k, curve["mean"], marker=".", label=name)
    ax.fill_between(k, curve["low"], curve["high"], color=line.get_color(), alpha=0.2)
  ax.axvline(dim, color="gray", linestyle=":", label=f"k = d = {dim}")
  ax.axhline(1.0, color="black", linewidth=0.5)
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_ylim(0.0, 1.4)
  ax.set_xlabel("in-context examples k")
  ax.set_ylabel("error / error of predicting zero (90% band)")
  ax.set_title(title)
  _save(fig, ax, path)


def by_shots(table: Mapping[str, np.ndarray], path: str, ylabel: str, title: str,
             log: bool = False) -> None:
  """One line per key (a pair of learners) against the number of examples."""
  fig = matplotlib.figure.Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for name, values in table.items():
    values = np.asarray(values, np.float64)
    ax.plot(np.arange(len(values)), values, marker=".", label=name)
  if log:
    ax.set_yscale("log")
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel("in-context examples k")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  _save(fig, ax, path)


def grouped_bars(table: Mapping[str, Mapping[str, float]], path: str, ylabel: str, title: str,
                 errors: Mapping[str, Mapping[str, float]] | None = None) -> None:
  """Bars per group (outer key, e.g. a shift) with one bar per series (inner key, a learner)."""
  groups = list(table)
  series = list(dict.fromkeys(s for g in groups for s in table[g]))
  width = 0.8 / max(len(series), 1)
  wide = max(6.0, 0.45 * len(groups) * max(1, len(series)))
  fig = matplotlib.figure.Figure(figsize=(wide, 4.2))
  ax = fig.subplots()
  for i, name in enumerate(series):
    x = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
    values = [table[g].get(name, np.nan) for g in groups]
    yerr = None if errors is None else [errors[g].get(name, 0.0) for g in groups]
    ax.bar(x, values, width, yerr=yerr, capsize=2, label=name)
  ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right", fontsize="small")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  _save(fig, ax, path)


def lines(x: np.ndarray, table: Mapping[str, np.ndarray], path: str, xlabel: str, ylabel: str,
          title: str, log: bool = False, vertical: float | None = None) -> None:
  """One line per key over a shared x axis (layers, interpolation α); `vertical` marks an x."""
  fig = matplotlib.figure.Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for index, (name, values) in enumerate(table.items()):
    # Past the ten colours of the cycle, the lines differ by their style too.
    ax.plot(x, values, marker=".", label=name, linestyle=("-", "--", ":")[index // 10 % 3])
  if log:
    ax.set_yscale("log")
  if vertical is not None:
    ax.axvline(vertical, color="gray", linestyle=":")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  _save(fig, ax, path)


def labelled_points(points: Mapping[str, tuple[float, float]], path: str, xlabel: str,
                    ylabel: str, title: str, log_x: bool = False) -> None:
  """One labelled marker per key at its (x, y)."""
  fig = matplotlib.figure.Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for name, (x, y) in points.items():
    ax.plot([x], [y], marker="o", linestyle="", label=name)
    ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  _save(fig, ax, path, legend=False)
