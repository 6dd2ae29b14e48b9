"""Explicit inner loops: MAML and its family adapt a base network on each episode's context.

Every learner here takes a fixed context (`context_points`): per episode (vmap) it runs
`inner_steps` gradient steps (lax.scan) on the inner loss over the first `context_points`
pairs, then predicts every position with the adapted weights. The train step's loss, counted
from `data.loss_from >= context_points`, is the query loss after adaptation, so its gradient
is the meta-gradient: second order through the scan (MAML), or with the inner gradients held
constant (first order), as Finn et al. 2017, Eq. 1.

The inner step size is a traced argument of `predict_with`, so a sweep over it compiles once.
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from metalearn.core import checks, losses
from metalearn.core.episode import Episode
from metalearn.learners.base import Learner, Params, tree_size
from metalearn.learners.networks import BaseNetwork
from metalearn.learners.registry import LEARNERS


def gradient_step(phi: Any, grads: Any, rate: Any) -> Any:
  """φ − α·g over pytrees; α a scalar or a pytree shaped like φ (Meta-SGD's rates)."""
  if isinstance(rate, Mapping):
    return jax.tree.map(lambda p, g, r: p - r * g, phi, grads, rate)
  return jax.tree.map(lambda p, g: p - rate * g, phi, grads)


@dataclasses.dataclass(frozen=True)
class InnerLoop(Learner):
  """What the MAML family shares: the base network, the context, the inner steps.

  Subclasses say which parameters adapt and how the meta-gradient is formed.
  """

  network: str = "mlp"            # base network: mlp | conv4
  widths: tuple[int, ...] = (40, 40)  # mlp hidden widths (Finn et al.: 1-40-40-1)
  filters: int = 64               # conv4 filters per layer
  image_size: int = 0             # conv4 input side (inputs are flattened images)
  context_points: int = 10        # the first pairs of each prompt are the inner loop's data
  inner_steps: int = 1            # gradient steps on the context (training)
  eval_inner_steps: tuple[int, ...] = (0, 1, 10)  # inner steps the evaluation reports
  step_size: float = 0.01         # inner step size α
  inner_loss: str = "squared_error"  # the loss the inner loop descends (metalearn.core.losses)
  remat: bool = False             # recompute each inner step in the backward pass (flat memory)
  # Unroll the inner scan: XLA fuses across steps (second-order MAML on the sinusoid MLP ran
  # 1.5x faster) but keeps more buffers live (conv-4 meta-gradient memory grew with the steps).
  unroll: bool = False

  def __post_init__(self):
    self.base_network()  # validates the network fields
    checks.check_int(f"{self.kind} context_points", self.context_points, 1, name_kind=False)
    for steps in (self.inner_steps, *self.eval_inner_steps):
      checks.check_int(f"{self.kind} inner steps", steps, 0, name_kind=False)
    checks.check_positive(f"{self.kind} step_size", self.step_size, name_kind=False)
    losses.get(self.inner_loss)

  @property
  def kind(self) -> str:
    return type(self).__name__

  def base_network(self) -> BaseNetwork:
    return BaseNetwork(self.network, tuple(self.widths), self.filters, self.image_size)

  def check_episode(self, num_points: int, dim: int) -> None:
    self.base_network().check_dim(dim)

  def check_loss(self, loss_name: str) -> None:
    if loss_name != self.inner_loss:
      raise ValueError(f"{self.kind} inner_loss={self.inner_loss!r} differs from the task's "
                       f"loss {loss_name!r}; allowed: {loss_name!r}")

  def evaluation_variants(self, name: str) -> dict[str, Learner]:
    return {f"{name}, {k} step{'' if k == 1 else 's'}": dataclasses.replace(self, inner_steps=k)
            for k in self.eval_inner_steps}

  def init(self, rng: jax.Array, episode: Episode) -> Params:
    self.check_episode(episode.num_points, episode.dim)
    return {"net": self.base_network().init(rng, episode.x[0], episode.y.shape[-1])}

  def adapted_weights(self, params: Params) -> Params:
    """The weights the inner loop moves: what the context leaves behind."""
    return params["net"]

  def state_floats(self, params: Params, episode: Episode) -> int:
    return tree_size(self.adapted_weights(params))

  def context(self, episode: Episode) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, y, weights) of the context pairs [batch, context_points, ...] the inner loop fits.

    Sliced statically, so the inner loop never computes on the queries; the weights are
    the episode's mask there (a masked-off pair does not count).
    """
    k = self.context_points
    return episode.x[:, :k], episode.y[:, :k], episode.mask[:, :k]

  def predict(self, params: Params, episode: Episode) -> jax.Array:
    return self.predict_with(params, episode, self.step_size)

  def predict_with(self, params: Params, episode: Episode, step_size: jax.Array | float
                   ) -> jax.Array:
    """Every position predicted by the network adapted on the context, step size traced."""
    adapt = lambda context, x: self.adapt_and_apply(params, context, x, step_size)
    return jax.vmap(adapt)(self.context(episode), episode.x)

  def inner_objective(self, apply: Callable[[Any], jax.Array], y: jax.Array,
                      weights: jax.Array) -> Callable[[Any], jax.Array]:
    """φ -> the mean inner loss over the context, for a network `apply(φ) -> ŷ [P, out]`."""
    point_loss = losses.get(self.inner_loss)
    return lambda phi: losses.masked_mean(point_loss(apply(phi), y), weights)

  def descend(self, objective: Callable[[Any], jax.Array], start: Any, rate: Any,
              first_order: bool) -> Any:
    """`inner_steps` steps φ ← φ − α∇objective(φ) from `start` (lax.scan).

    With `first_order` the inner gradients are constants of the meta-gradient.
    """
    def step(phi, _):
      grads = jax.grad(objective)(phi)
      if first_order:
        grads = jax.lax.stop_gradient(grads)
      return gradient_step(phi, grads, rate), None

    if self.remat:
      # The scan already keeps XLA from merging the recomputation with the forward pass;
      # with CSE prevention on top, a 1-step loop (which XLA unrolls) took 7% more memory.
      step = jax.checkpoint(step, prevent_cse=False)
    phi, _ = jax.lax.scan(step, start, None, length=self.inner_steps, unroll=self.unroll)
    return phi

  def adapt_and_apply(self, params: Params, context: tuple[jax.Array, jax.Array, jax.Array],
                      x: jax.Array, step_size: jax.Array | float) -> jax.Array:
    """One episode: adapt on context = (x_c, y_c, weights), predict x [P, dim] -> [P, out]."""
    raise NotImplementedError


@LEARNERS.register("maml")
@dataclasses.dataclass(frozen=True)
class MAML(InnerLoop):
  """MAML (Finn et al. 2017): all weights adapt; second-order meta-gradient by default."""

  first_order: bool = False  # hold the inner gradients constant (first-order MAML)

  def adapt_and_apply(self, params, context, x, step_size):
    net, (x_c, y_c, weights) = self.base_network(), context
    objective = self.inner_objective(lambda phi: net.apply(phi, x_c), y_c, weights)
    phi = self.descend(objective, params["net"], step_size, self.first_order)
    return net.apply(phi, x)


@LEARNERS.register("metasgd")
@dataclasses.dataclass(frozen=True)
class MetaSGD(InnerLoop):
  """Meta-SGD (Li et al. 2017): a learned step size per parameter, initialised to step_size.

  `predict_with`'s step size scales the learned rates (1.0 leaves them as learned).
  """

  first_order: bool = False  # hold the inner gradients constant

  def init(self, rng, episode):
    params = super().init(rng, episode)
    rates = jax.tree.map(lambda p: jnp.full_like(p, self.step_size), params["net"])
    return {**params, "step_sizes": rates}

  def predict(self, params, episode):
    return self.predict_with(params, episode, 1.0)

  def adapt_and_apply(self, params, context, x, step_size):
    net, (x_c, y_c, weights) = self.base_network(), context
    objective = self.inner_objective(lambda phi: net.apply(phi, x_c), y_c, weights)
    rates = jax.tree.map(lambda r: step_size * r, params["step_sizes"])
    phi = self.descend(objective, params["net"], rates, self.first_order)
    return net.apply(phi, x)


@LEARNERS.register("anil")
@dataclasses.dataclass(frozen=True)
class ANIL(InnerLoop):
  """ANIL (Raghu et al. 2020): only the head adapts; the body's features are computed once."""

  first_order: bool = False  # hold the inner gradients constant

  def adapted_weights(self, params: Params) -> Params:
    return params["net"]["head"]

  def adapt_and_apply(self, params, context, x, step_size):
    net, (x_c, y_c, weights) = self.base_network(), context
    features = net.features(params["net"]["body"], x)
    context_features = net.features(params["net"]["body"], x_c)
    objective = self.inner_objective(lambda head: net.head(head, context_features), y_c, weights)
    head = self.descend(objective, params["net"]["head"], step_size, self.first_order)
    return net.head(head, features)
