"""One process of a multi-process run on localhost, as the tests start it (not a test itself).

    python tests/distributed_worker.py SPEC_JSON

SPEC_JSON: {"process_id", "num_processes", "port", "devices" (CPU devices of this process),
"workdir", "out", "overrides" (dotted config fields), "kill_after" (optional: SIGKILL this
process at the first step past it, after the checkpoint there)}. The smoke linear-regression
config is trained and evaluated through `train_and_evaluate`; this process's final params go
to OUT/params.<process>.npz. Exits 75 when SIGTERM stopped the run with a checkpoint, as
launch/train.py does.
"""

import json
import logging
import os
import signal
import sys



def smoke_config(overrides: dict):
  """The smoke linear-regression config with `overrides` ({"section.field": value})."""
  from configs.linear_regression import get_config
  config = get_config("smoke")
  for field, value in overrides.items():
    section, name = field.split(".")
    config[section][name] = value
  return config


def main(spec: dict) -> None:
  # Before jax starts its backend: this process's CPU devices; the test's other XLA flags stay,
  # so that its single-process reference compiles alike.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from launch import cpu_setup
  cpu_setup.set_host_devices(spec["devices"])
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's many lines per save
  import jax
  import numpy as np
  if spec["num_processes"] > 1:
    jax.distributed.initialize(f"127.0.0.1:{spec['port']}", spec["num_processes"],
                               spec["process_id"])
  from metalearn.engine import train as train_module

  config = smoke_config(spec["overrides"])

  real_train = train_module.train

  def recorded_train(*args, **kwargs):
    params, finished = real_train(*args, **kwargs)
    leaves = {str(i): np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(params))}
    np.savez(os.path.join(spec["out"], f"params.{jax.process_index()}.npz"), **leaves)
    return params, finished

  train_module.train = recorded_train
  kill_after = spec.get("kill_after")

  def should_stop(step: int) -> bool:
    if kill_after is not None and step > kill_after:
      os.kill(os.getpid(), signal.SIGKILL)
    return False

  evaluation = train_module.train_and_evaluate(config, spec["workdir"], should_stop=should_stop,
                                               writers=())
  if evaluation is None:  # stopped by SIGTERM with a checkpoint, as the launcher exits then
    sys.exit(train_module.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
