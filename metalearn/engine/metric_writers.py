"""Where a run's logged metrics go: `metrics.jsonl` always, TensorBoard by default, W&B if asked.

Every writer takes the same rows, one per logging window: `write(step, scalars)`, then
`close()`. `metrics.jsonl` is the run's own record (resume rewinds it, compare and the
notebooks read it); the others are views for the tools researchers watch runs with.
TensorBoard event files are written by tensorboardX, which needs no TensorFlow.
"""

import importlib.util
import json
import os
import uuid
from typing import Mapping, Protocol, Sequence

from metalearn.core.checks import check_one_of
from metalearn.engine.workdir import config_in_effect

WRITERS = ("tensorboard", "wandb")  # the writers one can ask for beside metrics.jsonl
TENSORBOARD_DIR = "tensorboard"      # `tensorboard --logdir=<workdir>/tensorboard`
WANDB_ID_FILE = "wandb_run_id"       # the W&B run a resumed run goes on logging into
_PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb"}


class MetricWriter(Protocol):
  """One destination of the logged rows."""

  def write(self, step: int, scalars: Mapping[str, float | None]) -> None:
    """Records one row; a None value (a rate not measured yet) is left out where it must be."""

  def close(self) -> None:
    """Flushes and releases the destination."""


class JsonlWriter:
  """Appends rows to a JSON-lines file, flushed per row so that a kill loses at most one."""

  def __init__(self, path: str):
    self._file = open(path, "a")

  def write(self, step: int, scalars: Mapping[str, float | None]) -> None:
    self._file.write(json.dumps({"step": step, **scalars}) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorBoardWriter:
  """Scalars in TensorBoard event files under `<workdir>/tensorboard`.

  `resume_step` (the step a resumed run restarted from) is written as a purge step, so
  that TensorBoard drops what an earlier process logged after it, as `metrics.jsonl` is
  rewound.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    from tensorboardX import SummaryWriter
    self._writer = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                 purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: Mapping[str, float | None]) -> None:
    for name, value in scalars.items():
      if value is not None:
        self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class WandbWriter:
  """Rows logged to a Weights & Biases run, the same run across resumes of one workdir.

  The project comes from WANDB_PROJECT, the mode (online, offline, disabled) from
  WANDB_MODE, as wandb reads them.
  """

  def __init__(self, workdir: str):
    import wandb
    id_path = os.path.join(workdir, WANDB_ID_FILE)
    if os.path.exists(id_path):
      with open(id_path) as f:
        run_id = f.read().strip()
    else:
      run_id = uuid.uuid4().hex[:12]
      with open(id_path, "w") as f:
        f.write(run_id + "\n")
    self._run = wandb.init(id=run_id, resume="allow", dir=workdir,
                           config=config_in_effect(workdir) or {},
                           name=os.path.basename(os.path.abspath(workdir)))

  def write(self, step: int, scalars: Mapping[str, float | None]) -> None:
    self._run.log({name: value for name, value in scalars.items() if value is not None},
                  step=step)

  def close(self) -> None:
    self._run.finish()


def check_writers(names: Sequence[str]) -> None:
  """Raises ValueError naming an unknown writer, or one whose package is not installed."""
  for name in names:
    check_one_of("metric writer", name, WRITERS)
    package = _PACKAGES[name]
    if importlib.util.find_spec(package) is None:
      raise ValueError(f"metric writer {name!r} needs the {package} package, which is not "
                       f"installed: pip install {package}")


def open_writers(workdir: str, metrics_path: str, names: Sequence[str], resume_step: int = 0
                 ) -> list[MetricWriter]:
  """The jsonl writer on `metrics_path`, then one writer per name in `names` (see WRITERS)."""
  check_writers(names)
  writers: list[MetricWriter] = [JsonlWriter(metrics_path)]
  try:
    for name in names:
      if name == "tensorboard":
        writers.append(TensorBoardWriter(workdir, resume_step))
      else:
        writers.append(WandbWriter(workdir))
  except BaseException:
    close_writers(writers)
    raise
  return writers


def close_writers(writers: Sequence[MetricWriter]) -> None:
  """Closes every writer, even when one of them fails."""
  errors = []
  for writer in writers:
    try:
      writer.close()
    except Exception as error:  # close the rest; report the first
      errors.append(error)
  if errors:
    raise errors[0]
