r"""Trains a learner from a config, resuming from the work directory's latest checkpoint.

    python launch/train.py --config=configs/linear_regression.py --workdir=runs/linear
    python launch/train.py --config=configs/linear_regression.py:smoke --workdir=/tmp/smoke \
        --config.train.num_steps=40
    python launch/train.py --config=configs/sinusoid.py:maml --print_config

--print_config prints the resolved config (after the overrides), one field a line, and the
config file's variants, then exits without writing anything.

Exit status: 0 when the run finished (trained and evaluated); 75 (PREEMPTED_EXIT_CODE in
metalearn/engine/train.py, sysexits' EX_TEMPFAIL) when SIGTERM stopped it with a checkpoint, to be
resumed by relaunching the same command; 1 for bad input or a failed run.
"""

import logging as std_logging
import os
import sys

from absl import app, flags

# Config files import shared sections from the repository's configs/ package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
from ml_collections import config_flags

import config_flag
import cpu_setup
import launch_logging
from metalearn.engine.checkpoints import CheckpointMismatchError, DamagedCheckpointsError
from metalearn.engine.experiment import ConfigError
from metalearn.engine import metric_writers
from metalearn.engine.train import DEFAULT_WRITERS, PREEMPTED_EXIT_CODE, train_and_evaluate
from metalearn.engine.workdir import EVAL_DIR, WorkdirError
from metalearn.evaluation.scores import Evaluation

_CONFIG = config_flag.define()
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "print the resolved config (after "
                                  "the overrides) and the config file's variants, then exit")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for the config, checkpoints, "
                               "metrics and evaluation; an existing run there is resumed")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "one process of a multi-host run: call jax.distributed.initialize() "
    "first, so that the run trains on every device of every process (README: on a cluster)")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "with --multihost: host:port of process 0's coordinator; "
    "unset: found by JAX on Cloud TPU, SLURM and Open MPI (or JAX_COORDINATOR_ADDRESS)")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "with --multihost: how many processes the run has; unset: found by "
    "JAX as --coordinator_address is", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "with --multihost: this process's index, 0 to --num_processes - 1; "
    "unset: found by JAX as --coordinator_address is", lower_bound=0)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "resume a run under a config that differs from its saved one; "
    "the change and its step are recorded in <workdir>/config_changes.jsonl")
_RESTART_IF_DAMAGED = flags.DEFINE_bool(
    "restart_if_damaged", False, "when every checkpoint in the workdir is damaged (they are "
    "moved to <workdir>/checkpoints_damaged/), train again from step 0 instead of refusing")
_HOST_DEVICES = flags.DEFINE_integer(
    "host_devices", 1, "XLA CPU devices to split the CPU into (the step is pmapped over them); "
    "1: one device on every core, no collectives (the default: safe under any load); -1: one "
    "per core, as many as divide the batch (15-20% faster on 2 cores, benchmarks/RESULTS.md); "
    "0: leave XLA_FLAGS as it is. Accelerators are not affected")
_METRIC_WRITERS = flags.DEFINE_list(
    "metric_writers", list(DEFAULT_WRITERS), "where rows of metrics go beside metrics.jsonl: "
    f"any of {', '.join(metric_writers.WRITERS)} (wandb: pip install wandb; WANDB_PROJECT and "
    "WANDB_MODE=offline are read), or empty")
_HUGEPAGES = cpu_setup.define_hugepages_flag()
# So that --help lists --config and --hugepages, defined in those modules.
flags.adopt_module_key_flags(config_flag)
flags.adopt_module_key_flags(cpu_setup)
flags.mark_flags_as_required(["config"])
flags.register_multi_flags_validator(
    ["multihost", "coordinator_address", "num_processes", "process_id"],
    lambda values: values["multihost"] or all(
        values[name] is None for name in ("coordinator_address", "num_processes", "process_id")),
    "--coordinator_address, --num_processes and --process_id are for --multihost runs")
flags.register_multi_flags_validator(
    ["num_processes", "process_id"],
    lambda values: None in values.values() or values["process_id"] < values["num_processes"],
    "--process_id must be below --num_processes")
