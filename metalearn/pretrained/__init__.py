"""Small trained runs shipped with the package, for notebooks and regression tests.

Each is a work directory holding only what `metalearn.runs.load_run` and a reader need (the
config, the final checkpoint, metrics.jsonl and the evaluation's tables), trained on 2 CPU
cores with one host device from the repository root by

    python launch/train.py --config=configs/<config> --workdir=<name> --metric_writers= \
        --config.train.keep_checkpoints=1

(then copied in, without plots, tensorboard files or the lock). `tests/test_pretrained.py`
recomputes each run's headline number on its own held-out prompts and holds it to the value
measured when it was shipped:

  linear_regression  `--config=configs/linear_regression.py` (the default transformer, d = 5,
                     12,000 steps; stopped by SIGTERM at step 1,100 and relaunched):
                     normalised error at k = 2d = 10 examples 0.0354
                     (least squares 1.8e-13);
  lsa_1layer         `--config=configs/gd_layers.py` (one LSA layer, d = N = 10, 5,000 steps):
                     ½·MSE at the query 0.178, against 0.178 for one GD step of tuned
                     η* ≈ 6.03;
  lsa_recurrent2     `--config=configs/gd_layers.py:recurrent2` (two weight-tied LSA layers,
                     5,000 steps; stopped by SIGTERM at step 2,600 and relaunched,
                     which resumes exactly): ½·MSE at the query 0.107, against 0.140
                     for two tuned GD steps and 0.106 for recurrent GD++ with tuned (η, γ);
  sinusoid_maml      `--config=configs/sinusoid.py:maml` (Finn et al.'s MAML, 70,000 steps):
                     query MSE after 1 inner step 0.345 (after 10: 0.120).

Load one with `load_run(pretrained.path(name))`; nothing in the directory is written.
"""

import os

# name -> the config it was trained with (`--config=configs/<config>`), in the order above.
CONFIGS = {
    "linear_regression": "linear_regression.py",
    "lsa_1layer": "gd_layers.py",
    "lsa_recurrent2": "gd_layers.py:recurrent2",
    "sinusoid_maml": "sinusoid.py:maml",
}
NAMES = tuple(CONFIGS)


def path(name: str) -> str:
  """The work directory of the shipped run `name` (one of NAMES), to pass to `load_run`."""
  if name not in NAMES:
    raise ValueError(f"no shipped run named {name!r}; allowed: {', '.join(NAMES)}")
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
