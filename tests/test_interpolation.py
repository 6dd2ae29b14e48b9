"""Interpolation between GD-layer networks modulo the (M, V) → (c·M, V/c) symmetry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.evaluation import scores
from metalearn.analysis.interpolation import (align, from_products, interpolate, interpolation_losses,
                                     products)
from metalearn.learners import make_learner
from metalearn.tasks import make_task

DIM = 4


def _task():
  return make_task({"name": "linear_regression", "dim": DIM})


def _episode(points=14, prompts=256, seed=0):
  return _task().sample(jax.random.PRNGKey(seed), prompts, points)


def _gd_layers(**options):
  return make_learner({"name": "gd_layers", **options})


def _random_params(learner, seed):
  return learner.init(jax.random.PRNGKey(seed), _episode(prompts=1))


def _scaled(params, factors):
  """params with each layer's weights multiplied by factors[layer][name] (per head)."""
  return {layer: {name: w * jnp.asarray(factors[layer].get(name, 1.0),
                                        jnp.float32).reshape(-1, 1, 1)
                  for name, w in weights.items()}
          for layer, weights in params.items()}


@pytest.mark.parametrize("options", [{"num_layers": 2, "num_heads": 2},
                                     {"num_layers": 2, "num_heads": 2, "context_points": 10},
                                     {"num_layers": 3, "num_heads": 2, "recurrent": True}])
def test_from_products_computes_the_same_function(options):
  learner = _gd_layers(init_std=0.3, **options)
  params_a, params_b = _random_params(learner, 1), _random_params(learner, 2)
  episode = _episode(prompts=16)
  y_a, y_b = learner.predict(params_a, episode), learner.predict(params_b, episode)
  assert np.std(y_a) > 0.01       # a network that does something
  np.testing.assert_allclose(learner.predict(from_products(learner, products(learner, params_a)),
                                             episode), y_a, rtol=1e-4, atol=1e-5)
  # Balancing and the sign flip keep each network's function too.
  aligned_a, aligned_b = align(products(learner, params_a), products(learner, params_b))
  for aligned, y in ((aligned_a, y_a), (aligned_b, y_b)):
    np.testing.assert_allclose(learner.predict(from_products(learner, aligned), episode), y,
                               rtol=1e-4, atol=1e-5)


