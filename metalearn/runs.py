"""Loading a finished (or stopped) run back for scripts, tests and notebooks."""

import json
import os
from typing import Any

import jax
import ml_collections

from metalearn.checkpoints import Checkpoints
from metalearn.learners import Learner
from metalearn.experiment import Experiment, build_experiment
from metalearn.train import CONFIG_FILE
from metalearn.train_step import init_state


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was launched with, as saved in its work directory."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} is not a metalearn run: it has no {CONFIG_FILE}")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _restore_target(experiment: Experiment) -> Any:
  """The train state's shapes, dtypes and placement (on the first device), without running or
  compiling its init: all a restore needs."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                      jax.eval_shape(lambda: init_state(experiment)))


def load_run(workdir: str, experiment: Experiment | None = None
             ) -> tuple[Learner, Any, ml_collections.ConfigDict]:
  """(learner, params at the latest checkpoint, config) of the run in `workdir`.

  `experiment`: the run's experiment when the caller has already built it from the saved config.
  """
  config = load_config(workdir)
  if experiment is None:
    experiment = build_experiment(config)
  checkpoints = Checkpoints(workdir, read_only=True)
  state = checkpoints.restore_latest(_restore_target(experiment))
  checkpoints.close()
  if state is None:
    raise FileNotFoundError(f"the run in {workdir!r} has no readable checkpoint")
  return experiment.learner, state.params, config
