"""metalearn: emergent, explicit and GD-layer inner loops, trained and compared on the same tasks.

The calls most scripts and notebooks need:
  train_and_evaluate(config, workdir)   train or resume a run, then evaluate it;
  load_run(workdir)                     (learner, params, config) of a run.

They are imported on first use, so that importing a leaf (`metalearn.core.losses`, a task) does
not import orbax, matplotlib and every learner.
"""

import importlib

_LAZY = {"load_run": "metalearn.engine.runs", "train_and_evaluate": "metalearn.engine.train"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'metalearn' has no attribute {name!r}")
  return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
  return sorted(list(globals()) + __all__)
