"""The scaling suite: steps/s on 1 and 2 devices, both data-parallel paths, 1 and 2 processes.

Used by `benchmarks/benchmark.py --suite=scaling`. A device count is fixed when XLA starts, so
every setting runs in fresh processes (benchmarks/scaling_worker.py), one setting at a time:

- 1 process of 1 device (the launcher's default on CPU: one device using every core);
- 1 process of 2 host devices (the step split over them, sums by in-process all-reduce);
- 2 processes of 1 device each on localhost (`jax.distributed`, sums through gloo over TCP):
  against the line above, what the collectives between processes cost.

Scaling efficiency = the setting's steps/s over the 1-device steps/s of the same path (on a CPU
the devices share the same cores, so more devices cannot exceed 1 by much; on a cluster each
process brings its own).
"""

import json
import os
import socket
import subprocess
import sys

from benchmarks.scaling_worker import MAML_BATCH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("tiny", "small", "standard", "maml")
STEPS_PER_CALL = {"tiny": 10, "small": 2, "standard": 1, "maml": 200}
SETTINGS = (("1 process, 1 device", 1, 1), ("1 process, 2 devices", 1, 2),
            ("2 processes, 1 device each", 2, 1))  # (name, processes, devices per process)
PATHS = ("pmap", "jit")
_TIMEOUT = 900


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def measure(model: str, path: str, processes: int, devices: int, calls: int) -> dict:
  """Starts the setting's processes, waits for them; process 0's timing (or the error)."""
  port = _free_port()
  launched = []
  for process_id in range(processes):
    spec = {"model": model, "path": path, "devices": devices, "num_processes": processes,
            "process_id": process_id, "port": port, "steps_per_call": STEPS_PER_CALL[model],
            "calls": calls}
    launched.append(subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scaling_worker", json.dumps(spec)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outputs = [process.communicate(timeout=_TIMEOUT)[0] for process in launched]
  for line in outputs[0].splitlines():
    if line.startswith("SCALING "):
      result = json.loads(line[len("SCALING "):])
      result["steps_per_s"] = STEPS_PER_CALL[model] / result["call_s"]
      return result
  raise RuntimeError(f"{model} {path} {processes}x{devices} failed:\n" + outputs[0][-3000:])


def rows(models: list[str], calls: int) -> list[dict]:
  """Every model × path × setting, measured one after the other."""
  measured = []
  for model in models:
    for path in PATHS:
      for name, processes, devices in SETTINGS:
        result = measure(model, path, processes, devices, calls)
        measured.append({"model": model, "path": path, "setting": name, **result})
        print(f"{model:9} {path:5} {name:28} {result['steps_per_s']:9.2f} steps/s "
              f"(compile {result['compile_s']:.1f}s, load {os.getloadavg()[0]:.2f})", flush=True)
  return measured


def table(measured: list[dict]) -> list[str]:
  """Markdown: one row per model and path, a column of steps/s and efficiency per setting."""
  head = "| model | path | " + " | ".join(name for name, _, _ in SETTINGS) + " |"
  lines = [head, "|" + " --- |" * (2 + len(SETTINGS))]
  for model in dict.fromkeys(r["model"] for r in measured):
    for path in PATHS:
      cells = {r["setting"]: r for r in measured if r["model"] == model and r["path"] == path}
      if not cells:
        continue
      base = cells[SETTINGS[0][0]]["steps_per_s"]
      shown = []
      for name, _, _ in SETTINGS:
        rate = cells[name]["steps_per_s"]
        spread = f"{STEPS_PER_CALL[model] / cells[name]['max_s']:.3g}–" \
                 f"{STEPS_PER_CALL[model] / cells[name]['min_s']:.3g}"
        shown.append(f"{rate:.3g} ({spread}; ×{rate / base:.2f})")
      lines.append(f"| {model} | {path} | " + " | ".join(shown) + " |")
  return lines
