"""How alike two learners' sensitivities ∂ŷ/∂x_q of the query prediction after k examples are
(von Oswald et al. 2022 compare a trained LSA network and GD so)."""

from typing import Any, Sequence

import jax
import numpy as np

from metalearn.analysis import similarity
from metalearn.comparison import report
from metalearn.comparison.entries import Entry, pair_name, pairs
from metalearn.comparison.requirements import pair_predicting_at, two_learners
from metalearn.comparison.unit import Context, Section, Unit
from metalearn.core.episode import Episode
from metalearn.evaluation.prompts import chunks
from metalearn.evaluation.shots import predicts_at

_sensitivity = jax.jit(similarity.sensitivity, static_argnums=(0, 3))


def sensitivity_tables(entries: Sequence[Entry], episode: Episode, shots: Sequence[int],
                       batch_size: int) -> dict[str, dict[str, dict[int, float]]]:
  """∂ŷ/∂x_q at the query after k examples, per pair: mean cosine similarity and mean L2
  difference over prompts (von Oswald et al. 2022 compare trained LSA and GD so)."""
  grads = {entry.name: {k: np.concatenate([np.asarray(_sensitivity(entry.learner,
                                                                    entry.params, chunk, k))
                                           for chunk in chunks(episode, batch_size)])
                        for k in shots if predicts_at(entry, k)} for entry in entries}
  cosine, l2 = {}, {}
  for a, b in pairs(entries):
    common = [k for k in shots if k in grads[a.name] and k in grads[b.name]]
    name = pair_name(a.name, b.name)
    cosine[name] = {k: float(np.mean(similarity.cosine_similarity(grads[a.name][k],
                                                                  grads[b.name][k])))
                    for k in common}
    l2[name] = {k: float(np.mean(similarity.l2_difference(grads[a.name][k], grads[b.name][k])))
                for k in common}
  return {"cosine": cosine, "l2": l2}


def sensitivity(ctx: Context) -> tuple[Any, Section]:
  tables = sensitivity_tables(ctx.entries, ctx.episode, ctx.shots, ctx.settings.batch_size)
  header = ["pair"] + [f"cosine k={k}" for k in ctx.shots] + [f"L2 k={k}" for k in ctx.shots]
  rows = [[name] + [tables["cosine"][name].get(k, float("nan")) for k in ctx.shots]
          + [tables["l2"][name].get(k, float("nan")) for k in ctx.shots]
          for name in tables["cosine"]]
  report.write_table(ctx.directory, "sensitivity", header, rows, tables)
  text = ("Sensitivity ∂ŷ/∂x_q of the query prediction after k examples: mean cosine similarity "
          "and mean L2 difference between two learners', over prompts.\n\n"
          + report.markdown_table(header, rows))
  return tables, ("Sensitivity", text, "")


UNIT = Unit("sensitivity", sensitivity,
            (two_learners, pair_predicting_at(lambda s: s.shots, "the shots")))
