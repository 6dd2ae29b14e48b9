"""Fine-tuning a trained transformer: loading, zero-shot start, hand-written steps, LoRA, masks."""

import ast
import functools
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import gd_layers as gd_layers_configs
from configs import linear_regression
from metalearn.engine.checkpoints import Checkpoints
from metalearn.core.episode import Episode
from metalearn.engine.experiment import ConfigError
from metalearn.learners import make_learner
from metalearn.learners.finetune import FineTune
from metalearn.learners.transformer import Transformer
from metalearn.engine.runs import build_experiment, load_base_run, load_run
from metalearn.tasks import make_task
from metalearn.engine.train import train_and_evaluate
from metalearn.engine.train_step import init_state

CONTEXT = 4  # context pairs of the 7-point smoke prompts


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A trained smoke transformer run: (workdir, transformer, params, config)."""
  workdir = str(tmp_path_factory.mktemp("finetune") / "transformer")
  train_and_evaluate(linear_regression.get_config("smoke"), workdir)
  return (workdir,) + load_run(workdir)


@pytest.fixture(scope="module")
def episode(run):
  config = run[3]
  task = make_task(dict(config.task))
  return task.sample(jax.random.PRNGKey(7), 3, config.data.points)


@functools.cache
def _base(workdir):
  """The run loaded as a base once per test session (the engine's loader, as build_experiment)."""
  return load_base_run(workdir)


def _learner(run, **fields) -> FineTune:
  learner = make_learner({"name": "finetune", "run": run[0], "context_points": CONTEXT, **fields})
  return learner.with_base(_base(run[0]))


def _zero_shot(transformer, weights, x):
  """The reference zero-shot prediction, x [N, D] -> [N, O]: N one-point prompts (x_n)."""
  num, out_dim = x.shape[0], weights["read_out"]["kernel"].shape[1]
  one_point = Episode(x=x[:, None], y=jnp.zeros((num, 1, out_dim)), mask=jnp.ones((num, 1)),
                      zero_loss=jnp.ones(num))
  return transformer.predict(weights, one_point)[:, 0]


def _context_loss(transformer, weights, x, y, mask):
  """Mean squared error of the zero-shot predictions over one prompt's switched-on context."""
  errors = jnp.sum(jnp.square(_zero_shot(transformer, weights, x[:CONTEXT]) - y[:CONTEXT]), -1)
  return jnp.sum(errors * mask[:CONTEXT]) / jnp.sum(mask[:CONTEXT])


# Jitted once per transformer (a static argument): the references stay fast.
_zero_shot_jit = jax.jit(_zero_shot, static_argnums=0)
_context_grad = jax.jit(jax.grad(_context_loss, argnums=1), static_argnums=0)


def _mean_context_loss(predictions, episode):
  return float(np.mean(np.sum((predictions[:, :CONTEXT] - episode.y[:, :CONTEXT]) ** 2, -1)))


def test_loads_the_runs_transformer_and_stays_a_hashable_static_argument(run, episode):
  learner = _learner(run, inner_steps=3)
  assert isinstance(learner, FineTune) and not learner.trainable
  assert learner.context_points == CONTEXT
  params = learner.init(jax.random.PRNGKey(0), episode)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(run[2]), strict=True):
    np.testing.assert_array_equal(a, b)
  transformer = learner.transformer()[0]
  assert isinstance(transformer, Transformer) and transformer == run[1]
  # Bound to the run's last checkpoint, which the learner's identity names.
  assert learner.base.workdir == os.path.abspath(run[0])
  assert learner.base.step == run[3].train.num_steps
  assert hash(learner) == hash(_learner(run, inner_steps=3)) and learner == _learner(
      run, inner_steps=3)


def _finetune_config(workdir):
  config = linear_regression.get_config("smoke")
  config.unlock()
  config.model = ml_collections.ConfigDict({"name": "finetune", "run": workdir,
                                            "context_points": CONTEXT})
  config.data.loss_from = CONTEXT
  return config


