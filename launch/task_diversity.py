r"""The task-diversity transition (Raventós et al. 2023): runs trained on pools of M tasks,
each held to dMMSE and to ridge on its pool's tasks and on fresh ones, against M.

    python launch/train.py --config=configs/task_diversity.py:sweep --workdir=runs/diversity
    python launch/task_diversity.py --sweep=runs/diversity --report_dir=reports/diversity

--sweep reads every member of a finished sweep (engine/sweep.py); --runs names runs instead
('name=workdir' or 'workdir'), each on a pool of linear tasks. Writes task_diversity.{csv,json}
and task_diversity.png into --report_dir (new or empty), and logs the table and the threshold:
the smallest pool size from which the runs predict closer to ridge than to dMMSE on their
pools' own tasks.
"""

import logging as std_logging
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import launch_logging
from metalearn.analysis.task_diversity import bayes_distances, check_pool
from metalearn.comparison.entries import parse_runs
from metalearn.comparison.report import check_report_dir
from metalearn.comparison.task_diversity import write_sweep_report
from metalearn.engine import sweep
from metalearn.engine.runs import build_experiment, load_config, load_run

_SWEEP = flags.DEFINE_string("sweep", None, "a finished sweep's work directory: its members")
_RUNS = flags.DEFINE_list("runs", None, "runs instead, each 'name=workdir' or 'workdir'")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "where the table and plot go (new or "
                                  "empty)")
_PROMPTS = flags.DEFINE_integer("prompts", 1280, "held-out prompts per split", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 256, "prompts per compiled call", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "draws the held-out prompts", lower_bound=0)
flags.mark_flags_as_required(["report_dir"])
flags.register_multi_flags_validator(
    ["sweep", "runs"], lambda v: (v["sweep"] is None) != (v["runs"] is None),
    "give one of --sweep (a sweep's work directory) and --runs")
log = std_logging.getLogger("metalearn.launch")


def _run_dirs() -> dict[str, str]:
  if _RUNS.value is not None:
    return parse_runs(_RUNS.value)
  experiment = build_experiment(load_config(_SWEEP.value))
  if not experiment.members:
    raise ValueError(f"{_SWEEP.value!r} is a single run, not a sweep; pass it with --runs")
  dirs = sweep.member_dirs(_SWEEP.value, experiment)
  missing = [d for d in dirs if not os.path.isdir(d)]
  if missing:
    raise FileNotFoundError(f"the sweep has not written its members {missing} (has it "
                            "finished? relaunch it to write them)")
  return {os.path.basename(d): d for d in dirs}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    check_report_dir(_REPORT_DIR.value)
    runs = _run_dirs()
    experiments = {name: build_experiment(load_config(path)) for name, path in runs.items()}
    for experiment in experiments.values():  # every run's pool, before a checkpoint is read
      check_pool(experiment.eval_task)
    sizes, distances = [], []
    for name, path in runs.items():
      experiment = experiments[name]
      learner, params, _ = load_run(path, experiment)
      sizes.append(experiment.eval_task.size)
      distances.append(bayes_distances(learner, params, experiment.eval_task, experiment.points,
                                       num_prompts=_PROMPTS.value, seed=_SEED.value,
                                       batch_size=_BATCH.value))
      log.info("%s (M = %d): %s", name, sizes[-1], {
          split: {k: round(v["mean"], 5) for k, v in d.items()}
          for split, d in distances[-1].items()})
  except (ValueError, FileExistsError, FileNotFoundError) as error:
    sys.exit(f"metalearn: {error}")
  task = next(iter(experiments.values())).eval_task
  lines = write_sweep_report(sizes, distances, _REPORT_DIR.value,
                             f"Task diversity, d = {task.dim}, σ = {task.noise_std}")
  for line in lines:
    log.info("%s", line)
  log.info("wrote %s", _REPORT_DIR.value)


if __name__ == "__main__":
  launch_logging.run(main)
