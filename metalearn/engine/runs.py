"""Loading a finished (or stopped) run back for scripts, tests and notebooks."""

from typing import Any

import jax
import ml_collections

from metalearn.engine.checkpoints import Checkpoints
from metalearn.learners import Learner
from metalearn.engine.experiment import Experiment, build_experiment
from metalearn.engine.train_step import init_state
from metalearn.engine.workdir import CONFIG_FILE, config_in_effect


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run's latest steps were trained under: the one it was launched with, as saved
  in its work directory, with the changes recorded by relaunches that allowed them."""
  config = config_in_effect(workdir)
  if config is None:
    raise FileNotFoundError(f"{workdir!r} is not a metalearn run: it has no {CONFIG_FILE}")
  return ml_collections.ConfigDict(config)


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
  The arrays are verified against their checksums; damaged checkpoints are skipped (reported,
  not moved), and if all are damaged DamagedCheckpointsError names them.
  """
  config = load_config(workdir)
  if experiment is None:
    experiment = build_experiment(config)
  state = _latest_state(workdir, experiment)  # DamagedCheckpointsError
  if state is None:
    raise FileNotFoundError(f"the run in {workdir!r} has no readable checkpoint")
  return experiment.learner, state.params, config


def resume_step(workdir: str, experiment: Experiment) -> int:
  """The step a relaunch of the run in `workdir` under `experiment` resumes from (0 without a
  readable checkpoint); reads the checkpoint without changing anything.

  Raises CheckpointMismatchError when the checkpoint does not fit the experiment's train state.
  """
  state = _latest_state(workdir, experiment)
  return 0 if state is None else int(state.step)


def _latest_state(workdir: str, experiment: Experiment) -> Any | None:
  """The newest readable train state in `workdir`, shaped for `experiment`; moves nothing."""
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    return checkpoints.restore_latest(_restore_target(experiment))
  finally:
    checkpoints.close()
