"""Several contexts written into the same weights: each task's error afterwards in closed form
for the GD construction, and the memory of fast weights against a KV cache."""

import jax
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.analysis.context_accumulation import accumulation, kv_cache_bytes
from metalearn.learners import make_learner

DIM, TASKS, K, QUERIES, GROUPS = 4, 3, 6, 5, 2


def _tasks(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(GROUPS * TASKS, K + QUERIES, DIM))
  y = x @ rng.normal(size=(GROUPS * TASKS, DIM, 1))
  return x, y


@pytest.mark.parametrize("decay", [1.0, 0.5, 0.0])
def test_each_task_after_all_writes_is_the_sum_of_decayed_gd_steps(decay):
  eta = 0.4
  learner = make_learner({"name": "gd_layers", "init_from": "gd", "init_step_size": eta})
  params = learner.construct(DIM, eta)
  x, y = _tasks()
  result = accumulation(learner, params, episode_from_arrays(x, y), tasks=TASKS, examples=K,
                        decays=[decay])
  # One GD layer: each write adds its own step (η/k) Σ x_i y_i, earlier ones decayed.
  step = np.einsum("bkd,bko->bdo", x[:, :K], y[:, :K]).reshape(GROUPS, TASKS, DIM, 1) * eta / K
  ages = decay ** np.arange(TASKS - 1, -1, -1)
  w_all = np.einsum("t,gtdo->gdo", ages, step)
  queries, targets = (a[:, K:].reshape(GROUPS, TASKS, QUERIES, -1) for a in (x, y))
  error = lambda w: np.mean((np.einsum("gtqd,gtdo->gtqo", queries, w) - targets) ** 2,
                            axis=(0, 2, 3))
  after = error(np.broadcast_to(w_all[:, None], step.shape))
  rows = result["rows"]
  assert [row["task"] for row in rows] == list(range(TASKS))
  assert [row["writes_after"] for row in rows] == list(range(TASKS - 1, -1, -1))
  np.testing.assert_allclose([row["error_after_all"] for row in rows], after, rtol=1e-4)
  np.testing.assert_allclose([row["error_alone"] for row in rows], error(step), rtol=1e-4)
  np.testing.assert_allclose([row["error_nothing_written"] for row in rows],
                             np.mean(targets ** 2, axis=(0, 2, 3)), rtol=1e-5)
  if decay == 0.0:  # only the last write is kept
    assert rows[-1]["error_after_all"] == pytest.approx(rows[-1]["error_alone"], rel=1e-5)


def test_fast_weights_stay_one_matrix_per_layer_while_a_kv_cache_grows():
  hidden, layers, heads = 16, 2, 2
  learner = make_learner({"name": "transformer", "attention": "linear", "hidden": hidden,
                          "num_layers": layers, "num_heads": heads,
                          "max_points": TASKS * K + 1})
  x, y = _tasks(1)
  episode = episode_from_arrays(x, y)
  params = learner.init(jax.random.PRNGKey(0), episode)
  result = accumulation(learner, params, episode, tasks=TASKS, examples=K, decays=[1.0])
  tokens = TASKS * K * 2  # an x and a y token per pair
  assert result["memory"] == {
      "context_tokens": tokens,
      "fast_weight_bytes": layers * heads * (hidden // heads) ** 2 * 4,
      "kv_cache_bytes": layers * 2 * tokens * hidden * 4}
  gd = make_learner({"name": "gd_layers", "num_layers": 3, "recurrent": True, "num_heads": 2})
  gd_params = gd.init(jax.random.PRNGKey(0), episode)
  heads_, key_width = gd_params["layer"]["key"].shape[:2]
  assert kv_cache_bytes(gd, gd_params, 10) == 3 * 2 * 10 * heads_ * key_width * 4
  with pytest.raises(ValueError, match="do not fit the transformer's max_points"):
    accumulation(learner, params, episode, tasks=TASKS, examples=K + 1, decays=[1.0])


def test_bad_accumulation_settings_are_refused():
  learner = make_learner({"name": "gd_layers"})
  x, y = _tasks()
  episode = episode_from_arrays(x, y)
  params = learner.init(jax.random.PRNGKey(0), episode)
  with pytest.raises(ValueError, match=r"decays must be one or more values in \[0, 1\], "
                                       r"got \[1.0, 2.0\]"):
    accumulation(learner, params, episode, tasks=TASKS, examples=K, decays=[1.0, 2.0])
  with pytest.raises(ValueError, match="7 tasks of 6 examples need at least 7 prompts"):
    accumulation(learner, params, episode, tasks=7, examples=K, decays=[1.0])
