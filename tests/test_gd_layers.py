"""GD-layer networks: the constructed LSA network is K steps of GD (and GD++), exactly."""

import functools
import json
import os
import re
import types

import jax
import numpy as np
import pytest

from metalearn.learners import make_learner, predict_prefix_by_prefix
from metalearn.tasks import make_task


@functools.partial(jax.jit, static_argnums=0)
def _predict(learner, params, episode):
  """Compiled once per (learner, shape): learners are frozen, hashable dataclasses."""
  return learner.predict(params, episode)


def _prefix_by_prefix(learner, params, episode):
  """The slow reference path, each prefix's call compiled."""
  jitted = types.SimpleNamespace(predict=lambda p, e: _predict(learner, p, e))
  return predict_prefix_by_prefix(jitted, params, episode)


def _gd_reference(x, y, steps, eta):
  """Prediction at every position i from K GD steps on (1/2i) Σ_{j<i} (wᵀx_j − y_j)², w0 = 0."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]
  out = np.zeros(len(x))
  for i in range(1, len(x)):
    w = np.zeros(x.shape[1])
    for _ in range(steps):
      w -= eta * x[:i].T @ (x[:i] @ w - y[:i]) / i
    out[i] = w @ x[i]
  return out


def _gd_plus_plus_reference(x, y, steps, eta, gamma):
  """GD++ (von Oswald et al.): each step updates residuals by GD and maps x <- (I - γ S) x."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]
  out = np.zeros(len(x))
  for i in range(1, len(x)):
    xc, yc, xq, yq = x[:i].copy(), y[:i].copy(), x[i].copy(), 0.0
    for _ in range(steps):
      w_step = eta * xc.T @ yc / i            # one GD step's weights on the current data
      s = xc.T @ xc / i
      yc, yq = yc - xc @ w_step, yq - xq @ w_step
      xc, xq = xc - gamma * xc @ s.T, xq - gamma * s @ xq
    out[i] = -yq
  return out


