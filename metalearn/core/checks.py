"""Argument checks shared by every config section and constructor.

Each refuses a bad value with one line naming the field, the value (and its type) and what is
allowed, so that a wrong type never surfaces later as "'<' not supported between instances of
'str' and 'int'" and a NaN or an infinity never reaches a training step.
"""

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any, Mapping


def _got(value: Any) -> str:
  return f"got {value!r} ({type(value).__name__})"


def check_int(field: str, value: Any, minimum: int | None = None) -> None:
  """An integer (not a bool), at least `minimum` when given."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    raise ValueError(f"{field} must be {allowed}, {_got(value)}")
  if minimum is not None and value < minimum:
    raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")


def check_finite(field: str, value: Any) -> None:
  """A finite real number (an integer counts; a bool, NaN or an infinity does not)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{field} must be a finite number, {_got(value)}")
  if not math.isfinite(value):
    raise ValueError(f"{field} must be a finite number, got {value!r}")


def check_positive(field: str, value: Any) -> None:
  """A finite number > 0."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{field} must be a number > 0, {_got(value)}")
  if not value > 0:  # NaN too
    raise ValueError(f"{field} must be a number > 0, got {value!r}")
  if not math.isfinite(value):
    raise ValueError(f"{field} must be a finite number > 0, got {value!r}")


def check_type(field: str, value: Any, annotation: Any) -> None:
  """Refuses `value` unless it has the annotated type: int, float (finite), bool, str,
  tuple[X, ...] (a list too: a JSON round trip makes one), X | None; other annotations pass."""
  args = typing.get_args(annotation)
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    if value is not None:
      kinds = [a for a in args if a is not type(None)]
      if len(kinds) == 1:
        check_type(field, value, kinds[0])
    return
  if typing.get_origin(annotation) is tuple:
    if not isinstance(value, (tuple, list)):
      raise ValueError(f"{field} must be a tuple, {_got(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
      for i, item in enumerate(value):
        check_type(f"{field}[{i}]", item, args[0])
    return
  if annotation is int:
    check_int(field, value)
  elif annotation is float:
    check_finite(field, value)
  elif annotation in (bool, str) and not isinstance(value, annotation):
    allowed = "True or False" if annotation is bool else "a string"
    raise ValueError(f"{field} must be {allowed}, {_got(value)}")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init and f.name in hints}


def check_fields(cls: type, values: Mapping[str, Any], section: str) -> None:
  """Checks each value meant for dataclass `cls` against its field's type, as `section.field`.

  Run before `cls(**values)`, so that its range checks compare values of the right types.
  """
  types_ = _field_types(cls)
  for name, value in values.items():
    if name in types_:
      check_type(f"{section}.{name}", value, types_[name])
