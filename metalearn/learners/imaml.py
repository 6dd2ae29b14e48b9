"""iMAML (Rajeswaran et al. 2019): implicit meta-gradients of a proximal inner problem.

The inner loop approximately solves φ* = argmin_φ L_ctx(φ) + (λ/2)‖φ − θ‖² by `inner_steps`
gradient steps from θ. Its meta-gradient is (I + H/λ)⁻¹ ∇L_query(φ*) (their Eq. 6), H the
Hessian of L_ctx at φ*, solved by `cg_steps` conjugate-gradient steps on Hessian-vector
products. The backward pass never differentiates the inner steps, so memory does not grow
with their number.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from metalearn.core import checks
from metalearn.learners.inner_loop import InnerLoop, gradient_step
from metalearn.learners.registry import LEARNERS


def conjugate_gradient(matvec: Callable[[Any], Any], b: Any, steps: int) -> Any:
  """`steps` CG iterations for A x = b from x = 0, A symmetric positive definite, on pytrees.

  A fixed number of steps (no tolerance test) keeps it one compiled shape under vmap.
  """
  def body(_, carry):
    x, r, p, rs = carry
    ap = matvec(p)
    curvature = optax.tree.vdot(p, ap)
    alpha = jnp.where(curvature > 0, rs / jnp.where(curvature > 0, curvature, 1.0), 0.0)
    x = jax.tree.map(lambda x_, p_: x_ + alpha * p_, x, p)
    r = jax.tree.map(lambda r_, a_: r_ - alpha * a_, r, ap)
    rs_new = optax.tree.vdot(r, r)
    beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
    p = jax.tree.map(lambda r_, p_: r_ + beta * p_, r, p)
    return x, r, p, rs_new

  x0 = jax.tree.map(jnp.zeros_like, b)
  x, *_ = jax.lax.fori_loop(0, steps, body, (x0, b, b, optax.tree.vdot(b, b)))
  return x


@LEARNERS.register("imaml")
@dataclasses.dataclass(frozen=True)
class IMAML(InnerLoop):
  """iMAML: all weights adapt by proximal gradient steps; implicit meta-gradient by CG."""

  lam: float = 2.0    # λ, the proximal regularisation strength (2 in their Omniglot runs)
  cg_steps: int = 5   # conjugate-gradient steps for (I + H/λ)⁻¹ g

  def __post_init__(self):
    super().__post_init__()
    checks.check_positive("IMAML lam", self.lam, name_kind=False)
    checks.check_int("IMAML cg_steps", self.cg_steps, 1, name_kind=False)

  def adapt_and_apply(self, params, context, x, step_size):
    phi = self.proximal_solution(params["net"], (*context, jnp.asarray(step_size)))
    return self.base_network().apply(phi, x)

  def context_loss(self, data) -> Callable[[Any], jax.Array]:
    x, y, weights, _ = data
    net = self.base_network()
    return self.inner_objective(lambda phi: net.apply(phi, x), y, weights)

  def solve(self, theta: Any, data) -> Any:
    """`inner_steps` gradient steps on L_ctx(φ) + (λ/2)‖φ − θ‖² from φ = θ."""
    context_loss, step_size = self.context_loss(data), data[-1]

    def proximal(phi):
      offset = jax.tree.map(jnp.subtract, phi, theta)
      return context_loss(phi) + 0.5 * self.lam * optax.tree.vdot(offset, offset)

    step = lambda phi, _: (gradient_step(phi, jax.grad(proximal)(phi), step_size), None)
    return jax.lax.scan(step, theta, None, length=self.inner_steps, unroll=self.unroll)[0]

  def proximal_solution(self, theta: Any, data) -> Any:
    """φ* from θ, differentiable: its vector-Jacobian product is the implicit one.

    `data` = (context x, y, weights, step size) goes in as an argument, not a closure,
    because a custom VJP may not close over values that vmap traces.
    """
    @jax.custom_vjp
    def implicit(theta, data):
      return self.solve(theta, data)

    def forward(theta, data):
      phi = self.solve(theta, data)
      return phi, (phi, data)

    def backward(residuals, g):
      phi, data = residuals
      gradient = jax.grad(self.context_loss(data))
      hvp = lambda v: jax.jvp(gradient, (phi,), (v,))[1]
      matvec = lambda v: jax.tree.map(lambda a, b: a + b / self.lam, v, hvp(v))
      return conjugate_gradient(matvec, g, self.cg_steps), jax.tree.map(jnp.zeros_like, data)

    implicit.defvjp(forward, backward)
    return implicit(theta, data)