def _fixed_context_gd_reference(x, y, n, steps, eta):
  """Prediction at every position from K GD steps on the first n pairs alone, w0 = 0."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]
  w = np.zeros(x.shape[1])
  for _ in range(steps):
    w -= eta * x[:n].T @ (x[:n] @ w - y[:n]) / n
  return x @ w


@pytest.mark.parametrize("steps, dim, points", [(1, 3, 6), (2, 5, 9), (4, 2, 12), (3, 10, 11)])
@pytest.mark.parametrize("recurrent", [False, True])
def test_constructed_network_is_k_gd_steps(steps, dim, points, recurrent):
  task = make_task({"name": "linear_regression", "dim": dim})
  episode = task.sample(jax.random.PRNGKey(steps + dim), 4, points)
  learner = make_learner({"name": "gd_layers", "num_layers": steps, "recurrent": recurrent})
  eta = 0.4
  y_hat = np.asarray(_predict(learner, learner.construct(dim, eta), episode))[..., 0]
  for b in range(4):
    expected = _gd_reference(episode.x[b], episode.y[b], steps, eta)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("steps, dim, points", [(1, 3, 7), (2, 4, 10), (3, 6, 11)])
def test_constructed_network_is_k_gd_plus_plus_steps(steps, dim, points):
  task = make_task({"name": "linear_regression", "dim": dim})
  episode = task.sample(jax.random.PRNGKey(7 * steps), 4, points)
  learner = make_learner({"name": "gd_layers", "num_layers": steps})
  eta, gamma = 0.5, 0.2
  y_hat = np.asarray(_predict(learner, learner.construct(dim, eta, gamma), episode))[..., 0]
  for b in range(4):
    expected = _gd_plus_plus_reference(episode.x[b], episode.y[b], steps, eta, gamma)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
  # The x map acts from the second layer on: one GD++ step is one GD step.
  plain = np.asarray(_predict(learner, learner.construct(dim, eta), episode))[..., 0]
  assert np.allclose(plain, y_hat, rtol=1e-5) == (steps == 1)


def test_one_step_is_eta_over_n_x_transpose_y():
  """One layer from w = 0: ŷ = x_qᵀ (η/N) Xᵀy (REFERENCES.md)."""
  task = make_task({"name": "linear_regression", "dim": 4})
  episode = task.sample(jax.random.PRNGKey(3), 2, 11)
  learner = make_learner({"name": "gd_layers", "num_layers": 1})
  y_hat = _predict(learner, learner.construct(4, 0.7), episode)
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  n = 10
  w = 0.7 / n * np.einsum("bnd,bno->bdo", x[:, :n], y[:, :n])
  np.testing.assert_allclose(y_hat[:, n], np.einsum("bd,bdo->bo", x[:, n], w), rtol=1e-5)


def test_random_network_all_prefix_equals_prefix_by_prefix():
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 2, 6)
  learner = make_learner({"name": "gd_layers", "num_layers": 2, "num_heads": 2,
                          "init_std": 0.3})
  params = learner.init(jax.random.PRNGKey(1), episode)
  assert params["layer_0"]["query"].shape == (2, 4, 4)
  np.testing.assert_allclose(_predict(learner, params, episode),
                             _prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-6)




@pytest.mark.parametrize("steps, recurrent", [(1, False), (2, True), (3, False)])
def test_fixed_context_construction_is_k_gd_steps_on_the_first_n_pairs(steps, recurrent):
  """With context_points = N every position is predicted by K GD steps on the first N pairs."""
  dim, n, points = 4, 7, 10
  task = make_task({"name": "linear_regression", "dim": dim})
  episode = task.sample(jax.random.PRNGKey(steps), 3, points)
  learner = make_learner({"name": "gd_layers", "num_layers": steps, "recurrent": recurrent,
                          "context_points": n})
  y_hat = np.asarray(_predict(learner, learner.construct(dim, 0.3), episode))[..., 0]
  for b in range(3):
    np.testing.assert_allclose(
        y_hat[b], _fixed_context_gd_reference(episode.x[b], episode.y[b], n, steps, 0.3),
        rtol=1e-5, atol=1e-6)


OPTIONS = {"layer_norm": True, "mlp": True, "mlp_width": 8, "softmax": True}


@pytest.mark.parametrize("options", [{}, OPTIONS, {"softmax": True}, {"layer_norm": True}],
                         ids=["plain", "all", "softmax", "layer_norm"])
def test_fixed_context_at_position_n_equals_the_prefix_pass(options):
  """The fixed-context pass and the all-prefix pass agree where both use the first N pairs."""
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(4), 3, 7)
  prefix = make_learner({"name": "gd_layers", "num_layers": 2, "recurrent": True,
                         "num_heads": 2, "init_std": 0.3, **options})
  fixed = make_learner({"name": "gd_layers", "num_layers": 2, "recurrent": True,
                        "num_heads": 2, "init_std": 0.3, "context_points": 5, **options})
  params = prefix.init(jax.random.PRNGKey(2), episode)
  np.testing.assert_allclose(_predict(fixed, params, episode)[:, 5],
                             _predict(prefix, params, episode)[:, 5], rtol=1e-5, atol=1e-6)


def test_network_with_every_option_all_prefix_equals_prefix_by_prefix():
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 2, 6)
  learner = make_learner({"name": "gd_layers", "num_layers": 2, "init_std": 0.3, **OPTIONS})
  params = learner.init(jax.random.PRNGKey(1), episode)
  assert sorted(params) == ["layer_0", "layer_1", "mlp_0", "mlp_1", "mlp_norm_0", "mlp_norm_1",
                            "norm_0", "norm_1"]
  np.testing.assert_allclose(_predict(learner, params, episode),
                             _prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-6)


def _layer_norm(t, p):
  mean, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
  return (t - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _gelu(h):  # flax's default, the tanh approximation
  return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))


def _block_reference(params, tokens, n_context):
  """One pre-LN block with softmax attention over the first n_context tokens, in numpy."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  att = p["layer_0"]
  normed = _layer_norm(tokens, p["norm_0"])
  update = np.zeros_like(tokens)
  for h in range(att["query"].shape[0]):
    keys = normed[:n_context] @ att["key"][h].T
    values = normed[:n_context] @ att["value"][h].T
    for j in range(len(tokens)):
      scores = keys @ (att["query"][h] @ normed[j])
      weights = np.exp(scores - scores.max())
      update[j] += att["projection"][h] @ (values.T @ (weights / weights.sum()))
  tokens = tokens + update
  mlp = p["mlp_0"]
  hidden = _gelu(_layer_norm(tokens, p["mlp_norm_0"]) @ mlp["Dense_0"]["kernel"]
                 + mlp["Dense_0"]["bias"])
  return tokens + hidden @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]


