"""Recurrent in-context learners (LSTM, GRU, selective SSM): every prefix in one pass, equal to
prefix by prefix; the SSM's associative scan equal to its step-by-step recurrence; the state
each carries; bad settings refused before anything compiles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn.learners import make_learner, predict_prefix_by_prefix
from metalearn.learners.selective_ssm import SelectiveSSMLayer
from metalearn.learners.sequence_model import linear_recurrence

def _episode(points=6, dim=3, seed=0):
  rng = np.random.default_rng(seed)
  return episode_from_arrays(rng.normal(size=(2, points, dim)), rng.normal(size=(2, points, 1)))


@pytest.mark.parametrize("name,layout", [("lstm", "interleaved"), ("gru", "akyurek"),
                                         ("ssm", "interleaved"), ("ssm", "akyurek")])
def test_every_prefix_in_one_pass_equals_prefix_by_prefix(name, layout):
  learner = make_learner({"name": name, "hidden": 8, "num_layers": 2, "layout": layout})
  episode = _episode()
  params = learner.init(jax.random.PRNGKey(0), episode)
  fast = np.asarray(learner.predict(params, episode))
  assert fast.shape == (2, 6, 1) and np.all(np.isfinite(fast))
  np.testing.assert_allclose(fast, predict_prefix_by_prefix(learner, params, episode),
                             rtol=1e-5, atol=1e-6)
  # Position i reads no later point: change the last y and every prediction stays.
  x, y = np.asarray(episode.x), np.asarray(episode.y)
  later = y.copy()
  later[:, -1] = 9.0
  np.testing.assert_array_equal(learner.predict(params, episode_from_arrays(x, later)), fast)
  # ... while an earlier y moves the later predictions: the state carries the context.
  earlier = y.copy()
  earlier[:, 0] = 9.0
  moved = np.asarray(learner.predict(params, episode_from_arrays(x, earlier)))
  assert np.max(np.abs(moved[:, 1:] - fast[:, 1:])) > 1e-4


def test_the_associative_scan_is_the_step_by_step_recurrence():
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.uniform(0.2, 1.0, size=(2, 9, 3, 4)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(2, 9, 3, 4)), jnp.float32)
  expected, h = [], np.zeros((2, 3, 4))
  for t in range(9):  # h_t = a_t h_{t-1} + b_t in numpy
    h = np.asarray(a[:, t]) * h + np.asarray(b[:, t])
    expected.append(h)
  expected = np.stack(expected, 1)
  np.testing.assert_allclose(linear_recurrence(a, b, parallel=True), expected, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(linear_recurrence(a, b, parallel=False), expected, rtol=1e-5,
                             atol=1e-6)
  # The whole selective layer, parallel against sequential, with the same params.
  h_in = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
  layer = SelectiveSSMLayer(8, 2, 4)
  params = layer.init(jax.random.PRNGKey(2), h_in)
  np.testing.assert_allclose(layer.apply(params, h_in),
                             SelectiveSSMLayer(8, 2, 4, parallel=False).apply(params, h_in),
                             rtol=1e-5, atol=1e-6)


def test_the_selective_layer_is_its_recurrence_written_out():
  """One channel's state against the docstring's equations, computed in numpy."""
  rng = np.random.default_rng(3)
  h_in = jnp.asarray(rng.normal(size=(1, 5, 4)), jnp.float32)
  layer = SelectiveSSMLayer(4, 1, 3)
  params = layer.init(jax.random.PRNGKey(4), h_in)
  p = jax.tree.map(np.asarray, params["params"])
  dense = lambda name, v: v @ p[name]["kernel"] + p[name]["bias"]
  x = np.asarray(h_in[0], np.float64)
  u, z = np.split(dense("in_proj", x), 2, axis=-1)
  delta = np.log1p(np.exp(dense("delta", u)))
  b, c = dense("B", u), dense("C", u)
  a = -np.exp(p["A_log"])
  np.testing.assert_allclose(a[0], -np.arange(1, 4))  # S4D-real init
  state, ys = np.zeros((4, 3)), []
  for t in range(5):
    state = np.exp(delta[t][:, None] * a) * state + (delta[t] * u[t])[:, None] * b[t][None, :]
    ys.append(state @ c[t] + p["D"] * u[t])
  gated = np.stack(ys) * z / (1 + np.exp(-z))
  expected = gated @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]
  np.testing.assert_allclose(layer.apply(params, h_in)[0], expected, rtol=1e-4, atol=1e-5)


def test_each_learner_reports_the_state_it_carries():
  episode = _episode()
  sizes = {}
  for name, options in (("lstm", {}), ("gru", {}), ("ssm", {"state_size": 4, "expand": 2})):
    learner = make_learner({"name": name, "hidden": 8, "num_layers": 3, **options})
    params = learner.init(jax.random.PRNGKey(0), episode)
    sizes[name] = learner.state_floats(params, episode)
    longer = _episode(points=60)
    assert learner.state_floats(params, longer) == sizes[name]  # fixed, whatever the length
  assert sizes == {"lstm": 3 * 2 * 8, "gru": 3 * 8, "ssm": 3 * 2 * 8 * 4}
  # The LSTM's carry is what flax's cell holds: (cell, hidden), each `hidden` wide.
  carry = nn.OptimizedLSTMCell(8).initialize_carry(jax.random.PRNGKey(0), (1, 8))
  assert sum(c.size for c in carry) == 2 * 8


@pytest.mark.parametrize("section,message", [
    ({"name": "lstm", "hidden": 0}, "LSTM hidden"),
    ({"name": "gru", "num_layers": -1}, "GRU num_layers"),
    ({"name": "ssm", "state_size": 0}, "ssm state_size"),
    ({"name": "ssm", "state_size": 2.5}, "state_size must be an integer, got 2.5"),
    ({"name": "ssm", "expand": 0}, "ssm expand"),
    ({"name": "lstm", "layout": "concatenated"},
     "cannot read the concatenated layout; allowed: interleaved, akyurek"),
])
def test_bad_settings_are_refused_with_the_value(section, message):
  with pytest.raises((ValueError, TypeError), match=message):
    make_learner(section)


def test_a_recurrent_run_trains_evaluates_and_loads_back(tmp_path):
  from configs import recurrent
  from metalearn.engine.runs import load_run
  from metalearn.engine.train import train_and_evaluate
  config = recurrent.get_config("smoke")
  evaluation = train_and_evaluate(config, str(tmp_path / "ssm"))
  curve = np.asarray(evaluation.errors["ssm"])
  assert curve.shape == (config.data.points,) and np.all(np.isfinite(curve))
  learner, params, loaded = load_run(str(tmp_path / "ssm"))
  assert type(learner).__name__ == "SelectiveSSM" and loaded.model.state_size == 4
  assert learner.state_floats(params, None) == 1 * 2 * 8 * 4
