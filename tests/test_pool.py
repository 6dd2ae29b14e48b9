"""Finite task pools and their Bayes predictor dMMSE, against closed forms and float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.learners import dmmse, make_baseline
from metalearn.tasks import make_task

DIM = 4


def pool(size=8, seed=3, noise_std=0.5, base="linear_regression", **fields):
  return make_task({"name": "task_pool", "size": size, "seed": seed,
                    "base": {"name": base, "dim": DIM, "noise_std": noise_std, **fields}})


def sample(task, seed, batch=4000, points=6):
  return jax.jit(lambda key: task.sample(key, batch, points))(jax.random.PRNGKey(seed))


def test_every_prompt_follows_one_of_the_pools_tasks():
  task = pool(size=8)
  weights = np.asarray(task.pool_weights())                       # [8, D, 1]
  ep = sample(task, 0)
  index = np.asarray(ep.info["task_index"])
  np.testing.assert_array_equal(np.asarray(ep.info["w"]), weights[index])
  counts = np.bincount(index, minlength=8)
  expected = len(index) / 8                                      # binomial, p = 1/8
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected * 7 / 8)), counts
  residual = np.asarray(ep.y) - np.einsum("bpd,bdo->bpo", np.asarray(ep.x), weights[index])
  np.testing.assert_allclose(residual.std(), 0.5, rtol=0.02)     # y = xw + σε


def test_the_pool_is_drawn_from_its_own_seed_not_the_datas():
  """Two data seeds draw different prompts from the same M tasks; another pool seed, others."""
  a, b = sample(pool(seed=3), 0), sample(pool(seed=3), 1)
  assert not np.array_equal(a.x, b.x)
  assert {w.tobytes() for w in np.asarray(a.info["w"])} == {
      w.tobytes() for w in np.asarray(b.info["w"])}
  assert not np.array_equal(pool(seed=3).pool_weights(), pool(seed=4).pool_weights())
  # The pool's tasks are the base family's draws: w ~ N(0, τ²I) over many pools.
  big = np.asarray(pool(size=20_000, w_scale=0.7).pool_weights())
  np.testing.assert_allclose(big.std(), 0.7, rtol=0.02)


def test_a_pool_of_one_task_is_that_task():
  task = pool(size=1)
  ep = sample(task, 2, batch=50)
  np.testing.assert_array_equal(np.asarray(ep.info["w"]),
                                np.broadcast_to(task.pool_weights(), (50, DIM, 1)))


def test_pools_of_other_parametric_families():
  for base, fields in (("sparse_linear_regression", {"sparsity": 2}),
                       ("relu_net_regression", {"hidden": 5})):
    task = make_task({"name": "task_pool", "size": 3, "seed": 0,
                      "base": {"name": base, "dim": DIM, **fields}})
    ep = sample(task, 0, batch=64)
    assert ep.x.shape == (64, 6, DIM) and set(np.unique(ep.info["task_index"])) <= {0, 1, 2}
  assert not task.is_linear
  with pytest.raises(ValueError, match="relu_net_regression.*no linear weights|ReluNet"):
    task.pool_weights()


def test_pretrain_and_latent_families():
  task = pool()
  families = task.held_out_families()
  assert families["pretrain"] is task and families["latent"] == task.base


@pytest.mark.parametrize("section, match", [
    ({"size": 0}, r"size.*0"),
    ({"size": 2.5}, r"size.*2\.5"),
    ({"seed": -1}, r"seed.*-1"),
    ({"base": None}, r"task parameters.*linear_regression.*got None"),
    ({"base": {"name": "decision_tree", "dim": DIM}}, r"task parameters.*got .*decision_tree"),
    ({"base": {"name": "task_pool", "size": 2, "base": {"name": "linear_regression",
                                                         "dim": DIM}}}, "itself a task_pool"),
    ({"base": {"name": "linear_regression", "dim": DIM}, "dim": 3},
     r"dim=3 differs from its base's dim=4"),
    ({"base": {"name": "linear_regresion", "dim": DIM}}, "linear_regresion"),
])
def test_bad_pools_are_refused_naming_the_value(section, match):
  fields = {"name": "task_pool", "size": 4, "seed": 0,
            "base": {"name": "linear_regression", "dim": DIM}, **section}
  with pytest.raises(ValueError, match=match):
    make_task(fields)


def _dmmse_reference(weights, x, y, sigma):
  """Float64 posterior mean over the pool at every prefix, written out term by term."""
  weights, x, y = (np.asarray(a, np.float64) for a in (weights, x, y))
  out = np.zeros_like(y)
  for b in range(x.shape[0]):
    for i in range(x.shape[1]):
      residual = np.array([np.sum((y[b, :i] - x[b, :i] @ w) ** 2) for w in weights])
      if sigma > 0:
        log_like = -residual / (2 * sigma**2)
        post = np.exp(log_like - log_like.max())
      else:
        post = (residual <= residual.min() + 1e-9).astype(np.float64)
      post /= post.sum()
      out[b, i] = sum(p * (x[b, i] @ w) for p, w in zip(post, weights))
  return out


@pytest.mark.parametrize("sigma", [0.5, 0.1])
def test_dmmse_is_the_posterior_mean_over_the_pool(sigma):
  task = pool(size=16, noise_std=sigma)
  learner = make_baseline("dmmse", task)
  for family in task.held_out_families().values():        # pool tasks, and fresh ones
    ep = sample(family, 5, batch=6, points=9)
    got = jax.jit(learner.predict)({}, ep)
    want = _dmmse_reference(task.pool_weights(), ep.x, ep.y, sigma)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_noiseless_dmmse_finds_the_prompts_task_after_one_example():
  """σ = 0: after one pair only the prompt's own pool task fits it (continuous x), so every
  later prediction is exact; before any example the prediction is the pool's mean."""
  task = pool(size=32, noise_std=0.0)
  ep = sample(task, 7, batch=20, points=8)
  got = np.asarray(jax.jit(make_baseline("dmmse", task).predict)({}, ep))
  np.testing.assert_allclose(got[:, 1:], ep.y[:, 1:], rtol=1e-5, atol=1e-5)
  mean_w = np.asarray(task.pool_weights()).mean(axis=0)
  np.testing.assert_allclose(got[:, 0], np.asarray(ep.x[:, 0]) @ mean_w, rtol=1e-5, atol=1e-5)


