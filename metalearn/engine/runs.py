"""Loading a finished (or stopped) run back for scripts, tests and notebooks, and building a
config's experiment, which loads the trained run its learner may build on (`model.run`)."""

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from metalearn.engine import sweep
from metalearn.engine.checkpoints import Checkpoints, DamagedCheckpointsError
from metalearn.learners import Learner
from metalearn.learners.base import BaseRun
from metalearn.engine.experiment import BaseLoader, ConfigError, Experiment, build
from metalearn.engine.train_step import abstract_state
from metalearn.engine.workdir import CONFIG_FILE, WorkdirError, config_in_effect


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run's latest steps were trained under: the one it was launched with, as saved
  in its work directory, with the changes recorded by relaunches that allowed them."""
  config = config_in_effect(workdir)
  if config is None:
    raise FileNotFoundError(f"{workdir!r} is not a metalearn run: it has no {CONFIG_FILE}")
  return ml_collections.ConfigDict(config)


def build_experiment(config: Mapping[str, Any]) -> Experiment:
  """Checks a config and builds its task, learner and settings; compiles nothing.

  A learner that builds on a trained run (`Learner.base_run`) is bound to that run's learner
  and params at its latest checkpoint. Raises ConfigError naming the bad value and what is
  allowed, or the base run's path when it cannot be loaded.
  """
  return build(config, _base_loader(()))


def load_base_run(workdir: str) -> BaseRun:
  """The run in `workdir` as a learner's base: its learner and params at its latest checkpoint,
  for `Learner.with_base`. Raises ConfigError naming the path when it cannot be loaded."""
  return _base_loader(())(workdir)


def _base_loader(loading: tuple[str, ...]) -> BaseLoader:
  """Loads base runs; `loading`: the runs whose bases are being loaded, outermost first (a run
  whose chain of bases comes back to itself would otherwise load forever)."""
  def load(workdir: str) -> BaseRun:
    path = os.path.abspath(workdir)
    if path in loading:
      raise ConfigError(f"model.run {path!r} builds on itself: "
                        f"{' -> '.join(loading + (path,))}")
    try:
      config = load_config(path)
      experiment = build(config, _base_loader(loading + (path,)))
      _refuse_sweep(path, experiment)
      state = _latest_state(path, experiment)  # DamagedCheckpointsError
    except (OSError, ValueError, DamagedCheckpointsError, WorkdirError) as error:  # ConfigError too
      raise ConfigError(f"model.run {path!r} cannot be loaded: {error}") from error
    if state is None:
      raise ConfigError(f"model.run {path!r} cannot be loaded: the run has no readable "
                        "checkpoint")
    return BaseRun(path, int(state.step), config.model.name, experiment.learner, state.params)
  return load


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
  _refuse_sweep(workdir, experiment)
  state = _latest_state(workdir, experiment)  # DamagedCheckpointsError
  if state is None:
    raise FileNotFoundError(f"the run in {workdir!r} has no readable checkpoint")
  return experiment.learner, state.params, config


def _refuse_sweep(workdir: str, experiment: Experiment) -> None:
  """A sweep's directory holds its members' runs, not one learner's: name where they are."""
  if experiment.members:
    raise ValueError(f"{workdir!r} is a sweep of {len(experiment.members)} runs trained as "
                     f"one; load one of its members, the runs in "
                     f"{os.path.join(workdir, sweep.MEMBERS_DIR)}")


def _latest_state(workdir: str, experiment: Experiment) -> Any | None:
  """The newest readable train state in `workdir`, shaped for `experiment`; moves nothing."""
  with Checkpoints(workdir, read_only=True) as checkpoints:
    state = checkpoints.restore_latest(abstract_state(experiment))
  # Restored arrays are committed to a device, fresh ones (an init, jnp) are not, and jit
  # compiles a function once for each: a script feeding both to one function compiled it twice.
  return None if state is None else jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), state)