flags.register_multi_flags_validator(
    ["workdir", "print_config"], lambda values: values["workdir"] or values["print_config"],
    "--workdir is required (it may be left out only with --print_config)")
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _PRINT_CONFIG.value:
    print(config_flag.describe(_CONFIG.value,
                               config_flags.get_config_filename(flags.FLAGS["config"])))
    return
  try:
    metric_writers.check_writers(_METRIC_WRITERS.value)
  except ValueError as error:
    sys.exit(f"metalearn: --metric_writers: {error}")
  # Before the first jax call starts a backend: these are read only then.
  if _HUGEPAGES.value:
    cpu_setup.use_hugepages()
  host_devices = _HOST_DEVICES.value
  if host_devices < 0:
    batch = _CONFIG.value.train.batch_size
    host_devices = max(n for n in range(1, (os.cpu_count() or 1) + 1) if batch % n == 0)
  if host_devices:
    cpu_setup.set_host_devices(host_devices)
  if _MULTIHOST.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    log.info("process %d of %d", jax.process_index(), jax.process_count())
  log.info("devices: %s", jax.devices())
  try:
    evaluation = train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                    allow_config_change=_ALLOW_CONFIG_CHANGE.value,
                                    writers=_METRIC_WRITERS.value,
                                    restart_if_damaged=_RESTART_IF_DAMAGED.value)
  except ConfigError as error:
    sys.exit(f"metalearn: bad config: {error}")
  except (WorkdirError, CheckpointMismatchError, DamagedCheckpointsError) as error:
    sys.exit(f"metalearn: {error}")
  if evaluation is None:
    log.info("stopped by SIGTERM with a checkpoint; exiting with status %d (preempted): "
             "relaunch the same command to resume", PREEMPTED_EXIT_CODE)
    sys.exit(PREEMPTED_EXIT_CODE)
  for line in _result_lines(evaluation, _CONFIG.value.task.get("dim")):
    log.info("%s", line)
  if jax.process_index():  # process 0 wrote the evaluation
    return
  directory = os.path.join(_WORKDIR.value, EVAL_DIR)
  log.info("wrote %s", ", ".join(os.path.join(directory, name)
                                 for name in sorted(os.listdir(directory))))


def _shown_examples(points: int, dim: int | None) -> list[int]:
  """Every k when there are few; else k = 1, d/2, d, 2d and the last."""
  if points <= 12 or dim is None:
    return list(range(1, points)) if points <= 12 else list(range(1, points, points // 8))
  return sorted({k for k in (1, dim // 2, dim, 2 * dim, points - 1) if 1 <= k < points})


def _result_lines(evaluation: Evaluation, dim: int | None) -> list[str]:
  """The evaluation as tables a person reads: learners down, k (or metrics) across."""
  lines = []
  errors, queries = evaluation.errors, evaluation.queries
  if errors:
    width = max(len(name) for name in errors) + 2
    shown = _shown_examples(len(next(iter(errors.values()))), dim)
    lines += [f"normalised error (1 = predicting zero) after k in-context examples"
              f"{'' if dim is None else f', d = {dim}'}:",
              " " * width + "".join(f"{f'k={k}':>8}" for k in shown)]
    for name, row in errors.items():
      lines.append(f"{name:<{width}}" + "".join(f"{float(row[k]):>8.3f}" for k in shown))
  if queries:  # after a fixed context: mean ± 95% interval
    width = max(len(name) for name in queries) + 2
    metrics = [metric for metric in next(iter(queries.values())) if not metric.endswith("_ci95")]
    lines += ["query metrics, mean ± 95% interval over the held-out prompts:",
              " " * width + "".join(f"{metric:>20}" for metric in metrics)]
    for name, row in queries.items():
      cells = (f"{row[m]:.4g} ± {row[m + '_ci95']:.2g}" for m in metrics)
      lines.append(f"{name:<{width}}" + "".join(f"{cell:>20}" for cell in cells))
  return lines


if __name__ == "__main__":
  config_flag.check_command_line(sys.argv)  # before absl parses: one line, not a traceback
  launch_logging.run(main)
