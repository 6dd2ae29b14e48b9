"""Comma-separated number flags (absl's DEFINE_list gives strings): one line naming the flag and
its values when one is not a number of the kind asked for."""

import sys
from typing import Callable, TypeVar

Number = TypeVar("Number", int, float)


def numbers(name: str, values: list[str], kind: Callable[[str], Number]) -> list[Number]:
  """--name's values as `kind` (int or float); exits with the bad flag named otherwise."""
  try:
    return [kind(v) for v in values]
  except ValueError:
    sys.exit(f"metalearn: --{name}={','.join(values)}: {kind.__name__} values, comma-separated")
