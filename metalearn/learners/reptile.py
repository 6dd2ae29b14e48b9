"""Reptile (Nichol et al. 2018), its outer update expressed through the shared train step.

Reptile moves θ toward the weights φ its inner loop reaches: θ ← θ + ε·mean_b(φ_b − θ). The
train step differentiates task loss + surrogate; here the predictions carry no gradient
and the surrogate, Σ θ·stop_gradient(mean_b(θ − φ_b)) minus its own value, is 0 with
gradient mean_b(θ − φ_b). So SGD with learning rate ε takes exactly Reptile's step, and
Adam takes the Adam step along it (as Nichol et al. also ran).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from metalearn.learners.inner_loop import InnerLoop
from metalearn.learners.registry import LEARNERS


@LEARNERS.register("reptile")
@dataclasses.dataclass(frozen=True)
class Reptile(InnerLoop):
  """All weights adapt by `inner_steps` SGD steps on the context; no meta-gradient is taken."""

  def adapted(self, params, context, step_size):
    net, (x_c, y_c, weights) = self.base_network(), context
    objective = self.inner_objective(lambda phi: net.apply(phi, x_c), y_c, weights)
    return self.descend(objective, jax.lax.stop_gradient(params["net"]), step_size, True)

  def adapt_and_apply(self, params, context, x, step_size):
    return self.base_network().apply(self.adapted(params, context, step_size), x)

  def training_terms(self, params, episode):
    phi = jax.vmap(lambda context: self.adapted(params, context, self.step_size))(
        self.context(episode))
    y_hat = jax.lax.stop_gradient(jax.vmap(self.base_network().apply)(phi, episode.x))
    direction = jax.tree.map(lambda t, p: jax.lax.stop_gradient(t - jnp.mean(p, axis=0)),
                             params["net"], phi)
    surrogate = optax.tree.vdot(params["net"], direction)
    return y_hat, surrogate - jax.lax.stop_gradient(surrogate)
