"""A run: train a learner in a work directory, resumably, then evaluate it.

`train_and_evaluate(config, workdir)` is the one call behind the launcher, the
tests and the notebooks.
"""

import logging
import os
import signal
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from metalearn.evaluation import evaluate, plots
from metalearn.engine import log_window, metric_writers, progress
from metalearn.engine.checkpoints import Checkpoints, DamagedCheckpointsError
from metalearn.engine.experiment import ConfigError, Experiment, build_experiment, check_devices
from metalearn.learners import make_baseline
from metalearn.engine.runs import resume_step
from metalearn.engine.train_step import init_state, make_train_step, replicate, unreplicate
from metalearn.engine.workdir import (EVAL_DIR, METRICS_FILE, WorkdirLock, check_config, read_metrics,
                               record_config_change, rewind_metrics, save_config)

log = logging.getLogger(__name__)

# The exit status of a launch that SIGTERM stopped with a checkpoint, to be relaunched:
# EX_TEMPFAIL of sysexits.h ("temporary failure, retry"), so that a scheduler can tell a
# preempted run (75) from a finished one (0) and a failed one (1).
PREEMPTED_EXIT_CODE = 75
DEFAULT_WRITERS = ("tensorboard",)  # beside metrics.jsonl; see metric_writers.WRITERS
_RESTART_ADVICE = (
    "Refusing to start over from step 0 and overwrite the run's metrics: to train from scratch in "
    "this workdir anyway, pass restart_if_damaged=True (launch/train.py --restart_if_damaged), or "
    "use a new workdir")


