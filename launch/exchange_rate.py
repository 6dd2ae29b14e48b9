r"""What a trained transformer's in-context learning is worth in fine-tuning steps.

    python launch/exchange_rate.py --run=runs/linear_regression --report_dir=reports/exchange \
        --examples=2,5,10 --steps=100 --ranks=1,4

For every k of --examples, the run's in-context error at k on held-out prompts against the
error of fine-tuning on the same k pairs (all weights, and LoRA at each of --ranks) from the
trained weights, from a random init and from every --starts run of the same shapes, after each
of 0..--steps Adam steps; writes exchange_rate.{csv,json} and exchange_rate_k<k>.png into
--report_dir (metalearn/analysis/exchange_grid.py says what each column is).
"""

import logging as std_logging
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax

import launch_logging
import list_flags
from metalearn.analysis.exchange_grid import exchange_grid
from metalearn.comparison.exchange_rate import write_exchange_report
from metalearn.engine.runs import build_experiment, load_run
from metalearn.evaluation import prompts
from metalearn.learners.transformer import Transformer

_RUN = flags.DEFINE_string("run", None, "work directory of a trained transformer run")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "where the table and plots go")
_EXAMPLES = flags.DEFINE_list("examples", [], "numbers of examples k; empty: d/2, d, 2d "
                              "(those that leave a query)")
_STEPS = flags.DEFINE_integer("steps", 100, "fine-tuning steps (the budget)", lower_bound=1)
_RANKS = flags.DEFINE_list("ranks", ["1", "4"], "LoRA ranks beside all weights")
_PROMPTS = flags.DEFINE_integer("prompts", 64, "held-out prompts (one fine-tuning each)",
                                lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-2, "Adam's step size", lower_bound=0)
_STARTS = flags.DEFINE_list("starts", [], "name=workdir: more starting weights of the same "
                            "shapes (a MAML-trained initialisation, another seed)")
_SEED = flags.DEFINE_integer("seed", 0, "held-out prompts, random init and LoRA init")
flags.mark_flags_as_required(["run", "report_dir"])
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  learner, params, config = load_run(_RUN.value)
  if not isinstance(learner, Transformer):
    sys.exit(f"metalearn: --run={_RUN.value}: the exchange rate fine-tunes a transformer run; "
             f"this run trained {type(learner).__name__}")
  experiment = build_experiment(config)
  task, points = experiment.eval_task, experiment.points
  dim = task.dim
  examples = list_flags.numbers("examples", _EXAMPLES.value, int) or [
      k for k in sorted({max(dim // 2, 1), dim, 2 * dim}) if k < points]
  starts = {"trained": params}
  for item in _STARTS.value:
    name, _, workdir = item.partition("=")
    if not workdir:
      sys.exit(f"metalearn: --starts item {item!r}: name=workdir")
    starts[name] = load_run(workdir)[1]
  episode = prompts.held_out_episodes(task, _PROMPTS.value, points, _SEED.value)
  starts["random init"] = learner.init(jax.random.PRNGKey(_SEED.value), episode)
  try:
    result = exchange_grid(learner, starts, episode, examples, steps=_STEPS.value,
                           ranks=list_flags.numbers("ranks", _RANKS.value, int),
                           learning_rate=_LEARNING_RATE.value, seed=_SEED.value)
  except ValueError as error:
    sys.exit(f"metalearn: {error}")
  title = f"{type(task).__name__}, d = {dim}"
  for line in write_exchange_report(result, _REPORT_DIR.value, title):
    log.info("%s", line)
  log.info("wrote %s", _REPORT_DIR.value)


if __name__ == "__main__":
  launch_logging.run(main)
