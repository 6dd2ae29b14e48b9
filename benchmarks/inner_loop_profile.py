"""Where the project's MAML meta-step spends its time: XLA's cost analysis, and a profile by part.

Used by benchmarks/inner_loop_benchmark.py. The cost analysis is the compiled host call's
(`cost_analysis()`): XLA counts a while loop's body once, so the figures of a call of N scanned
meta-steps are those of one meta-step (2 and 10 steps per call gave the same flops). The
profile (jax.profiler, XLA's CPU thunk runtime records one event per thunk) attributes each
executed thunk to a part of the meta-step by the JAX name stack in its HLO metadata.
"""

import collections
import glob
import re
import tempfile
import time
from typing import Any, Callable

import jax

# (part, substrings of the HLO op_name that put a thunk in it), tested in this order. The
# names are JAX's name stack: jvp(vmap()) is the per-task adaptation (the inner steps, a
# while loop or unrolled), jvp(vmap(MLPBody)) the adapted network on the queries, and
# transpose(...) of either their part of the meta-gradient's backward pass; a vmap() right
# in the step's body is the task's vmap over its prompts (y = A sin(x − φ)).
PARTS = (
    ("data sampling", ("_threefry", "_uniform", "sample_one", "random_", "closed_call/vmap()/")),
    ("meta-backward through the inner steps", ("transpose(jvp(vmap()))/",)),
    ("meta-backward through the query forward", ("transpose(jvp(vmap(",)),
    ("inner steps (forward, inner gradients)", ("jvp(vmap())/",)),
    ("query forward", ("jvp(vmap(",)),
)
REST = "loss, Adam, metrics, loop"
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(.*?'
                          r'metadata=\{op_name="([^"]*)"', re.M)
_CONTROL = ("while", "call", "conditional")  # their thunks contain the others' events


def part_of(op_name: str) -> str:
  for part, markers in PARTS:
    if any(marker in op_name for marker in markers):
      return part
  return REST


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> (opcode, op_name) of an optimised module's text."""
  return {m.group(1): (m.group(2), m.group(3)) for m in _INSTRUCTION.finditer(hlo_text)}


def cost_per_meta_step(compiled: Any) -> dict[str, float]:
  """flops, bytes accessed and transcendentals of one meta-step of a compiled host call."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0)),
          "transcendentals": float(cost.get("transcendentals", 0.0))}


def profile_call(run: Callable[[], object], hlo_text: str, meta_steps: int) -> dict:
  """Thunk time per meta-step of one host call `run()`, by part, and the call's wall time.

  The thunks of one call can run on two threads at once, so their time can exceed the wall
  time; the gap is the runtime's own work between thunks (dispatch, the loop's bookkeeping)
  and the profiler's, which makes the profiled call slower than an unprofiled one.
  """
  ops = instructions(hlo_text)
  with tempfile.TemporaryDirectory() as directory:
    jax.profiler.start_trace(directory)
    start = time.perf_counter()
    run()
    wall_s = time.perf_counter() - start
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True))[-1]
    profile = jax.profiler.ProfileData.from_file(path)
    parts, thunks, matmul_ns = collections.Counter(), 0, 0.0
    for plane in profile.planes:
      for line in plane.lines:
        for event in line.events:
          if event.name not in ops or ops[event.name][0] in _CONTROL:
            continue
          opcode, op_name = ops[event.name]
          parts[part_of(op_name)] += event.duration_ns
          thunks += 1
          if opcode == "dot" or op_name.endswith("dot_general"):
            matmul_ns += event.duration_ns
  return {"wall_us": 1e6 * wall_s / meta_steps, "thunks": thunks / meta_steps,
          "parts_us": {part: ns / 1e3 / meta_steps for part, ns in parts.items()},
          "matmul_us": matmul_ns / 1e3 / meta_steps}


def cost_line(row: dict) -> str:
  """One row's cost analysis and the rate its measured speed gives."""
  cost, steps_per_s = row["cost"], row["tasks_per_s"] / row["meta_batch"]
  return (f"- {row['label']}: {cost['flops'] / 1e6:.1f} MFLOP and {cost['bytes'] / 1e6:.1f} MB "
          f"accessed per meta-step (XLA cost analysis): {cost['flops'] * steps_per_s / 1e9:.1f} "
          f"GFLOP/s and {cost['bytes'] * steps_per_s / 1e9:.1f} GB/s at {steps_per_s:,.0f} "
          "meta-steps/s")


def profile_line(label: str, profile: dict) -> str:
  """One profiled call: thunk time per meta-step, its share by part, and the matmuls' share."""
  total = sum(profile["parts_us"].values())
  order = [part for part, _ in PARTS] + [REST]
  shares = ", ".join(f"{part} {100 * profile['parts_us'].get(part, 0.0) / total:.0f}%"
                     for part in order)
  return (f"- {label}, profiled ({profile['thunks']:.0f} thunks per meta-step, "
          f"{profile['wall_us']:.0f} µs wall per meta-step under the profiler, {total:.0f} µs in "
          f"thunks): {shares}; matmuls {100 * profile['matmul_us'] / total:.0f}% of the thunk time")
