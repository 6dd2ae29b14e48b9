"""Fine-tuning a trained transformer on a prompt's examples: learning by training, not in context.

The counterpart of in-context learning from the same checkpoint (Dai et al. 2022, "Why can GPT
learn in-context?", compare ICL with fine-tuning on the demonstrations). For each prompt a copy
of the transformer's weights takes `inner_steps` optimizer steps on the mean loss of its
*zero-shot* predictions for the first `context_points` pairs: pair i is predicted from the
one-point prompt (x_i) alone, which sees no examples. Every position j is then predicted
zero-shot by the fine-tuned copy, so the examples reach the prediction through the weights only.

With `rank` r > 0 only a low-rank adapter is trained (LoRA, Hu et al. 2021): every 2-D Dense
kernel W [in, out] becomes W + A·B with A [in, r] ~ N(0, 1/in) from a fixed key and B [r, out]
= 0, so the copy starts as the checkpoint. LoRA's α/r scale is left out: it only rescales the
learning rate.
"""

import concurrent.futures
import dataclasses
import functools
import math
import os

import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

from metalearn.core import checks, losses
from metalearn.engine.checkpoints import saved_steps
from metalearn.core.episode import Episode
from metalearn.learners.base import Learner, Params
from metalearn.learners.registry import LEARNERS
from metalearn.learners.transformer import Transformer

OPTIMIZERS = ("sgd", "adam")


def _load_transformer_run(run: str) -> tuple[Transformer, Params]:
  """(transformer, params at its latest checkpoint) of the run in `run`, loaded once per path
  and set of checkpoints: a run that has saved a new checkpoint since is read again."""
  return _load_transformer_checkpoint(run, saved_steps(run))


@functools.lru_cache(maxsize=None)
def _load_transformer_checkpoint(run: str, steps: tuple[int, ...]) -> tuple[Transformer, Params]:
  del steps  # only part of the cache key
  from metalearn.engine.runs import load_run  # metalearn.engine.runs imports metalearn.learners
  # The first call may come from inside a trace (a jitted `predict`, `init_state`), where the
  # restore would see tracers. JAX's trace state is per thread: a fresh thread restores
  # concrete arrays (and fast; `jax.ensure_compile_time_eval` runs the restore op by op).
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    learner, params, config = pool.submit(load_run, run).result()
  if not isinstance(learner, Transformer):
    raise ValueError(f"finetune run {run!r} trained a {config.model.name!r} learner "
                     f"({type(learner).__name__}); fine-tuning needs a transformer run")
  return learner, params


def _check_int(field: str, value, minimum: int) -> None:
  checks.check_int(f"finetune {field}", value, minimum)


def _lora_kernels(params: Params) -> list[tuple[str, ...]]:
  """The paths of every 2-D Dense kernel, in a fixed (sorted) order."""
  flat = flax.traverse_util.flatten_dict(params)
  return sorted(path for path, leaf in flat.items() if path[-1] == "kernel" and leaf.ndim == 2)


