"""Linear-mode interpolation between two GD-layer networks, modulo their scale symmetry.

von Oswald et al. 2022 ("Transformers learn in-context by gradient descent") find that a
trained linear self-attention network and the GD construction are the same function up to a
reparametrisation of the weights. In a plain GD-layer network (no LayerNorm, MLP or softmax)
head h of a layer adds V_h S M_h e_j to token j, S = (1/N) Σ_i e_i e_iᵀ over the context, with

    M_h = W_K,hᵀ W_Q,h   (the score matrix: score_ij = e_iᵀ M_h e_j),   V_h = P_h W_V,h,

so the head is bilinear in (M_h, V_h), and (M, V) → (c·M, V/c) is the same function for any
c ≠ 0, c = −1 included. Averaging raw weights mixes points of these orbits that need not lie
on a common path of low loss, so the straight line between two networks is drawn in aligned
products instead: each head is balanced (‖M‖ = ‖V‖) and b's head takes the sign of a's.
The "barrier" of a path is max_α loss(α) − [(1−α)·loss(0) + α·loss(1)], its largest rise
above the chord between the endpoints (0 on a flat path).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import losses
from metalearn.core.episode import Episode
from metalearn.learners.base import Learner, Params
from metalearn.learners.capabilities import LinearAttentionLayers
from metalearn.tasks import TaskFamily

Products = list[dict[str, jax.Array]]


def _check_learner(learner: Learner, what: str) -> None:
  if not isinstance(learner, LinearAttentionLayers):
    raise ValueError(f"{what}: needs a gd_layers learner, got {type(learner).__name__}")
  extras = learner.attention_layout().nonlinear_options
  if extras:
    raise ValueError(f"{what}: the (M, V) → (c·M, V/c) symmetry holds in a plain linear "
                     f"self-attention network only; turn off {', '.join(extras)}")


def _check_same_shapes(params_a: Params, params_b: Params) -> None:
  shapes = [{jax.tree_util.keystr(path): np.shape(leaf)
             for path, leaf in jax.tree_util.tree_leaves_with_path(p)}
            for p in (params_a, params_b)]
  for leaf in sorted(set(shapes[0]) | set(shapes[1])):
    shape_a, shape_b = (s.get(leaf, "absent") for s in shapes)
    if shape_a != shape_b:
      raise ValueError(f"params_a and params_b differ at leaf {leaf}: shape {shape_a} against "
                       f"{shape_b}; interpolation needs two networks of one architecture")


def _check_alphas(alphas) -> np.ndarray:
  values = np.asarray(alphas, np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f"alphas must be a non-empty 1-D sequence, got shape {values.shape}")
  bad = values[~np.isfinite(values)]
  if bad.size:
    raise ValueError(f"alphas must be finite numbers (extrapolation past [0, 1] is allowed), "
                     f"got {bad[0]}")
  return values


def products(learner: Learner, params: Params) -> Products:
  """Per layer, in the order a pass applies them, the head products.

  {"kq": M = W_Kᵀ W_Q [H, e, e], "pv": V = P W_V [H, e, e]}: all a plain layer computes with.
  """
  _check_learner(learner, "products")
  return learner.head_products(params)


def _balance(m: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per head, c = √(‖V‖/‖M‖) so that ‖c·M‖ = ‖V/c‖; a head with M = 0 or V = 0 adds
  nothing whatever the other is, and becomes (0, 0)."""
  norm_m = jnp.linalg.norm(m, axis=(1, 2))[:, None, None]
  norm_v = jnp.linalg.norm(v, axis=(1, 2))[:, None, None]
  alive = (norm_m > 0) & (norm_v > 0)
  c = jnp.sqrt(jnp.where(alive, norm_v, 1.0) / jnp.where(alive, norm_m, 1.0))
  return jnp.where(alive, c * m, 0.0), jnp.where(alive, v / c, 0.0)


