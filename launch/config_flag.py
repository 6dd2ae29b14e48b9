"""The launchers' config flags (--config, --settings): file, variant, overrides, checked first.

ml_collections reports a missing config file, an unknown variant or a misspelt override as a
traceback from inside flag parsing. `check_command_line` and `check_overrides` run before absl
parses the flags and turn each into one line naming the bad value and what is allowed: the
config files, the variants, the fields of the section.
"""

import difflib
import importlib.util
import os
import re
import sys
import types
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

# The repository's configs/, listed when a config file does not exist.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def define(name: str = "config") -> flags.FlagHolder:
  """The --config flag: `configs/<family>.py[:variant]`, locked so that a new field fails."""
  return config_flags.DEFINE_config_file(
      name, None, "configs/<family>.py[:variant]; override any field with "
      f"--{name}.<section>.<field>=<value>; --print_config lists the fields and variants",
      lock_config=True)


def config_files(directory: str = CONFIGS_DIR) -> list[str]:
  """The config files (those that define get_config) in `directory`."""
  if not os.path.isdir(directory):
    return []
  files = []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if name.endswith(".py") and os.path.isfile(path):
      with open(path, encoding="utf-8") as file:
        if "def get_config(" in file.read():
          files.append(name)
  return files


def load_module(path: str) -> types.ModuleType:
  """The config module at `path` (without its ':variant'), loaded as ml_collections loads it."""
  spec = importlib.util.spec_from_file_location("_metalearn_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def variants(module: types.ModuleType) -> tuple[str, ...]:
  """The variant names a config module declares (its VARIANTS; the first is the default)."""
  return tuple(getattr(module, "VARIANTS", ()))


def _arguments(argv: list[str], name: str) -> tuple[str | None, list[str]]:
  """The --config value and the field paths of its overrides (`train.learning_rate`, ...)."""
  value, overrides = None, []
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    match = re.fullmatch(rf"--?{name}(?:=(.*))?", arg)
    if match:
      value = match.group(1) if match.group(1) is not None else (
          argv[i + 1] if i + 1 < len(argv) else None)
    match = re.match(rf"--?(?:no)?{name}\.([^=]+)", arg)
    if match:
      overrides.append(match.group(1))
  return value, overrides


def _field_problem(config: ml_collections.ConfigDict, path: str, root: str) -> str | None:
  """Why `path` (`train.learning_rate`) names no field of `config`, or None when it does."""
  node, walked = config, []
  for key in path.split("."):
    if "[" in key:  # an index into a sequence; ml_collections checks it
      return None
    where = f"config section '{'.'.join(walked)}'" if walked else root
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{'.'.join(walked)} is a value ({node!r}), not a section with fields"
    if key not in node:
      fields = list(node.keys())
      close = difflib.get_close_matches(key, fields, n=1)
      hint = f' (did you mean "{close[0]}"?)' if close else ""
      return (f"{where} has no field {key!r}{hint}; allowed: "
              f"{', '.join(fields) if fields else '(none)'}")
    node, walked = node[key], walked + [key]
  return None


def command_line_problem(argv: list[str], name: str = "config") -> str | None:
  """What is wrong with the command line's --config and its overrides, in one line, or None."""
  value, overrides = _arguments(argv, name)
  if not value:
    return None  # absl reports a missing required flag
  path, _, variant = value.partition(":")
  if not os.path.isfile(path):
    # Listed as the command line named the directory, else the repository's configs/.
    directory = os.path.dirname(path)
    if not os.path.isdir(directory or "."):
      directory = os.path.relpath(CONFIGS_DIR)
    files = ", ".join(os.path.join(directory, f) for f in config_files(directory or "."))
    return f"--{name}: no config file {path!r}; the config files: {files or '(none)'}"
  module = load_module(path)
  try:
    config = module.get_config(*([variant] if ":" in value else []))
  except ValueError as error:  # the config's own message, e.g. an unknown variant
    return f"--{name}={value}: {error}"
  return _overrides_problem(config, overrides, name)


def _overrides_problem(config: ml_collections.ConfigDict, overrides: list[str],
                       name: str) -> str | None:
  for override in overrides:
    problem = _field_problem(config, override, f"--{name}")
    if problem:
      return f"--{name}.{override}: {problem}"
  return None


def check_command_line(argv: list[str] = sys.argv, name: str = "config") -> None:
  """Exits with `metalearn: <problem>` when the --config flag or an override is unusable."""
  problem = command_line_problem(argv, name)
  if problem:
    sys.exit(f"metalearn: {problem}")


def define_dict(name: str, default: ml_collections.ConfigDict, help_string: str,
                program: str) -> flags.FlagHolder:
  """A config-dict flag (--<name>.<field>=<value>); a misspelt field exits with one line.

  ml_collections applies the command line's overrides as it defines the flag, so the check
  comes first: it exits with `<program>: <problem>`.
  """
  problem = _overrides_problem(default, _arguments(sys.argv, name)[1], name)
  if problem:
    sys.exit(f"{program}: {problem}")
  return config_flags.DEFINE_config_dict(name, default, help_string)


def _flat(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
  if not isinstance(config, ml_collections.ConfigDict):
    return [(prefix, config)]
  items = [_flat(value, f"{prefix}.{key}" if prefix else key) for key, value in config.items()]
  return [item for group in items for item in group] or [(prefix, {})]


def describe(config: ml_collections.ConfigDict, value: str) -> str:
  """The resolved config, one `section.field = value` a line, and the file's variants."""
  path = value.partition(":")[0]
  names = variants(load_module(path))
  lines = [f"# {value}, after the command line's overrides "
           "(set any field with --config.<section>.<field>=<value>)"]
  lines += [f"{field} = {field_value!r}" for field, field_value in _flat(config)]
  lines.append(f"# variants of {path} (--config={path}:NAME; the first is the default): "
               + (", ".join(names) if names else "(none declared)"))
  return "\n".join(lines)
