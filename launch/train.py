"""Trains a learner from a config, resuming from the work directory's latest checkpoint.

    python launch/train.py --config=configs/linear_regression.py --workdir=runs/linear
    python launch/train.py --config=configs/linear_regression.py:smoke --workdir=/tmp/smoke \
        --config.train.num_steps=40
"""

import logging as std_logging
import os
import sys

from absl import app, flags

# Config files import shared sections from the repository's configs/ package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
from ml_collections import config_flags

import cpu_setup
import launch_logging
from metalearn.experiment import ConfigError
from metalearn.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for the config, checkpoints, "
                               "metrics and evaluation; an existing run there is resumed")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first")
_HOST_DEVICES = flags.DEFINE_integer(
    "host_devices", -1, "XLA CPU devices to split the CPU into (the step is pmapped over them); "
    "-1: one per core, as many as divide the batch; 0: leave XLA_FLAGS as it is. Accelerators "
    "are not affected")
_HUGEPAGES = cpu_setup.define_hugepages_flag()
flags.mark_flags_as_required(["config", "workdir"])
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
    jax.distributed.initialize()
  log.info("devices: %s", jax.devices())
  try:
    errors = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except ConfigError as error:
    sys.exit(f"metalearn: bad config: {error}")
  if errors is None:
    log.info("stopped early; relaunch the same command to resume")
    return
  for name, values in errors.items():
    if isinstance(values, dict):  # a fixed-context learner's query table
      log.info("%-22s %s", name, "  ".join(f"{metric} {value:.4g}" for metric, value
                                           in values.items() if not metric.endswith("_ci95")))
    else:
      log.info("%-16s normalised error by examples: %s", name,
               " ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
  launch_logging.run(main)
