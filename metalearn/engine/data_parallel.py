"""The two ways the train step runs over every device of every process (`train.data_parallel`).

- "pmap": `jax.pmap` over all devices; each process feeds and reads its own devices' copies, and
  the step totals the shards' sums with `psum` over the global device axis.
- "jit": `jax.jit` over a one-axis mesh of all devices; the state is one global array replicated
  with `NamedSharding`, the batch is sharded over the mesh's data axis, and XLA inserts the sums.
  JAX's recommended path for new code, and the one a model axis can later be added to.

Both run the same body (`train_step.scanned_steps`) on the same per-prompt keys, so they train
the same batches; their sums are taken in different orders (float tolerance, tests/). The state
they hand back to the host (`get`) is this process's copy as numpy, which is what a checkpoint
saves, so a run may resume on either path and on any number of devices.
"""

import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metalearn.core import checks
from metalearn.engine.experiment import DATA_PARALLEL, Experiment
from metalearn.engine.train_step import Shards, scanned_steps, step_identity

AXIS = "devices"  # pmap's axis over all devices; the mesh's data axis has the same name

Step = Callable[[Any], tuple[Any, dict[str, jax.Array]]]

# Steps kept for (path, devices, experiment less its seeds): a run of an experiment this process
# has already run reuses its compiled step instead of tracing and compiling a new function (jit's
# cache is per function). Resuming, re-running a config or another seed of it, and notebooks do
# this; the test suite compiled the smoke config's step 11 times (18 s). A few suffice; each
# holds an executable.
_REMEMBERED_STEPS = 4


@functools.lru_cache(maxsize=_REMEMBERED_STEPS)
def _step_for(parallel: "Pmap | MeshJit", identity: Experiment) -> Step:
  """The step of `parallel` (hashed by its path and devices) for `identity`, an experiment
  without its seeds (`train_step.step_identity`), which is all the step is built from."""
  return parallel._step(identity)


class _Path:
  """Equal and hashed by path and devices: two objects of one path over the same devices build
  the same steps, so that `_step_for` keeps one for both."""

  devices: list[jax.Device]

  def __eq__(self, other):
    return type(other) is type(self) and other.devices == self.devices

  def __hash__(self):
    return hash((type(self), tuple(self.devices)))

  def train_step(self, experiment: Experiment) -> Step:
    """`steps_per_call` steps of `experiment` per call (the metrics' shapes: each path's
    `_step`), the same function for every later run of it on these devices."""
    return _step_for(self, step_identity(experiment))


def _devices(num_devices: int | None) -> list[jax.Device]:
  """All devices of all processes, or the first `num_devices` of a single process."""
  if num_devices is None or num_devices == jax.device_count():
    return jax.devices()
  if jax.process_count() > 1:
    raise ValueError(f"num_devices={num_devices}: a run over {jax.process_count()} processes "
                     f"trains on all {jax.device_count()} of their devices")
  if not 1 <= num_devices <= jax.device_count():
    raise ValueError(f"num_devices={num_devices} must be between 1 and the "
                     f"{jax.device_count()} devices")
  return jax.devices()[:num_devices]


class Pmap(_Path):
  """The step pmapped over the global device axis; a process holds one copy per local device."""

  def __init__(self, num_devices: int | None = None):
    self.devices = _devices(num_devices)
    self.num_devices = len(self.devices)
    self._local = [d for d in self.devices if d.process_index == jax.process_index()]

  def _step(self, experiment: Experiment) -> Step:
    """Takes `steps_per_call` steps; metrics are [local devices, steps_per_call] per name."""
    local_batch = experiment.train.batch_size // self.num_devices
    shards = Shards(
        count=self.num_devices,
        local=lambda keys: jax.lax.dynamic_slice_in_dim(
            keys, jax.lax.axis_index(AXIS) * local_batch, local_batch),
        total=lambda tree: jax.lax.psum(tree, AXIS))
    stepped = jax.pmap(scanned_steps(experiment, shards), axis_name=AXIS, devices=self.devices,
                       donate_argnums=0)
    return _one_call_in_flight_on_cpu(stepped, self.devices)

  def put(self, tree: Any) -> Any:
    """Copies a host pytree onto this process's devices (leading axis), laid out exactly as the
    step's outputs are, so that feeding its own output back in never recompiles it."""
    stacked = jax.tree.map(
        lambda a: np.broadcast_to(np.asarray(a), (len(self._local),) + np.shape(a)), tree)
    return _copies(tuple(self.devices))(stacked)

  def get(self, tree: Any) -> Any:
    """This process's first copy of a replicated pytree (the state, or a call's metrics), on
    the host."""
    return jax.tree.map(lambda a: np.asarray(a[0]), tree)


class MeshJit(_Path):
  """The step jitted over a one-axis device mesh: state replicated, batch sharded over it."""

  def __init__(self, num_devices: int | None = None):
    self.devices = _devices(num_devices)
    self.num_devices = len(self.devices)
    mesh = Mesh(np.array(self.devices), (AXIS,))
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.batch = NamedSharding(mesh, PartitionSpec(AXIS))

  def _step(self, experiment: Experiment) -> Step:
    """Takes `steps_per_call` steps; metrics are [steps_per_call] per name (replicated)."""
    shards = Shards(count=1, local=lambda keys: jax.lax.with_sharding_constraint(keys, self.batch),
                    total=lambda tree: tree)
    stepped = jax.jit(scanned_steps(experiment, shards), in_shardings=self.replicated,
                      out_shardings=self.replicated, donate_argnums=0)
    return _one_call_in_flight_on_cpu(stepped, self.devices)

  def put(self, tree: Any) -> Any:
    """A host pytree as global arrays replicated over the mesh (every process passes the same
    values and places its own devices' copies)."""
    def placed(leaf):
      array = np.asarray(leaf)
      return jax.make_array_from_callback(array.shape, self.replicated, lambda index: array[index])
    return jax.tree.map(placed, tree)

  def get(self, tree: Any) -> Any:
    """This process's copy of a replicated pytree (the state, or a call's metrics), on the
    host."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)


@functools.lru_cache(maxsize=_REMEMBERED_STEPS)
def _copies(devices: tuple[jax.Device, ...]) -> Callable[[Any], Any]:
  """The identity pmapped over `devices`: one function per device set, so compiled once per
  state layout rather than once per call of `Pmap.put`."""
  return jax.pmap(lambda tree: tree, axis_name=AXIS, devices=devices)


def make_data_parallel(name: str, num_devices: int | None = None) -> Pmap | MeshJit:
  """The path `name` (one of DATA_PARALLEL) over all devices, or a single process's first
  `num_devices`."""
  checks.check_one_of("train.data_parallel", name, DATA_PARALLEL)
  return Pmap(num_devices) if name == "pmap" else MeshJit(num_devices)


def _one_call_in_flight_on_cpu(stepped: Step, devices: list[jax.Device]) -> Step:
  """On several CPU devices, a step that waits for each call before returning.

  XLA's CPU client deadlocks when calls with collectives are dispatched ahead: a launch of one
  device's share waits for a free slot of that device's in-flight limit while holding a worker
  thread, and the other device's share, already running, waits in the all-reduce for it until
  XLA aborts the process (exit 134, "Termination timeout for 'all reduce ...'"; seen with gdb,
  jaxlib 0.10.2, 2 host devices on 2 cores). One call in flight never needs a second slot. Each
  call runs `steps_per_call` steps, so the host wait costs one dispatch per call.
  """
  if len(devices) == 1 or devices[0].platform != "cpu":
    return stepped
  return lambda state: jax.block_until_ready(stepped(state))
