"""Trains a learner from a config, resuming from the work directory's latest checkpoint.

    python launch/train.py --config=configs/linear_regression.py --workdir=runs/linear
    python launch/train.py --config=configs/linear_regression.py:smoke --workdir=/tmp/smoke \
        --config.train.num_steps=40
"""

import logging as std_logging
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from metalearn.experiment import ConfigError
from metalearn.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for the config, checkpoints, "
                               "metrics and evaluation; an existing run there is resumed")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first")
flags.mark_flags_as_required(["config", "workdir"])
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
    log.info("%-16s normalised error by examples: %s", name,
                 " ".join(f"{v:.3f}" for v in values))


def run():
  # Our progress lines at INFO; the libraries' (orbax logs every file it writes) at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("metalearn").setLevel(std_logging.INFO)
  app.run(main)


if __name__ == "__main__":
  run()
