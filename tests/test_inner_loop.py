"""The MAML family: meta-gradients against finite differences, dense solves and hand-written steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from metalearn.core.episode import Episode
from metalearn.learners import LEARNERS
from metalearn.learners.imaml import IMAML, conjugate_gradient
from metalearn.learners.inner_loop import ANIL, MAML, MetaSGD
from metalearn.learners.reptile import Reptile
from metalearn.tasks import make_task
from tests import numpy_mlp

CONTEXT = 4


def _episode(batch=3, points=7, dim=2, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, points, dim))
  y = np.sin(x.sum(-1, keepdims=True)) + 0.1 * rng.normal(size=(batch, points, 1))
  return Episode(x=jnp.asarray(x, dtype), y=jnp.asarray(y, dtype),
                 mask=jnp.ones((batch, points), dtype), zero_loss=jnp.ones(batch, dtype))


def _init(learner, episode, seed=1):
  params = learner.init(jax.random.PRNGKey(seed), episode)
  return jax.tree.map(lambda p: jnp.asarray(p, episode.x.dtype), params)


def _query_loss(learner, params, episode):
  y_hat = learner.predict(params, episode)
  return jnp.mean(jnp.square(y_hat - episode.y)[:, CONTEXT:])


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile", "imaml"])
def test_one_inner_step_equals_a_hand_written_step(name):
  first_order = name == "fomaml"
  cls = {"maml": MAML, "fomaml": MAML, "metasgd": MetaSGD, "anil": ANIL, "reptile": Reptile,
         "imaml": IMAML}[name]
  kwargs = {"first_order": first_order} if name in ("maml", "fomaml") else {}
  learner = cls(widths=(5,), context_points=CONTEXT, inner_steps=1, step_size=0.3, **kwargs)
  episode = _episode()
  params = _init(learner, episode)
  if name == "metasgd":  # distinct rates per parameter, so a shared rate would be caught
    params["step_sizes"] = jax.tree.map(
        lambda r: r * (1.0 + jnp.arange(r.size, dtype=r.dtype).reshape(r.shape) / r.size),
        params["step_sizes"])
  y_hat = np.asarray(learner.predict(params, episode))
  p = numpy_mlp.from_flax(params["net"])
  rate = 0.3 if name != "metasgd" else numpy_mlp.from_flax(params["step_sizes"])
  for b in range(episode.batch_size):
    x, y = np.asarray(episode.x[b], np.float64), np.asarray(episode.y[b], np.float64)
    grads = numpy_mlp.squared_error_gradient(p, x[:CONTEXT], y[:CONTEXT])
    if name == "anil":
      grads = {"W2": grads["W2"], "b2": grads["b2"], "W1": 0.0 * p["W1"], "b1": 0.0 * p["b1"]}
    expected = numpy_mlp.forward(numpy_mlp.step(p, grads, rate), x)
    np.testing.assert_allclose(y_hat[b], expected, rtol=1e-4, atol=1e-5)


def test_two_imaml_steps_include_the_proximal_pull():
  learner = IMAML(widths=(5,), context_points=CONTEXT, inner_steps=2, step_size=0.3, lam=2.0)
  episode = _episode(batch=2)
  params = _init(learner, episode)
  y_hat = np.asarray(learner.predict(params, episode))
  theta = numpy_mlp.from_flax(params["net"])
  for b in range(2):
    x, y = np.asarray(episode.x[b], np.float64), np.asarray(episode.y[b], np.float64)
    phi = numpy_mlp.sgd(theta, x[:CONTEXT], y[:CONTEXT], 0.3, 1)
    grads = numpy_mlp.squared_error_gradient(phi, x[:CONTEXT], y[:CONTEXT])
    grads = {k: grads[k] + 2.0 * (phi[k] - theta[k]) for k in phi}
    np.testing.assert_allclose(y_hat[b], numpy_mlp.forward(numpy_mlp.step(phi, grads, 0.3), x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("learner", [
    MAML(widths=(4, 3), context_points=CONTEXT, inner_steps=2, step_size=0.2),
    MetaSGD(widths=(4,), context_points=CONTEXT, inner_steps=2, step_size=0.2),
    ANIL(widths=(4,), context_points=CONTEXT, inner_steps=3, step_size=0.2),
], ids=["maml", "metasgd", "anil"])
def test_second_order_meta_gradient_equals_finite_differences(learner):
  with jax.enable_x64(True):
    episode = _episode(dtype=jnp.float64)
    params = _init(learner, episode)
    flat, unravel = ravel_pytree(params)
    loss = lambda v: _query_loss(learner, unravel(v), episode)
    grad = np.asarray(jax.grad(loss)(flat))
    for seed in range(3):
      direction = np.random.default_rng(seed).normal(size=flat.shape)
      eps = 1e-5
      numeric = (loss(flat + eps * direction) - loss(flat - eps * direction)) / (2 * eps)
      np.testing.assert_allclose(grad @ direction, numeric, rtol=1e-6)


def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_weights():
  learner = MAML(widths=(5,), context_points=CONTEXT, inner_steps=1, step_size=0.3,
                 first_order=True)
  episode = _episode(batch=2)
  params = _init(learner, episode)
  grads = ravel_pytree(jax.grad(lambda p: _query_loss(learner, p, episode))(params))[0]
  theta, expected = numpy_mlp.from_flax(params["net"]), 0.0
  for b in range(2):
    x, y = np.asarray(episode.x[b], np.float64), np.asarray(episode.y[b], np.float64)
    phi = numpy_mlp.sgd(theta, x[:CONTEXT], y[:CONTEXT], 0.3, 1)
    # _query_loss averages over batch and queries; the gradient over the rows it is given.
    g = numpy_mlp.squared_error_gradient(phi, x[CONTEXT:], y[CONTEXT:])
    expected = expected + np.concatenate([g["b1"], g["W1"].ravel(), g["b2"], g["W2"].ravel()]) / 2
  np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)
  # ...and differs from the second-order one.
  second = MAML(widths=(5,), context_points=CONTEXT, inner_steps=1, step_size=0.3)
  full = ravel_pytree(jax.grad(lambda p: _query_loss(second, p, episode))(params))[0]
  assert np.max(np.abs(full - grads)) > 1e-4


def test_conjugate_gradient_solves_a_dense_system():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  matrix = a @ a.T + np.eye(6)
  b = rng.normal(size=6)
  with jax.enable_x64(True):
    x = conjugate_gradient(lambda v: {"v": jnp.asarray(matrix) @ v["v"]}, {"v": jnp.asarray(b)}, 6)
  np.testing.assert_allclose(x["v"], np.linalg.solve(matrix, b), rtol=1e-8)
  # Converged early: later steps keep the solution (no 0/0).
  with jax.enable_x64(True):
    again = conjugate_gradient(lambda v: {"v": 3.0 * v["v"]}, {"v": jnp.asarray(b)}, 5)
  np.testing.assert_allclose(again["v"], b / 3.0, rtol=1e-12)


def test_imaml_meta_gradient_equals_a_dense_solve():
  lam = 2.0
  learner = IMAML(widths=(3,), context_points=CONTEXT, inner_steps=4, step_size=0.2, lam=lam,
                  cg_steps=40)
  with jax.enable_x64(True):
    episode = _episode(batch=1, dtype=jnp.float64)
    params = _init(learner, episode)
    flat, unravel = ravel_pytree(params["net"])
    grads = ravel_pytree(jax.grad(lambda p: _query_loss(learner, p, episode))(params))[0]
    x, y = episode.x[0], episode.y[0]
    net = learner.base_network()
    context = (x[:CONTEXT], y[:CONTEXT], episode.mask[0, :CONTEXT], jnp.asarray(0.2))
    phi = ravel_pytree(learner.solve(params["net"], context))[0]
    context_loss = lambda v: jnp.mean(jnp.square(net.apply(unravel(v), x[:CONTEXT]) - y[:CONTEXT]))
    query_loss = lambda v: jnp.mean(jnp.square(net.apply(unravel(v), x[CONTEXT:]) - y[CONTEXT:]))
    hessian = np.asarray(jax.hessian(context_loss)(phi))
    g = np.asarray(jax.grad(query_loss)(phi))
  expected = np.linalg.solve(np.eye(len(g)) + hessian / lam, g)
  np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-9)


def test_reptile_surrogate_has_value_zero_and_gradient_theta_minus_phi():
  learner = Reptile(widths=(5,), context_points=CONTEXT, inner_steps=3, step_size=0.1)
  episode = _episode()
  params = _init(learner, episode)
  (y_hat, surrogate), vjp = jax.vjp(lambda p: learner.training_terms(p, episode), params)
  assert float(surrogate) == 0.0
  from_predictions = ravel_pytree(vjp((jnp.ones_like(y_hat), jnp.zeros(())))[0])[0]
  np.testing.assert_array_equal(from_predictions, 0.0)
  grad = ravel_pytree(vjp((jnp.zeros_like(y_hat), jnp.ones(())))[0])[0]
  theta, expected = numpy_mlp.from_flax(params["net"]), 0.0
  for b in range(episode.batch_size):
    x, y = np.asarray(episode.x[b], np.float64), np.asarray(episode.y[b], np.float64)
    phi = numpy_mlp.sgd(theta, x[:CONTEXT], y[:CONTEXT], 0.1, 3)
    diff = {k: theta[k] - phi[k] for k in theta}
    expected = expected + np.concatenate(
        [diff["b1"], diff["W1"].ravel(), diff["b2"], diff["W2"].ravel()]) / episode.batch_size
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_remat_leaves_the_meta_gradient_unchanged():
  episode = _episode()
  plain = MAML(widths=(6,), context_points=CONTEXT, inner_steps=3, step_size=0.2)
  remat = MAML(widths=(6,), context_points=CONTEXT, inner_steps=3, step_size=0.2, remat=True)
  params = _init(plain, episode)
  a = jax.grad(lambda p: _query_loss(plain, p, episode))(params)
  b = jax.grad(lambda p: _query_loss(remat, p, episode))(params)
  np.testing.assert_allclose(ravel_pytree(a)[0], ravel_pytree(b)[0], rtol=1e-5, atol=1e-7)


def test_step_size_sweep_compiles_once_and_zero_step_is_the_initial_network():
  learner = MAML(widths=(6,), context_points=CONTEXT, inner_steps=2, step_size=0.2)
  episode = _episode()
  params = _init(learner, episode)
  traces = []

  @jax.jit
  def predict(params, episode, step_size):
    traces.append(1)
    return learner.predict_with(params, episode, step_size)

  outputs = [np.asarray(predict(params, episode, s)) for s in (0.0, 0.1, 0.2)]
  assert len(traces) == 1
  net = learner.base_network()
  np.testing.assert_allclose(outputs[0], jax.vmap(lambda x: net.apply(params["net"], x))(episode.x),
                             rtol=1e-6)
  np.testing.assert_allclose(outputs[2], learner.predict(params, episode), rtol=1e-6)
  assert not np.allclose(outputs[1], outputs[2])


def test_masked_off_context_points_do_not_move_the_inner_loop():
  learner = MAML(widths=(6,), context_points=CONTEXT, inner_steps=2, step_size=0.2)
  episode = _episode()
  params = _init(learner, episode)
  mask = episode.mask.at[:, CONTEXT - 1].set(0.0)
  changed = episode.replace(mask=mask, y=episode.y.at[:, CONTEXT - 1].add(100.0))
  shorter = MAML(widths=(6,), context_points=CONTEXT - 1, inner_steps=2, step_size=0.2)
  np.testing.assert_allclose(learner.predict(params, changed), shorter.predict(params, episode),
                             rtol=1e-5, atol=1e-6)


def test_evaluation_variants_are_one_per_inner_step_count():
  learner = MAML(eval_inner_steps=(0, 1, 10))
  variants = learner.evaluation_variants("maml")
  assert list(variants) == ["maml, 0 steps", "maml, 1 step", "maml, 10 steps"]
  assert [v.inner_steps for v in variants.values()] == [0, 1, 10]


# ANIL's conv-4 run is slow (~30 s); MAML and iMAML keep the conv-4 path in the fast tests.
@pytest.mark.parametrize("name", ["maml", pytest.param("anil", marks=pytest.mark.slow), "imaml"])
def test_conv4_adapts_by_gradient_steps_on_the_context(name):
  """Two inner steps on image episodes against two steps along the gradient (float64) of a
  hand-written cross-entropy, itself held to central differences along random directions: all
  weights adapt (ANIL: the head alone), each image batch normalised by its own statistics, with
  iMAML's pull λ(φ − θ) in the second."""
  pull = 1.5 if name == "imaml" else 0.0  # iMAML's λ
  section = {"name": name, "network": "conv4", "filters": 4, "image_size": 8, "context_points": 6,
             "inner_loss": "softmax_cross_entropy", "inner_steps": 2, "step_size": 0.3}
  with jax.enable_x64(True):
    learner = LEARNERS.build({**section, "lam": pull} if pull else section)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 9))
    episode = Episode(x=jnp.asarray(rng.uniform(size=(2, 9, 64))),
                      y=jax.nn.one_hot(labels, 3, dtype=jnp.float64),
                      mask=jnp.ones((2, 9), jnp.float64), zero_loss=jnp.ones(2, jnp.float64))
    params = _init(learner, episode, seed=0)
    # Compiled whole: run op by op, the conv-4 passes compile hundreds of small programs.
    predict = jax.jit(learner.predict)
    y_hat = np.asarray(predict(params, episode))
    net = learner.base_network()
    apply = jax.jit(net.apply)
    theta, unravel = ravel_pytree(params["net"])
    moves = {"body": 0.0 if name == "anil" else 1.0, "head": 1.0}  # what the inner loop adapts
    adapts = np.asarray(ravel_pytree(
        {part: jax.tree.map(lambda p: jnp.full_like(p, moves[part]), params["net"][part])
         for part in moves})[0])

    @jax.jit
    def context_loss(flat, x, labels):  # mean −log softmax(logits)[label] over the images
      logits = net.apply(unravel(flat), x)
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels])

    gradient = jax.jit(jax.grad(context_loss))
    _check_against_central_differences(context_loss, gradient, theta, episode.x[0, :6],
                                       labels[0, :6])
    for b in range(2):
      phi = np.asarray(theta)
      for _ in range(2):
        step = gradient(phi, episode.x[b, :6], labels[b, :6]) + pull * (phi - theta)
        phi = phi - 0.3 * adapts * step
      expected = np.asarray(apply(unravel(phi), episode.x[b]))
      np.testing.assert_allclose(y_hat[b], expected, rtol=1e-6, atol=1e-8)
      unadapted = np.asarray(apply(params["net"], episode.x[b]))
      assert np.abs(y_hat[b] - unadapted).max() > 1e-2  # the steps moved the predictions
    grads = jax.jit(jax.grad(lambda p: jnp.sum(learner.predict(p, episode))))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def _check_against_central_differences(f, gradient, v, *args, h=1e-6, directions=4):
  """Holds `gradient(v, *args)` to (f(v + h·u) − f(v − h·u)) / 2h along random unit directions u
  of the float64 vector v: the reference gradient is not autodiff's word alone."""
  g = np.asarray(gradient(v, *args))
  for u in np.random.default_rng(1).normal(size=(directions, v.size)):
    u /= np.linalg.norm(u)
    numeric = (f(v + h * u, *args) - f(v - h * u, *args)) / (2 * h)
    np.testing.assert_allclose(float(numeric), float(g @ u), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("fields, message", [
    ({"network": "resnet"}, "unknown network 'resnet'; allowed: mlp, conv4"),
    ({"inner_steps": -1}, "inner steps must be >= 0, got -1"),
    ({"step_size": 0.0}, "step_size must be > 0, got 0.0"),
    ({"context_points": 0}, "context_points must be >= 1, got 0"),
    ({"inner_loss": "hinge"}, "unknown loss 'hinge'; allowed: squared_error"),
    ({"network": "conv4", "image_size": 0}, "conv4 needs filters >= 1 and image_size >= 1"),
])
def test_bad_fields_are_named(fields, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    LEARNERS.build({"name": "maml", **fields})


def test_imaml_fields_are_checked():
  with pytest.raises(ValueError, match="IMAML lam must be > 0, got 0.0"):
    IMAML(lam=0.0)
  with pytest.raises(ValueError, match="IMAML cg_steps must be >= 1, got 0"):
    IMAML(cg_steps=0)


def test_inner_loss_must_be_the_tasks_and_conv4_needs_whole_images():
  with pytest.raises(ValueError, match="inner_loss='squared_error' differs from the task's "
                                       "loss 'logistic'"):
    MAML().check_loss(make_task({"name": "linear_classification", "dim": 2}).loss_name)
  with pytest.raises(ValueError, match="multiple of 64 values.*got dim=10"):
    MAML(network="conv4", image_size=8).check_episode(5, 10)


def test_unrolled_inner_loop_equals_the_rolled_one():
  episode = _episode()
  rolled = MAML(widths=(6,), context_points=CONTEXT, inner_steps=3, step_size=0.2)
  unrolled = MAML(widths=(6,), context_points=CONTEXT, inner_steps=3, step_size=0.2, unroll=True)
  params = _init(rolled, episode)
  np.testing.assert_allclose(rolled.predict(params, episode), unrolled.predict(params, episode),
                             rtol=1e-5, atol=1e-6)
  a = jax.grad(lambda p: _query_loss(rolled, p, episode))(params)
  b = jax.grad(lambda p: _query_loss(unrolled, p, episode))(params)
  np.testing.assert_allclose(ravel_pytree(a)[0], ravel_pytree(b)[0], rtol=1e-4, atol=1e-6)
