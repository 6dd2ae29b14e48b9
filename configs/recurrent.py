"""Recurrent in-context learners on the default linear-regression task (d = 5, 21 points).

    python launch/train.py --config=configs/recurrent.py:lstm --workdir=runs/lstm

Variants (`--config=configs/recurrent.py:NAME`):
  lstm      two residual LSTM layers of width 64 (the state: 2 · 2 · 64 floats);
  gru       two residual GRU layers of width 64 (the state: 2 · 64 floats);
  ssm       two residual selective state-space layers (Mamba-style), width 64, 2x expansion,
            16 state numbers per channel (the state: 2 · 128 · 16 floats);
  fast_weights
            linear attention in its recurrent form (a transformer with attention="linear",
            linear_pass="recurrent" and no positions): three layers of width 64 and 4 heads,
            a fast-weight state of 3 · 4 · 16² floats; model.num_heads sets the state size.
            Its prompt is concatenated, one token (x_i, y_i) per pair: without positions a
            linear attention weighs every earlier token alike, so with x_i and y_i in separate
            tokens it cannot tell which y belongs to which x (interleaved, it stayed at the
            zero predictor for 3,000 steps at every head count; benchmarks/RESULTS.md);
  smoke     the selective SSM shrunk so a run takes seconds (tests).
The state size is `model.hidden` for the LSTM and GRU and `model.state_size` for the SSM;
every learner reports it (`state_floats`). Task, data, training and evaluation are the
transformer's (configs/linear_regression.py), so their runs compare directly.
"""

import ml_collections

from configs import common

VARIANTS = ("lstm", "gru", "ssm", "fast_weights", "smoke")  # the first is the default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.variant(arg, VARIANTS, "configs/recurrent.py")
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random draw in the run

  config.task = common.linear_regression_task(dim=5)

  config.model = ml_collections.ConfigDict()
  config.model.name = {"smoke": "ssm", "fast_weights": "transformer"}.get(variant, variant)
  config.model.hidden = 64           # residual stream width (LSTM, GRU: the cell's state)
  config.model.num_layers = 2        # layers stacked
  config.model.layout = "interleaved"  # tokens: interleaved | akyurek (| concatenated: transformers)
  if variant == "fast_weights":
    config.model.num_layers = 3
    config.model.num_heads = 4         # heads per layer: the state is layers · heads · (64/heads)²
    config.model.attention = "linear"  # the only attention with a fast-weight form
    config.model.linear_pass = "recurrent"  # token by token: the state carried is Σ v kᵀ
    config.model.positions = "none"    # no position table: prompts of any length
    config.model.layout = "concatenated"  # (x_i, y_i) in one token: pairs need no positions
  if config.model.name == "ssm":
    config.model.state_size = 16     # state numbers per channel
    config.model.expand = 2          # channels per stream dimension inside a layer

  config.data = common.data_section(points=21)

  config.train = common.train_section(num_steps=12000, schedule="warmup_cosine",
                                      warmup_steps=1000)
  config.eval = common.eval_section(("least_squares", "averaging", "knn"))

  if variant == "smoke":
    config.task.dim = 3
    config.model.update(hidden=8, num_layers=1, state_size=4)
    common.shrink_to_smoke(config)
  config.lock()
  return config
