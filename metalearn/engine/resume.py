"""Where a launch in a work directory starts: its newest good checkpoint and its metrics log,
each read once, before anything is written."""

import dataclasses
import logging
import os

from metalearn.engine.checkpoints import Checkpoints, DamagedCheckpointsError
from metalearn.engine.experiment import Experiment
from metalearn.engine.train_step import TrainState, abstract_state
from metalearn.engine.workdir import METRICS_FILE, MetricsLog, read_metrics_log

log = logging.getLogger(__name__)

RESTART_ADVICE = (
    "Refusing to start over from step 0 and overwrite the run's metrics: to train from scratch in "
    "this workdir anyway, pass restart_if_damaged=True (launch/train.py --restart_if_damaged), or "
    "use a new workdir")


@dataclasses.dataclass(frozen=True)
class Resumption:
  """A launch's starting point: the train state it resumes (None: it starts at step 0) and the
  metrics logged so far."""
  state: TrainState | None
  metrics: MetricsLog

  @property
  def step(self) -> int:
    return 0 if self.state is None else self.state.steps_taken


def resume(experiment: Experiment, workdir: str, restart_if_damaged: bool = False
           ) -> Resumption:
  """Reads the run in `workdir`: metrics.jsonl, then its newest good checkpoint, restored once
  into the abstract train state (nothing compiles). Writes nothing but set-aside checkpoints.

  Raises DamagedMetricsError for a damaged line of metrics (before any checkpoint is read),
  CheckpointMismatchError for a checkpoint that does not fit `experiment`, and
  DamagedCheckpointsError when every checkpoint is damaged, unless `restart_if_damaged`: then
  the run starts over from step 0.
  """
  metrics = read_metrics_log(os.path.join(workdir, METRICS_FILE))
  with Checkpoints(workdir, keep=experiment.train.keep_checkpoints) as checkpoints:
    try:
      state = checkpoints.restore_latest(abstract_state(experiment))
    except DamagedCheckpointsError as error:
      if not restart_if_damaged:
        raise DamagedCheckpointsError(error.summary, RESTART_ADVICE) from None
      log.warning("%s; starting over from step 0 (restart_if_damaged)", error.summary)
      state = None
  if state is not None:
    log.info("resuming from the checkpoint at step %d", state.steps_taken)
  return Resumption(state, metrics)
