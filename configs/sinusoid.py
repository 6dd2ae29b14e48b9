"""The MAML family on Finn et al. 2017's sinusoid regression.

    python launch/train.py --config=configs/sinusoid.py:maml --workdir=runs/sinusoid_maml

Variants (`--config=configs/sinusoid.py:NAME`, NAME one of the learners below, `-smoke`
appended for a run of seconds used by the tests, e.g. `:imaml-smoke`):
  maml      second-order MAML: 1-40-40-1 ReLU MLP, K = 10 context + 10 query points,
            meta-batch 25, Adam 1e-3, inner step 0.01, 1 inner step (70k steps, as Finn et al.);
            evaluated on 600 held-out tasks after 0, 1 and 10 inner steps;
  fomaml    the same with first-order meta-gradients;
  metasgd   learned per-parameter inner step sizes (Li et al. 2017);
  anil      only the head adapts in the inner loop (Raghu et al. 2020);
  reptile   5 inner SGD steps, outer SGD with ε = 1 on θ − φ (Nichol et al. 2018);
  imaml     proximal inner problem (λ = 2, 5 steps) and the implicit meta-gradient by 5 CG
            steps (Rajeswaran et al. 2019).
"""

import ml_collections

from configs import common

LEARNERS = ("maml", "fomaml", "metasgd", "anil", "reptile", "imaml")
# Each learner, and its smoke run; the first is the default.
VARIANTS = tuple(f"{learner}{size}" for learner in LEARNERS for size in ("", "-smoke"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  learner, _, size = common.variant(arg, VARIANTS, "configs/sinusoid.py").partition("-")
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run

  config.task = ml_collections.ConfigDict()
  config.task.name = "sinusoid"     # registered task family
  config.task.amplitude_min = 0.1   # A ~ U[0.1, 5]
  config.task.amplitude_max = 5.0
  config.task.phase_min = 0.0       # φ ~ U[0, π]
  config.task.phase_max = 3.141592653589793
  config.task.x_min = -5.0          # x ~ U[−5, 5]
  config.task.x_max = 5.0

  config.model = ml_collections.ConfigDict()
  config.model.name = "maml"            # registered learner (fomaml is maml, first order)
  config.model.network = "mlp"          # base network adapted by the inner loop
  config.model.widths = (40, 40)        # hidden widths: 1-40-40-1
  config.model.filters = 64             # conv4 filters (unused by the mlp)
  config.model.image_size = 0           # conv4 input side (unused by the mlp)
  config.model.context_points = 10      # K: the inner loop's examples
  config.model.inner_steps = 1          # inner gradient steps in training
  config.model.eval_inner_steps = (0, 1, 10)  # inner steps reported at evaluation
  config.model.step_size = 0.01         # inner step size α (Finn et al.'s text)
  config.model.inner_loss = "squared_error"  # the task's loss
  config.model.remat = False            # recompute inner steps in the backward pass
  config.model.unroll = True            # unroll the inner scan (faster for this small MLP)

  # K context then K query points; the loss counts the queries only.
  config.data = common.data_section(points=20, loss_from=10)

  config.train = common.train_section(batch_size=25, num_steps=70_000, grad_clip=0.0,
                                      steps_per_call=1000, log_every=5000,
                                      checkpoint_every=10_000)
  config.eval = common.eval_section(("knn",), num_prompts=600, batch_size=600)

  if learner == "fomaml":
    config.model.first_order = True     # inner gradients held constant
  elif learner in ("maml", "anil", "metasgd"):
    config.model.name = learner
    config.model.first_order = False    # second-order meta-gradient
  elif learner == "reptile":
    config.model.name = "reptile"
    config.model.update(inner_steps=5, step_size=0.02)
    config.train.update(optimizer="sgd", learning_rate=1.0)  # θ ← θ + ε(φ − θ), ε = 1
  elif learner == "imaml":
    config.model.name = "imaml"
    config.model.inner_steps = 5
    config.model.lam = 2.0              # proximal strength λ
    config.model.cg_steps = 5           # CG steps for the implicit gradient
  if size == "smoke":
    config.model.widths = (8, 8)
    # An even batch, so that the tests' two simulated devices split it.
    config.train.update(batch_size=8, num_steps=20, steps_per_call=5, log_every=5,
                        checkpoint_every=10)
    config.eval.update(num_prompts=16, batch_size=8)
  config.lock()
  return config
