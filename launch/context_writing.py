r"""Writing a trained run's contexts into weights: distillation and accumulation.

    python launch/context_writing.py --analysis=distillation --run=runs/linear_regression \
        --report_dir=reports/distillation --examples=5,10 --steps=200 --ranks=1,4
    python launch/context_writing.py --analysis=accumulation --run=runs/lsa_1layer \
        --report_dir=reports/accumulation --tasks=4 --examples=10 --decays=1,0.5,0

distillation (a transformer run, any attention): per k of --examples and rank of --ranks, LoRA
adapters trained for --steps Adam steps so that the run's zero-shot predictions at --fresh
inputs match its in-context ones (no labels), beside LoRA fine-tuned on the k labels; a
linear-attention run also gets the exact write. accumulation (gd_layers, or a linear-attention
transformer): --tasks tasks' first --examples pairs written in turn at each of --decays; each
task's error afterwards, alone and with nothing written, and the memory against a KV cache.
Writes tables and plots into --report_dir (new or empty): metalearn/comparison/context_writing.py.
"""

import logging as std_logging
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import launch_logging
import list_flags
from metalearn.analysis.context_accumulation import accumulation
from metalearn.analysis.context_distillation import distillation_grid
from metalearn.analysis.implicit_weights import probe_inputs
from metalearn.comparison.context_writing import (write_accumulation_report,
                                                  write_distillation_report)
from metalearn.comparison.report import check_report_dir
from metalearn.engine.runs import build_experiment, load_run
from metalearn.evaluation import prompts
from metalearn.learners.context_writing import check_writable
from metalearn.learners.transformer import Transformer

_ANALYSIS = flags.DEFINE_enum("analysis", None, ["distillation", "accumulation"],
                              "what to measure")
_RUN = flags.DEFINE_string("run", None, "work directory of a trained run")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "where the table and plots go (new or "
                                  "empty)")
_EXAMPLES = flags.DEFINE_list("examples", [], "context pairs k (accumulation: one value); "
                              "empty: d and 2d (accumulation: d)")
_PROMPTS = flags.DEFINE_integer("prompts", 64, "held-out prompts", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "held-out prompts, fresh inputs and LoRA init")
_STEPS = flags.DEFINE_integer("steps", 200, "distillation: Adam steps", lower_bound=1)
_RANKS = flags.DEFINE_list("ranks", ["1", "4"], "distillation: LoRA ranks")
_FRESH = flags.DEFINE_integer("fresh", 64, "distillation: fresh inputs per prompt",
                              lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-2, "distillation: Adam's step size",
                                    lower_bound=0)
_TASKS = flags.DEFINE_integer("tasks", 4, "accumulation: tasks written in turn", lower_bound=1)
_DECAYS = flags.DEFINE_list("decays", ["1", "0.5", "0"], "accumulation: decay per write")
flags.mark_flags_as_required(["analysis", "run", "report_dir"])
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    check_report_dir(_REPORT_DIR.value)
  except (FileExistsError, OSError) as error:
    sys.exit(f"metalearn: {error}")
  learner, params, config = load_run(_RUN.value)
  try:  # what cannot be measured is refused before any prompt is drawn or compiled
    if _ANALYSIS.value == "accumulation":
      check_writable(learner, "accumulation")
    elif not isinstance(learner, Transformer):
      raise TypeError(f"--run={_RUN.value}: distillation trains a transformer's LoRA adapters; "
                      f"this run trained {type(learner).__name__}")
  except (ValueError, TypeError) as error:
    sys.exit(f"metalearn: {error}")
  task, points = (experiment := build_experiment(config)).eval_task, experiment.points
  episode = prompts.held_out_episodes(task, _PROMPTS.value, points, _SEED.value)
  title = f"{type(task).__name__}, d = {task.dim}"
  examples = list_flags.numbers("examples", _EXAMPLES.value, int)
  try:
    if _ANALYSIS.value == "distillation":
      fresh_x = probe_inputs(task, _PROMPTS.value, _FRESH.value, _SEED.value + 1)
      result = distillation_grid(
          learner, params, episode, fresh_x,
          examples or [k for k in (task.dim, 2 * task.dim) if k < points], steps=_STEPS.value,
          ranks=list_flags.numbers("ranks", _RANKS.value, int), learning_rate=_LEARNING_RATE.value,
          loss=task.loss_name, seed=_SEED.value)
      lines = write_distillation_report(result, _REPORT_DIR.value, title)
    else:
      if len(examples) > 1:
        sys.exit(f"metalearn: --examples={','.join(_EXAMPLES.value)}: accumulation writes one "
                 "number of pairs per task")
      result = accumulation(learner, params, episode, tasks=_TASKS.value,
                            examples=examples[0] if examples else task.dim,
                            decays=list_flags.numbers("decays", _DECAYS.value, float),
                            loss=task.loss_name)
      lines = write_accumulation_report(result, _REPORT_DIR.value, title)
  except (ValueError, TypeError) as error:
    sys.exit(f"metalearn: {error}")
  for line in lines:
    log.info("%s", line)
  log.info("wrote %s", _REPORT_DIR.value)


if __name__ == "__main__":
  launch_logging.run(main)
