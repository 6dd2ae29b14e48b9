"""The linear weights each learner implicitly uses after k examples, against the task's true
weights and against each other's (Akyürek et al. 2022's ILWD)."""

from typing import Any, Sequence

import numpy as np

from metalearn.analysis import implicit_weights as implicit_weights_lib
from metalearn.comparison import report
from metalearn.comparison.entries import Entry, pair_name, pairs
from metalearn.comparison.requirements import true_weights
from metalearn.comparison.unit import Context, Section, Subject, Unit
from metalearn.core.episode import Episode
from metalearn.evaluation.shots import predicts_at
from metalearn.tasks import TaskFamily


def implicit_weight_tables(entries: Sequence[Entry], task: TaskFamily, episode: Episode,
                           shots: Sequence[int], num_probes: int, seed: int, batch_size: int
                           ) -> dict[str, dict[str, dict[int, float]]]:
  """Implicit linear weights at each number of examples in `shots`:

  to_true_weights   {entry: {k: mean ‖ŵ − w‖²}}, w the task's weights;
  difference        {pair: {k: mean ‖ŵ_a − ŵ_b‖²}} (ILWD, Akyürek et al. 2022).
  """
  weights = {entry.name: {k: implicit_weights_lib.implicit_weights(
      entry.learner, entry.params, task, episode, k, num_probes, seed, batch_size)
      for k in shots if predicts_at(entry, k)} for entry in entries}
  true_w = np.asarray(episode.info["w"])
  to_true = {name: {k: float(implicit_weights_lib.weight_difference(w, true_w).mean())
                    for k, w in by_shots.items()} for name, by_shots in weights.items()}
  difference = {}
  for a, b in pairs(entries):
    common = [k for k in shots if k in weights[a.name] and k in weights[b.name]]
    difference[pair_name(a.name, b.name)] = {
        k: float(implicit_weights_lib.weight_difference(weights[a.name][k],
                                                        weights[b.name][k]).mean())
        for k in common}
  return {"to_true_weights": to_true, "difference": difference}


def _by_shots_rows(table: dict[str, dict[int, float]], shots: Sequence[int]) -> list[list]:
  return [[name] + [values.get(k, float("nan")) for k in shots] for name, values in table.items()]


def implicit_weights(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  num_probes = s.num_probes or 2 * ctx.task.dim
  tables = implicit_weight_tables(ctx.entries, ctx.task, ctx.episode, ctx.shots, num_probes,
                                  s.seed, s.batch_size)
  header = ["learner or pair"] + [f"k={k}" for k in ctx.shots]
  rows = (_by_shots_rows({f"{n} vs true w": v for n, v in tables["to_true_weights"].items()},
                         ctx.shots) + _by_shots_rows(tables["difference"], ctx.shots))
  report.write_table(ctx.directory, "implicit_weights", header, rows, tables)
  text = (f"Implicit linear weights ŵ: the least-squares fit of each learner's predictions at "
          f"{num_probes} probe inputs after k examples; mean ‖ŵ_a − ŵ_b‖² over prompts "
          "(Akyürek et al.'s ILWD), and each learner's distance to the task's true weights.\n\n"
          + report.markdown_table(header, rows))
  return tables, ("Implicit linear weights", text, "")


def _some_learner_predicting_at_shots(s: Subject) -> str | None:
  if not any(predicts_at(l, k) for l in s.entries.values() for k in s.shots):
    return (f"no learner predicts after any of shots={list(s.shots)} examples (fixed-context "
            f"learners: after {sorted(set(s.contexts))} only)")
  return None


UNIT = Unit("implicit_weights", implicit_weights,
            (true_weights, _some_learner_predicting_at_shots))
