"""A run: train a learner in a work directory, resumably, then evaluate it.

`train_and_evaluate(config, workdir)` is the one call behind the launcher, the
tests and the notebooks.
"""

import json
import logging
import os
import signal
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from metalearn import evaluate, plots
from metalearn.checkpoints import Checkpoints
from metalearn.experiment import Experiment, build_experiment, check_devices
from metalearn.learners import make_baseline
from metalearn.train_step import init_state, make_train_step, replicate, unreplicate

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_DIR = "eval"


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


def _config_dict(config: Mapping[str, Any]) -> dict[str, Any]:
  to_dict = getattr(config, "to_dict", None)
  return to_dict() if to_dict else dict(config)


def _rewind_metrics(path: str, step: int) -> None:
  """Drops lines logged after `step`: a resumed run rewrites them identically."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path, "w") as f:
    f.writelines(kept)


def _summarise(pending: list[dict[str, np.ndarray]], step: int, last_saved: int | None
               ) -> dict[str, float]:
  """Means of the metrics of the host calls since the last log; stops on NaN or Inf."""
  stacked = {name: np.concatenate([m[name] for m in pending]) for name in pending[0]}
  # A finite loss with a non-finite gradient would still write NaN into the params.
  losses = np.where(np.isfinite(stacked["grad_norm"]), stacked["loss"], np.nan)
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    first = step - len(losses) + int(bad[0]) + 1
    kept = f"step {last_saved}" if last_saved is not None else "none yet"
    raise FloatingPointError(
        f"training loss or its gradient became {losses[bad[0]]} at step {first}; stopped "
        "without saving. "
        f"The last good checkpoint ({kept}) is untouched: lower train.learning_rate or set "
        "train.grad_clip.")
  return {name: float(np.mean(values)) for name, values in stacked.items()}


def train(experiment: Experiment, workdir: str,
          should_stop: Callable[[int], bool] | None = None) -> tuple[Any, bool]:
  """Trains (or resumes) to `train.num_steps`; returns (final params, finished).

  `should_stop(step)`, called between host calls, ends the run early with a
  checkpoint, as SIGTERM does; `finished` is False then.
  """
  train_cfg = experiment.train
  num_devices = jax.local_device_count()
  check_devices(train_cfg, num_devices)
  checkpoints = Checkpoints(workdir, keep=train_cfg.keep_checkpoints)
  state = init_state(experiment)
  restored = checkpoints.restore_latest(state)
  if restored is not None:
    state = restored
    log.info("resuming from the checkpoint at step %d", int(state.step))
  step = int(state.step)
  last_saved = step if restored is not None else None
  metrics_path = os.path.join(workdir, METRICS_FILE)
  _rewind_metrics(metrics_path, step)

  train_step = make_train_step(experiment, num_devices)
  replicated = replicate(state, num_devices)
  pending, window_start, window_step, compiled = [], time.perf_counter(), step, False
  with _Preemption() as preemption, open(metrics_path, "a") as metrics_file:
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
      pending.append(metrics)
      stopping = preemption.requested or (should_stop is not None and should_stop(step))
      at_log = step % train_cfg.log_every == 0 or step == train_cfg.num_steps
      at_save = step % train_cfg.checkpoint_every == 0 or step == train_cfg.num_steps
      if at_log or at_save or stopping:
        host = [{name: np.asarray(v[0]) for name, v in m.items()} for m in pending]
        summary = _summarise(host, step, last_saved)
        pending = []
        now = time.perf_counter()
        rate = (step - window_step) / (now - window_start) if step > window_step else None
        window_start, window_step = now, step
        metrics_file.write(json.dumps({"step": step, **summary, "steps_per_sec": rate}) + "\n")
        metrics_file.flush()
        speed = (f"  {rate:.1f} steps/s  {(train_cfg.num_steps - step) / rate:.0f}s left"
                 if rate else "")
        log.info("step %d/%d  loss %.4g  normalised %.4g%s", step, train_cfg.num_steps,
                 summary["loss"], summary["normalised_loss"], speed)
      if at_save or stopping:
        checkpoints.save(step, unreplicate(replicated))
        last_saved = step
      if stopping:
        log.info("stopping at step %d on request; the checkpoint is saved", step)
        break
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
                       should_stop: Callable[[int], bool] | None = None
                       ) -> dict[str, Any] | None:
  """Checks the config, trains or resumes in `workdir`, then evaluates.

  Returns what `evaluate_run` returns, or None if
  the run stopped early (SIGTERM or `should_stop`) and is left to be resumed.
  """
  experiment = build_experiment(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    json.dump(_config_dict(config), f, indent=2, sort_keys=True)
  params, finished = train(experiment, workdir, should_stop)
  if not finished:
    return None
  return evaluate_run(experiment, params, workdir)
