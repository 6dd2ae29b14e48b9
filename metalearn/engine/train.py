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
from jax.experimental import multihost_utils

from metalearn.evaluation import plots, shots, tables
from metalearn.evaluation.scores import Evaluation, evaluate_held_out
from metalearn.engine import log_window, metric_writers, progress, sweep
from metalearn.engine.checkpoints import Checkpoints
from metalearn.engine.data_parallel import make_data_parallel
from metalearn.engine.experiment import ConfigError, Experiment, check_devices
from metalearn.learners import make_baseline
from metalearn.engine.resume import Resumption, resume
from metalearn.engine.runs import build_experiment
from metalearn.engine.train_step import init_state
from metalearn.engine.workdir import (EVAL_DIR, WorkdirLock, check_config, record_config_change,
                                      save_config)

log = logging.getLogger(__name__)

# The exit status of a launch that SIGTERM stopped with a checkpoint, to be relaunched:
# EX_TEMPFAIL of sysexits.h ("temporary failure, retry"), so that a scheduler can tell a
# preempted run (75) from a finished one (0) and a failed one (1).
PREEMPTED_EXIT_CODE = 75
DEFAULT_WRITERS = ("tensorboard",)  # beside metrics.jsonl; see metric_writers.WRITERS


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
          writer_names: Sequence[str] = DEFAULT_WRITERS, restart_if_damaged: bool = False,
          start: Resumption | None = None) -> tuple[Any, bool]:
  """Trains (or resumes) to `train.num_steps`; returns (final params, finished).

  `should_stop(step)`, called between host calls, ends the run early with a
  checkpoint, as SIGTERM does; `finished` is False then. Rows of metrics go to
  metrics.jsonl and to the writers named in `writer_names` (metric_writers.WRITERS).

  `start`: the run's starting point as `resume.resume` read it (train_and_evaluate reads it
  first); None: read here. Damaged checkpoints are set aside and the newest good one is
  resumed; if every one is damaged, raises DamagedCheckpointsError before anything runs or is
  rewritten, unless `restart_if_damaged`: then the run starts over from step 0.

  The run uses every device of every process (`jax.distributed`), on the path that
  `train.data_parallel` names; each process must call this alike. Only process 0 writes the
  metrics and their windows; every process takes part in the checkpoints (orbax's rule).
  """
  train_cfg = experiment.train
  parallel = make_data_parallel(train_cfg.data_parallel)
  check_devices(train_cfg, parallel.num_devices)
  writes = jax.process_index() == 0
  if start is None:
    start = resume(experiment, workdir, restart_if_damaged)
  # Only a fresh start compiles and runs the init; a resume has its state from the checkpoint.
  state = init_state(experiment) if start.state is None else start.state
  step = start.step
  last_saved = None if start.state is None else step
  if writes:
    start.metrics.rewind(step)

  train_step = parallel.train_step(experiment)
  replicated = parallel.put(state)
  window = log_window.resume_window(workdir, step, train_cfg.log_every)
  # `pending`: the host calls whose metrics are not read yet, each with the time it was seen
  # done (None: not yet); `row_due`: a log step whose row is written once the next call is
  # dispatched, so that the host never waits at a log step for the call it has just dispatched.
  pending, row_due, compiled = [], None, False
  checkpoints = Checkpoints(workdir, keep=train_cfg.keep_checkpoints)
  writers = []
  try:
    if writes:
      writers = metric_writers.open_writers(workdir, start.metrics.path, writer_names,
                                            resume_step=step)
    rows = _Rows(writers, train_cfg.num_steps)
    with _Preemption() as preemption, \
        progress.progress_bar(train_cfg.num_steps, step) as bar:
      while step < train_cfg.num_steps:
        replicated, metrics = train_step(replicated)
        if not compiled:
          # The first call compiles; time the rate from its end, not its start.
          jax.block_until_ready(metrics)
          compiled = True
          log.info("compiled and ran the first %d steps in %.1fs", train_cfg.steps_per_call,
                   rows.start_clock(step + train_cfg.steps_per_call))
        step += train_cfg.steps_per_call
        bar.update(train_cfg.steps_per_call)
        if row_due is not None:
          done_at = _read(pending, window, last_saved, parallel.get)
          window, row_due = rows.write(row_due, window, done_at), None
        # A call that returns done (the first, or any on several CPU devices, which wait for
        # each call) is timed now, not when it is read after the next one.
        pending.append((metrics, time.perf_counter()
                        if jax.tree.leaves(metrics)[0].is_ready() else None))
        stopping = _on_every_process(
            preemption.requested or (should_stop is not None and should_stop(step)))
        # Rows follow the step count: a stop or a checkpoint between two of them writes no
        # row; its steps so far are saved with the checkpoint and go into the next row.
        at_log = step % train_cfg.log_every == 0 or step == train_cfg.num_steps
        at_save = step % train_cfg.checkpoint_every == 0 or step == train_cfg.num_steps
        if not (at_save or stopping):
          row_due = step if at_log else None
          continue
        # A checkpoint needs the state, so here the host waits for the call; every step's
        # loss is checked before the params are saved.
        done_at = _read(pending, window, last_saved, parallel.get)
        if at_log:
          window = rows.write(step, window, done_at)
        if window.num_steps and writes:
          window.save(workdir, step)  # before the checkpoint that needs it
        checkpoints.save(step, parallel.get(replicated))
        last_saved = step
        if writes:
          log_window.prune_windows(workdir, checkpoints.steps)
        if stopping:
          log.info("stopping at step %d on request; the checkpoint is saved", step)
          break
  finally:
    metric_writers.close_writers(writers)
    checkpoints.close()
  return parallel.get(replicated).params, step >= train_cfg.num_steps


