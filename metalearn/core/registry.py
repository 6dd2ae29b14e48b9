"""Name -> class registries, so that configs choose tasks and learners by name."""

import dataclasses
from typing import Any, Callable, Mapping

from metalearn.core.checks import check_fields, check_one_of


class Registry:
  """Maps names to dataclasses built from a config section of the same fields."""

  def __init__(self, kind: str, section: str | None = None):
    self.kind = kind
    self.section = section or kind  # the config section that names an entry, for messages
    self._entries: dict[str, type] = {}

  def register(self, name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = cls
      return cls
    return add

  @property
  def names(self) -> list[str]:
    return sorted(self._entries)

  def get(self, name: str) -> type:
    check_one_of(self.kind, name, self.names)
    return self._entries[name]

  def build(self, section: Mapping[str, Any], *, path: str | None = None, **extra: Any) -> Any:
    """Builds the entry named by `section['name']` from the section's other fields.

    Unknown fields fail loudly with the allowed ones, before anything compiles. `path`: where
    the section sits in the config when it is nested ("task.base"), for the messages.
    """
    fields = dict(section)
    if "name" not in fields:
      raise ValueError(f"the {self.kind} config needs a 'name'; allowed: {', '.join(self.names)}")
    name = fields.pop("name")
    cls = self.get(name)
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(fields) - allowed)
    if unknown:
      raise ValueError(
          f"{self.kind} {name!r} has no field(s) {', '.join(map(repr, unknown))}; "
          f"allowed: {', '.join(sorted(allowed))}")
    # A JSON round trip (a run's saved config) turns tuples into lists; entries are
    # static jit arguments and must stay hashable.
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    check_fields(cls, fields, path or self.section)
    return cls(**fields, **extra)
