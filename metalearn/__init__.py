"""metalearn: emergent, explicit and GD-layer inner loops, trained and compared on the same tasks.

The calls most scripts and notebooks need:
  train_and_evaluate(config, workdir)   train or resume a run, then evaluate it;
  load_run(workdir)                     (learner, params, config) of a run.
"""

from metalearn.runs import load_run
from metalearn.train import train_and_evaluate

__all__ = ["load_run", "train_and_evaluate"]