@LEARNERS.register("finetune")
@dataclasses.dataclass(frozen=True)
class FineTune(Learner):
  """Per-prompt fine-tuning of a trained transformer, then zero-shot prediction.

  `init` gives the run's transformer params; `predict(params, episode)[:, j]` is the
  fine-tuned copy's zero-shot prediction for x_j. Positions before `context_points`
  are the (fitted) examples; only the later ones are held-out queries.
  """

  run: str                       # work directory of a trained transformer run (metalearn.engine.runs)
  context_points: int            # the first context_points pairs of each prompt are trained on
  inner_steps: int = 10          # optimizer steps per prompt (0: the zero-shot transformer)
  learning_rate: float = 1e-2    # step size of the per-prompt optimizer
  optimizer: str = "sgd"         # sgd | adam (optax), fresh state for every prompt
  rank: int = 0                  # 0: fine-tune all weights; r > 0: rank-r adapters on each kernel
  seed: int = 0                  # root of the adapters' fixed random A
  inner_loss: str = "squared_error"  # the loss descended, a name in metalearn.core.losses

  trainable = False  # no meta-parameters of its own

  def __post_init__(self):
    if not isinstance(self.run, str) or not self.run:
      raise ValueError(f"finetune run must be a run's work directory, got {self.run!r}")
    _check_int("context_points", self.context_points, 1)
    _check_int("inner_steps", self.inner_steps, 0)
    _check_int("rank", self.rank, 0)
    _check_int("seed", self.seed, 0)
    checks.check_positive("finetune learning_rate", self.learning_rate)
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"unknown finetune optimizer {self.optimizer!r}; "
                       f"allowed: {', '.join(OPTIMIZERS)}")
    losses.get(self.inner_loss)  # an unknown name fails here, with the allowed ones

  def transformer(self) -> tuple[Transformer, Params]:
    """The run's transformer learner and its params at its latest checkpoint."""
    return _load_transformer_run(os.path.abspath(self.run))

  def check_loss(self, loss_name: str) -> None:
    if loss_name != self.inner_loss:
      raise ValueError(f"finetune inner_loss {self.inner_loss!r} is not the task's loss "
                       f"{loss_name!r}; set model.inner_loss={loss_name!r}")

  def check_episode(self, num_points: int, dim: int) -> None:
    transformer, params = self.transformer()
    transformer.check_episode(1, dim)  # every pass is a one-point prompt
    if self.context_points > num_points:
      raise ValueError(f"finetune context_points={self.context_points} exceeds the prompts' "
                       f"{num_points} points; allowed: at most {num_points}")
    width, out_dim = params["read_in"]["kernel"].shape[0], params["read_out"]["kernel"].shape[1]
    if transformer.token_width(dim, out_dim) != width:
      if transformer.layout != "interleaved":
        allowed = f"dim = {width - out_dim}"
      else:
        allowed = f"dim = {width}" if out_dim < width else f"dim <= {width}"
      raise ValueError(f"inputs of dim {dim} do not fit the transformer of run {self.run!r}, "
                       f"whose tokens are {width} wide; allowed: {allowed}")

  def _check_out(self, params: Params, y: jax.Array) -> None:
    out_dim = params["read_out"]["kernel"].shape[-1]
    if y.shape[-1] != out_dim:
      raise ValueError(f"the episode's y is {y.shape[-1]} wide but the transformer of run "
                       f"{self.run!r} reads out {out_dim}; allowed: y width {out_dim}")

  def init(self, rng: jax.Array, episode: Episode) -> Params:
    """The run's trained transformer params (`rng` is not used)."""
    self.check_episode(episode.num_points, episode.dim)
    params = self.transformer()[1]
    self._check_out(params, episode.y)
    return params

  def adapters(self, params: Params) -> dict[str, dict[str, jax.Array]]:
    """The initial LoRA adapters, {'/'.join(kernel path): {'a': A [in, r], 'b': B [r, out]}}.

    A ~ N(0, 1/in) from fold_in(PRNGKey(seed), kernel index), B = 0: the same for every prompt.
    """
    flat = flax.traverse_util.flatten_dict(params)
    root = jax.random.PRNGKey(self.seed)
    adapters = {}
    for index, path in enumerate(_lora_kernels(params)):
      fan_in, fan_out = flat[path].shape
      a = jax.random.normal(jax.random.fold_in(root, index), (fan_in, self.rank), flat[path].dtype)
      adapters["/".join(path)] = {"a": a / math.sqrt(fan_in),
                                  "b": jnp.zeros((self.rank, fan_out), flat[path].dtype)}
    return adapters

  def merge(self, params: Params, adapters: dict[str, dict[str, jax.Array]]) -> Params:
    """The transformer weights with every adapted kernel W replaced by W + A·B."""
    flat = dict(flax.traverse_util.flatten_dict(params))
    for name, adapter in adapters.items():
      path = tuple(name.split("/"))
      flat[path] = flat[path] + adapter["a"] @ adapter["b"]
    return flax.traverse_util.unflatten_dict(flat)

  def fine_tuned(self, params: Params, x_context: jax.Array, y_context: jax.Array,
                 context_mask: jax.Array) -> Params:
    """One prompt's transformer weights after the inner loop on its context.

    x_context [C, D], y_context [C, O], context_mask [C]: the pairs with mask 0 do not count.
    """
    transformer = self.transformer()[0]
    loss_fn = losses.get(self.inner_loss)
    to_weights = (lambda t: t) if self.rank == 0 else (lambda t: self.merge(params, t))

    def context_loss(trainable):
      y_hat = _zero_shot(transformer, to_weights(trainable), x_context)       # [C, O]
      return losses.masked_mean(loss_fn(y_hat, y_context), context_mask)

    optimizer = optax.sgd(self.learning_rate) if self.optimizer == "sgd" else optax.adam(
        self.learning_rate)
    trainable = params if self.rank == 0 else self.adapters(params)

    def step(carry, _):
      trainable, opt_state = carry
      grads = jax.grad(context_loss)(trainable)
      updates, opt_state = optimizer.update(grads, opt_state, trainable)
      return (optax.apply_updates(trainable, updates), opt_state), None

    (trainable, _), _ = jax.lax.scan(step, (trainable, optimizer.init(trainable)), None,
                                     length=self.inner_steps)
    return to_weights(trainable)

  def predict(self, params: Params, episode: Episode) -> jax.Array:
    """[batch, points, out]: each prompt's fine-tuned copy, zero-shot at every position."""
    self.check_episode(episode.num_points, episode.dim)
    self._check_out(params, episode.y)
    transformer = self.transformer()[0]
    c = self.context_points

    def one_prompt(x, y, mask):
      weights = self.fine_tuned(params, x[:c], y[:c], mask[:c])
      return _zero_shot(transformer, weights, x)

    return jax.vmap(one_prompt)(episode.x, episode.y, episode.mask)


def _zero_shot(transformer: Transformer, weights: Params, x: jax.Array) -> jax.Array:
  """x [N, D] -> [N, O]: the transformer on N one-point prompts (x_n), which see no examples."""
  num, out_dim = x.shape[0], weights["read_out"]["kernel"].shape[-1]
  # The prediction for x_0 is read at x_0's token, before y_0: the zeros are never seen.
  one_point = Episode(x=x[:, None], y=jnp.zeros((num, 1, out_dim), x.dtype),
                      mask=jnp.ones((num, 1), x.dtype), zero_loss=jnp.ones((num,), x.dtype))
  return transformer.predict(weights, one_point)[:, 0]