def _on_every_process(stopping: bool) -> bool:
  """Whether any process of the run stops here: all must stop at the same step, as each
  checkpoint and each step waits for every process (SIGTERM may reach them calls apart)."""
  if jax.process_count() == 1:
    return stopping
  return bool(np.any(multihost_utils.process_allgather(np.asarray(stopping))))


def _read(pending: list[tuple[dict[str, jax.Array], float | None]],
          window: log_window.LogWindow, last_saved: int | None,
          to_host: Callable[[Any], Any]) -> float:
  """Moves the pending calls' metrics into `window` (waiting for them; `to_host` brings them to
  the host) and stops on a NaN; returns the time the last of them was seen done."""
  for metrics, _ in pending:
    window.add(to_host(metrics))
  done_at = pending[-1][1]
  if done_at is None:  # not seen done when it was dispatched; done now that it has been read
    done_at = time.perf_counter()
  pending.clear()
  window.check_finite(last_saved)
  return done_at


class _Rows:
  """Writes a logging window's row to every writer, with the steps per second since the last
  row (timed from the end of the first, compiling, call)."""

  def __init__(self, writers: Sequence[Any], num_steps: int):
    self._writers, self._num_steps = writers, num_steps
    self._clock, self._clock_step = time.perf_counter(), 0

  def start_clock(self, step: int) -> float:
    """Times the rate from now, the end of the first call, at `step`; returns the seconds that
    call took, its compile included."""
    now = time.perf_counter()
    elapsed, self._clock, self._clock_step = now - self._clock, now, step
    return elapsed

  def write(self, step: int, window: log_window.LogWindow, done_at: float
            ) -> log_window.LogWindow:
    """Writes the row of `window`, whose last step's call was seen done at `done_at`; returns
    the next, empty window."""
    summary = window.means()
    rate = ((step - self._clock_step) / (done_at - self._clock) if step > self._clock_step
            else None)
    self._clock, self._clock_step = done_at, step
    for writer in self._writers:
      writer.write(step, {**summary, "steps_per_sec": rate})
    speed = (f"  {rate:.1f} steps/s  {(self._num_steps - step) / rate:.0f}s left"
             if rate else "")
    log.info("step %d/%d  loss %.4g  normalised loss (mean over positions) %.4g%s", step,
             self._num_steps, summary["loss"], summary["normalised_loss"], speed)
    return log_window.LogWindow(step + 1)


