"""The loss along the straight path between two trained GD-layer networks of one architecture,
in their aligned (M, V) products and in raw weights (metalearn/analysis/interpolation.py)."""

from typing import Any, Sequence

import jax
import numpy as np

from metalearn.analysis import interpolation as interpolation_lib
from metalearn.comparison import plots, report
from metalearn.comparison.entries import Entry, pair_name, pairs
from metalearn.comparison.unit import Context, Section, Subject, Unit
from metalearn.learners.capabilities import LinearAttentionLayers


def _plain_linear_attention(learner: object) -> bool:
  """Whether the (M, V) → (c·M, V/c) symmetry the interpolation aligns holds in the learner."""
  return (isinstance(learner, LinearAttentionLayers)
          and not learner.attention_layout().nonlinear_options)


def _two_plain_gd_networks(s: Subject) -> str | None:
  if sum(_plain_linear_attention(l) for l in s.run_learners) < 2:
    return "it needs two runs of plain GD-layer networks (no layer_norm, mlp or softmax)"
  return None


def _same_network(a: Entry, b: Entry) -> bool:
  shapes = lambda p: jax.tree.map(np.shape, p)
  return (a.learner.architecture_key() == b.learner.architecture_key()
          and shapes(a.params) == shapes(b.params))


def interpolation_pairs(entries: Sequence[Entry]) -> list[tuple[Entry, Entry]]:
  """Pairs of trained plain GD-layer networks of one architecture."""
  gd = [e for e in entries if e.run is not None and _plain_linear_attention(e.learner)]
  return [(a, b) for a, b in pairs(gd) if _same_network(a, b)]


def interpolations(ctx: Context) -> tuple[Any, Section]:
  alphas = np.linspace(0.0, 1.0, ctx.settings.interpolation_points)
  results = {pair_name(a.name, b.name): interpolation_lib.interpolation_losses(
      a.learner, a.params, b.params, ctx.task, ctx.episode, alphas)
      for a, b in interpolation_pairs(ctx.entries)}
  header = ["pair", "path"] + [f"alpha={a:.2f}" for a in alphas] + ["barrier"]
  rows = [[name, path] + list(r[path]) + [r[f"{path}_barrier"]]
          for name, r in results.items() for path in ("aligned", "raw")]
  report.write_table(ctx.directory, "interpolation", header, rows, results)
  plots.lines(alphas, {f"{name} ({path})": r[path] for name, r in results.items()
                       for path in ("aligned", "raw")}, f"{ctx.directory}/interpolation.png",
              "α", "normalised loss", "Interpolating two GD-layer networks")
  text = ("Normalised loss of the network whose key-query and value products are "
          "(1 − α)·a + α·b after aligning their scales (aligned), against averaging the raw "
          "weights (raw); barrier: the largest excess over the straight line between the "
          "endpoints.\n\n" + report.markdown_table(["pair", "path", "barrier"],
                                                   [[r[0], r[1], r[-1]] for r in rows]))
  return results, ("Interpolation of GD-layer networks", text, "interpolation.png")


UNIT = Unit("interpolation", interpolations, (_two_plain_gd_networks,))
