"""Config sections that several experiment families share, each field commented once."""

from typing import Sequence

import ml_collections


def variant(arg: str | None, variants: Sequence[str], config_file: str) -> str:
  """The variant that `get_config(arg)` builds: `arg`, or the first of `variants` (the default).

  A config file declares its `VARIANTS` once; this message and `--print_config` both list them.
  """
  name = arg or variants[0]
  if name not in variants:
    raise ValueError(f"unknown variant {name!r} of {config_file}; allowed: "
                     f"{', '.join(variants)}")
  return name


def linear_regression_task(dim: int) -> ml_collections.ConfigDict:
  task = ml_collections.ConfigDict()
  task.name = "linear_regression"  # registered task family
  task.dim = dim                   # d, the input dimension
  task.w_scale = 1.0               # τ: w ~ N(0, τ²I)
  task.noise_std = 0.0             # σ: y = wᵀx + σε
  task.x_distribution = "normal"   # normal: x ~ N(0, I); uniform: U(−0.5, 0.5) (von Oswald et al.)
  return task


def data_section(points: int, loss_from: int = 0) -> ml_collections.ConfigDict:
  """The `data` section: prompt length, which positions train, and Garg et al.'s curriculum."""
  data = ml_collections.ConfigDict()
  data.points = points        # (x, y) pairs per training prompt
  data.loss_from = loss_from  # positions before this one do not count in the training loss
  data.curriculum = ml_collections.ConfigDict()
  data.curriculum.enabled = False       # grow dims and points during training
  data.curriculum.dims_start = 5        # active dims at step 0
  data.curriculum.dims_increment = 1    # dims added per stage
  data.curriculum.points_start = 11     # active points at step 0
  data.curriculum.points_increment = 2  # points added per stage
  data.curriculum.interval = 2000       # steps per stage
  return data


def train_section(**values) -> ml_collections.ConfigDict:
  """The `train` section; `values` set fields (all of them are listed here)."""
  train = ml_collections.ConfigDict()
  train.batch_size = 64            # prompts per step, over all devices
  train.num_steps = 10000          # training steps
  train.optimizer = "adam"         # adam | adamw | sgd
  train.learning_rate = 1e-3       # peak learning rate
  train.schedule = "constant"      # constant | warmup_cosine
  train.warmup_steps = 0           # linear warm-up steps (warmup_cosine)
  train.weight_decay = 0.0         # AdamW decoupled weight decay
  train.grad_clip = 1.0            # global-norm clip; 0 turns it off
  train.steps_per_call = 100       # training steps per host call (lax.scan)
  train.log_every = 500            # steps between metric lines
  train.checkpoint_every = 2000    # steps between checkpoints
  train.keep_checkpoints = 3       # newest checkpoints kept
  train.data_parallel = "pmap"     # pmap | jit (over a device mesh); engine/data_parallel.py
  train.lock()                     # so that a misspelt field in `values` fails
  train.update(values)
  return train


def shrink_to_smoke(config: ml_collections.ConfigDict, points: int = 7) -> None:
  """The data, train and eval sizes of a smoke variant: a run of seconds (tests)."""
  config.data.points = points
  config.train.update(num_steps=20, warmup_steps=5, steps_per_call=5, log_every=5,
                      checkpoint_every=10)
  config.eval.update(num_prompts=32, batch_size=16)


def eval_section(baselines: tuple[str, ...], **values) -> ml_collections.ConfigDict:
  """The `eval` section: the same held-out prompts for every run of a family."""
  evaluation = ml_collections.ConfigDict()
  evaluation.num_prompts = 1280  # held-out prompts (Garg et al.)
  evaluation.batch_size = 256    # prompts per evaluation call
  evaluation.seed = 1234         # the held-out prompts' seed, shared by all runs
  evaluation.baselines = baselines  # scored beside the model
  evaluation.task_overrides = ml_collections.ConfigDict()  # task fields held-out episodes change
  evaluation.lock()
  evaluation.update(values)
  return evaluation