def evaluate_run(experiment: Experiment, params: Any, workdir: str, write: bool = True
                 ) -> Evaluation:
  """Scores the learner and its baselines on the same held-out prompts; writes CSV/JSON/PNG.

  A prefix learner is scored by normalised error against the number of examples (one
  value per position); a fixed-context learner (the MAML family), or any learner on a
  task with a fixed support set (few-shot episodes), by the loss and metrics of its
  queries, each predicted from that context alone, with 95% intervals, once per
  evaluation variant (inner-step count), beside its baselines on the same queries. A task
  pool's learners are scored on its own tasks and on fresh ones, side by side (each name says
  which: "transformer (pretrain)", "transformer (latent)").
  `write`: False scores without writing (the processes of a multi-host run other than 0).
  """
  cfg = experiment.eval
  task = experiment.eval_task
  learners = {name: (learner, params) for name, learner in
              experiment.learner.evaluation_variants(experiment.learner_name).items()}
  learners.update({name: (make_baseline(name, task), {}) for name in cfg.baselines})
  directory = os.path.join(workdir, EVAL_DIR)
  title = f"{type(task).__name__}, d = {task.dim}"
  context = shots.run_context(experiment.learner, task)
  evaluation = evaluate_held_out(learners, task, cfg.num_prompts, experiment.points, cfg.seed,
                                 cfg.batch_size, by_shots=context is None,
                                 contexts=() if context is None else (context,))
  if not write:
    return evaluation
  if context is not None:
    tables.write_query_table(evaluation.queries, directory)
    plots.plot_query_errors(evaluation.queries, "loss",
                            os.path.join(directory, "query_errors.png"),
                            title=f"{title}, {context} context points")
  else:
    tables.write_error_table(evaluation.errors, directory)
    plots.plot_error_by_shots(evaluation.errors, os.path.join(directory, "errors.png"),
                              dim=task.dim, title=title)
  return evaluation


def train_and_evaluate(config: Mapping[str, Any], workdir: str,
                       should_stop: Callable[[int], bool] | None = None,
                       allow_config_change: bool = False,
                       writers: Sequence[str] = DEFAULT_WRITERS,
                       restart_if_damaged: bool = False) -> Evaluation | None:
  """Checks the config, trains or resumes in `workdir`, then evaluates.

  Everything is checked before anything is written: the config (ConfigError), the batch
  against the devices, the directory (WorkdirError: unusable; WorkdirBusyError: held by
  another process, named by pid), and a relaunch's config against the run's. An identical
  config resumes; a different one raises ConfigChangedError listing every differing field,
  unless `allow_config_change`: then the change and the step it takes effect are recorded in
  config_changes.jsonl, config.json is kept, and `runs.load_config` gives the config in effect.
  A change the checkpoint cannot take (a model size) raises CheckpointMismatchError, and the
  run is left as it was. The directory is held by this call until it returns.

  Across the processes of a multi-host run (`jax.distributed.initialize` first), every process
  calls this with the same config and work directory: they train one run on all their devices,
  each holds its own lock file, process 0 alone writes the config, metrics and evaluation, and
  all of them check that they resume from the same step.

  `writers` names where rows of metrics go beside metrics.jsonl (metric_writers.WRITERS);
  an unknown one, or one whose package is missing, raises ValueError first.

  A run whose checkpoints are all damaged raises DamagedCheckpointsError (naming the steps and
  where they were moved) instead of starting over, unless `restart_if_damaged`.

  Returns the run's `Evaluation` (`evaluate_run`; its `errors` by number of examples or its
  `queries` table, the same type for every learner), or None if the run stopped early (SIGTERM
  or `should_stop`) and is left to be resumed. A sweep (the config's `sweep` section) trains
  its members together and then writes each as its own run (engine/sweep.py); it returns
  their evaluations merged, each name followed by its member's.
  """
  experiment = build_experiment(config)
  metric_writers.check_writers(writers)
  try:
    check_devices(experiment.train, jax.device_count())
  except ValueError as error:
    raise ConfigError(str(error)) from error
  if experiment.members and jax.process_count() > 1:
    raise ConfigError(f"a sweep ({len(experiment.members)} members) runs in one process; this "
                      f"run has {jax.process_count()}: launch its members as runs of their own")
  with WorkdirLock(workdir, process=jax.process_index()):
    changes = check_config(workdir, config, allow_config_change)
    # Read once, before the run's files are written: a damaged metrics line, checkpoints that
    # are all damaged, or one that does not fit a changed config stop the launch here.
    start = resume(experiment, workdir, restart_if_damaged)
    writes = jax.process_index() == 0
    if jax.process_count() > 1:
      multihost_utils.assert_equal(start.step, "the processes of this run resume from different "
                                   "steps (do they share one work directory?)")
    if changes is None and writes:
      save_config(workdir, config)
    elif changes and writes:
      record_config_change(workdir, start.step, changes)
    params, finished = train(experiment, workdir, should_stop, writers, restart_if_damaged, start)
    if not finished:
      return None
    if experiment.members:  # each member written as its own run, from the final checkpoint
      return sweep.write_members(experiment, config, resume(experiment, workdir).state, workdir,
                                 evaluate_run)
    return evaluate_run(experiment, params, workdir, write=writes)
