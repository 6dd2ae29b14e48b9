"""One function per analysis of a report: compute it, write its tables and figure, return its
results and its part of the Markdown summary (heading, text, figure file)."""

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from metalearn.evaluation import evaluate
from metalearn.analysis import icl_vs_finetune, interpolation, probing
from metalearn.comparison import measures, plots, report
from metalearn.comparison.entries import Entry
from metalearn.comparison.settings import CompareSettings
from metalearn.core.episode import Episode
from metalearn.learners.gd_layers import GDLayers
from metalearn.learners.transformer import Transformer
from metalearn.tasks import TaskFamily, shifts

Section = tuple[str, str, str]


@dataclasses.dataclass
class Context:
  """What every section reads: the entries, the shared held-out prompts, where to write."""

  entries: list[Entry]
  task: TaskFamily
  episode: Episode
  settings: CompareSettings
  directory: str
  shots: tuple[int, ...]
  predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _reported_shots(dim: int, points: int, contexts: Sequence[int] = ()) -> list[int]:
  return sorted({k for k in (0, 1, dim // 2, dim, 2 * dim, points - 1, *contexts)
                 if 0 <= k < points})


def errors(ctx: Context) -> tuple[Any, Section]:
  """Normalised error by number of examples for every entry; where a learner takes a fixed
  context, or the task's episodes open with a support set, also the metrics of the queries
  after that context (each predicted from it alone), as the run's own evaluation gives them:
  results[entry] = {mean, low, high [points], queries: {context: {metric: value}}}."""
  s = ctx.settings
  ctx.predictions = measures.predictions(ctx.entries, ctx.episode, s.batch_size)
  per_prompt = measures.normalised_errors(ctx.entries, ctx.predictions, ctx.task, ctx.episode)
  curves = measures.error_curves(per_prompt, s.bootstrap_resamples, s.seed)
  names = list(curves)
  header = ["examples"] + [f"{n}{suffix}" for n in names for suffix in ("", "_low", "_high")]
  rows = [[k] + [curves[n][part][k] for n in names for part in ("mean", "low", "high")]
          for k in range(ctx.episode.num_points)]
  contexts = measures.query_contexts(ctx.entries, ctx.task)
  queries = measures.query_tables(ctx.entries, ctx.task, ctx.episode, contexts, s.batch_size)
  for name in names:
    curves[name]["queries"] = {c: table[name] for c, table in queries.items() if name in table}
  report.write_table(ctx.directory, "errors", header, rows, curves)
  plots.error_curves(curves, f"{ctx.directory}/errors.png", ctx.task.dim,
                     f"{type(ctx.task).__name__}, d = {ctx.task.dim}")
  shown = _reported_shots(ctx.task.dim, ctx.episode.num_points, contexts)
  text = ("Normalised error (the zero predictor scores 1) against the number of in-context "
          "examples k, mean over the held-out prompts [90% bootstrap interval]; all of it in "
          "`errors.csv`. A fixed-context learner predicts after its context size only.\n\n"
          + report.markdown_table(["learner"] + [f"k = {k}" for k in shown],
                                  [[n] + [_with_interval(curves[n], k) for k in shown]
                                   for n in names]))
  for context, table in queries.items():
    text += "\n\n" + _query_text(context, ctx.episode.num_points - context, table)
  if queries:
    _write_query_table(ctx.directory, queries)
  return curves, ("Error against the number of examples", text, "errors.png")


def _query_text(context: int, num_queries: int, table: dict[str, dict[str, float]]) -> str:
  metrics = [m for m in next(iter(table.values())) if not m.endswith("_ci95")]
  return (f"The {num_queries} queries after the first {context} examples, each predicted "
          f"from those {context} alone (as a run's own evaluation scores them), mean ± 95% "
          "over prompts; all of it in `query_errors.csv`.\n\n" + report.markdown_table(
              ["learner"] + metrics, [[name] + [f"{row[m]:.3f} ± {row[m + '_ci95']:.3f}"
                                                for m in metrics] for name, row in table.items()]))


def _write_query_table(directory: str, queries: dict[int, dict[str, dict[str, float]]]) -> None:
  columns = list(dict.fromkeys(m for table in queries.values() for row in table.values()
                               for m in row))
  rows = [[context, name] + [row.get(m, float("nan")) for m in columns]
          for context, table in queries.items() for name, row in table.items()]
  report.write_table(directory, "query_errors", ["context", "learner"] + columns, rows, queries)


def _with_interval(curve, k) -> str:
  if not np.isfinite(curve["mean"][k]):
    return "–"
  return f"{curve['mean'][k]:.3f} [{curve['low'][k]:.3f}, {curve['high'][k]:.3f}]"


def headline(curves: dict[str, dict[str, Any]], most: int = 7) -> list[str]:
  """One line per entry of an `errors` result for a terminal: its normalised error at up to
  `most` numbers of examples k (where it predicts), then its query metrics per context."""
  lines = []
  for name, curve in curves.items():
    finite = [k for k, v in enumerate(curve["mean"]) if np.isfinite(v)]
    if len(finite) == 1 and finite[0] in curve.get("queries", {}):
      finite = []  # a fixed-context learner: its query metrics below say it all
    if len(finite) > most:
      finite = [finite[i] for i in sorted(set(np.linspace(0, len(finite) - 1, most)
                                              .round().astype(int)))]
    parts = [f"normalised error by examples k: "
             + ", ".join(f"k={k} {curve['mean'][k]:.3f}" for k in finite)] if finite else []
    for context, row in curve.get("queries", {}).items():
      parts.append(f"queries after {context} examples: " + ", ".join(
          f"{m} {row[m]:.3f} ± {row[m + '_ci95']:.3f}" for m in row if not m.endswith("_ci95")))
    lines.append(f"{name}: " + "; ".join(parts))
  return lines


def predictions(ctx: Context) -> tuple[Any, Section]:
  table = measures.prediction_differences(ctx.entries, ctx.predictions)
  names = list(table)
  rows = [[k] + [table[n][k] for n in names] for k in range(ctx.episode.num_points)]
  report.write_table(ctx.directory, "prediction_difference", ["examples"] + names, rows, table)
  plots.by_shots(table, f"{ctx.directory}/prediction_difference.png",
                 "mean Σ (ŷ_a − ŷ_b)²", "Squared prediction difference", log=True)
  shown = _reported_shots(ctx.task.dim, ctx.episode.num_points,
                          measures.query_contexts(ctx.entries, ctx.task))
  text = ("Mean squared difference of two learners' predictions for the same query after k "
          "examples (Akyürek et al.'s SPD).\n\n" + report.markdown_table(
              ["pair"] + [f"k = {k}" for k in shown], [[n] + [table[n][k] for k in shown]
                                                        for n in names]))
  return table, ("Prediction difference", text, "prediction_difference.png")


def _by_shots_rows(table: dict[str, dict[int, float]], shots: Sequence[int]) -> list[list]:
  return [[name] + [values.get(k, float("nan")) for k in shots] for name, values in table.items()]


def implicit_weights(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  num_probes = s.num_probes or 2 * ctx.task.dim
  tables = measures.implicit_weight_tables(ctx.entries, ctx.task, ctx.episode, ctx.shots,
                                           num_probes, s.seed, s.batch_size)
  header = ["learner or pair"] + [f"k={k}" for k in ctx.shots]
  rows = (_by_shots_rows({f"{n} vs true w": v for n, v in tables["to_true_weights"].items()},
                         ctx.shots) + _by_shots_rows(tables["difference"], ctx.shots))
  report.write_table(ctx.directory, "implicit_weights", header, rows, tables)
  text = (f"Implicit linear weights ŵ: the least-squares fit of each learner's predictions at "
          f"{num_probes} probe inputs after k examples; mean ‖ŵ_a − ŵ_b‖² over prompts "
          "(Akyürek et al.'s ILWD), and each learner's distance to the task's true weights.\n\n"
          + report.markdown_table(header, rows))
  return tables, ("Implicit linear weights", text, "")


def sensitivity(ctx: Context) -> tuple[Any, Section]:
  tables = measures.sensitivity_tables(ctx.entries, ctx.episode, ctx.shots,
                                       ctx.settings.batch_size)
  header = ["pair"] + [f"cosine k={k}" for k in ctx.shots] + [f"L2 k={k}" for k in ctx.shots]
  rows = [[name] + [tables["cosine"][name].get(k, float("nan")) for k in ctx.shots]
          + [tables["l2"][name].get(k, float("nan")) for k in ctx.shots]
          for name in tables["cosine"]]
  report.write_table(ctx.directory, "sensitivity", header, rows, tables)
  text = ("Sensitivity ∂ŷ/∂x_q of the query prediction after k examples: mean cosine similarity "
          "and mean L2 difference between two learners', over prompts.\n\n"
          + report.markdown_table(header, rows))
  return tables, ("Sensitivity", text, "")


def distribution_shifts(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  context = s.context("shift_context", ctx.task.dim)
  points = context + s.shift_queries
  episode = shifts.shift_episodes(ctx.task, shifts.SHIFTS, s.num_prompts, points, context,
                                  s.seed)
  table, intervals = {shift: {} for shift in shifts.SHIFTS}, {shift: {} for shift in shifts.SHIFTS}
  for entry in ctx.entries:
    if not measures.predicts_at(entry, context):
      continue
    normalised = evaluate.query_metrics(entry.learner, entry.params, ctx.task, episode, context,
                                        s.batch_size)["normalised"].mean(axis=1)
    for shift, values in shifts.by_shift(normalised, shifts.SHIFTS).items():
      table[shift][entry.name], intervals[shift][entry.name] = evaluate.mean_and_interval(values)
  names = list(dict.fromkeys(n for row in table.values() for n in row))
  header = ["shift"] + [f"{n}{suffix}" for n in names for suffix in ("", "_ci95")]
  rows = [[shift] + [v for n in names for v in (table[shift][n], intervals[shift][n])]
          for shift in table]
  report.write_table(ctx.directory, "shifts", header, rows,
                     {"context_points": context, "normalised": table, "ci95": intervals})
  plots.grouped_bars(table, f"{ctx.directory}/shifts.png", "normalised error (± 95%)",
                     f"Queries after {context} examples under distribution shifts", intervals)
  text = (f"Normalised error of {s.shift_queries} queries per prompt after {context} examples "
          "when the prompts are drawn from a shifted distribution (Garg et al. 2022, §4), "
          "mean ± 95% over prompts; all shifts in one batch.\n\n" + report.markdown_table(
              ["shift"] + names, [[shift] + [f"{table[shift][n]:.3f} ± {intervals[shift][n]:.3f}"
                                             for n in names] for shift in table]))
  return {"normalised": table, "ci95": intervals}, ("Distribution shifts", text, "shifts.png")


def probes(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  context = s.context("probe_context", ctx.task.dim, ctx.task.context_points)
  results = {entry.name: probing.probe(entry.learner, entry.params, ctx.episode, context,
                                       mlp_steps=s.probe_mlp_steps, seed=s.seed)
             for entry in ctx.entries if hasattr(entry.learner, "intermediates")}
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


def _same_network(a: Entry, b: Entry) -> bool:
  plain = lambda l: dataclasses.replace(l, init_from="random", init_step_size=1.0,
                                        init_gamma=0.0, init_std=0.02)
  shapes = lambda p: jax.tree.map(np.shape, p)
  return plain(a.learner) == plain(b.learner) and shapes(a.params) == shapes(b.params)


def interpolation_pairs(entries: Sequence[Entry]) -> list[tuple[Entry, Entry]]:
  """Pairs of trained plain GD-layer networks of one architecture."""
  gd = [e for e in entries if isinstance(e.learner, GDLayers) and e.run is not None and not (
      e.learner.layer_norm or e.learner.mlp or e.learner.softmax)]
  return [(a, b) for a, b in measures.pairs(gd) if _same_network(a, b)]


def interpolations(ctx: Context) -> tuple[Any, Section]:
  alphas = np.linspace(0.0, 1.0, ctx.settings.interpolation_points)
  results = {measures.pair_name(a.name, b.name): interpolation.interpolation_losses(
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


def icl_against_finetuning(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  context = s.context("icl_context", ctx.task.dim, ctx.task.context_points)
  prompts = jax.tree.map(lambda a: a[:s.icl_prompts], ctx.episode)
  results = {}
  for entry in ctx.entries:
    if isinstance(entry.learner, Transformer):
      raw = icl_vs_finetune.with_random_control(
          entry.learner, entry.params, prompts, context, seed=s.seed, steps=s.finetune_steps,
          learning_rate=s.finetune_learning_rate)
      results[entry.name] = icl_vs_finetune.summarise(raw)
  rows = [[name, model, layer, summary["cosine_mean"][layer], summary["cosine_ci95"][layer]]
          for name, by_model in results.items() for model, summary in by_model.items()
          for layer in range(len(summary["cosine_mean"]))]
  report.write_table(ctx.directory, "icl_vs_finetune",
                     ["learner", "weights", "layer", "cosine", "cosine_ci95"], rows, results)
  bars = {f"{name} layer {layer}": {model: summary["cosine_mean"][layer]
                                    for model, summary in by_model.items()}
          for name, by_model in results.items()
          for layer in range(len(next(iter(by_model.values()))["cosine_mean"]))}
  plots.grouped_bars(bars, f"{ctx.directory}/icl_vs_finetune.png", "cosine (SimAOU)",
                     "ICL update vs fine-tuning update of the attention outputs")
  text = (f"Cosine similarity of the change in each layer's attention output at the query "
          f"caused by {context} in-context examples and by {s.finetune_steps} SGD steps of "
          "fine-tuning the key/value projections on them (Dai et al. 2022's SimAOU), for the "
          "trained weights and, as the control, the same architecture untrained.\n\n"
          + report.markdown_table(["learner", "weights", "mean over layers"],
                                  [[name, model, f"{summary['cosine_mean_over_layers']:.3f} ± "
                                    f"{summary['cosine_ci95_over_layers']:.3f}"]
                                   for name, by_model in results.items()
                                   for model, summary in by_model.items()]))
  return results, ("In-context learning against fine-tuning", text, "icl_vs_finetune.png")


SECTIONS = {"errors": errors, "predictions": predictions, "implicit_weights": implicit_weights,
            "sensitivity": sensitivity, "shifts": distribution_shifts, "probing": probes,
            "interpolation": interpolations, "icl_vs_finetune": icl_against_finetuning}
