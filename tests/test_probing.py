"""Probing (Akyürek et al. 2022, section 5): known answers for the probes and their targets."""

import jax
import numpy as np
import pytest

from metalearn.analysis import probing
from metalearn.evaluation.prompts import held_out_episodes
from metalearn.learners import make_learner
from metalearn.tasks import make_task
from tests.episodes import episode_from_arrays

DIM, POINTS, PROMPTS = 4, 10, 200


@pytest.fixture(scope="module")
def episode():
  """Noiseless linear-regression prompts, w ~ N(0, I)."""
  return held_out_episodes(make_task({"name": "linear_regression", "dim": DIM}), PROMPTS,
                           POINTS, 0)


@pytest.fixture(scope="module")
def transformer(episode):
  learner = make_learner({"name": "transformer", "hidden": 32, "num_layers": 2,
                          "num_heads": 2, "max_points": 16})
  return learner, jax.jit(learner.init)(jax.random.PRNGKey(1), episode)


def _numpy_ridge_r2(features, targets, num_train, ridge):
  """The linear probe's held-out R², by an independent float64 route."""
  features, targets = features.astype(np.float64), targets.astype(np.float64)
  mean, std = features[:num_train].mean(0), features[:num_train].std(0)
  phi = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)
  penalty = ridge * num_train * np.eye(phi.shape[1])
  penalty[-1, -1] = 0.0  # the bias column is not penalised
  train_phi, train_t = phi[:num_train], targets[:num_train]
  w = np.linalg.solve(train_phi.T @ train_phi + penalty, train_phi.T @ train_t)
  fit = lambda rows: 1 - (np.sum((targets[rows] - phi[rows] @ w) ** 2)
                          / np.sum((targets[rows] - train_t.mean(0)) ** 2))
  return fit(slice(num_train, None)), fit(slice(None, num_train))


def test_linear_probe_reads_a_planted_linear_signal_layer_by_layer():
  rng = np.random.default_rng(0)
  targets = rng.normal(size=(300, 3))
  planted = targets @ rng.normal(size=(3, 8)) + 0.01 * rng.normal(size=(300, 8))
  unrelated = rng.normal(size=(300, 8))
  r2 = probing.probe_features(np.stack([planted, unrelated]), targets, mlp_steps=10)
  assert r2["linear"].shape == (2,)
  assert r2["linear"][0] > 0.99
  assert r2["linear"][1] < 0.1


def test_independent_features_report_the_held_out_not_the_train_fit():
  rng = np.random.default_rng(1)
  features, targets = rng.normal(size=(300, 100)), rng.normal(size=(300, 2))
  r2 = probing.probe_features(features, targets, mlp_steps=10)
  held_out, train = _numpy_ridge_r2(features, targets, 240, 1e-3)
  assert train > 0.3          # 100 features for 240 rows fit noise...
  assert r2["linear"] < 0.1   # ...which the held-out score does not credit
  np.testing.assert_allclose(r2["linear"], held_out, rtol=1e-3, atol=1e-4)


def test_linear_probe_matches_a_float64_ridge():
  rng = np.random.default_rng(2)
  targets = rng.normal(size=(100, 2))
  features = targets @ rng.normal(size=(2, 5)) + rng.normal(size=(100, 5))
  r2 = probing.probe_features(features, targets, train_fraction=0.7, ridge=0.1, mlp_steps=10)
  np.testing.assert_allclose(r2["linear"], _numpy_ridge_r2(features, targets, 70, 0.1)[0],
                             rtol=1e-4)


def test_mlp_probe_reads_what_no_linear_probe_can():
  rng = np.random.default_rng(3)
  features = rng.normal(size=(300, 4))
  targets = np.sum(features**2, axis=1)  # uncorrelated with every feature
  r2 = probing.probe_features(features, targets, mlp_steps=300, mlp_learning_rate=1e-2)
  assert r2["linear"] < 0.1
  assert r2["mlp"] > 0.8


def test_probe_targets_are_w_least_squares_and_xty(episode):
  x, y, w = (np.asarray(a, np.float64) for a in (episode.x, episode.y, episode.info["w"]))
  for context_points in (DIM, POINTS - 1):  # determined: least squares recovers w exactly
    targets = probing.probe_targets(episode, context_points)
    np.testing.assert_allclose(targets["least_squares"], w[..., 0], atol=1e-4)
    np.testing.assert_allclose(targets["weights"], w[..., 0])
  targets = probing.probe_targets(episode, 2)  # underdetermined: the minimum-norm solution
  context_x, context_y = x[:, :2], y[:, :2]
  np.testing.assert_allclose(targets["least_squares"],
                             (np.linalg.pinv(context_x) @ context_y)[..., 0], atol=1e-4)
  np.testing.assert_allclose(targets["xty"],
                             np.einsum("bkd,bko->bdo", context_x, context_y)[..., 0],
                             rtol=1e-5, atol=1e-5)
  assert set(targets) == set(probing.TARGETS)


