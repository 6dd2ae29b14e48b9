"""How alike the change that in-context examples make to each layer's attention output is to
the change fine-tuning on them makes (Dai et al. 2022's SimAOU; metalearn/analysis/
icl_vs_finetune.py), for the trained weights and an untrained control."""

from typing import Any

import jax

from metalearn.analysis import icl_vs_finetune as icl_vs_finetune_lib
from metalearn.comparison import plots, report
from metalearn.comparison.requirements import (check_context_fits, default_context_fits,
                                               run_exposing)
from metalearn.comparison.unit import Context, Section, Unit
from metalearn.learners.capabilities import exposes


def icl_against_finetuning(ctx: Context) -> tuple[Any, Section]:
  s = ctx.settings
  context = s.context("icl_context", ctx.task.dim, ctx.task.context_points)
  prompts = jax.tree.map(lambda a: a[:s.icl_prompts], ctx.episode)
  results = {}
  for entry in ctx.entries:
    if exposes(entry.learner, "attention_output"):
      raw = icl_vs_finetune_lib.with_random_control(
          entry.learner, entry.params, prompts, context, seed=s.seed, steps=s.finetune_steps,
          learning_rate=s.finetune_learning_rate)
      results[entry.name] = icl_vs_finetune_lib.summarise(raw)
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


UNIT = Unit("icl_vs_finetune", icl_against_finetuning,
            (run_exposing("attention_output", "no run trained a transformer"),
             default_context_fits("icl_context")),
            check_context_fits("icl_context"))
