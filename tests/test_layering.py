"""The library's parts and the one direction of their imports, read from the source with `ast`.

Parts, lowest first: core (with the shipped runs' data) < tasks < learners < evaluation < engine <
analysis < comparison < the package's own `__init__`. A module may import its own part and the
parts below it, never one above; the library never imports `launch/` or `configs/`; and no
import cycle joins its modules (function-local imports count too). ../shared/tools/layering_check.py
reads the same rules from outside the project.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("core", "pretrained", "tasks", "learners", "evaluation", "engine", "analysis",
         "comparison")
RANK = {"core": 0, "pretrained": 0, "tasks": 1, "learners": 2, "evaluation": 3, "engine": 4,
        "analysis": 5, "comparison": 6, "metalearn": 7}
OUTSIDE = ("launch", "configs")


def _modules(root: str = ROOT) -> dict[str, str]:
  """Dotted module name -> file, for every module of the package."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(root, "metalearn")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        modules[dotted.removesuffix(".__init__")] = path
  return modules


def _imports(module: str, path: str, modules: dict[str, str]) -> set[str]:
  """Every name `module` imports (the deepest package module it names, or a foreign top level)."""
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  targets = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      targets.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
      # `from a import b` imports the module a.b when there is one, else a name of a
      targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names)
  resolved = set()
  for target in targets:
    if target.split(".")[0] != "metalearn":
      resolved.add(target)
      continue
    while target not in modules:
      target = target.rpartition(".")[0]
    if target != module:
      resolved.add(target)
  return resolved


def part(module: str) -> str:
  names = module.split(".")
  return names[1] if len(names) > 1 else "metalearn"


def layering_problems(root: str = ROOT) -> list[str]:
  """What breaks the rules in the package under `root`, one line each ([] when they hold)."""
  modules = _modules(root)
  graph = {m: _imports(m, path, modules) for m, path in modules.items()}
  problems = []
  for module, targets in sorted(graph.items()):
    if part(module) not in RANK:
      problems.append(f"{module} is in none of the parts {', '.join(PARTS)}")
      continue
    for target in sorted(targets):
      if target.split(".")[0] in OUTSIDE:
        problems.append(f"{module} imports {target}: the library never imports launch/ or configs/")
      elif target.startswith("metalearn") and RANK.get(part(target), 99) > RANK[part(module)]:
        problems.append(f"{module} ({part(module)}) imports {target} ({part(target)}), a part "
                        "above it")
      elif part(module) == "tasks" and part(target) == "learners":
        problems.append(f"{module} (a task) imports {target} (a learner)")
  problems.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph))
  return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle per group of modules that import each other, as a path that returns to its start.

  A package's `__init__` that imports its own submodules (to register them) forms no cycle
  unless a submodule imports the package back.
  """
  cycles, state = [], {}

  def visit(module: str, path: list[str]) -> None:
    state[module] = "open"
    for target in sorted(graph.get(module, ())):
      if target not in graph:
        continue
      if state.get(target) == "open":
        cycles.append(path[path.index(target):] + [target])
      elif target not in state:
        visit(target, path + [target])
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  return cycles


def test_the_library_holds_its_layering():
  assert layering_problems() == []


def test_every_part_is_a_package_of_its_own():
  modules = _modules()
  for name in PARTS:
    assert f"metalearn.{name}" in modules, f"metalearn/{name}/__init__.py is missing"
  top_level = sorted(m for m in modules if m.count(".") == 1 and part(m) not in PARTS)
  assert top_level == [], f"modules outside the parts: {top_level}"


def _package(tmp_path, files: dict[str, str]) -> str:
  for relative, text in {"metalearn/__init__.py": "", **files}.items():
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(tmp_path).parents:
      init = tmp_path / parent / "__init__.py"
      if parent.parts and not init.exists():
        init.write_text("")
    path.write_text(text)
  return str(tmp_path)


@pytest.mark.parametrize("files, expected", [
    ({"metalearn/learners/finetune.py": "def f():\n  from metalearn.engine import runs\n",
      "metalearn/engine/runs.py": ""},
     "metalearn.learners.finetune (learners) imports metalearn.engine.runs (engine), a part above it"),
    ({"metalearn/core/losses.py": "import metalearn.tasks.linear\n",
      "metalearn/tasks/linear.py": ""},
     "metalearn.core.losses (core) imports metalearn.tasks.linear (tasks), a part above it"),
    ({"metalearn/engine/train.py": "from metalearn.analysis import probing\n",
      "metalearn/analysis/probing.py": ""},
     "metalearn.engine.train (engine) imports metalearn.analysis.probing (analysis), a part above it"),
    ({"metalearn/engine/train.py": "from ..comparison.compare import compare\n",
      "metalearn/comparison/compare.py": ""},
     "metalearn.engine.train (engine) imports metalearn.comparison.compare (comparison), a part "
     "above it"),
    ({"metalearn/tasks/linear.py": "from metalearn.learners import base\n",
      "metalearn/learners/base.py": ""},
     "metalearn.tasks.linear (tasks) imports metalearn.learners.base (learners), a part above it"),
    ({"metalearn/analysis/probing.py": "from configs import common\n"},
     "metalearn.analysis.probing imports configs: the library never imports launch/ or configs/"),
    ({"metalearn/engine/a.py": "from metalearn.engine import b\n",
      "metalearn/engine/b.py": "from metalearn.engine.a import x\n"},
     "import cycle: metalearn.engine.a -> metalearn.engine.b -> metalearn.engine.a"),
    ({"metalearn/helpers.py": ""}, "metalearn.helpers is in none of the parts"),
])
def test_each_rule_is_enforced_on_a_hand_made_package(tmp_path, files, expected):
  problems = layering_problems(_package(tmp_path, files))
  assert any(p.startswith(expected) for p in problems), problems


def test_a_package_registering_its_own_modules_is_no_cycle(tmp_path):
  root = _package(tmp_path, {
      "metalearn/tasks/__init__.py": "from metalearn.tasks import linear\n",
      "metalearn/tasks/linear.py": "from metalearn.tasks.registry import TASKS\n",
      "metalearn/tasks/registry.py": "TASKS = {}\n"})
  assert layering_problems(root) == []


def test_importing_a_leaf_is_light():
  code = ("import sys, metalearn.core.losses, metalearn.core.episode, metalearn.tasks\n"
          "heavy = ('orbax', 'matplotlib', 'metalearn.learners', 'metalearn.engine', 'optax')\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or "
          "any(m.startswith(h) for h in heavy)))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "[]"


def test_the_package_still_offers_its_two_calls():
  code = ("import metalearn\n"
          "from metalearn.engine.runs import load_run\n"
          "from metalearn.engine.train import train_and_evaluate\n"
          "assert metalearn.load_run is load_run and metalearn.train_and_evaluate is "
          "train_and_evaluate\n"
          "try:\n  metalearn.no_such_call\nexcept AttributeError as e:\n  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  assert "no attribute 'no_such_call'" in out