def test_layer_norm_softmax_mlp_block_matches_numpy():
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(5), 2, 6)
  learner = make_learner({"name": "gd_layers", "num_heads": 2, "init_std": 0.5, **OPTIONS})
  params = learner.init(jax.random.PRNGKey(3), episode)
  # LayerNorm's scale and bias start at 1 and 0; move them so that they are tested too.
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: a + 0.1 * (len(str(path)) % 3) if "norm" in str(path) else a, params)
  y_hat = np.asarray(_predict(learner, params, episode))
  x, y = np.asarray(episode.x, np.float64), np.asarray(episode.y, np.float64)
  for b in range(2):
    for i in range(1, 6):   # position 0 has no context; the softmax needs one
      tokens = np.concatenate([x[b, :i + 1], np.concatenate([y[b, :i], [[0.0]]])], axis=-1)
      expected = -_block_reference(params, tokens, i)[i, -1]
      np.testing.assert_allclose(y_hat[b, i, 0], expected, rtol=1e-4, atol=1e-5)


def test_softmax_with_no_context_predicts_finite_values_and_gradients():
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(5), 2, 4)
  learner = make_learner({"name": "gd_layers", "softmax": True, "init_std": 0.5})
  params = learner.init(jax.random.PRNGKey(3), episode)
  grads = jax.grad(lambda p: _predict(learner, p, episode)[:, 0].sum())(params)
  assert np.all(np.isfinite(_predict(learner, params, episode)))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("init_from, gamma", [("gd", 0.0), ("gd_plus_plus", 0.3)])
@pytest.mark.parametrize("recurrent", [False, True])
def test_init_is_two_gd_or_gd_plus_plus_steps(init_from, gamma, recurrent):
  """Training from the construction: the network `init` returns (what the train step starts
  from) predicts two GD (γ = 0) or GD++ steps, and has the random init's parameter shapes."""
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 3, 6)
  learner = make_learner({"name": "gd_layers", "num_layers": 2, "recurrent": recurrent,
                          "init_from": init_from, "init_step_size": 0.7, "init_gamma": gamma})
  params = learner.init(jax.random.PRNGKey(1), episode)
  assert jax.tree.structure(params) == jax.tree.structure(
      make_learner({"name": "gd_layers", "num_layers": 2, "recurrent": recurrent}).init(
          jax.random.PRNGKey(1), episode))
  y_hat = np.asarray(_predict(learner, params, episode))[..., 0]
  for b in range(3):
    expected = _gd_plus_plus_reference(episode.x[b], episode.y[b], 2, 0.7, gamma)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_init_state_of_a_from_gd_config_is_two_gd_steps_on_the_context():
  """configs/gd_layers.py:recurrent2_from_gd starts training at two GD steps of η = 6 on the
  first N = 10 pairs, at every position of its own task's prompts."""
  from configs.gd_layers import get_config
  from metalearn.engine.runs import build_experiment
  from metalearn.engine.train_step import init_state
  experiment = build_experiment(get_config("recurrent2_from_gd"))
  state = init_state(experiment)
  episode = experiment.task.sample(jax.random.PRNGKey(2), 3, experiment.points)
  y_hat = np.asarray(_predict(experiment.learner, state.params, episode))[..., 0]
  for b in range(3):
    expected = _fixed_context_gd_reference(episode.x[b], episode.y[b], 10, 2, 6.0)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("steps, recurrent, eta, gamma",
                         [(1, False, 0.4, 0.1), (2, True, 6.0, 1.5), (3, False, 0.2, 0.05)])
def test_implied_gd_plus_plus_reads_the_construction_back(steps, recurrent, eta, gamma):
  learner = make_learner({"name": "gd_layers", "num_layers": steps, "recurrent": recurrent})
  params = learner.construct(4, eta, gamma)
  for layer in learner.implied_gd_plus_plus(params, 4):
    np.testing.assert_allclose([layer["eta"], layer["gamma"]], [eta, gamma], rtol=1e-6)
    assert layer["y_residual"] < 1e-6 and layer["x_residual"] < 1e-6 and layer["cross"] == 0


def test_implied_gd_plus_plus_is_blind_to_the_weights_symmetries():
  """W_Q·c with W_K/c, or P·c with W_V/c, compute the same network and read the same (η, γ)."""
  learner = make_learner({"name": "gd_layers", "recurrent": True, "num_layers": 2})
  params = learner.construct(3, 0.5, 0.2)["layer"]
  rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0][None]
  moved = {"query": 3.0 * rotation @ params["query"], "key": rotation @ params["key"] / 3.0,
           "value": -2.0 * params["value"], "projection": -0.5 * params["projection"]}
  implied = learner.implied_gd_plus_plus({"layer": moved}, 3)[0]
  np.testing.assert_allclose([implied["eta"], implied["gamma"]], [0.5, 0.2], rtol=1e-5)


