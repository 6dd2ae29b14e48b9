"""A mixture of task families: each prompt follows one component, drawn per prompt (Bai et al.
2023, "Transformers as statisticians": one model over noise levels, or over linear and sparse
regression, against the Bayes predictor of the mixture).

    task.name = "mixture"; task.weights = (0.5, 0.5)
    task.components = ({"name": "linear_regression", "dim": 8, "noise_std": 0.1},
                       {"name": "linear_regression", "dim": 8, "noise_std": 1.0})

The components must make prompts of one shape and one info structure (checked by tracing one
prompt of each, before anything compiles). A prompt's info is its component's, plus
"component", the component's index. At evaluation each component is scored on its own beside
the mixture (`held_out_families`), so that a model is compared with the Bayes predictor at
every noise level.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from metalearn.core import checks
from metalearn.tasks.base import TaskFamily
from metalearn.tasks.registry import TASKS

# How far the weights' sum may be from 1 (weights written to a few decimals, or 1/3 thrice).
_WEIGHTS_ATOL = 1e-6


def _section(family: TaskFamily) -> dict:
  """A built family as the config section that builds it."""
  name = next(n for n in TASKS.names if TASKS.get(n) is type(family))
  return {"name": name, **{f.name: getattr(family, f.name) for f in dataclasses.fields(family)}}


def _labels(sections: list[dict]) -> list[str]:
  """Each component named by its family where they differ, and by the fields they share but
  set apart ("noise_std=0.1")."""
  shared = sorted(set.intersection(*(set(s) for s in sections)) - {"name"})
  differ = [k for k in ["name"] + shared if len({repr(s[k]) for s in sections}) > 1]
  labels = [" ".join(str(s[k]) if k == "name" else f"{k}={s[k]}" for k in differ)
            for s in sections]
  if len(set(labels)) < len(labels):  # the same component twice
    labels = [f"component {i}" for i in range(len(sections))]
  return labels


@TASKS.register("mixture")
@dataclasses.dataclass(frozen=True)
class TaskMixture(TaskFamily):
  """Prompts of component c with probability weights[c].

  `components` are task sections (mappings with a 'name', as in a config) or built families,
  kept built so that the mixture stays hashable (a static jit argument); `weights` default to
  uniform. The components' `dim` is the mixture's.
  """

  dim: int = 0                 # the components' (set from them)
  components: Any = ()         # task sections: ({"name": ..., its fields}, ...)
  weights: tuple[float, ...] = ()  # one probability per component, summing to 1; () uniform

  def __post_init__(self):
    components = tuple(self.components)
    if len(components) < 2:
      raise ValueError(f"mixture needs at least 2 components, got {len(components)}: "
                       f"{self.components!r}")
    built = []
    for i, component in enumerate(components):
      if not isinstance(component, TaskFamily):
        component = TASKS.build(dict(component), path=f"task.components[{i}]")
      built.append(component)
    object.__setattr__(self, "components", tuple(built))
    dims = sorted({c.dim for c in built})
    if len(dims) > 1 or self.dim not in (0, dims[0]):
      raise ValueError(f"mixture components must share one dim; got component dims "
                       f"{[c.dim for c in built]} and mixture dim={self.dim} (0: theirs)")
    object.__setattr__(self, "dim", dims[0])
    super().__post_init__()
    self._check_weights()
    for what in ("out_dim", "loss_name", "context_points"):
      values = [getattr(c, what) for c in built]
      if len(set(values)) > 1:
        raise ValueError(f"mixture components disagree in {what}: {values}; allowed: "
                         "components whose prompts are scored alike")
    self._check_prompts_alike()

  def _check_weights(self) -> None:
    weights = tuple(self.weights) or (1.0 / len(self.components),) * len(self.components)
    if len(weights) != len(self.components):
      raise ValueError(f"mixture weights {self.weights!r} has {len(weights)} entries for "
                       f"{len(self.components)} components; allowed: one per component, or ()")
    for i, w in enumerate(weights):
      checks.check_number(f"mixture weights[{i}]", w, at_least=0)
    if not math.isclose(sum(weights), 1.0, abs_tol=_WEIGHTS_ATOL):
      raise ValueError(f"mixture weights {tuple(self.weights)!r} sum to {sum(weights):.9g}; "
                       "allowed: non-negative weights summing to 1")
    object.__setattr__(self, "weights", tuple(float(w) for w in weights))

  def _check_prompts_alike(self) -> None:
    """One traced prompt of each component: the same shapes, dtypes and info keys."""
    shapes = [jax.eval_shape(lambda k, c=c: c.sample_one(k, 2, jnp.ones((self.dim,))),
                             jax.random.PRNGKey(0)) for c in self.components]
    for i, shape in enumerate(shapes[1:], 1):
      if shape != shapes[0]:
        raise ValueError(f"mixture components make prompts of different shapes: component "
                         f"0 gives {shapes[0]}, component {i} gives {shape}; allowed: "
                         "components of one prompt shape and one info structure")

  @property
  def out_dim(self) -> int:
    return self.components[0].out_dim

  @property
  def loss_name(self) -> str:
    return self.components[0].loss_name

  @property
  def context_points(self):
    return self.components[0].context_points

  @property
  def labels(self) -> list[str]:
    """Each component's name in an evaluation: the fields in which the components differ."""
    return _labels([_section(c) for c in self.components])

  def check_points(self, points: int) -> None:
    for component in self.components:
      component.check_points(points)

  def held_out_families(self) -> dict[str, TaskFamily]:
    """The mixture ("mixture") beside each component on its own (named by its label)."""
    return {"mixture": self, **dict(zip(self.labels, self.components))}

  def sample_one(self, rng, points, dim_mask):
    k_component, k_prompt = jax.random.split(rng)
    index = jax.random.choice(k_component, len(self.components),
                              p=jnp.asarray(self.weights, jnp.float32))
    branches = [lambda k, c=c: c.sample_one(k, points, dim_mask) for c in self.components]
    x, y, zero_loss, info = jax.lax.switch(index, branches, k_prompt)
    return x, y, zero_loss, {**info, "component": index}

  def gaussian_components(self) -> list[tuple[float, tuple[float, ...], float]]:
    """The mixture's prior as Gaussian components (learners/bayes_mixture.py), each of its
    components' weighted by that component's probability; a ValueError naming a component
    that is not a Gaussian-prior linear family."""
    out = []
    for i, (weight, component) in enumerate(zip(self.weights, self.components)):
      if not hasattr(component, "gaussian_components"):
        raise ValueError(f"mixture component {i} ({_section(component)['name']}) has no "
                         "Gaussian prior over linear weights; allowed: linear_regression, "
                         "sparse_linear_regression, or mixtures of them")
      out += [(weight * w, std, noise) for w, std, noise in component.gaussian_components()]
    return out
