"""Fine-tuning a trained transformer on a prompt's examples: learning by training, not in context.

The counterpart of in-context learning from the same checkpoint (Dai et al. 2022, "Why can GPT
learn in-context?", compare ICL with fine-tuning on the demonstrations). For each prompt a copy
of the transformer's weights takes `inner_steps` optimizer steps on the mean loss of its
*zero-shot* predictions for the first `context_points` pairs: pair i is predicted from the
one-point prompt (x_i) alone, which sees no examples. Every position j is then predicted
zero-shot by the fine-tuned copy, so the examples reach the prediction through the weights only.

With `rank` r > 0 only rank-r adapters are trained (LoRA, Hu et al. 2021; see
learners/fine_tuning.py, the routine this learner shares with the ICL-vs-fine-tuning measure).

The learner reads no run: the engine loads the trained run `run` names when it builds the
experiment and binds it (`base_run`, `with_base`); an unbound learner refuses to run.
"""

import dataclasses

import jax
import optax

from metalearn.core import checks, losses
from metalearn.core.episode import Episode
from metalearn.learners import fine_tuning
from metalearn.learners.base import BaseRun, Learner, Params, tree_size
from metalearn.learners.registry import LEARNERS
from metalearn.learners.transformer import Transformer

OPTIMIZERS = ("sgd", "adam")


@LEARNERS.register("finetune")
@dataclasses.dataclass(frozen=True)
class FineTune(Learner):
  """Per-prompt fine-tuning of a trained transformer, then zero-shot prediction.

  `init` gives the run's transformer params; `predict(params, episode)[:, j]` is the
  fine-tuned copy's zero-shot prediction for x_j. Positions before `context_points`
  are the (fitted) examples; only the later ones are held-out queries.
  """

  run: str                       # work directory of a trained transformer run (the engine loads it)
  context_points: int            # the first context_points pairs of each prompt are trained on
  inner_steps: int = 10          # optimizer steps per prompt (0: the zero-shot transformer)
  learning_rate: float = 1e-2    # step size of the per-prompt optimizer
  optimizer: str = "sgd"         # sgd | adam (optax), fresh state for every prompt
  rank: int = 0                  # 0: fine-tune all weights; r > 0: rank-r adapters on each kernel
  seed: int = 0                  # root of the adapters' fixed random A
  inner_loss: str = "squared_error"  # the loss descended, a name in metalearn.core.losses
  # The loaded run, bound by `with_base` (not a config field). It compares by work directory,
  # checkpoint step and learner, never by the arrays (learners are static jit arguments).
  base: BaseRun | None = dataclasses.field(default=None, init=False)

  trainable = False  # no meta-parameters of its own

  def __post_init__(self):
    if not isinstance(self.run, str) or not self.run:
      raise ValueError(f"finetune run must be a run's work directory, got {self.run!r}")
    for field, minimum in (("context_points", 1), ("inner_steps", 0), ("rank", 0), ("seed", 0)):
      checks.check_int(f"finetune {field}", getattr(self, field), minimum)
    checks.check_positive("finetune learning_rate", self.learning_rate)
    checks.check_one_of("finetune optimizer", self.optimizer, OPTIMIZERS)
    losses.get(self.inner_loss)  # an unknown name fails here, with the allowed ones

  def base_run(self) -> str:
    return self.run

  def with_base(self, base: BaseRun) -> "FineTune":
    """This learner bound to the loaded run, which must have trained a transformer."""
    if not isinstance(base.learner, Transformer):
      raise ValueError(f"finetune run {base.workdir!r} trained a {base.learner_name!r} learner "
                       f"({type(base.learner).__name__}); fine-tuning needs a transformer run")
    bound = dataclasses.replace(self)
    object.__setattr__(bound, "base", base)  # frozen, and not an init field: see `base`
    return bound

  def transformer(self) -> tuple[Transformer, Params]:
    """The run's transformer learner and its params at the checkpoint bound."""
    if self.base is None:
      raise ValueError(f"the finetune learner of run {self.run!r} is not bound to the run's "
                       "transformer: the engine loads model.run when it builds the experiment "
                       "and binds it with `with_base`")
    return self.base.learner, self.base.params

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

  def state_floats(self, params: Params, episode: Episode) -> int:
    """The fine-tuned copy's moved weights: every weight, or the rank-r adapters."""
    moved = params if self.rank == 0 else self.adapters(params)
    return tree_size(moved)

  def adapters(self, params: Params) -> fine_tuning.Adapters:
    """The initial LoRA adapters (`fine_tuning.lora_adapters` of rank and seed): the same for
    every prompt."""
    return fine_tuning.lora_adapters(params, self.rank, self.seed)

  def fine_tuned(self, params: Params, x_context: jax.Array, y_context: jax.Array,
                 context_mask: jax.Array) -> Params:
    """One prompt's transformer weights after the inner loop on its context.

    x_context [C, D], y_context [C, O], context_mask [C]: the pairs with mask 0 do not count.
    """
    trainable = (fine_tuning.all_weights(params) if self.rank == 0
                 else fine_tuning.lora(params, self.rank, self.seed))
    optimizer = (optax.sgd if self.optimizer == "sgd" else optax.adam)(self.learning_rate)
    return fine_tuning.fine_tune(self.transformer()[0], trainable, x_context, y_context,
                                 context_mask, steps=self.inner_steps, optimizer=optimizer,
                                 loss=losses.get(self.inner_loss))

  def predict(self, params: Params, episode: Episode) -> jax.Array:
    """[batch, points, out]: each prompt's fine-tuned copy, zero-shot at every position."""
    self.check_episode(episode.num_points, episode.dim)
    self._check_out(params, episode.y)
    transformer = self.transformer()[0]
    c = self.context_points

    def one_prompt(x, y, mask):
      weights = self.fine_tuned(params, x[:c], y[:c], mask[:c])
      return fine_tuning.zero_shot(transformer, weights, x)

    return jax.vmap(one_prompt)(episode.x, episode.y, episode.mask)
