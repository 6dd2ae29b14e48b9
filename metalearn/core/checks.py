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
from typing import Any, Iterable, Mapping


def _got(value: Any) -> str:
  return f"got {value!r} ({type(value).__name__})"


def _bounds(at_least: float | None, above: float | None, below: float | None) -> str:
  """The allowed range in words: '>= 1', '> 0', '< 1', 'in (0, 1)', 'in [0, 5)', or ''."""
  low = at_least if at_least is not None else above
  closed = at_least is not None
  if below is None:
    return "" if low is None else f"{'>=' if closed else '>'} {low}"
  if low is None:
    return f"< {below}"
  return f"in {'[' if closed else '('}{low}, {below})"


def check_number(field: str, value: Any, *, at_least: float | None = None,
                 above: float | None = None, below: float | None = None, integer: bool = False,
                 optional: bool = False, name_kind: bool = True) -> None:
  """A finite number (an integer when `integer`; never a bool) with value >= `at_least` or
  > `above`, and < `below`, for the bounds given; None too when `optional`.

  The message names the field, the value (and its type, when that is what is wrong) and what
  is allowed: "ridge lam must be a number > 0, got 0.0". With `name_kind=False` a number out of
  range is told the range alone ("train.learning_rate must be > 0, got 0.0"): the wording of
  the sections whose types `check_fields` has already checked and named, which tests and
  scripts match; a value of the wrong type still hears what kind is allowed.
  """
  if at_least is not None and above is not None:
    raise TypeError(f"{field}: check_number takes at_least or above, not both")
  if optional and value is None:
    return
  bounds = _bounds(at_least, above, below)
  none = "None or " if optional else ""
  kind = "an integer" if integer else ("a number" if bounds else "a finite number")
  wanted = f"{none}{kind} {bounds}".rstrip()
  if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer
                                               else numbers.Real):
    raise ValueError(f"{field} must be {wanted}, {_got(value)}")
  in_range = ((at_least is None or value >= at_least) and (above is None or value > above)
              and (below is None or value < below))   # False for NaN
  if not in_range:
    raise ValueError(f"{field} must be {wanted if name_kind else none + bounds}, got {value!r}")
  if not math.isfinite(value):
    finite = f"{none}a finite number {bounds}".rstrip()
    raise ValueError(f"{field} must be {finite}, got {value!r}")


def check_int(field: str, value: Any, minimum: int | None = None, optional: bool = False, *,
              name_kind: bool = True) -> None:
  """An integer (not a bool), at least `minimum` when given; None too when `optional`."""
  check_number(field, value, at_least=minimum, integer=True, optional=optional,
               name_kind=name_kind)


def check_finite(field: str, value: Any) -> None:
  """A finite real number (an integer counts; a bool, NaN or an infinity does not)."""
  check_number(field, value)


def check_positive(field: str, value: Any, *, name_kind: bool = True) -> None:
  """A finite number > 0."""
  check_number(field, value, above=0, name_kind=name_kind)


def check_one_of(field: str, value: Any, allowed: Iterable[str]) -> None:
  """One of the names `allowed` (in the order the message lists them)."""
  names = tuple(allowed)
  if value not in names:
    raise ValueError(f"unknown {field} {value!r}; allowed: {', '.join(names)}")


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
