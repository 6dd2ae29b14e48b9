"""Task families: shapes, masks, jit without recompiles, exact zero losses, task-specific checks."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.tasks import TASKS, TaskFamily, make_task
from metalearn.tasks import (base, classification, decision_tree, fewshot, linear, mixture, pool,
                             relu_net, sinusoid)

DIM = 5

# Fields for each registered task's tests; a task not listed is built from {"dim": DIM}.
CONFIGS = {
    "linear_regression": {"dim": DIM, "w_scale": 0.7, "noise_std": 0.5},
    "sparse_linear_regression": {"dim": DIM, "sparsity": 2, "w_scale": 1.5, "noise_std": 0.3},
    "relu_net_regression": {"dim": DIM, "hidden": 16},
    "sinusoid": {"dim": 1},
    # A pool large enough that its prompts' mean zero loss is the base family's (the test
    # of zero_loss samples 20,000 prompts); tests/test_pool.py tests small pools.
    "task_pool": {"base": {"name": "linear_regression", "dim": DIM, "noise_std": 0.5},
                  "size": 4096, "seed": 3},
    # Two noise levels and a sparse component; tests/test_mixture.py tests mixtures further.
    "mixture": {"components": ({"name": "linear_regression", "dim": DIM, "noise_std": 0.1},
                               {"name": "linear_regression", "dim": DIM, "noise_std": 1.0},
                               {"name": "sparse_linear_regression", "dim": DIM,
                                "sparsity": 2}),
                "weights": (0.5, 0.25, 0.25)},
}

# Few-shot episodes have a fixed length and real images with blank pixels;
# tests/test_fewshot.py holds them to the same checks.
SYNTHETIC = [name for name in TASKS.names if name != "fewshot_classification"]


def build(name):
  return make_task({"name": name, **CONFIGS.get(name, {"dim": DIM})})


@functools.partial(jax.jit, static_argnames=("task", "batch", "points"))
def sample(task, seed, batch, points, active_dims=None, active_points=None):
  """task.sample under jit (eager sampling dispatches op by op and is slow)."""
  return task.sample(jax.random.key(seed), batch, points, active_dims, active_points)


def active_dims_for(task):
  """A number of active dims that leaves some switched off where the task allows it."""
  return max(1, task.dim - 2)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_episode_shapes_and_masks(name):
  task = build(name)
  active = active_dims_for(task)
  ep = sample(task, 0, 3, 7, jnp.int32(active), jnp.int32(4))
  assert ep.x.shape == (3, 7, task.dim) and ep.x.dtype == jnp.float32
  assert ep.y.shape == (3, 7, task.out_dim) and ep.y.dtype == jnp.float32
  assert ep.mask.shape == (3, 7) and ep.zero_loss.shape == (3,)
  np.testing.assert_array_equal(ep.mask, np.broadcast_to(np.arange(7) < 4, (3, 7)))
  np.testing.assert_array_equal(ep.x[..., active:], 0.0)
  assert np.all(np.abs(ep.x[..., :active]) > 0)
  assert np.all(np.isfinite(ep.y)) and np.all(ep.zero_loss > 0)
  for value in jax.tree.leaves(ep.info):
    assert value.shape[0] == 3


@pytest.mark.parametrize("name", SYNTHETIC)
def test_jit_with_traced_active_dims_compiles_once(name):
  task = build(name)
  first = sample(task, 1, 3, 7, jnp.int32(task.dim), jnp.int32(7))
  compiled = sample._cache_size()
  second = sample(task, 1, 3, 7, jnp.int32(active_dims_for(task)), jnp.int32(2))
  assert sample._cache_size() == compiled
  np.testing.assert_array_equal(second.x[..., active_dims_for(task):], 0.0)
  np.testing.assert_array_equal(second.mask[:, 2:], 0.0)
  assert first.x.shape == second.x.shape and first.mask.min() == 1.0


@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_key_same_episode(name):
  task = build(name)
  active, points = jnp.int32(task.dim), jnp.int32(7)
  a, b, c = (sample(task, seed, 3, 7, active, points) for seed in (3, 3, 4))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a.y, c.y)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_zero_loss_is_the_zero_predictor_loss(name):
  """Monte Carlo: the mean loss of predicting 0 over zero_loss is 1 within 4 standard errors."""
  task = build(name)
  prompts = 80_000 if name == "relu_net_regression" else 20_000
  for active in sorted({task.dim, active_dims_for(task), 1}):
    ep = sample(task, 5, prompts, 4, jnp.int32(active))
    per_prompt = np.asarray(task.loss(jnp.zeros_like(ep.y), ep.y).mean(axis=1) / ep.zero_loss)
    error = np.std(per_prompt) / math.sqrt(prompts)
    assert abs(per_prompt.mean() - 1) < 4 * error + 1e-6, (active, per_prompt.mean(), error)


def test_uniform_inputs_of_von_oswald():
  """x ~ U(−0.5, 0.5): inside the box, variance 1/12, and zero_loss still normalises to 1."""
  task = make_task({"name": "linear_regression", "dim": 6, "x_distribution": "uniform",
                    "noise_std": 0.1})
  ep = sample(task, 3, 20_000, 4)
  x = np.asarray(ep.x)
  assert x.min() >= -0.5 and x.max() <= 0.5
  np.testing.assert_allclose(x.var(), 1 / 12, rtol=0.01)
  np.testing.assert_allclose(ep.zero_loss, 6 / 12 + 0.01, rtol=1e-6)
  per_prompt = np.asarray(np.square(ep.y).mean(axis=(1, 2)) / ep.zero_loss)
  assert abs(per_prompt.mean() - 1) < 4 * per_prompt.std() / math.sqrt(len(per_prompt))
  with pytest.raises(ValueError, match="unknown x_distribution 'cauchy'; allowed: normal, uniform"):
    make_task({"name": "linear_regression", "dim": 2, "x_distribution": "cauchy"})


def test_sparse_weights_have_s_nonzeros_in_active_coordinates():
  task = make_task({"name": "sparse_linear_regression", "dim": 8, "sparsity": 3})
  for active, expected in ((6, 3), (3, 3), (2, 2)):
    ep = sample(task, 6, 4000, 2, active)
    nonzero = np.asarray(ep.info["w"][..., 0] != 0)                     # [batch, dim]
    np.testing.assert_array_equal(nonzero.sum(axis=1), expected)
    assert not nonzero[:, active:].any()
    # Every active coordinate is in the support with probability min(s, active)/active.
    np.testing.assert_allclose(nonzero[:, :active].mean(axis=0), expected / active, atol=0.04)
    np.testing.assert_allclose(ep.y[..., 0], np.einsum("bpd,bd->bp", ep.x, ep.info["w"][..., 0]),
                               rtol=1e-5, atol=1e-5)


def test_decision_tree_matches_a_reference_traversal():
  task = make_task({"name": "decision_tree", "dim": 6, "depth": 3})
  ep = sample(task, 7, 50, 20, 4)
  x, y = np.asarray(ep.x), np.asarray(ep.y)
  coords, leaves = np.asarray(ep.info["coords"]), np.asarray(ep.info["leaves"])
  assert coords.shape == (50, 7) and leaves.shape == (50, 8)
  assert coords.max() < 4 and set(coords.ravel()) == {0, 1, 2, 3}
  for b in range(50):
    for p in range(20):
      node = 0
      for _ in range(3):
        node = 2 * node + (2 if x[b, p, coords[b, node]] > 0 else 1)
      assert y[b, p, 0] == leaves[b, node - 7]


def test_sinusoid_follows_its_amplitude_and_phase():
  task = make_task({"name": "sinusoid"})
  ep = sample(task, 8, 200, 10)
  amplitude, phase = np.asarray(ep.info["amplitude"]), np.asarray(ep.info["phase"])
  expected = amplitude[:, None] * np.sin(np.asarray(ep.x[..., 0]) - phase[:, None])
  np.testing.assert_allclose(ep.y[..., 0], expected, rtol=1e-5, atol=1e-5)
  assert 0.1 <= amplitude.min() and amplitude.max() <= 5 and 0 <= phase.min()
  assert phase.max() <= math.pi and np.abs(ep.x).max() <= 5
  np.testing.assert_allclose(task.zero_loss, (0.01 + 0.5 + 25) / 3 / 2, rtol=1e-12)


def test_classification_labels_loss_and_accuracy():
  task = make_task({"name": "linear_classification", "dim": DIM})
  ep = sample(task, 9, 500, 10, 3)
  logits = jnp.einsum("bpd,bdo->bpo", ep.x, ep.info["w"])
  np.testing.assert_array_equal(ep.y, np.where(logits >= 0, 1.0, -1.0))
  np.testing.assert_allclose(ep.zero_loss, math.log(2))
  assert task.loss(jnp.zeros_like(ep.y), ep.y).shape == (500, 10)
  accuracy = task.metrics(1e3 * logits, ep.y)["accuracy"]
  assert accuracy.shape == (500, 10) and float(accuracy.mean()) == 1.0
  assert float(task.loss(1e3 * logits, ep.y).mean()) < 1e-2
  assert float(task.metrics(-logits, ep.y)["accuracy"].mean()) < 0.01


@pytest.mark.parametrize("section, match", [
    ({"name": "sinusoid", "dim": 2}, "sinusoid dim must be 1, got 2"),
    ({"name": "sinusoid", "amplitude_min": 3.0, "amplitude_max": 1.0}, r"\[3.0, 1.0\]"),
    ({"name": "sinusoid", "amplitude_min": -1.0}, r"\[-1.0, 5.0\]"),
    ({"name": "sinusoid", "phase_min": 2.0, "phase_max": 1.0}, r"phase_min <= phase_max.*\[2.0"),
    ({"name": "sinusoid", "x_min": 1.0, "x_max": 1.0}, r"x_min < x_max.*\[1.0, 1.0\]"),
    ({"name": "sparse_linear_regression", "dim": 4, "sparsity": 0},
     r"sparsity.*\[1, dim=4\].*got 0"),
    ({"name": "sparse_linear_regression", "dim": 4, "sparsity": 5}, "got 5"),
    ({"name": "sparse_linear_regression", "dim": 4, "noise_std": -0.1}, "noise_std.*got -0.1"),
    ({"name": "sparse_linear_regression", "dim": 4, "w_scale": 0.0}, "w_scale.*got 0.0"),
    ({"name": "linear_regression", "dim": 4, "noise_std": -1.0}, "noise_std.*got -1.0"),
    ({"name": "relu_net_regression", "dim": 4, "hidden": 0}, "hidden must be >= 1, got 0"),
    ({"name": "decision_tree", "dim": 4, "depth": 0}, "depth must be >= 1, got 0"),
    ({"name": "linear_classification", "dim": 0}, "dim must be >= 1, got 0"),
    ({"name": "nope", "dim": 3}, "unknown task 'nope'; allowed: .*linear_regression.*sinusoid"),
    ({"name": "decision_tree", "dim": 3, "widht": 2}, "no field.*'widht'.*allowed: .*depth"),
])
def test_bad_inputs_fail_with_clear_messages(section, match):
  with pytest.raises(ValueError, match=match):
    make_task(section)


def _subclasses(cls):
  for subclass in cls.__subclasses__():
    yield subclass
    yield from _subclasses(subclass)


def test_every_task_family_is_registered_under_its_name():
  """The tests above run on every registered name: each family the package defines must be
  registered, under the name its configs use."""
  expected = {"linear_regression": linear.LinearRegression,
              "sparse_linear_regression": linear.SparseLinearRegression,
              "relu_net_regression": relu_net.ReluNetRegression,
              "decision_tree": decision_tree.DecisionTree,
              "sinusoid": sinusoid.Sinusoid,
              "linear_classification": classification.LinearClassification,
              "fewshot_classification": fewshot.FewShotClassification,
              "task_pool": pool.TaskPool,
              "mixture": mixture.TaskMixture}
  assert {name: TASKS.get(name) for name in TASKS.names} == expected
  defined = {cls for cls in _subclasses(TaskFamily) if cls.__module__.startswith("metalearn.")
             and cls is not base.ParametricTaskFamily}  # what the families share
  assert defined == set(expected.values())
