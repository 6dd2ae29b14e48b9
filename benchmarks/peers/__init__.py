"""The peers the benchmarks time beside the project's code: PyTorch programs written the way
their users write them (`pip install -e '.[bench]'`). Nothing in metalearn imports them."""

import importlib
import types


def optional(module: str) -> types.ModuleType | None:
  """The module if it is installed, else None (the benchmark's table then says so)."""
  try:
    return importlib.import_module(module)
  except ImportError:
    return None