def test_align_balances_and_matches_signs():
  learner = _gd_layers(num_layers=2, num_heads=2, init_std=0.3)
  params = _random_params(learner, 3)
  # Head 0 of every layer: M → −6M, V → −V/6; head 1: M → 0.5M, V → 2V.
  copy = _scaled(params, {layer: {"key": [2.0, 0.5], "query": [-3.0, 1.0],
                                  "projection": [-1 / 6, 2.0]} for layer in params})
  aligned_a, aligned_b = align(products(learner, params), products(learner, copy))
  for layer_a, layer_b in zip(aligned_a, aligned_b):
    norms = [np.linalg.norm(layer_a[k], axis=(1, 2)) for k in ("kq", "pv")]
    np.testing.assert_allclose(norms[0], norms[1], rtol=1e-5)
    for key in ("kq", "pv"):
      np.testing.assert_allclose(layer_b[key], layer_a[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("context_points, points", [(None, 10), (10, 14)])
def test_reparametrised_gd_construction_is_flat_raw_average_is_not(context_points, points):
  learner = _gd_layers(num_layers=2, context_points=context_points)
  # η = 0.25: larger steps overshoot on the short prefixes of a prefix learner.
  construction = learner.construct(DIM, 0.25)
  # W_Kᵀ W_Q × (2·−3) and P W_V × (−1/6) in layer 0, both × (−1) in layer 1: the same
  # products per layer, so provably the same function.
  copy = _scaled(construction, {"layer_0": {"key": 2.0, "query": -3.0, "projection": -1 / 6},
                                "layer_1": {"key": -1.0, "value": -1.0}})
  episode = _episode(points)
  np.testing.assert_allclose(learner.predict(copy, episode),
                             learner.predict(construction, episode), rtol=1e-4, atol=1e-5)
  alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
  result = interpolation_losses(learner, construction, copy, _task(), episode, alphas)
  loss_a, loss_b = result["endpoints"]
  assert loss_a < 0.6 and loss_b == pytest.approx(loss_a, rel=1e-5)
  np.testing.assert_allclose(result["aligned"], loss_a, rtol=1e-5)
  assert abs(result["aligned_barrier"]) < 1e-5
  # The raw midpoint's layer 0 has W_Kᵀ W_Q × 1.5·(−1) and P W_V × 5/12, a step of −0.625η
  # (away from the solution); its layer 1 has W_K = 0, no step at all.
  assert result["raw"][2] > 1.0 > loss_a      # worse than predicting zero
  assert result["raw_barrier"] > 0.5


@pytest.mark.parametrize("alpha", [0.5, pytest.param(0.25, marks=pytest.mark.slow), 1.5,
                                   pytest.param(-0.5, marks=pytest.mark.slow)])
def test_midpoint_of_two_gd_constructions_has_the_mean_root_step_size(alpha):
  # Balanced, the construction with step η holds M = c·[[I, 0], [0, 0]] and V_yy = −η/c with
  # c = √(η/√d), i.e. c = √η·d^(−1/4) and η/c = √η·d^(1/4). Mixing gives c_α = s·d^(−1/4) and
  # V_yy = −s·d^(1/4), s = (1−α)√η_a + α√η_b, so the implied step −V_yy·tr(M_xx)/d is s²
  # (not the mean of η, nor √(η_a·η_b)).
  learner = _gd_layers(num_layers=2)
  eta_a, eta_b = 0.36, 1.44
  mid = interpolate(learner, learner.construct(DIM, eta_a), learner.construct(DIM, eta_b),
                    [alpha])[0]
  expected = ((1 - alpha) * np.sqrt(eta_a) + alpha * np.sqrt(eta_b))**2
  for layer in learner.implied_gd_plus_plus(mid, DIM):
    assert layer["eta"] == pytest.approx(expected, rel=1e-5)
    assert layer["y_residual"] < 1e-6 and layer["cross"] < 1e-6 and abs(layer["gamma"]) < 1e-6


@pytest.mark.parametrize("context_points, points", [
    (None, 10), pytest.param(10, 14, marks=pytest.mark.slow)])
def test_endpoint_losses_equal_normalised_errors(context_points, points):
  learner = _gd_layers(num_layers=2, num_heads=2, init_std=0.2, context_points=context_points)
  params_a, params_b = _random_params(learner, 4), _random_params(learner, 5)
  task, episode = _task(), _episode(points)
  result = interpolation_losses(learner, params_a, params_b, task, episode, [0.0, 0.5, 1.0])
  start = 1 if context_points is None else context_points
  expected = [scores.normalised_errors(learner, task, episode, scores.predictions(
      learner, p, episode, 128))[:, start:].mean() for p in (params_a, params_b)]
  np.testing.assert_allclose(result["endpoints"], expected, rtol=1e-4)
  for path in ("aligned", "raw"):
    np.testing.assert_allclose(result[path][[0, 2]], expected, rtol=1e-4)
  # The barrier is the largest rise above the chord between the endpoints.
  chord = np.array([expected[0], 0.5 * (expected[0] + expected[1]), expected[1]])
  for path in ("aligned", "raw"):
    assert result[f"{path}_barrier"] == pytest.approx(np.max(result[path] - chord), abs=1e-5)


def test_extrapolation_is_allowed():
  learner = _gd_layers(num_layers=1)
  result = interpolation_losses(learner, learner.construct(DIM, 0.5), learner.construct(DIM, 1.0),
                                _task(), _episode(10, prompts=32), [-0.5, 1.5])
  assert np.all(np.isfinite(result["aligned"])) and np.all(np.isfinite(result["raw"]))


def test_refuses_learners_without_the_symmetry():
  with pytest.raises(ValueError, match="products: needs a gd_layers learner, got LeastSquares"):
    products(make_learner({"name": "least_squares"}), {})
  learner = _gd_layers(layer_norm=True, softmax=True)
  with pytest.raises(ValueError, match=r"interpolation: the \(M, V\) → \(c·M, V/c\) symmetry "
                                       r"holds in a plain linear self-attention network only; "
                                       r"turn off layer_norm, softmax"):
    interpolate(learner, {}, {}, [0.5])
  with pytest.raises(ValueError, match="turn off mlp"):
    interpolation_losses(_gd_layers(mlp=True), {}, {}, _task(), _episode(), [0.5])


def test_refuses_param_trees_of_different_shapes():
  one_head = _gd_layers(num_layers=2)
  two_heads = _gd_layers(num_layers=2, num_heads=2)
  with pytest.raises(ValueError, match=r"differ at leaf \['layer_0'\]\['key'\]: shape "
                                       r"\(1, 5, 5\) against \(2, 5, 5\)"):
    interpolate(one_head, _random_params(one_head, 0), _random_params(two_heads, 0), [0.5])
  one_layer = _gd_layers(num_layers=1)
  with pytest.raises(ValueError, match=r"differ at leaf \['layer_1'\]\['key'\]: shape "
                                       r"\(1, 5, 5\) against absent"):
    interpolate(one_head, _random_params(one_head, 0), _random_params(one_layer, 0), [0.5])
  with pytest.raises(ValueError, match=r"products: params hold no layer 'layer_1'"):
    products(one_head, _random_params(one_layer, 0))


@pytest.mark.parametrize("alphas, message", [
    ([0.5, float("nan")], "alphas must be finite numbers .* got nan"),
    ([float("inf")], "alphas must be finite numbers .* got inf"),
    ([], r"alphas must be a non-empty 1-D sequence, got shape \(0,\)"),
    ([[0.5]], r"alphas must be a non-empty 1-D sequence, got shape \(1, 1\)"),
])
def test_refuses_bad_alphas(alphas, message):
  learner = _gd_layers()
  params = learner.construct(DIM, 1.0)
  with pytest.raises(ValueError, match=message):
    interpolate(learner, params, params, alphas)
  with pytest.raises(ValueError, match=message):
    interpolation_losses(learner, params, params, _task(), _episode(), alphas)


def test_the_layout_and_architecture_the_learner_declares():
  from metalearn.learners.capabilities import HiddenStates, LinearAttentionLayers
  assert isinstance(_gd_layers(), LinearAttentionLayers)
  assert not isinstance(make_learner({"name": "transformer"}), LinearAttentionLayers)
  assert not isinstance(_gd_layers(), HiddenStates)
  layout = _gd_layers(num_layers=3, recurrent=True).attention_layout()
  assert (layout.depth, layout.weight_tied, layout.nonlinear_options) == (3, True, ())
  assert _gd_layers(mlp=True, softmax=True).attention_layout().nonlinear_options == ("mlp",
                                                                                   "softmax")
  # What only `init` reads leaves the network as it is; heads or weight tying change it.
  plain = _gd_layers(num_layers=2)
  assert plain.architecture_key() == _gd_layers(num_layers=2, init_from="gd", init_step_size=0.5,
                                                init_std=0.3).architecture_key()
  for other in ({"num_heads": 2}, {"recurrent": True}, {"context_points": 5}):
    assert plain.architecture_key() != _gd_layers(num_layers=2, **other).architecture_key()
