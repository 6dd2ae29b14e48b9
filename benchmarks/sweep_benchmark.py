r"""N small runs in one compiled step (a sweep, engine/sweep.py) against the same N runs one
after another, on the task-diversity config (a tiny transformer, d = 8, 16 points, batch 64).

    python -m benchmarks.sweep_benchmark --members=4,8,16 --calls=20

Each N is measured in alternation (one run, then the sweep of N, then again: A B A B) in this
one process on its default device; the rate is steps/s after the first, compiling, call, the
median of the rounds. A sweep's step advances every member, so its throughput is N × its
rate in member-steps/s; N runs one after another advance one member at the single run's rate.
The wall time of N × `steps` steps adds each run's compile to the sequential side.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import task_diversity  # noqa: E402
from metalearn.engine.data_parallel import make_data_parallel  # noqa: E402
from metalearn.engine.runs import build_experiment  # noqa: E402
from metalearn.engine.train_step import init_state  # noqa: E402

STEPS_PER_CALL = 50


def config_for(members: int | None) -> ml_collections.ConfigDict:
  """The task-diversity config; with `members`, a sweep over pool sizes 2^0 .. 2^(N−1)."""
  config = ml_collections.ConfigDict(task_diversity.get_config().to_dict())
  config.train.steps_per_call = STEPS_PER_CALL
  if members:
    config.sweep = ml_collections.ConfigDict({"seeds": (),
                                              "task_sizes": tuple(2**i for i in range(members))})
  return config


def measure(config: ml_collections.ConfigDict, calls: int) -> tuple[float, float]:
  """(seconds of the first call, compile included; steps/s over the next `calls` calls)."""
  # A process reuses the step of a config it has run (data_parallel): every round's first call
  # compiles, as a new process's would.
  jax.clear_caches()
  experiment = build_experiment(config)
  parallel = make_data_parallel("pmap", 1)
  step = parallel.train_step(experiment)
  start = time.perf_counter()
  state = parallel.put(jax.device_get(init_state(experiment)))
  state, metrics = step(state)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(calls):
    state, metrics = step(state)
  jax.block_until_ready(metrics)
  return first, calls * STEPS_PER_CALL / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--members", default="4,8,16")
  parser.add_argument("--calls", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=8000, help="steps of the wall-time column")
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}")
  print("| N | one run (steps/s) | sweep (steps/s) | member-steps/s: sweep | ratio | "
        f"wall for N × {args.steps} steps: one after another | sweep |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for members in map(int, args.members.split(",")):
    single, sweep = [], []
    for _ in range(args.rounds):
      single.append(measure(config_for(None), args.calls))
      sweep.append(measure(config_for(members), args.calls))
    compile_one = statistics.median(s[0] for s in single)
    compile_sweep = statistics.median(s[0] for s in sweep)
    rate_one = statistics.median(s[1] for s in single)
    rate_sweep = statistics.median(s[1] for s in sweep)
    spread = lambda runs: f"{min(r[1] for r in runs):.0f}–{max(r[1] for r in runs):.0f}"
    sequential = members * (compile_one + args.steps / rate_one)
    together = compile_sweep + args.steps / rate_sweep
    print(f"| {members} | {rate_one:.0f} ({spread(single)}) | {rate_sweep:.1f} "
          f"({spread(sweep)}) | {members * rate_sweep:.0f} | "
          f"{members * rate_sweep / rate_one:.2f}× | {sequential:.0f} s | {together:.0f} s |",
          flush=True)
  print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
