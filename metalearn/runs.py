"""Loading a finished (or stopped) run back for scripts, tests and notebooks."""

import json
import os
from typing import Any

import ml_collections

from metalearn.checkpoints import Checkpoints
from metalearn.learners import Learner
from metalearn.experiment import build_experiment
from metalearn.train import CONFIG_FILE
from metalearn.train_step import init_state


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was launched with, as saved in its work directory."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} is not a metalearn run: it has no {CONFIG_FILE}")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str) -> tuple[Learner, Any, ml_collections.ConfigDict]:
  """(learner, params at the latest checkpoint, config) of the run in `workdir`."""
  config = load_config(workdir)
  experiment = build_experiment(config)
  checkpoints = Checkpoints(workdir, read_only=True)
  state = checkpoints.restore_latest(init_state(experiment))
  checkpoints.close()
  if state is None:
    raise FileNotFoundError(f"the run in {workdir!r} has no readable checkpoint")
  return experiment.learner, state.params, config