def test_a_learner_keeps_its_checkpoint_and_a_rebuild_reads_a_newer_one(run, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(run[0], workdir)
  config = _finetune_config(workdir)
  learner = build_experiment(config).learner
  checkpoints = Checkpoints(workdir)
  state = checkpoints.restore_latest(init_state(build_experiment(run[3])))
  doubled = jax.tree.map(lambda w: 2 * w, state.params)
  # As a run that trained one step further: its identity is the train state's step.
  checkpoints.save(checkpoints.steps[-1] + 1, state.replace(step=state.step + 1, params=doubled))
  checkpoints.close()
  rebuilt = build_experiment(config).learner
  before, after = learner.transformer()[1], rebuilt.transformer()[1]
  for a, b, w in zip(jax.tree.leaves(after), jax.tree.leaves(before), jax.tree.leaves(run[2]),
                     strict=True):
    np.testing.assert_array_equal(b, w)
    np.testing.assert_array_equal(a, 2 * w)
  # Static jit arguments: equal only when bound to the same checkpoint.
  assert rebuilt.base.step == learner.base.step + 1
  assert rebuilt != learner and rebuilt == build_experiment(config).learner
  assert hash(rebuilt) == hash(build_experiment(config).learner)


def test_zero_steps_is_the_transformers_zero_shot_prediction(run, episode):
  _, transformer, params, _ = run
  predictions = jax.jit(_learner(run, inner_steps=0).predict)(params, episode)
  assert predictions.shape == episode.y.shape
  transformer_predict = jax.jit(transformer.predict)
  for j in range(episode.num_points):
    one_point = episode.prefix(1).replace(x=episode.x[:, j:j + 1])
    np.testing.assert_allclose(predictions[:, j], transformer_predict(params, one_point)[:, 0],
                               rtol=1e-5, atol=1e-6)
  # Position 0 of the full prompt sees no examples either.
  np.testing.assert_allclose(predictions[:, 0], transformer.predict(params, episode)[:, 0],
                             rtol=1e-5, atol=1e-6)


def test_one_sgd_step_equals_a_hand_written_step(run, episode):
  _, transformer, params, _ = run
  lr = 0.01
  mask = episode.mask.at[:, 2].set(0.0)  # one context pair switched off
  predictions = jax.jit(_learner(run, inner_steps=1, learning_rate=lr).predict)(
      params, episode.replace(mask=mask))
  for b in range(episode.batch_size):
    grads = _context_grad(transformer, params, episode.x[b], episode.y[b], mask[b])
    stepped = jax.tree.map(lambda w, g: w - lr * g, params, grads)
    np.testing.assert_allclose(predictions[b], _zero_shot_jit(transformer, stepped, episode.x[b]),
                               rtol=1e-4, atol=1e-5)
  zero_shot = _zero_shot_jit(transformer, params, episode.x[0])
  assert not np.allclose(predictions[0], zero_shot, atol=1e-4)


def test_lora_adapters_start_at_the_checkpoint_with_a_fixed_gaussian_a(run):
  params, rank = run[2], 2
  adapters = _learner(run, rank=rank).adapters(params)
  assert sorted(adapters) == sorted(["read_in/kernel", "read_out/kernel", "block_0/attn/qkv/kernel",
                                     "block_0/attn/out/kernel", "block_0/mlp_in/kernel",
                                     "block_0/mlp_out/kernel"])
  normalised = []
  for name, adapter in adapters.items():
    kernel = params
    for key in name.split("/"):
      kernel = kernel[key]
    fan_in, fan_out = kernel.shape
    assert adapter["a"].shape == (fan_in, rank) and adapter["b"].shape == (rank, fan_out)
    np.testing.assert_array_equal(adapter["b"], 0.0)
    normalised.append(np.ravel(adapter["a"]) * np.sqrt(fan_in))
  assert np.std(np.concatenate(normalised)) == pytest.approx(1.0, abs=0.15)
  same = _learner(run, rank=rank).adapters(params)
  other = _learner(run, rank=rank, seed=1).adapters(params)
  np.testing.assert_array_equal(same["read_in/kernel"]["a"], adapters["read_in/kernel"]["a"])
  assert not np.allclose(other["read_in/kernel"]["a"], adapters["read_in/kernel"]["a"])


def test_one_lora_sgd_step_equals_a_hand_written_step(run, episode):
  _, transformer, params, _ = run
  lr, rank = 0.1, 2
  learner = _learner(run, inner_steps=1, learning_rate=lr, rank=rank)
  predictions = jax.jit(learner.predict)(params, episode)
  adapters = learner.adapters(params)  # the fixed A (and B = 0) the step starts from

  def merged(adapters):  # written out by hand: W + A·B on the six Dense kernels
    def kernel(path, w):
      name = "/".join(key.key for key in path)
      return w + adapters[name]["a"] @ adapters[name]["b"] if name in adapters else w
    return jax.tree_util.tree_map_with_path(kernel, params)

  b = 1
  x, y, mask = episode.x[b], episode.y[b], episode.mask[b]
  loss = lambda adapters: _context_loss(transformer, merged(adapters), x, y, mask)
  stepped = jax.tree.map(lambda a, g: a - lr * g, adapters, jax.jit(jax.grad(loss))(adapters))
  np.testing.assert_allclose(predictions[b], _zero_shot_jit(transformer, merged(stepped), x),
                             rtol=1e-4, atol=1e-5)
  # From B = 0 the step leaves A and moves B by −lr·Aᵀ∇_W, so W' = W − lr·A·Aᵀ·∇_W L.
  weights = learner.fine_tuned(params, x[:CONTEXT], y[:CONTEXT], mask[:CONTEXT])
  full_grads = _context_grad(transformer, params, x, y, mask)

  def closed_form(path, w, g):
    name = "/".join(key.key for key in path)
    if name not in adapters:
      return w  # biases, LayerNorms and the position table are frozen
    a = adapters[name]["a"]
    return w - lr * a @ (a.T @ g)

  expected = jax.tree_util.tree_map_with_path(closed_form, params, full_grads)
  for got, want in zip(jax.tree.leaves(weights), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_one_adam_step_moves_each_weight_by_the_learning_rate_against_its_gradient_sign(
    run, episode):
  _, transformer, params, _ = run
  lr, b = 1e-3, 0
  learner = _learner(run, inner_steps=1, learning_rate=lr, optimizer="adam")
  x, y, mask = episode.x[b], episode.y[b], episode.mask[b]
  weights = learner.fine_tuned(params, x[:CONTEXT], y[:CONTEXT], mask[:CONTEXT])
  grads = _context_grad(transformer, params, x, y, mask)
  # Adam's first bias-corrected step is g / (|g| + ε) (ε = 1e-8).
  expected = jax.tree.map(lambda w, g: w - lr * g / (jnp.abs(g) + 1e-8), params, grads)
  for got, want in zip(jax.tree.leaves(weights), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_masked_off_pairs_do_not_count(run, episode):
  params = run[2]
  predict = jax.jit(_learner(run, inner_steps=2, learning_rate=0.01).predict)
  mask = episode.mask.at[:, 1].set(0.0)
  moved_y = episode.y.at[:, 1].add(5.0)
  masked = predict(params, episode.replace(mask=mask))
  np.testing.assert_allclose(predict(params, episode.replace(mask=mask, y=moved_y)), masked,
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(predict(params, episode.replace(y=moved_y)), masked, atol=1e-4)
  # Only the context's mask is read: switching off query positions changes nothing.
  unmasked = predict(params, episode)
  np.testing.assert_allclose(
      predict(params, episode.replace(mask=episode.mask.at[:, CONTEXT:].set(0.0))), unmasked,
      rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("optimizer,learning_rate,rank",
                         [("sgd", 0.01, 0), ("sgd", 0.01, 2), ("adam", 0.01, 0), ("adam", 0.01, 2)])
def test_more_steps_lower_the_context_loss(run, episode, optimizer, learning_rate, rank):
  _, transformer, params, _ = run
  context_x = episode.x[:, :CONTEXT].reshape(-1, episode.dim)
  zero_shot = _zero_shot_jit(transformer, params, context_x).reshape(episode.batch_size, CONTEXT,
                                                                     -1)
  losses = [_mean_context_loss(zero_shot, episode)]
  for steps in (4, 16):
    learner = _learner(run, inner_steps=steps, learning_rate=learning_rate, optimizer=optimizer,
                       rank=rank)
    losses.append(_mean_context_loss(jax.jit(learner.predict)(params, episode), episode))
  assert losses[0] > losses[1] > losses[2], losses


def test_an_experiment_takes_the_finetune_model_section(run):
  config = _finetune_config(run[0])
  assert isinstance(build_experiment(config).learner, FineTune)
  config.model.context_points = config.data.points
  with pytest.raises(ConfigError, match="context_points=7 leaves no query"):
    build_experiment(config)


def test_missing_run_directory_names_it(run, episode, tmp_path):
  with pytest.raises(ConfigError, match="nowhere' is not a metalearn run"):
    build_experiment(_finetune_config(str(tmp_path / "nowhere")))
  with pytest.raises(ConfigError, match="nowhere' is not a metalearn run"):
    load_base_run(str(tmp_path / "nowhere"))
  # A learner that was never bound reads nothing itself: it says what binds it.
  learner = FineTune(run=str(tmp_path / "nowhere"), context_points=CONTEXT)
  with pytest.raises(ValueError, match="nowhere' is not bound to the run's transformer"):
    learner.init(jax.random.PRNGKey(0), episode)


def test_a_run_whose_base_is_itself_is_refused(run, tmp_path):
  workdir = str(tmp_path / "loop")
  shutil.copytree(run[0], workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(_finetune_config(workdir).to_json())
  with pytest.raises(ConfigError, match="loop' builds on itself"):
    build_experiment(_finetune_config(workdir))


def test_a_run_of_another_learner_is_refused(tmp_path, episode):
  config = gd_layers_configs.get_config("smoke")
  config.unlock()
  config.train.update(num_steps=10, checkpoint_every=10)
  workdir = str(tmp_path / "gd_layers")
  train_and_evaluate(config, workdir)
  message = "trained a 'gd_layers' learner .* needs a transformer run"
  with pytest.raises(ValueError, match=message):
    FineTune(run=workdir, context_points=CONTEXT).with_base(load_base_run(workdir))
  with pytest.raises(ConfigError, match=message):
    build_experiment(_finetune_config(workdir))


@pytest.mark.parametrize("fields,message", [
    ({"optimizer": "rmsprop"}, "unknown finetune optimizer 'rmsprop'; allowed: sgd, adam"),
    ({"rank": -1}, "rank must be an integer >= 0, got -1"),
    ({"inner_steps": -2}, "inner_steps must be an integer >= 0, got -2"),
    ({"learning_rate": 0.0}, "learning_rate must be a number > 0, got 0.0"),
    ({"context_points": 0}, "context_points must be an integer >= 1, got 0"),
    ({"inner_loss": "hinge"}, "unknown loss 'hinge'; allowed: squared_error"),
])
def test_bad_fields_are_refused_with_the_allowed_values(fields, message):
  with pytest.raises(ValueError, match=message):
    FineTune(**{"run": "unused", "context_points": CONTEXT, **fields})


def test_a_loss_other_than_the_tasks_is_refused(run):
  learner = _learner(run)
  learner.check_loss("squared_error")
  with pytest.raises(ValueError, match="inner_loss 'squared_error' is not the task's loss "
                                       "'logistic'"):
    learner.check_loss("logistic")


def test_shapes_the_transformer_cannot_take_are_refused(run, episode):
  learner, params = _learner(run), run[2]
  with pytest.raises(ValueError, match="y is 2 wide but the transformer .* reads out 1"):
    learner.predict(params, episode.replace(y=jnp.concatenate([episode.y, episode.y], -1)))
  with pytest.raises(ValueError, match="inputs of dim 4 do not fit .* tokens are 3 wide"):
    learner.check_episode(episode.num_points, 4)
  with pytest.raises(ValueError, match="context_points=4 exceeds the prompts' 3 points"):
    learner.init(jax.random.PRNGKey(0), episode.prefix(3))


def test_the_learner_modules_import_nothing_above_the_learners():
  """Learners are pure functions of their params: no engine, evaluation, analysis or comparison
  import, function-local ones included, and none pulled in on import either."""
  above = ("metalearn.engine", "metalearn.evaluation", "metalearn.analysis",
           "metalearn.comparison")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for module in ("finetune", "fine_tuning"):
    with open(os.path.join(root, "metalearn", "learners", f"{module}.py")) as f:
      tree = ast.parse(f.read())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.startswith(above)], imported
  loaded = subprocess.run(
      [sys.executable, "-c", "import sys, metalearn.learners.finetune; "
       "print(sorted(m for m in sys.modules if m.startswith('metalearn.')))"],
      cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")[0]
  assert "metalearn.learners.finetune" in loaded
  assert not [m for m in ast.literal_eval(loaded) if m.startswith(above)], loaded