class _Preemption:
  """Turns SIGTERM into a flag the loop reads between host calls."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


def train(experiment: Experiment, workdir: str,
          should_stop: Callable[[int], bool] | None = None,
          writer_names: Sequence[str] = DEFAULT_WRITERS, restart_if_damaged: bool = False
          ) -> tuple[Any, bool]:
  """Trains (or resumes) to `train.num_steps`; returns (final params, finished).

  `should_stop(step)`, called between host calls, ends the run early with a
  checkpoint, as SIGTERM does; `finished` is False then. Rows of metrics go to
  metrics.jsonl and to the writers named in `writer_names` (metric_writers.WRITERS).

  Damaged checkpoints are set aside and the newest good one is resumed; if every one is
  damaged, raises DamagedCheckpointsError before anything runs or is rewritten, unless
  `restart_if_damaged`: then the run starts over from step 0.
  """
  train_cfg = experiment.train
  num_devices = jax.local_device_count()
  check_devices(train_cfg, num_devices)
  checkpoints = Checkpoints(workdir, keep=train_cfg.keep_checkpoints)
  state = init_state(experiment)
  try:
    restored = checkpoints.restore_latest(state)
  except DamagedCheckpointsError as error:
    if not restart_if_damaged:
      checkpoints.close()
      raise DamagedCheckpointsError(error.summary, _RESTART_ADVICE) from None
    log.warning("%s; starting over from step 0 (restart_if_damaged)", error.summary)
    restored = None
  if restored is not None:
    state = restored
    log.info("resuming from the checkpoint at step %d", int(state.step))
  step = int(state.step)
  last_saved = step if restored is not None else None
  metrics_path = os.path.join(workdir, METRICS_FILE)
  rewind_metrics(metrics_path, step)

  train_step = make_train_step(experiment, num_devices)
  replicated = replicate(state, num_devices)
  window = log_window.resume_window(workdir, step, train_cfg.log_every)
  pending, window_start, window_step, compiled = [], time.perf_counter(), step, False
  writers = []
  try:
    writers = metric_writers.open_writers(workdir, metrics_path, writer_names, resume_step=step)
    with _Preemption() as preemption, \
        progress.progress_bar(train_cfg.num_steps, step) as bar:
      while step < train_cfg.num_steps:
        replicated, metrics = train_step(replicated)
        if not compiled:
          # The first call compiles; time the rate from its end, not its start.
          jax.block_until_ready(metrics)
          compiled = True
          log.info("compiled and ran the first %d steps in %.1fs", train_cfg.steps_per_call,
                   time.perf_counter() - window_start)
          window_start = time.perf_counter()
          window_step = step + train_cfg.steps_per_call
        step += train_cfg.steps_per_call
        bar.update(train_cfg.steps_per_call)
        pending.append(metrics)
        stopping = preemption.requested or (should_stop is not None and should_stop(step))
        # Rows follow the step count: a stop or a checkpoint between two of them writes no
        # row; its steps so far are saved with the checkpoint and go into the next row.
        at_log = step % train_cfg.log_every == 0 or step == train_cfg.num_steps
        at_save = step % train_cfg.checkpoint_every == 0 or step == train_cfg.num_steps
        if at_log or at_save or stopping:
          for m in pending:
            window.add({name: np.asarray(v[0]) for name, v in m.items()})
          pending = []
          window.check_finite(last_saved)
        if at_log:
          summary = window.means()
          window = log_window.LogWindow(step + 1)
          now = time.perf_counter()
          rate = (step - window_step) / (now - window_start) if step > window_step else None
          window_start, window_step = now, step
          for writer in writers:
            writer.write(step, {**summary, "steps_per_sec": rate})
          speed = (f"  {rate:.1f} steps/s  {(train_cfg.num_steps - step) / rate:.0f}s left"
                   if rate else "")
          log.info("step %d/%d  loss %.4g  normalised loss (mean over positions) %.4g%s", step,
                   train_cfg.num_steps, summary["loss"], summary["normalised_loss"], speed)
        if at_save or stopping:
          if window.num_steps:
            window.save(workdir, step)  # before the checkpoint that needs it
          checkpoints.save(step, unreplicate(replicated))
          last_saved = step
          log_window.prune_windows(workdir, checkpoints.steps)
        if stopping:
          log.info("stopping at step %d on request; the checkpoint is saved", step)
          break
  finally:
    metric_writers.close_writers(writers)
    checkpoints.close()
  return unreplicate(replicated).params, step >= train_cfg.num_steps


def evaluate_run(experiment: Experiment, params: Any, workdir: str) -> dict[str, Any]:
  """Scores the learner and its baselines on the same held-out prompts; writes CSV/JSON/PNG.

  A prefix learner is scored by normalised error against the number of examples (one
  value per position); a fixed-context learner (the MAML family), or any learner on a
  task with a fixed support set (few-shot episodes), by the loss and metrics of its
  queries, each predicted from that context alone, with 95% intervals, once per
  evaluation variant (inner-step count), beside its baselines on the same queries.
  """
  cfg = experiment.eval
  task = experiment.eval_task
  episode = evaluate.held_out_episodes(task, cfg.num_prompts, experiment.points, cfg.seed)
  learners = {name: (learner, params) for name, learner in
              experiment.learner.evaluation_variants(experiment.learner_name).items()}
  learners.update({name: (make_baseline(name, task), {}) for name in cfg.baselines})
  directory = os.path.join(workdir, EVAL_DIR)
  title = f"{type(task).__name__}, d = {task.dim}"
  context = experiment.learner.context_points or task.context_points
  if context is not None:
    metrics = {name: evaluate.query_metrics(learner, p, task, episode, context,
                                            cfg.batch_size)
               for name, (learner, p) in learners.items()}
    table = evaluate.summarise_queries(metrics)
    evaluate.write_query_table(table, directory)
    plots.plot_query_errors(table, "loss", os.path.join(directory, "query_errors.png"),
                            title=f"{title}, {context} context points")
    return table
  errors = evaluate.error_by_shots(learners, task, episode, cfg.batch_size)
  evaluate.write_error_table(errors, directory)
  plots.plot_error_by_shots(errors, os.path.join(directory, "errors.png"), dim=task.dim,
                            title=title)
  return errors


def train_and_evaluate(config: Mapping[str, Any], workdir: str,
                       should_stop: Callable[[int], bool] | None = None,
                       allow_config_change: bool = False,
                       writers: Sequence[str] = DEFAULT_WRITERS,
                       restart_if_damaged: bool = False) -> dict[str, Any] | None:
  """Checks the config, trains or resumes in `workdir`, then evaluates.

  Everything is checked before anything is written: the config (ConfigError), the batch
  against the devices, the directory (WorkdirError: unusable; WorkdirBusyError: held by
  another process, named by pid), and a relaunch's config against the run's. An identical
  config resumes; a different one raises ConfigChangedError listing every differing field,
  unless `allow_config_change`: then the change and the step it takes effect are recorded in
  config_changes.jsonl, config.json is kept, and `runs.load_config` gives the config in effect.
  A change the checkpoint cannot take (a model size) raises CheckpointMismatchError, and the
  run is left as it was. The directory is held by this call until it returns.

  `writers` names where rows of metrics go beside metrics.jsonl (metric_writers.WRITERS);
  an unknown one, or one whose package is missing, raises ValueError first.

  A run whose checkpoints are all damaged raises DamagedCheckpointsError (naming the steps and
  where they were moved) instead of starting over, unless `restart_if_damaged`.

  Returns what `evaluate_run` returns, or None if
  the run stopped early (SIGTERM or `should_stop`) and is left to be resumed.
  """
  experiment = build_experiment(config)
  metric_writers.check_writers(writers)
  try:
    check_devices(experiment.train, jax.local_device_count())
  except ValueError as error:
    raise ConfigError(str(error)) from error
  with WorkdirLock(workdir, process=jax.process_index()):
    changes = check_config(workdir, config, allow_config_change)
    read_metrics(os.path.join(workdir, METRICS_FILE))  # raises for a damaged line
    if changes is None:
      save_config(workdir, config)
    elif changes:
      try:
        step = resume_step(workdir, experiment)
      except DamagedCheckpointsError as error:
        if not restart_if_damaged:
          raise DamagedCheckpointsError(error.summary, _RESTART_ADVICE) from None
        step = 0  # train() sets the damaged ones aside and starts over
      record_config_change(workdir, step, changes)
    params, finished = train(experiment, workdir, should_stop, writers, restart_if_damaged)
    if not finished:
      return None
    return evaluate_run(experiment, params, workdir)
