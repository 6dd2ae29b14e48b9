"""Linear self-attention (GD-layer) networks in von Oswald et al. 2022's setting.

    python launch/train.py --config=configs/gd_layers.py --workdir=runs/gd_layers
    python launch/gd_layers_report.py --workdir=runs/gd_layers

d = N = 10, x ~ U(−0.5, 0.5) (their code; the text says U(−1, 1)), w ~ N(0, I), no noise; prompts
of 11 points whose first N = 10 pairs are the context (`model.context_points`) and the training
loss at the query after them alone (`data.loss_from = 10`); batch 2048, Adam 1e-3 (5e-4 for the
deeper networks), gradient clipping. With that fixed context the evaluation scores the query
after it (position 10), the baselines on the same query from the same 10 pairs. The training
loss is the squared error; the paper's is ½·MSE. Adam's steps do not change with that factor
(up to its ε and the clipping threshold); the report (launch/gd_layers_report.py) gives ½·MSE.

Variants (`--config=configs/gd_layers.py:NAME`):
  (none)              one LSA layer from random weights (its loss against one tuned GD step);
  recurrent2          two weight-tied layers from random weights, Adam 5e-4 (against two tuned
                      GD steps and recurrent GD++ with tuned (η, γ));
  from_gd             one layer started from the GD construction with η = 6, about the tuned
                      step size (η* ≈ 6.05 here): does training leave the construction?
  recurrent2_from_gd  two weight-tied layers started from two GD steps of η = 6: does training
                      find GD++'s γ > 0?
  smoke               everything shrunk so a run takes seconds (tests).
Each of the first four trains in minutes on 2 CPU cores (benchmarks/RESULTS.md).
"""

import ml_collections

from configs import common

VARIANTS = ("default", "recurrent2", "from_gd", "recurrent2_from_gd", "smoke")  # first: default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.variant(arg, VARIANTS, "configs/gd_layers.py")
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run

  config.task = common.linear_regression_task(dim=10)
  config.task.x_distribution = "uniform"

  config.model = ml_collections.ConfigDict()
  config.model.name = "gd_layers"      # registered learner
  config.model.num_layers = 1          # LSA layers
  config.model.num_heads = 1           # heads per layer
  config.model.recurrent = False       # share one layer's weights across layers
  config.model.init_std = 0.02         # std of the random initial weights
  config.model.layer_norm = False      # LayerNorm on the tokens before each attention layer
  config.model.mlp = False             # a residual MLP after each attention layer
  config.model.mlp_width = 64          # hidden units of that MLP
  config.model.softmax = False         # softmax over the context scores instead of linear
  config.model.init_from = "random"    # random | gd | gd_plus_plus (the constructions)
  config.model.init_step_size = 1.0    # η of the construction (init_from gd, gd_plus_plus)
  config.model.init_gamma = 0.0        # γ of the GD++ construction (init_from gd_plus_plus)
  config.model.context_points = 10     # N: every position predicted from the first N pairs

  # 11 points; only the prediction after N = 10 context pairs trains.
  config.data = common.data_section(points=11, loss_from=10)

  # von Oswald et al.: batch 2048, Adam 1e-3, gradient clipping.
  config.train = common.train_section(batch_size=2048, num_steps=5000, grad_clip=10.0,
                                      checkpoint_every=1000)
  config.eval = common.eval_section(("least_squares", "averaging"), batch_size=640)

  if variant in ("recurrent2", "recurrent2_from_gd"):
    config.model.update(num_layers=2, recurrent=True)
    config.train.learning_rate = 5e-4
  if variant in ("from_gd", "recurrent2_from_gd"):
    config.model.update(init_from="gd", init_step_size=6.0)
  if variant == "smoke":
    config.task.update(dim=3, x_distribution="normal")
    config.model.update(num_layers=2, init_std=0.1)
    config.data.update(points=6, loss_from=5)
    config.model.context_points = 5
    config.train.update(batch_size=64, num_steps=40, steps_per_call=10, log_every=10,
                        checkpoint_every=20, learning_rate=1e-2)
    config.eval.update(num_prompts=64, batch_size=32)
  config.lock()
  return config
