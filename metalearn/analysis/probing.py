"""Probing: how well a read-out of a layer's hidden states recovers a quantity of the task.

Akyürek et al. 2022 ("What learning algorithm is in-context learning?", section 5) fit a
probe from a transformer's hidden state at the query token, layer by layer, to quantities an
in-context learning algorithm would compute: the true weights w, the least-squares solution
ŵ = X⁺y on the context, and the moment Xᵀy that one gradient step from w = 0 computes. A
quantity that a layer's probe recovers well on held-out prompts is, in that sense, encoded
there. They use a linear probe and a small MLP probe; both are here, each fitted on a train
split of the prompts and scored by R² on the held-out rest, every layer in one compiled call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.core.checks import check_int, check_number, check_positive
from metalearn.core.episode import Episode, check_context_points
from metalearn.learners.base import Learner, Params
from metalearn.learners.capabilities import HiddenStates

# The probes' fits and scores are measurements: full float32 matmuls on accelerators too.
_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)

PROBES = ("linear", "mlp")
TARGETS = ("weights", "least_squares", "xty")
# Fewer prompts than this in either split make a fit or an R² mostly noise.
_MIN_SPLIT = 4
# Singular values of the context design below this fraction of the largest count as zero.
_PINV_RTOL = 1e-5


def probe_targets(episode: Episode, context_points: int) -> dict[str, jax.Array]:
  """The quantities probed, each [batch, dim·out], from the first `context_points` pairs.

    weights        the task's true w (episode.info["w"]);
    least_squares  the minimum-norm least-squares solution X⁺y;
    xty            Xᵀy, what one gradient step from w = 0 moves along (Akyürek et al. 2022).

  Like the transformer, these read every context pair whatever the episode's mask says.
  """
  if "w" not in episode.info:
    raise ValueError(f"probing needs episodes whose info holds the true weights 'w' (a task "
                     f"that knows them, e.g. linear_regression); info has "
                     f"{sorted(episode.info) or 'nothing'}")
  check_context_points(episode, context_points)
  return _targets(episode.x, episode.y, episode.info["w"], context_points)


@functools.partial(jax.jit, static_argnums=3)
def _targets(x, y, w, context_points):
  x, y = x[:, :context_points], y[:, :context_points]                # [B, K, D], [B, K, O]
  # The pseudo-inverse from an SVD of the design itself keeps its condition number unsquared.
  u, s, vt = jnp.linalg.svd(x, full_matrices=False)                  # [B,K,R], [B,R], [B,R,D]
  keep = s > _PINV_RTOL * s[:, :1]
  s_inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
  least_squares = _einsum("brd,br,bkr,bko->bdo", vt, s_inv, u, y)
  xty = _einsum("bkd,bko->bdo", x, y)
  flat = lambda a: jnp.reshape(a, (a.shape[0], -1))
  return {"weights": flat(w), "least_squares": flat(least_squares), "xty": flat(xty)}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _query_residual(learner: Learner, params: Params, episode: Episode,
                    context_points: int) -> jax.Array:
  # The pass is causal: the points after the query change nothing at it, so they are cut.
  residual = learner.intermediates(params, episode.prefix(context_points + 1))["residual"]
  return residual[:, :, context_points]


def _check_learner(learner: Learner) -> None:
  if not isinstance(learner, HiddenStates):
    raise TypeError(f"probing needs a learner exposing its hidden states through "
                    f"`intermediates(params, episode)` (the transformer); "
                    f"{type(learner).__name__} has none")
  if "residual" not in learner.intermediate_names():
    raise TypeError(f"probing reads the residual stream; the hidden states of "
                    f"{type(learner).__name__} are {list(learner.intermediate_names())}")


def hidden_states(learner: Learner, params: Params, episode: Episode,
                  context_points: int) -> jax.Array:
  """[layers + 1, batch, hidden]: the residual stream at the query token, per layer.

  The query is the x token of point `context_points`, where the prediction made from exactly
  the first `context_points` pairs is read; entry 0 is the embedding, entry l the stream
  after block l (Akyürek et al. 2022 probe these).
  """
  _check_learner(learner)
  check_context_points(episode, context_points)
  return _query_residual(learner, params, episode, context_points)


def _check_probe_settings(num_examples: int, train_fraction, ridge, mlp_width, mlp_steps,
                          mlp_learning_rate) -> int:
  """Raises before anything compiles; returns the number of training examples."""
  check_number("train_fraction", train_fraction, above=0, below=1)
  for name, value in (("ridge", ridge), ("mlp_learning_rate", mlp_learning_rate)):
    check_positive(name, value)
  for name, value in (("mlp_width", mlp_width), ("mlp_steps", mlp_steps)):
    check_int(name, value, 1)
  num_train = int(round(train_fraction * num_examples))
  if min(num_train, num_examples - num_train) < _MIN_SPLIT:
    raise ValueError(f"train_fraction={train_fraction} splits {num_examples} examples into "
                     f"{num_train} train and {num_examples - num_train} held out; each split "
                     f"needs at least {_MIN_SPLIT}: use more episodes or another fraction")
  return num_train


def _standardise(a: jax.Array, num_train: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """a [N, C] in units of its train split's per-column mean and std; and those statistics."""
  mean, std = a[:num_train].mean(0), a[:num_train].std(0)
  std = jnp.where(std > 0, std, 1.0)  # a constant column stays zero instead of dividing by 0
  return (a - mean) / std, mean, std


