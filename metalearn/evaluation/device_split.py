"""Predicting held-out prompts on every device of this process, each device its share.

Used by every scoring of `scores` (the errors by number of examples of a run's evaluation and
of a comparison, the queries' metrics). A learner predicts each prompt from that prompt alone,
so a chunk of prompts splits over the devices with no communication: `shard_map` runs the
learner's own `predict` on each device's rows, the params replicated. On one device, or in a
run of several processes (whose evaluation is each process's own), everything runs on the
first device as before.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from metalearn.core.episode import Episode
from metalearn.evaluation.prompts import chunks

AXIS = "prompts"


def local_mesh() -> Mesh | None:
  """This process's devices along one prompt axis; None where there is nothing to split over."""
  devices = jax.local_devices()
  if len(devices) == 1 or jax.process_count() > 1:
    return None
  return Mesh(devices, (AXIS,))


def over_chunks(compiled: Callable[[Episode, Mesh | None], Any], episode: Episode,
                batch_size: int) -> Any:
  """compiled(chunk, mesh) -> a pytree of [chunk's prompts, ...] per chunk of `batch_size`
  prompts (one compiled shape), padded to a multiple of the devices; the chunks' rows joined
  as numpy, the padding dropped. `compiled` splits the chunk with `split_prompts`."""
  mesh = local_mesh()
  parts = 1 if mesh is None else mesh.size
  outputs = [jax.tree.map(lambda a, n=chunk.batch_size: np.asarray(a)[:n],
                          compiled(padded(chunk, parts), mesh))
             for chunk in chunks(episode, batch_size)]
  return jax.tree.map(lambda *rows: np.concatenate(rows), *outputs)


def split_prompts(predict, mesh: Mesh | None):
  """predict(params, episode) -> a pytree of [batch, ...], run on each device's rows of the
  episode (batch a multiple of the devices: `padded`); `predict` itself where `mesh` is
  None, or where it calls LAPACK on host devices (`_calls_lapack`)."""
  if mesh is None:
    return predict
  # No replication checks: with them, a gradient inside predict (MAML's inner steps, a fine-tuned
  # transformer's) with respect to the replicated params would be summed over the devices, every
  # device adapting to the other devices' prompts too; unchecked, each device's is its own.
  split = jax.shard_map(predict, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                        out_specs=PartitionSpec(AXIS), check_vma=False)

  def on_devices(params, prompts):
    if mesh.devices.flat[0].platform == "cpu" and _calls_lapack(predict, params, prompts):
      return predict(params, prompts)
    return split(params, prompts)
  return on_devices


def _calls_lapack(predict, *args) -> bool:
  """Whether predict's program calls LAPACK (jnp.linalg's inv, eigh, svd, ...).

  jaxlib's LAPACK kernels share XLA's CPU thread pool: one jitted pinv split over 2 host devices
  hung within a few hundred calls (jax 0.10.2, 2 cores), even with each call awaited. Such a
  learner (the preconditioned GD baselines) predicts on the first device alone.
  """
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
  return "lapack" in jax.jit(predict).lower(*shapes).as_text()


def padded(episode: Episode, multiple: int) -> Episode:
  """The episode with its last prompt repeated up to a multiple of `multiple` prompts (every
  leaf, info too, is per prompt: tasks sample prompts by vmap); the caller drops the repeats'
  predictions."""
  extra = -episode.batch_size % multiple
  pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]) if extra else a
  return jax.tree.map(pad, episode)
