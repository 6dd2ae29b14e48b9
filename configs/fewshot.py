"""Few-shot image classification: the MAML family and an in-context transformer on the same episodes.

    python launch/train.py --config=configs/fewshot.py:maml-1shot --workdir=runs/digits_maml_1shot

Variants (`--config=configs/fewshot.py:NAME`), NAME = [omniglot-]LEARNER-KSHOT[-smoke]:
  LEARNER   maml (second order), fomaml, anil: a conv-4 (Vinyals et al.) adapted on the
            support set, 1 inner step of 0.4 in training and 0, 1, 3 steps at evaluation
            (Finn et al.'s Omniglot setting); transformer: the in-context learner reading
            the support set and the query as a prompt of (image, one-hot label) pairs;
  KSHOT     1shot or 5shot: 5-way, K support and 5 query images per class;
  omniglot  Omniglot from --config.task.data_dir (the archive's alphabet/character/png
            layout), 28x28, 1,200 training characters; without it, scikit-learn's 8x8 digits
            (offline): digits 0-9 split 5 for training, 5 held out. Either way 90-degree turns
            are new classes (Santoro et al.; on digits, 20 training classes instead of 5,
            which took MAML 5-shot test accuracy from 0.69 to 0.91, benchmarks/RESULTS.md);
  smoke     everything shrunk so a run takes seconds (tests).
Evaluation draws its episodes from the held-out classes (eval.task_overrides.split = test).
"""

import ml_collections

from configs import common

LEARNERS = ("maml", "fomaml", "anil", "transformer")
SHOTS = {"1shot": 1, "5shot": 5}
WAYS, QUERIES = 5, 5
# [omniglot-]LEARNER-KSHOT[-smoke] -> (omniglot, learner, shots, smoke); the first is the default.
_PARSED = {f"{'omniglot-' if omniglot else ''}{learner}-{kshot}{'-smoke' if smoke else ''}":
           (omniglot, learner, shots, smoke)
           for omniglot in (False, True) for learner in LEARNERS
           for kshot, shots in SHOTS.items() for smoke in (False, True)}
VARIANTS = tuple(_PARSED)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  omniglot, learner, shots, smoke = _PARSED[common.variant(arg, VARIANTS, "configs/fewshot.py")]
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run

  config.task = ml_collections.ConfigDict()
  config.task.name = "fewshot_classification"  # registered task family
  config.task.dataset = "omniglot" if omniglot else "digits"  # digits ship with scikit-learn
  config.task.data_dir = ""          # Omniglot's archive (alphabet/character/*.png)
  config.task.split = "train"        # training classes; evaluation overrides it with "test"
  config.task.ways = WAYS            # classes per episode
  config.task.shots = shots          # support images per class
  config.task.queries = QUERIES      # query images per class
  config.task.train_classes = 1200 if omniglot else 5  # base classes for training
  config.task.rotations = True       # 90-degree turns are new classes (Omniglot standard)
  config.task.image_size = 28 if omniglot else 8  # images are image_size x image_size
  config.task.dim = config.task.image_size ** 2   # pixels per image
  config.task.seed = 0               # the class split's seed

  context, points = WAYS * shots, WAYS * (shots + QUERIES)
  config.model = ml_collections.ConfigDict()
  if learner == "transformer":
    config.model.name = "transformer"  # in-context learner (Garg et al. 2022)
    config.model.hidden = 128          # residual stream width
    config.model.num_layers = 4        # decoder blocks
    config.model.num_heads = 4         # attention heads
    config.model.mlp_ratio = 4         # MLP width / hidden
    config.model.max_points = points   # longest prompt in (x, y) pairs
    config.model.attention = "softmax"  # softmax | linear | relu | momentum
    config.model.momentum = 0.9        # η of momentum attention (unused by softmax)
    config.model.layout = "interleaved"  # tokens: interleaved | akyurek | concatenated
    # Every position is a prediction from the pairs before it; evaluation scores each query
    # from the support set alone.
    config.data = common.data_section(points=points)
  else:
    config.model.name = "anil" if learner == "anil" else "maml"  # registered learner
    config.model.network = "conv4"     # 4 x (3x3 conv, batch norm, ReLU, 2x2 max-pool)
    config.model.widths = ()           # mlp widths (unused by conv4)
    config.model.filters = 64 if omniglot else 32  # conv filters per layer
    config.model.image_size = config.task.image_size  # conv input side
    config.model.context_points = context  # the support set: the inner loop's data
    config.model.inner_steps = 1       # inner steps in training
    config.model.eval_inner_steps = (0, 1, 3)  # inner steps reported at evaluation
    config.model.step_size = 0.4       # inner step size α (Finn et al.'s Omniglot)
    config.model.inner_loss = "softmax_cross_entropy"  # the task's loss
    config.model.remat = False         # recompute inner steps in the backward pass
    config.model.unroll = False        # keep the inner scan rolled (less memory for conv-4)
    config.model.first_order = learner == "fomaml"  # hold the inner gradients constant
    config.data = common.data_section(points=points, loss_from=context)  # queries only

  config.train = common.train_section(batch_size=32, num_steps=6000, grad_clip=0.0,
                                      steps_per_call=100, log_every=500,
                                      checkpoint_every=2000)
  if learner == "transformer":
    # In-context learning of label bindings emerges later than MAML's adaptation.
    config.train.update(num_steps=30_000, learning_rate=3e-4, schedule="warmup_cosine",
                        warmup_steps=500, grad_clip=1.0, checkpoint_every=5000)
  config.eval = common.eval_section(("knn",), num_prompts=600, batch_size=200)
  config.eval.task_overrides = ml_collections.ConfigDict({"split": "test"})

  if smoke:
    config.train.update(batch_size=4, num_steps=10, steps_per_call=5, log_every=5,
                        checkpoint_every=5, warmup_steps=0)
    config.eval.update(num_prompts=8, batch_size=4)
    if learner == "transformer":
      config.model.update(hidden=16, num_layers=1, num_heads=2)
    else:
      config.model.filters = 4
  config.lock()
  return config