def test_hidden_states_read_the_query_x_token(episode, transformer):
  learner, params = transformer
  context_points = 3
  states = probing.hidden_states(learner, params, episode, context_points)
  assert states.shape == (3, PROMPTS, 32)
  # Layer 0 by hand: the interleaved layout's token 2k is x_k, embedded and positioned.
  embedding = (np.asarray(episode.x[:, context_points]) @ np.asarray(params["read_in"]["kernel"])
               + params["read_in"]["bias"] + params["positions"][2 * context_points])
  np.testing.assert_allclose(states[0], embedding, rtol=1e-5, atol=1e-6)
  # Cutting the prompt after the query changes nothing in a causal pass.
  full = jax.jit(learner.intermediates)(params, episode)["residual"][:, :, context_points]
  np.testing.assert_allclose(states, full, rtol=1e-4, atol=1e-5)


def test_probe_on_a_transformer_scores_each_layer_against_each_target(episode, transformer):
  """The linear scores by an independent route: the full causal pass's residual stream at
  point 5's x token, numpy targets, a float64 ridge. The embedding (layer 0) holds x_5 alone,
  independent of w, so neither probe recovers any target from it."""
  learner, params = transformer
  r2 = probing.probe(learner, params, episode, 5, mlp_steps=20)
  assert list(r2) == list(probing.PROBES)
  residual = np.asarray(jax.jit(learner.intermediates)(params, episode)["residual"])[:, :, 5]
  x, y = np.asarray(episode.x, np.float64)[:, :5], np.asarray(episode.y, np.float64)[:, :5]
  targets = {"weights": np.asarray(episode.info["w"])[..., 0],
             "least_squares": (np.linalg.pinv(x) @ y)[..., 0],
             "xty": np.einsum("bkd,bko->bd", x, y)}
  num_train = int(0.8 * PROMPTS)
  for probe_name in probing.PROBES:
    assert set(r2[probe_name]) == set(probing.TARGETS)
  for name, target in targets.items():
    expected = [_numpy_ridge_r2(layer, target, num_train, 1e-3)[0] for layer in residual]
    np.testing.assert_allclose(r2["linear"][name], expected, rtol=1e-3, atol=1e-3)
    assert r2["linear"][name][0] < 0.1 and r2["mlp"][name][0] < 0.1
    assert r2["mlp"][name].shape == (3,) and np.all(r2["mlp"][name] <= 1)


def test_probing_needs_true_weights():
  no_w = episode_from_arrays(np.ones((8, 6, DIM)), np.ones((8, 6, 1)))
  with pytest.raises(ValueError, match="true weights 'w'.*linear_regression"):
    probing.probe_targets(no_w, 3)


@pytest.mark.parametrize("context_points", [0, POINTS, -1, 2.5, True])
def test_context_points_must_leave_a_query(episode, transformer, context_points):
  learner, params = transformer
  allowed = rf"context_points must be an integer in \[1, {POINTS - 1}\]"
  with pytest.raises(ValueError, match=allowed):
    probing.probe_targets(episode, context_points)
  with pytest.raises(ValueError, match="context_points must be"):
    probing.hidden_states(learner, params, episode, context_points)


def test_probing_needs_a_learner_with_hidden_states(episode):
  learner = make_learner({"name": "least_squares"})
  with pytest.raises(TypeError, match="LeastSquares has none"):
    probing.hidden_states(learner, {}, episode, 3)
  with pytest.raises(TypeError, match="needs a learner exposing its hidden states"):
    probing.probe(learner, {}, episode, 3)


def test_probing_needs_the_residual_stream_among_the_hidden_states(episode):
  class AttentionOutputsOnly:
    def intermediate_names(self):
      return ("attention_output",)

    def intermediates(self, params, episode):
      raise AssertionError("never called: the check comes first")

  with pytest.raises(TypeError, match=r"probing reads the residual stream; the hidden states "
                                      r"of AttentionOutputsOnly are \['attention_output'\]"):
    probing.hidden_states(AttentionOutputsOnly(), {}, episode, 3)


@pytest.mark.parametrize("settings, message", [
    ({"train_fraction": 0.0}, r"train_fraction must be a number in \(0, 1\), got 0.0"),
    ({"train_fraction": 1.0}, r"train_fraction must be a number in \(0, 1\), got 1.0"),
    ({"train_fraction": float("nan")}, "train_fraction must be a number in"),
    ({"train_fraction": 0.99}, "198 train and 2 held out; each split needs at least 4"),
    ({"ridge": 0.0}, "ridge must be a number > 0, got 0.0"),
    ({"mlp_width": 0}, "mlp_width must be an integer >= 1, got 0"),
    ({"mlp_steps": 1.5}, "mlp_steps must be an integer >= 1, got 1.5"),
    ({"mlp_learning_rate": -1e-3}, "mlp_learning_rate must be a number > 0"),
])
def test_bad_probe_settings_are_refused(episode, transformer, settings, message):
  learner, params = transformer
  with pytest.raises(ValueError, match=message):
    probing.probe(learner, params, episode, 3, **settings)
  with pytest.raises(ValueError, match=message):
    probing.probe_features(np.zeros((PROMPTS, 5)), np.zeros(PROMPTS), **settings)


def test_probe_features_checks_shapes():
  with pytest.raises(ValueError, match=r"features hold 10 examples and targets 12"):
    probing.probe_features(np.zeros((10, 3)), np.zeros((12, 1)))
  with pytest.raises(ValueError, match=r"features must be \[layers, N, F\] or \[N, F\]"):
    probing.probe_features(np.zeros(10), np.zeros((10, 1)))
