"""In-context linear regression on a finite pool of tasks (Raventós et al. 2023).

    python launch/train.py --config=configs/task_diversity.py --workdir=runs/pool_64

Every training prompt follows one of `task.size` weight vectors drawn once from `task.seed`
(the pool), with noise σ = 0.5 (their σ² = 0.25), d = 8, 16 points. Below a threshold of
pool sizes the trained transformer predicts like dMMSE, the Bayes predictor for the pool;
above it like ridge regression with λ = σ²/τ², the Bayes predictor for fresh tasks. The
evaluation scores the model and both baselines on pool tasks ("pretrain") and on fresh ones
("latent"), side by side. Set the pool size with --config.task.size.

Variants (`--config=configs/task_diversity.py:NAME`):
  (none)    a tiny transformer (64/3/2) on a pool of 64 tasks; minutes on 2 CPU cores;
  sweep     the transition at d = 4: pools of 4^0 .. 4^7 tasks, one vmapped sweep
            (engine/sweep.py) of 4,000 steps each, every member written as its own run (~20 min on 2 CPU cores);
            then `python launch/task_diversity.py --sweep=WORKDIR --report_dir=DIR`;
  smoke     everything shrunk so a run takes seconds (tests).
"""

import ml_collections

from configs import common

VARIANTS = ("default", "sweep", "smoke")  # the first is the default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.variant(arg, VARIANTS, "configs/task_diversity.py")
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run (not the pool's)

  config.task = ml_collections.ConfigDict()
  config.task.name = "task_pool"  # M tasks of a parametric family (tasks/pool.py)
  config.task.size = 64           # M, the number of tasks in the pool
  config.task.seed = 0            # draws the pool's tasks, apart from the run's seed
  config.task.base = common.linear_regression_task(dim=8)  # the family the pool draws from
  config.task.base.noise_std = 0.5  # σ (Raventós et al.: σ² = 0.25)

  config.model = ml_collections.ConfigDict()
  config.model.name = "transformer"  # registered learner
  config.model.hidden = 64           # residual stream width
  config.model.num_layers = 3        # decoder blocks
  config.model.num_heads = 2         # attention heads
  config.model.max_points = 16       # longest prompt in (x, y) pairs

  config.data = common.data_section(points=16)

  config.train = common.train_section(num_steps=8000, schedule="warmup_cosine",
                                      warmup_steps=500)
  # dMMSE and ridge are the two Bayes predictors the model moves between as the pool grows.
  config.eval = common.eval_section(("dmmse", "bayes_ridge", "least_squares"))

  # Members trained as one (engine/sweep.py): every seed with every pool size; () a single run.
  config.sweep = ml_collections.ConfigDict({"seeds": (), "task_sizes": ()})
  if variant == "sweep":
    config.sweep.task_sizes = tuple(4**i for i in range(8))
    config.train.num_steps = 4000
    # At d = 8 this model, in 4,000 steps, stays at the zero predictor on pools of 256 tasks and
    # more (benchmarks/RESULTS.md); at d = 4 every pool size leaves the plateau.
    config.task.base.dim = 4
  if variant == "smoke":
    config.task.update(size=4)
    config.task.base.dim = 3
    config.model.update(hidden=16, num_layers=1, max_points=7)
    common.shrink_to_smoke(config)
  config.lock()
  return config