def test_dmmse_chunks_agree(monkeypatch):
  task = pool(size=16)
  ep = sample(task, 1, batch=12, points=7)
  whole = make_baseline("dmmse", task).predict({}, ep)
  monkeypatch.setattr(dmmse, "_CHUNK_FLOATS", 16 * 7)        # one prompt per chunk
  np.testing.assert_allclose(make_baseline("dmmse", task).predict({}, ep), whole, rtol=1e-6)


def test_dmmse_needs_a_linear_pool():
  with pytest.raises(ValueError, match="dmmse.*pool of linear tasks.*LinearRegression"):
    make_baseline("dmmse", make_task({"name": "linear_regression", "dim": DIM}))
  relu_pool = make_task({"name": "task_pool", "size": 2, "seed": 0,
                         "base": {"name": "relu_net_regression", "dim": DIM}})
  with pytest.raises(ValueError, match="dmmse.*TaskPool"):
    make_baseline("dmmse", relu_pool)
  assert make_baseline("dmmse", pool()).state_floats({}, sample(pool(), 0, batch=2)) == 8


def test_a_run_on_a_pool_is_scored_on_pool_tasks_and_fresh_ones(tmp_path):
  """The smoke run of configs/task_diversity.py trains on its pool; its evaluation table holds
  every learner on both, and dMMSE on pool tasks is the Bayes predictor there (it beats
  ridge, the Bayes predictor of fresh tasks, which in turn beats dMMSE on fresh ones)."""
  from configs.task_diversity import get_config
  from metalearn.engine.train import train_and_evaluate
  config = get_config("smoke")
  config.eval.num_prompts = 256
  errors = train_and_evaluate(config, str(tmp_path)).errors
  names = ("transformer", "dmmse", "bayes_ridge", "least_squares")
  assert set(errors) == {f"{n} ({split})" for n in names for split in ("pretrain", "latent")}
  with open(tmp_path / "eval" / "errors.csv") as f:
    assert "transformer (pretrain)" in f.readline()
  mean = lambda name: float(np.mean(errors[name][1:]))
  assert mean("dmmse (pretrain)") < mean("bayes_ridge (pretrain)")
  assert mean("bayes_ridge (latent)") < mean("dmmse (latent)")
