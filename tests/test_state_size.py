"""Every learner reports the floats it carries per prompt about its context: fixed for a
recurrent state or a fast-weight matrix, growing with the prompt for a key/value cache."""

import jax
import numpy as np
import pytest

from episodes import episode_from_arrays
from metalearn import pretrained
from metalearn.engine.runs import load_base_run
from metalearn.learners import make_learner
from metalearn.learners.registry import LEARNERS
from metalearn.tasks import make_task

DIM, OUT = 3, 1


def _episode(points):
  rng = np.random.default_rng(0)
  return episode_from_arrays(rng.normal(size=(2, points, DIM)), rng.normal(size=(2, points, OUT)))


def _sizes(section):
  learner = make_learner(section)
  short, long = _episode(6), _episode(12)
  params = learner.init(jax.random.PRNGKey(0), short)
  return learner.state_floats(params, short), learner.state_floats(params, long)


# Per learner: its section, then the floats at 6 and at 12 points in closed form.
CASES = {
    "transformer": ({"hidden": 8, "num_layers": 2, "num_heads": 2, "max_points": 12},
                    (2 * 2 * 12 * 8, 2 * 2 * 24 * 8)),       # K and V of every token, per block
    "transformer linear": ({"name": "transformer", "attention": "linear", "hidden": 8,
                            "num_layers": 2, "num_heads": 2, "max_points": 12},
                           (2 * 2 * 4 * 4,) * 2),              # Σ v kᵀ per block and head
    "transformer momentum": ({"name": "transformer", "attention": "momentum", "hidden": 8,
                              "num_layers": 1, "max_points": 12},
                             (2 * 12 * 8 + 8, 2 * 24 * 8 + 8)),  # the cache and Σ ηᵗ v
    "transformer concatenated": ({"name": "transformer", "layout": "concatenated",
                                  "hidden": 8, "num_layers": 1, "max_points": 12},
                                 (2 * 6 * 8, 2 * 12 * 8)),     # query tokens are never re-read
    "gd_layers": ({"num_layers": 2}, (2 * 4 * 4,) * 2),          # e = D + O = 4
    "gd_layers softmax": ({"name": "gd_layers", "softmax": True, "context_points": 5},
                          (2 * 5 * 4,) * 2),                    # the context's 5 K and V
    "lstm": ({"hidden": 8, "num_layers": 2}, (2 * 2 * 8,) * 2),
    "gru": ({"hidden": 8, "num_layers": 2}, (2 * 8,) * 2),
    "ssm": ({"hidden": 8, "num_layers": 2, "state_size": 4, "expand": 2},
            (2 * 16 * 4,) * 2),
    "least_squares": ({}, (DIM * DIM + DIM * OUT,) * 2),         # XᵀX and Xᵀy
    "ridge": ({}, (DIM * DIM + DIM * OUT,) * 2),
    "gd": ({}, (DIM * DIM + DIM * OUT,) * 2),
    "gd_plus_plus": ({}, (DIM * DIM + DIM * OUT,) * 2),
    "preconditioned_gd": ({}, (DIM * DIM + DIM * OUT,) * 2),
    "newton_schulz": ({}, (DIM * DIM + DIM * OUT,) * 2),
    "lasso": ({}, (DIM * DIM + DIM * OUT,) * 2),                 # XᵀX and Xᵀy (FISTA reads them)
    "averaging": ({}, (DIM * OUT,) * 2),                         # Σ y x
    "bayes_mixture": ({"components": ((0.5, (1.0,) * DIM, 0.1), (0.5, (1.0,) * DIM, 1.0))},
                      (2 * (DIM * DIM + DIM * OUT + 1),) * 2),   # per component: root, mean, log p
    "dmmse": ({"pool": make_task({"name": "task_pool", "size": 7, "base": {
        "name": "linear_regression", "dim": DIM, "noise_std": 0.5}})}, (7,) * 2),  # log p per task
    "knn": ({}, (6 * (DIM + OUT), 12 * (DIM + OUT))),            # every pair
    "maml": ({"widths": (5,), "context_points": 4},
             ((DIM * 5 + 5 + 5 * OUT + OUT),) * 2),              # the adapted MLP
    "metasgd": ({"widths": (5,), "context_points": 4}, ((DIM * 5 + 5 + 5 * OUT + OUT),) * 2),
    "reptile": ({"widths": (5,), "context_points": 4}, ((DIM * 5 + 5 + 5 * OUT + OUT),) * 2),
    "imaml": ({"widths": (5,), "context_points": 4}, ((DIM * 5 + 5 + 5 * OUT + OUT),) * 2),
    "anil": ({"widths": (5,), "context_points": 4}, ((5 * OUT + OUT),) * 2),  # the head alone
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_learner_reports_its_state_in_closed_form(case):
  section, expected = CASES[case]
  section = {"name": case.split()[0], **section}
  assert _sizes(section) == expected


def test_every_registered_learner_reports_its_state():
  named = {case.split()[0] for case in CASES} | {"finetune"}
  assert set(LEARNERS.names) <= named, sorted(set(LEARNERS.names) - named)


def test_fine_tuning_carries_the_weights_it_moves():
  run = pretrained.path("linear_regression")
  base = load_base_run(run)
  episode = episode_from_arrays(np.zeros((1, 6, 5)), np.zeros((1, 6, 1)))
  total = sum(leaf.size for leaf in jax.tree.leaves(base.params))
  for rank, expected in ((0, total), (2, None)):
    learner = make_learner({"name": "finetune", "run": run, "context_points": 4,
                            "rank": rank}).with_base(base)
    params = learner.init(jax.random.PRNGKey(0), episode)
    floats = learner.state_floats(params, episode)
    if expected is not None:
      assert floats == expected
    else:  # rank 2 on every 2-D kernel [in, out]: 2 · (in + out) each
      kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(params)
                 if leaf.ndim == 2 and "kernel" in jax.tree_util.keystr(path)]
      assert floats == sum(2 * (a + b) for a, b in kernels) < total
