r"""State against weights: trained runs' parameters, the floats they carry about their context,
their error after k examples, and their error on prompts longer than they were trained on.

    python launch/state_size.py --runs=transformer=runs/linear_regression,lstm=runs/lstm \
        --baselines=least_squares --report_dir=reports/state --points=41

Every run and baseline is scored on the same held-out prompts of the runs' shared task: at
the training length and at --points (default twice it); a learner that cannot read prompts
that long (a learned position table) says so in the table. Writes state_size.{csv,json},
state_size.png and long_prompts.png into --report_dir (new or empty).
"""

import logging as std_logging
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import launch_logging
from metalearn.analysis.state_size import state_table
from metalearn.comparison.entries import check_runs, parse_runs
from metalearn.comparison.report import check_report_dir
from metalearn.comparison.state_size import write_state_report
from metalearn.engine.runs import load_run
from metalearn.learners import make_baseline

_RUNS = flags.DEFINE_list("runs", None, "runs, each 'name=workdir' or 'workdir'")
_BASELINES = flags.DEFINE_list("baselines", [], "baselines beside them (least_squares, ...)")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "where the table and plots go (new or "
                                  "empty)")
_POINTS = flags.DEFINE_integer("points", None, "points of the long prompts; default twice the "
                               "training length", lower_bound=1)
_EXAMPLES = flags.DEFINE_integer("examples", None, "k of the error against state; default 2d",
                                 lower_bound=0)
_PROMPTS = flags.DEFINE_integer("prompts", 1280, "held-out prompts", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 256, "prompts per compiled call", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "draws the held-out prompts", lower_bound=0)
flags.mark_flags_as_required(["runs", "report_dir"])
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    check_report_dir(_REPORT_DIR.value)
    runs = parse_runs(_RUNS.value)
    _, task, points = check_runs(runs, _BASELINES.value)  # nothing loaded or compiled yet
    baselines = {name: (make_baseline(name, task), {}) for name in _BASELINES.value}
    examples = 2 * task.dim if _EXAMPLES.value is None else _EXAMPLES.value
    long_points = _POINTS.value or 2 * points
    entries = {name: load_run(workdir)[:2] for name, workdir in runs.items()}
    result = state_table({**entries, **baselines}, task, train_points=points,
                         long_points=long_points, examples=min(examples, points - 1),
                         num_prompts=_PROMPTS.value, seed=_SEED.value,
                         batch_size=_BATCH.value)
  except (ValueError, FileExistsError, FileNotFoundError) as error:
    sys.exit(f"metalearn: {error}")
  lines = write_state_report(result, _REPORT_DIR.value, f"{type(task).__name__}, d = {task.dim}")
  for line in lines:
    log.info("%s", line)
  log.info("wrote %s", _REPORT_DIR.value)


if __name__ == "__main__":
  launch_logging.run(main)
