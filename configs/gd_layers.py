"""Linear self-attention (GD-layer) networks trained on in-context linear regression.

    python launch/train.py --config=configs/gd_layers.py --workdir=runs/gd_layers

Variants (`--config=configs/gd_layers.py:NAME`):
  (none)        one LSA layer, d = 10, 11 points (N = 10 context pairs before the last query),
                x ~ U(-0.5, 0.5), as von Oswald et al. 2022's code (their 1/2-MSE and a loss at
                the last query alone are not yet options: here every prefix is trained);
  recurrent2    two weight-tied layers;
  smoke         everything shrunk so a run takes seconds (tests).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run

  config.task = common.linear_regression_task(dim=10)
  config.task.x_distribution = "uniform"

  config.model = ml_collections.ConfigDict()
  config.model.name = "gd_layers"  # registered learner
  config.model.num_layers = 1      # LSA layers
  config.model.num_heads = 1       # heads per layer
  config.model.recurrent = False   # share one layer's weights across layers
  config.model.init_std = 0.02     # std of the random initial weights

  config.data = common.data_section(points=11)  # position i predicts from the i before it

  # von Oswald et al.: batch 2048, Adam 1e-3, gradient clipping.
  config.train = common.train_section(batch_size=2048, num_steps=5000, grad_clip=10.0,
                                      checkpoint_every=1000)
  config.eval = common.eval_section(("least_squares", "averaging"), batch_size=640)

  if variant == "default":
    pass
  elif variant == "recurrent2":
    config.model.update(num_layers=2, recurrent=True)
    config.train.learning_rate = 5e-4
  elif variant == "smoke":
    config.task.update(dim=3, x_distribution="normal")
    config.model.num_layers = 2
    config.data.points = 6
    config.train.update(batch_size=64, num_steps=40, steps_per_call=10, log_every=10,
                        checkpoint_every=20, learning_rate=1e-2)
    config.model.init_std = 0.1
    config.eval.update(num_prompts=64, batch_size=32)
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/gd_layers.py; allowed: default, "
                     "recurrent2, smoke")
  config.lock()
  return config