def align(products_a: Products, products_b: Products) -> tuple[Products, Products]:
  """Both networks' products on matching representatives of their (M, V) → (c·M, V/c) orbits.

  Per layer and head: balance each network (c = √(‖V‖/‖M‖), so ‖c·M‖ = ‖V/c‖), then flip
  the sign of b's head, (M_b, V_b) → (−M_b, −V_b), where ⟨M_a, M_b⟩ < 0. Heads are matched by
  index, neither permuted nor mixed (the sum over heads is also invariant under those): with
  one head, the GD construction's case, that is no restriction. Every step keeps each
  network's function exactly (von Oswald et al. 2022: the same function up to reparametrisation).
  """
  if len(products_a) != len(products_b):
    raise ValueError(f"align: {len(products_a)} layers against {len(products_b)}")
  aligned_a, aligned_b = [], []
  for i, (layer_a, layer_b) in enumerate(zip(products_a, products_b)):
    for key in ("kq", "pv"):
      if layer_a[key].shape != layer_b[key].shape:
        raise ValueError(f"align: layer {i} {key} has shape {layer_a[key].shape} against "
                         f"{layer_b[key].shape}")
    m_a, v_a = _balance(layer_a["kq"], layer_a["pv"])
    m_b, v_b = _balance(layer_b["kq"], layer_b["pv"])
    sign = jnp.where(jnp.sum(m_a * m_b, axis=(1, 2)) < 0, -1.0, 1.0)[:, None, None]
    aligned_a.append({"kq": m_a, "pv": v_a})
    aligned_b.append({"kq": sign * m_b, "pv": sign * v_b})
  return aligned_a, aligned_b


def from_products(learner: Learner, products_: Products) -> Params:
  """A param tree computing exactly what `products_` do (the learner writes it)."""
  _check_learner(learner, "from_products")
  return learner.from_head_products(products_)


def _mix(a, b, alpha):
  return jax.tree.map(lambda x, y: (1 - alpha) * x + alpha * y, a, b)


def _aligned(learner: Learner, params_a: Params, params_b: Params) -> tuple[Products, Products]:
  _check_learner(learner, "interpolation")
  _check_same_shapes(params_a, params_b)
  return align(products(learner, params_a), products(learner, params_b))


def interpolate(learner: Learner, params_a: Params, params_b: Params, alphas) -> list[Params]:
  """Per α, the network whose products are (1−α)·a + α·b of the aligned products (`align`)."""
  alphas = _check_alphas(alphas)
  aligned_a, aligned_b = _aligned(learner, params_a, params_b)
  return [from_products(learner, _mix(aligned_a, aligned_b, float(a))) for a in alphas]


def _first_predicted(learner: Learner) -> int:
  # A fixed-context learner's positions before N are its own context; a prefix learner's
  # position 0 has no context at all. Neither is a prediction from in-context examples.
  return 1 if learner.context_points is None else learner.context_points


@functools.partial(jax.jit, static_argnums=(0, 1))
def _path_losses(learner: Learner, task: TaskFamily, stacked: Params, episode: Episode
                 ) -> jax.Array:
  start = _first_predicted(learner)

  def loss(params):
    y_hat = learner.predict(params, episode)[:, start:]
    normalised = task.loss(y_hat, episode.y[:, start:]) / episode.zero_loss[:, None]
    return losses.masked_mean(normalised, episode.mask[:, start:])

  return jax.vmap(loss)(stacked)


def interpolation_losses(learner: Learner, params_a: Params, params_b: Params,
                         task: TaskFamily, episode: Episode, alphas) -> dict:
  """Normalised loss along the aligned path and along the raw-weight average, per α.

  The loss is the task's loss over the zero predictor's, averaged over prompts and over the
  positions the learner predicts (from N on with `context_points` = N, else from 1 on), as in
  `evaluation.scores.normalised_errors`. Every network of both paths and the two endpoints run
  in one compiled call, vmapped over a stack of param trees. Keys: alphas [A], aligned [A],
  raw [A], endpoints (loss(0), loss(1) of params_a and params_b), aligned_barrier, raw_barrier.
  """
  alphas = _check_alphas(alphas)
  aligned_a, aligned_b = _aligned(learner, params_a, params_b)
  if learner.context_points is None and episode.num_points < 2:
    raise ValueError(f"interpolation_losses: a prefix learner predicts from position 1 on; "
                     f"episodes need >= 2 points, got {episode.num_points}")
  path = [from_products(learner, _mix(aligned_a, aligned_b, float(a))) for a in alphas]
  raw = [_mix(params_a, params_b, float(a)) for a in alphas]
  # from_products writes the same names and shapes as a plain layer, so one stack holds all.
  trees = path + raw + [params_a, params_b]
  stacked = jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(l, jnp.float32)
                                                    for l in leaves]), *trees)
  values = np.asarray(_path_losses(learner, task, stacked, episode), np.float64)
  count = len(alphas)
  aligned, raw_loss, (loss_a, loss_b) = values[:count], values[count:2 * count], values[-2:]
  chord = (1 - alphas) * loss_a + alphas * loss_b
  return {"alphas": alphas, "aligned": aligned, "raw": raw_loss,
          "endpoints": (float(loss_a), float(loss_b)),
          "aligned_barrier": float(np.max(aligned - chord)),
          "raw_barrier": float(np.max(raw_loss - chord))}