def _held_out_r2(targets: jax.Array, predictions: jax.Array, num_train: int) -> jax.Array:
  """1 − Σ‖t − t̂‖² / Σ‖t − mean_train(t)‖² over the held-out rows, pooled over coordinates."""
  held_out = targets[num_train:]
  residual = jnp.sum(jnp.square(held_out - predictions[num_train:]))
  spread = jnp.sum(jnp.square(held_out - targets[:num_train].mean(0)))
  return 1.0 - residual / spread


def _linear_probe(features, targets, num_train, ridge):
  """Ridge regression on standardised features with an unpenalised bias, closed form.

  Minimises (1/N)Σ‖t − Wᵀφ − b‖² + ridge·‖W‖² over the train split; centring both sides with
  train means is the unpenalised bias column, and standardised features make `ridge` mean
  the same at every layer whatever the scale of its hidden states.
  """
  phi, _, _ = _standardise(features, num_train)
  target_mean = targets[:num_train].mean(0)
  train_phi, train_t = phi[:num_train], targets[:num_train] - target_mean
  gram = _einsum("nf,ng->fg", train_phi, train_phi) / num_train
  moment = _einsum("nf,nt->ft", train_phi, train_t) / num_train
  w = jnp.linalg.solve(gram + ridge * jnp.eye(gram.shape[0], dtype=gram.dtype), moment)
  return _held_out_r2(targets, _einsum("nf,ft->nt", phi, w) + target_mean, num_train)


def _mlp_probe(features, targets, num_train, rng, width, steps, learning_rate):
  """One hidden GELU layer, full-batch Adam on the train split's mean squared error."""
  phi, _, _ = _standardise(features, num_train)
  # Standardised targets give every quantity (w, Xᵀy, ...) the same scale for one learning rate.
  t, t_mean, t_std = _standardise(targets, num_train)
  k1, k2 = jax.random.split(rng)
  params = {"w1": jax.random.normal(k1, (phi.shape[1], width)) / np.sqrt(phi.shape[1]),
            "b1": jnp.zeros(width),
            "w2": jax.random.normal(k2, (width, t.shape[1])) / np.sqrt(width),
            "b2": jnp.zeros(t.shape[1])}
  apply = lambda p, a: _einsum("nh,ht->nt", jax.nn.gelu(_einsum("nf,fh->nh", a, p["w1"])
                                                        + p["b1"]), p["w2"]) + p["b2"]
  loss = lambda p: jnp.mean(jnp.square(apply(p, phi[:num_train]) - t[:num_train]))
  optimiser = optax.adam(learning_rate)

  def step(carry, _):
    p, opt_state = carry
    updates, opt_state = optimiser.update(jax.grad(loss)(p), opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimiser.init(params)), None, length=steps)
  return _held_out_r2(targets, apply(params, phi) * t_std + t_mean, num_train)


