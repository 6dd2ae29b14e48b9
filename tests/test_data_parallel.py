"""The two data-parallel paths (pmap; jit over a mesh) on 2 simulated devices: the same body,
the same batches, the loss of the whole global batch, and clear errors for bad input."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import linear_regression, sinusoid
from metalearn.engine.data_parallel import MeshJit, Pmap, make_data_parallel
from metalearn.engine.experiment import ConfigError
from metalearn.engine.runs import build_experiment
from metalearn.engine.train_step import init_state
from metalearn.engine.workdir import check_config
from tests import compiles


def _curriculum_smoke():
  """The linear smoke config with a curriculum that grows the prompt within the 10 steps."""
  config = linear_regression.get_config("smoke")
  config.unlock()
  config.data.curriculum.update(enabled=True, dims_start=2, dims_increment=1, points_start=3,
                                points_increment=2, interval=3)
  return config


CONFIGS = {"transformer-curriculum": _curriculum_smoke,
           "maml": lambda: sinusoid.get_config("maml-smoke"),
           "reptile": lambda: sinusoid.get_config("reptile-smoke")}


def _train(config, parallel, calls=2):
  experiment = build_experiment(config)
  step = parallel.train_step(experiment)
  state = parallel.put(init_state(experiment))
  metrics = []
  for _ in range(calls):
    state, call_metrics = step(state)
    metrics.append(parallel.get(call_metrics))
  return parallel.get(state), {name: np.concatenate([m[name] for m in metrics])
                               for name in metrics[0]}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jit_over_a_mesh_trains_as_pmap_does(name):
  assert jax.device_count() == 2
  # One device of each path for one config: the tests' time goes to compiling.
  single = name == "transformer-curriculum"
  paths = [("pmap 2", Pmap(2)), ("jit 2", MeshJit(2))] + (
      [("pmap 1", Pmap(1)), ("jit 1", MeshJit(1))] if single else [])
  runs = {label: _train(CONFIGS[name](), parallel) for label, parallel in paths}
  state, metrics = runs["pmap 2"]
  assert int(state.step) == 2 * CONFIGS[name]().train.steps_per_call
  for label, (other_state, other_metrics) in runs.items():
    assert int(other_state.step) == int(state.step)
    # The same batches and updates; the sums over the batch are taken in other orders.
    for a, b in zip(jax.tree.leaves(other_state.params), jax.tree.leaves(state.params),
                    strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=label)
    for metric in metrics:
      np.testing.assert_allclose(other_metrics[metric], metrics[metric], rtol=1e-4, atol=1e-6,
                                 err_msg=f"{label} {metric}")
  if not single:
    return
  # A single device's copy on both paths: one program, the same numbers bit for bit.
  for a, b in zip(jax.tree.leaves(runs["jit 1"][0]), jax.tree.leaves(runs["pmap 1"][0]),
                  strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("parallel", [Pmap(2), MeshJit(2)], ids=["pmap", "jit"])
def test_the_first_loss_is_the_mean_over_the_whole_global_batch(parallel):
  # Independently of the split: every prompt of fold_in(rng, 0)'s keys, predicted by the initial
  # params, its counted points averaged over the global batch in float64.
  config = _curriculum_smoke()
  experiment = build_experiment(config)
  start = init_state(experiment)
  _, metrics = _train(config, parallel, calls=1)
  keys = jax.random.split(jax.random.fold_in(start.rng, 0), config.train.batch_size)
  dims, points = experiment.curriculum(jnp.zeros((), jnp.int32))
  episode = experiment.task.sample_keys(keys, experiment.points, dims, points)
  per_point = np.asarray(experiment.task.loss(experiment.learner.predict(start.params, episode),
                                              episode.y), np.float64)
  mask = np.asarray(episode.mask, np.float64)
  mask[:, :experiment.loss_from] = 0.0
  np.testing.assert_allclose(metrics["loss"][0], np.sum(per_point * mask) / np.sum(mask),
                             rtol=1e-5)
  assert 0 < np.sum(mask) < mask.size  # the curriculum switched points off


@pytest.mark.parametrize("path", [Pmap, MeshJit], ids=["pmap", "jit"])
def test_a_second_run_of_an_experiment_compiles_nothing_and_trains_the_same(path):
  config = linear_regression.get_config("smoke")
  config.unlock()
  config.train.learning_rate = 1.25e-3    # an experiment no other test of this process runs
  experiment = build_experiment(config)
  with compiles.counted() as first_compiles:
    first = _train(config, path(2))
  with compiles.counted() as again_compiles:
    again = _train(config, path(2))    # new path objects, the same devices and experiment
    config.seed += 1
    other_seed = _train(config, path(2))
  assert first_compiles and not again_compiles
  assert not np.array_equal(other_seed[1]["loss"], first[1]["loss"])   # another init and data
  # The reused step kept nothing of the first run (its input buffers were donated).
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(first), strict=True):
    np.testing.assert_array_equal(a, b)
  # Another device set, path or experiment is another step.
  step = path(2).train_step(experiment)
  assert path(1).train_step(experiment) is not step
  assert (MeshJit if path is Pmap else Pmap)(2).train_step(experiment) is not step
  config.train.learning_rate *= 2
  assert path(2).train_step(build_experiment(config)) is not step


def test_bad_paths_and_device_counts_are_named():
  with pytest.raises(ValueError, match=r"unknown train.data_parallel 'shard'; allowed: pmap, jit"):
    make_data_parallel("shard")
  with pytest.raises(ValueError, match=r"num_devices=3 must be between 1 and the 2 devices"):
    Pmap(3)
  config = linear_regression.get_config("smoke")
  config.unlock()
  config.train.data_parallel = "sharding"
  with pytest.raises(ConfigError, match=r"train.data_parallel 'sharding'; allowed: pmap, jit"):
    build_experiment(config)


def test_a_run_saved_before_the_field_existed_resumes_unchanged(tmp_path):
  config = linear_regression.get_config("smoke")
  saved = json.loads(json.dumps(config.to_dict()))
  del saved["train"]["data_parallel"]  # as runs saved before train.data_parallel existed
  with open(os.path.join(tmp_path, "config.json"), "w") as f:
    json.dump(saved, f)
  assert check_config(str(tmp_path), config, allow_change=False) == []
  config.unlock()
  config.train.data_parallel = "jit"
  assert check_config(str(tmp_path), config, allow_change=True) == [
      {"field": "train.data_parallel", "old": "pmap", "new": "jit"}]