def test_implied_gd_plus_plus_sums_heads():
  learner = make_learner({"name": "gd_layers", "num_heads": 2})
  one = make_learner({"name": "gd_layers"}).construct(3, 0.5, 0.2)["layer_0"]
  two = {k: np.concatenate([v, v]) for k, v in one.items()}   # two copies: twice the update
  implied = learner.implied_gd_plus_plus({"layer_0": two}, 3)[0]
  np.testing.assert_allclose([implied["eta"], implied["gamma"]], [1.0, 0.4], rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("num_layers", 0, "num_layers must be an integer >= 1, got 0"),
    ("num_heads", -1, "num_heads must be an integer >= 1, got -1"),
    ("mlp_width", 0, "mlp_width must be an integer >= 1, got 0"),
    ("init_std", 0.0, "init_std must be a number > 0, got 0.0"),
    ("softmax", "yes", "softmax must be True or False, got 'yes'"),
    ("init_from", "gd++", "unknown gd_layers init_from 'gd++'; allowed: random, gd, gd_plus_plus"),
    ("init_step_size", -1.0, "init_step_size must be a number > 0, got -1.0"),
    ("init_gamma", 0.5, "init_gamma=0.5 is read by init_from='gd_plus_plus' only, got "
                        "init_from='random'"),
    ("context_points", 0, "context_points must be None or an integer >= 1, got 0"),
])
def test_bad_settings_are_refused(field, value, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    make_learner({"name": "gd_layers", field: value})


@pytest.mark.parametrize("section, message", [
    ({"init_from": "gd", "num_heads": 2},
     "init_from='gd': the GD construction uses one head, got num_heads=2"),
    ({"init_from": "gd", "layer_norm": True, "softmax": True},
     "init_from='gd': the GD construction is a plain linear self-attention network; turn off "
     "layer_norm, softmax"),
    ({"init_from": "gd_plus_plus"}, "init_gamma must be a number > 0, got 0.0"),
])
def test_construction_init_needs_the_plain_network(section, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    make_learner({"name": "gd_layers", **section})


def test_construction_needs_one_head_a_plain_network_and_a_positive_step():
  with pytest.raises(ValueError, match="one head, got num_heads=2"):
    make_learner({"name": "gd_layers", "num_heads": 2}).construct(3, 0.1)
  with pytest.raises(ValueError, match="step_size must be > 0, got -0.1"):
    make_learner({"name": "gd_layers"}).construct(3, -0.1)
  with pytest.raises(ValueError, match="construct: .* turn off mlp"):
    make_learner({"name": "gd_layers", "mlp": True}).construct(3, 0.1)
  with pytest.raises(ValueError, match="implied_gd_plus_plus: .* turn off softmax"):
    make_learner({"name": "gd_layers", "softmax": True}).implied_gd_plus_plus({}, 3)


def test_fixed_context_needs_enough_points():
  task = make_task({"name": "linear_regression", "dim": 3})
  episode = task.sample(jax.random.PRNGKey(0), 1, 4)
  learner = make_learner({"name": "gd_layers", "context_points": 5})
  with pytest.raises(ValueError, match="context_points=5 needs episodes of at least 5 points, "
                                       "got 4"):
    _predict(learner, learner.construct(3, 0.1), episode)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  from configs.gd_layers import get_config
  from metalearn.engine.train import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("gd_layers") / "run")
  return workdir, train_and_evaluate(get_config("smoke"), workdir).queries


def test_lsa_network_trains_through_the_shared_step(smoke_run):
  workdir, table = smoke_run
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [json.loads(line)["normalised_loss"] for line in f]
  assert losses[-1] < 0.9 * losses[0]
  assert table["gd_layers"]["normalised"] < 0.9   # the zero predictor scores 1


def test_report_compares_the_run_with_tuned_gd_and_gd_plus_plus(smoke_run):
  from metalearn.analysis.gd_tuning import format_report, gd_layers_report
  workdir, _ = smoke_run
  report = gd_layers_report(workdir, num_prompts=256, tune_prompts=512, batch_size=128)
  assert report["context_points"] == 5 and report["num_layers"] == 2
  assert set(report["half_mse"]) == {"trained", "gd_2", "gd_plus_plus_2", "least_squares", "zero"}
  assert set(report["similarity"]) == {"gd_2", "gd_plus_plus_2"}
  # Noiseless, d = 3 < N = 5: least squares is exact; tuned GD beats predicting zero.
  assert report["half_mse"]["least_squares"]["mean"] < 1e-6
  assert report["half_mse"]["gd_2"]["mean"] < report["half_mse"]["zero"]["mean"]
  assert len(report["implied"]) == 2   # not recurrent: one (η, γ) per layer, no implied run
  assert "trained network against:" in format_report(report)