@functools.partial(jax.jit, static_argnames=("num_train", "width", "steps"))
def _probe_layers(features, targets, rng, ridge, learning_rate, *, num_train, width, steps):
  """Both probes' held-out R² [L] for features [L, N, F]: every layer in one compiled call."""
  linear = jax.vmap(lambda f: _linear_probe(f, targets, num_train, ridge))(features)
  keys = jax.random.split(rng, features.shape[0])
  mlp = jax.vmap(lambda f, k: _mlp_probe(f, targets, num_train, k, width, steps,
                                         learning_rate))(features, keys)
  return {"linear": linear, "mlp": mlp}


def probe_features(features, targets, *, train_fraction: float = 0.8, ridge: float = 1e-3,
                   mlp_width: int = 64, mlp_steps: int = 500, mlp_learning_rate: float = 1e-3,
                   seed: int = 0) -> dict[str, np.ndarray]:
  """Held-out R² of a linear and an MLP probe from any features to any targets.

  features [L, N, F] (L layers, each probed on its own) or [N, F]; targets [N, T] or [N].
  The first round(train_fraction·N) rows fit the probes and the rest score them, so rows
  should be i.i.d. prompts. Returns {"linear": R², "mlp": R²}, each [L] (or a scalar for
  [N, F] features). The MLP starts from `jax.random.PRNGKey(seed)`.
  """
  features, targets = jnp.asarray(features, jnp.float32), jnp.asarray(targets, jnp.float32)
  if targets.ndim == 1:
    targets = targets[:, None]
  if features.ndim not in (2, 3) or targets.ndim != 2:
    raise ValueError(f"features must be [layers, N, F] or [N, F] and targets [N, T] or [N]; "
                     f"got features {features.shape} and targets {targets.shape}")
  stacked = features if features.ndim == 3 else features[None]
  if stacked.shape[1] != targets.shape[0]:
    raise ValueError(f"features hold {stacked.shape[1]} examples and targets "
                     f"{targets.shape[0]}; they must be the same examples")
  num_train = _check_probe_settings(targets.shape[0], train_fraction, ridge, mlp_width,
                                    mlp_steps, mlp_learning_rate)
  scores = _probe_layers(stacked, targets, jax.random.PRNGKey(seed), ridge, mlp_learning_rate,
                         num_train=num_train, width=mlp_width, steps=mlp_steps)
  return {name: np.asarray(r2 if features.ndim == 3 else r2[0]) for name, r2 in scores.items()}


def probe(learner: Learner, params: Params, episode: Episode, context_points: int, *,
          train_fraction: float = 0.8, ridge: float = 1e-3, mlp_width: int = 64,
          mlp_steps: int = 500, mlp_learning_rate: float = 1e-3,
          seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Akyürek et al. 2022's probes: {probe: {target: held-out R² [layers + 1]}}.

  Probes in `PROBES` (linear, mlp) read the residual stream at the query token after
  `context_points` pairs (`hidden_states`) and recover each quantity in `TARGETS`
  (`probe_targets`); the episode's prompts are split into train and held out.
  """
  _check_learner(learner)
  _check_probe_settings(episode.batch_size, train_fraction, ridge, mlp_width, mlp_steps,
                        mlp_learning_rate)
  targets = probe_targets(episode, context_points)
  features = hidden_states(learner, params, episode, context_points)
  scores = {name: probe_features(features, target, train_fraction=train_fraction, ridge=ridge,
                                 mlp_width=mlp_width, mlp_steps=mlp_steps,
                                 mlp_learning_rate=mlp_learning_rate, seed=seed)
            for name, target in targets.items()}
  return {p: {name: scores[name][p] for name in targets} for p in PROBES}
