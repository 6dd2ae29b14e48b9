"""A sweep: N small runs (seeds, task-pool sizes) trained as one, written as N runs.

The `sweep` section of a config lists the seeds and pool sizes; every pair is a member:

    config.sweep = ml_collections.ConfigDict({"seeds": (0,), "task_sizes": (1, 2, 4, 8)})

The members are trained by one compiled step vmapped over their stacked train states
(engine/train_step.py), in one work directory that checkpoints, resumes and logs them together
like any run (its rows carry each member's metrics as "loss/member_<i>"). When the sweep has
finished, each member is written as its own run under `<workdir>/members/<name>/`: the
config that trains it alone, its final checkpoint, its rows of metrics and its evaluation, so
that `load_run`, the comparison script and the notebooks read it like any other run. A member
is written to a temporary directory and renamed into place, and the sweep's own checkpoint is
the source: a launch killed while writing them writes them again when relaunched.
"""

import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from metalearn.engine.checkpoints import Checkpoints
from metalearn.engine.experiment import Experiment, Member
from metalearn.engine.log_window import member_metric
from metalearn.engine.workdir import (EVAL_DIR, METRICS_FILE, plain_config, read_metrics,
                                      save_config, write_atomically)
from metalearn.evaluation import plots, tables
from metalearn.evaluation.scores import Evaluation, merge_evaluations

log = logging.getLogger(__name__)

MEMBERS_DIR = "members"  # <workdir>/members/<member name>/, one finished run per member


def member_name(member: Member) -> str:
  """A member's run name: "seed_0", "seed_0-size_16"."""
  return f"seed_{member.seed}" + ("" if member.task_size is None else
                                  f"-size_{member.task_size}")


def member_dirs(workdir: str, experiment: Experiment) -> list[str]:
  """Where a sweep's members are written, in member order."""
  return [os.path.join(workdir, MEMBERS_DIR, member_name(m)) for m in experiment.members]


def member_config(config: Mapping[str, Any], member: Member) -> ml_collections.ConfigDict:
  """The config that trains `member` alone: the sweep's, without the sweep, at its seed and
  pool size."""
  single = ml_collections.ConfigDict(plain_config(config))
  del single["sweep"]
  single.seed = member.seed
  if member.task_size is not None:
    single.task.size = member.task_size
  return single


def member_experiment(experiment: Experiment, member: Member) -> Experiment:
  """The experiment of `member` alone (what `member_config` builds)."""
  sized = (lambda task: task) if member.task_size is None else (
      lambda task: task.with_size(member.task_size))
  return dataclasses.replace(experiment, seed=member.seed, task=sized(experiment.task),
                             eval_task=sized(experiment.eval_task), members=())


def write_members(experiment: Experiment, config: Mapping[str, Any], state: Any,
                  workdir: str, evaluate: Callable[[Experiment, Any, str], Evaluation]
                  ) -> Evaluation:
  """Writes each member of the finished sweep in `workdir` as its own run, from the sweep's
  final `state` (stacked, on the host); `evaluate(experiment, params, directory)` scores and
  writes a run's evaluation (train.evaluate_run). Returns the members' evaluations merged,
  every name followed by its member's ("transformer [seed_0-size_4]"), written to the
  sweep's own eval directory."""
  rows = read_metrics(os.path.join(workdir, METRICS_FILE))
  step = state.steps_taken
  parts = {}
  for i, (member, directory) in enumerate(zip(experiment.members,
                                              member_dirs(workdir, experiment))):
    single = jax.tree.map(lambda leaf: np.asarray(leaf)[i], state)
    staging = f"{directory}.writing"
    shutil.rmtree(staging, ignore_errors=True)  # a launch killed while writing it
    os.makedirs(staging)
    save_config(staging, member_config(config, member))
    write_atomically(os.path.join(staging, METRICS_FILE),
                     "".join(_member_row(row, i) for row in rows))
    with Checkpoints(staging, keep=1) as checkpoints:
      checkpoints.save(step, single)
    parts[member_name(member)] = evaluate(member_experiment(experiment, member), single.params,
                                          staging)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    log.info("sweep member %s written to %s", member_name(member), directory)
  merged = merge_evaluations(parts, lambda learner, member: f"{learner} [{member}]")
  _write_evaluation(merged, experiment, os.path.join(workdir, EVAL_DIR))
  return merged


def _member_row(row: Mapping[str, Any], member: int) -> str:
  """A member's row from the sweep's: its own value of each metric, the sweep's rate."""
  names = [name for name in row if member_metric(name, member) in row]
  values = {name: row[member_metric(name, member)] for name in names}
  values["steps_per_sec"] = row.get("steps_per_sec")
  return json.dumps({"step": row["step"], **values}) + "\n"


def _write_evaluation(evaluation: Evaluation, experiment: Experiment, directory: str) -> None:
  if evaluation.normalised_errors:
    tables.write_error_table(evaluation.errors, directory)
    plots.plot_error_by_shots(evaluation.errors, os.path.join(directory, "errors.png"),
                              dim=experiment.task.dim,
                              title=f"sweep of {len(experiment.members)} runs")
  else:
    tables.write_query_table(evaluation.queries, directory)

