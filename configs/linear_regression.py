"""In-context linear regression with a GPT-2-style transformer (Garg et al. 2022).

    python launch/train.py --config=configs/linear_regression.py --workdir=runs/linear

Variants (`--config=configs/linear_regression.py:NAME`):
  (none)    tiny transformer, d = 5, 21 points: finishes on 2 CPU cores in minutes;
  smoke     everything shrunk so a run takes seconds (tests);
  small, standard
            Garg et al.'s sizes (128/6/4, 256/12/8) at d = 20, 41 points, with their curriculum;
  garg      the tiny size (64/3/2) at Garg et al.'s full setting;
  akyurek   Akyürek et al.: d = 8, 40 points, noisy targets, AdamW with warm-up and cosine decay;
  rotary    the default with rotary positions instead of the learned table (prompts of any
            length; the state-size comparison of configs/recurrent.py).
"""

import ml_collections

from configs import common

SIZES = {"tiny": (64, 3, 2), "small": (128, 6, 4), "standard": (256, 12, 8)}
VARIANTS = ("default", "smoke", "garg", "small", "standard", "akyurek", "rotary")  # the first is the default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.variant(arg, VARIANTS, "configs/linear_regression.py")
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run

  config.task = common.linear_regression_task(dim=5)

  config.model = ml_collections.ConfigDict()
  config.model.name = "transformer"  # registered learner
  config.model.hidden = 64           # residual stream width
  config.model.num_layers = 3        # decoder blocks
  config.model.num_heads = 2         # attention heads
  config.model.mlp_ratio = 4         # MLP width / hidden
  config.model.max_points = 21       # longest prompt in (x, y) pairs
  config.model.attention = "softmax"  # softmax | linear | relu | momentum
  config.model.momentum = 0.9        # η of momentum attention (Dai et al. 2022)
  config.model.layout = "interleaved"  # tokens: interleaved | akyurek | concatenated

  config.data = common.data_section(points=21)

  config.train = common.train_section(num_steps=12000, schedule="warmup_cosine",
                                      warmup_steps=1000)
  config.eval = common.eval_section(("least_squares", "averaging", "knn"))

  if variant == "default":
    pass
  elif variant == "smoke":
    config.task.dim = 3
    config.model.update(hidden=16, num_layers=1, num_heads=2, max_points=7)
    config.data.points = 7
    config.train.update(num_steps=20, warmup_steps=5, steps_per_call=5, log_every=5,
                        checkpoint_every=10)
    config.eval.update(num_prompts=32, batch_size=16)
  elif variant in ("garg", "small", "standard"):
    hidden, layers, heads = SIZES["tiny" if variant == "garg" else variant]
    config.task.dim = 20
    config.model.update(hidden=hidden, num_layers=layers, num_heads=heads, max_points=41)
    config.data.points = 41
    config.data.curriculum.enabled = True
    config.train.update(num_steps=500_000, learning_rate=1e-4, schedule="constant",
                        warmup_steps=0, grad_clip=0.0, log_every=1000, checkpoint_every=10_000)
  elif variant == "rotary":
    config.model.positions = "rotary"  # learned | rotary | none: RoPE, no position table
  else:  # akyurek
    config.task.update(dim=8, noise_std=0.1)
    config.model.update(max_points=40)
    config.data.points = 40
    config.train.update(optimizer="adamw", num_steps=50_000, warmup_steps=10_000,
                        checkpoint_every=5000)
    config.eval.baselines = ("bayes_ridge", "least_squares", "averaging", "knn")
  config.lock()
  return config
