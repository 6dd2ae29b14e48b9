"""One process of a scaling measurement (started by benchmarks/scaling_benchmark.py).

    python -m benchmarks.scaling_worker SPEC_JSON

SPEC_JSON: {"model": tiny | small | standard | maml, "path": pmap | jit, "devices" (this
process's CPU devices), "num_processes", "process_id", "port", "steps_per_call", "calls"}.
Compiles the train step over every device of every process, runs one untimed call, then times
`calls` host calls; process 0 prints one line `SCALING {json}` with the median seconds per call.
"""

import json
import os
import statistics
import sys
import time

MAML_BATCH = 24  # the sinusoid meta-batch (25 in Finn et al.) made even, so that 2 devices split it


def config_for(model: str, steps_per_call: int):
  """configs/linear_regression.py's size, or configs/sinusoid.py:maml, one host call long."""
  from benchmarks import transformer_benchmark
  if model in transformer_benchmark.VARIANTS:
    return transformer_benchmark.size_config(model, steps_per_call, batch=64)
  from configs import sinusoid
  config = sinusoid.get_config("maml")
  config.train.update(batch_size=MAML_BATCH, steps_per_call=steps_per_call,
                      num_steps=steps_per_call, log_every=steps_per_call,
                      checkpoint_every=steps_per_call)
  return config


def main(spec: dict) -> None:
  from launch import cpu_setup
  cpu_setup.set_host_devices(spec["devices"])
  import jax
  if spec["num_processes"] > 1:
    jax.distributed.initialize(f"127.0.0.1:{spec['port']}", spec["num_processes"],
                               spec["process_id"])
  from benchmarks import transformer_benchmark
  one_call, compile_s = transformer_benchmark.our_training(
      config_for(spec["model"], spec["steps_per_call"]), None, spec["path"])
  one_call()
  times = []
  for _ in range(spec["calls"]):
    start = time.perf_counter()
    loss = one_call()
    times.append(time.perf_counter() - start)
  if jax.process_index() == 0:
    print("SCALING " + json.dumps({"call_s": statistics.median(times), "min_s": min(times),
                                   "max_s": max(times), "compile_s": compile_s, "loss": loss,
                                   "devices": jax.device_count()}), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main(json.loads(sys.argv[1]))
