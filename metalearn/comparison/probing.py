"""Probes of each layer's residual stream at the query, recovering the task's weights, the
least-squares solution and Xᵀy (Akyürek et al. 2022, §5; metalearn/analysis/probing.py)."""

from typing import Any

import numpy as np

from metalearn.analysis import probing as probing_lib
from metalearn.comparison import plots, report
from metalearn.comparison.requirements import (check_context_fits, default_context_fits,
                                               run_exposing, true_weights)
from metalearn.comparison.unit import Context, Section, Unit
from metalearn.learners.capabilities import exposes


def probes(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  context = s.context("probe_context", ctx.task.dim, ctx.task.context_points)
  results = {entry.name: probing_lib.probe(entry.learner, entry.params, ctx.episode, context,
                                           mlp_steps=s.probe_mlp_steps, seed=s.seed)
             for entry in ctx.entries if exposes(entry.learner, "residual")}
  rows, lines = [], {}
  for name, by_probe in results.items():
    for probe_name, by_target in by_probe.items():
      for target, r2 in by_target.items():
        rows.append([name, probe_name, target] + list(r2))
        lines[f"{name}: {probe_name} → {target}"] = r2
  layers = max(len(r) - 3 for r in rows)
  header = ["learner", "probe", "target"] + [f"layer {i}" for i in range(layers)]
  report.write_table(ctx.directory, "probing", header, rows, results)
  plots.lines(np.arange(layers), lines, f"{ctx.directory}/probing.png",
              "layer (0: embedding)", "held-out R²", f"Probes at the query after {context} "
              "examples")
  text = (f"Held-out R² of a linear and a small MLP read-out of each layer's residual stream at "
          f"the query after {context} examples, recovering the task's weights, the "
          "least-squares solution and Xᵀy (Akyürek et al. 2022, §5).\n\n"
          + report.markdown_table(header, rows))
  return results, ("Probing", text, "probing.png")


UNIT = Unit("probing", probes,
            (true_weights,
             run_exposing("residual", "no run's learner exposes hidden states (a transformer "
                          "run does)"),
             default_context_fits("probe_context")),
            check_context_fits("probe_context"))
