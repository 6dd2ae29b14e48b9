"""Benchmarks of the comparison: how long scoring one learner on the held-out prompts takes.

Used by `benchmarks/benchmark.py --suite=compare`. Garg et al.'s evaluation shape: 1,280 prompts
of 41 points at d = 20, in chunks of 256 (CompareSettings' defaults). For each learner, the
first call (which compiles) is timed apart from the median of the later calls; the measures
are those `metalearn.comparison.compare` runs: predictions and normalised errors at every
number of examples, implicit weights (40 probes) and sensitivities at k = d.
"""

import statistics
import time

import jax

from metalearn.comparison.entries import Entry
from metalearn.comparison.implicit_weights import implicit_weight_tables
from metalearn.comparison.sensitivity import sensitivity_tables
from metalearn.evaluation import prompts, scores
from metalearn.learners import make_learner
from metalearn.tasks import make_task

PROMPTS, POINTS, DIM, BATCH = 1280, 41, 20, 256
LEARNERS = {
    "transformer (Garg tiny)": {"name": "transformer", "hidden": 64, "num_layers": 3,
                                "num_heads": 2, "max_points": POINTS},
    "transformer (Garg small)": {"name": "transformer", "hidden": 128, "num_layers": 6,
                                 "num_heads": 4, "max_points": POINTS},
    "gd_layers (1 layer, every prefix)": {"name": "gd_layers"},
    "least_squares": {"name": "least_squares"},
    "averaging": {"name": "averaging"},
    "knn": {"name": "knn"},
    "gd (1 step)": {"name": "gd"},
}


def _timed(function, calls: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `calls` more)."""
  start = time.perf_counter()
  function()
  first = time.perf_counter() - start
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def evaluation_rows(calls: int) -> list[dict]:
  """Per learner: seconds for errors by shots, implicit weights and sensitivity (k = d)."""
  task = make_task({"name": "linear_regression", "dim": DIM})
  episode = prompts.held_out_episodes(task, PROMPTS, POINTS, 0)
  rows = []
  for name, section in LEARNERS.items():
    learner = make_learner(section)
    entry = Entry(name, learner, learner.init(jax.random.PRNGKey(0), episode.prefix(2)), None)

    def errors():
      predicted = scores.predictions(learner, entry.params, episode, BATCH)
      return scores.normalised_errors(learner, task, episode, predicted)

    def weights():
      return implicit_weight_tables([entry], task, episode, (DIM,), 2 * DIM, 0, BATCH)

    def sensitivities():
      return sensitivity_tables([entry], episode, (DIM,), BATCH)

    row = {"learner": name}
    for measure, function in (("errors", errors), ("weights", weights),
                              ("sensitivity", sensitivities)):
      row[f"{measure}_first_s"], row[f"{measure}_s"] = _timed(function, calls)
    rows.append(row)
    print(f"{name}: errors {row['errors_s']:.2f}s, weights {row['weights_s']:.2f}s, "
          f"sensitivity {row['sensitivity_s']:.2f}s", flush=True)
  return rows


def table(rows: list[dict]) -> list[str]:
  lines = ["| learner | errors by shots, s (first call) | implicit weights k = d, s (first) "
           "| sensitivity k = d, s (first) |", "|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['learner']} | {r['errors_s']:.2f} ({r['errors_first_s']:.1f}) | "
                 f"{r['weights_s']:.2f} ({r['weights_first_s']:.1f}) | "
                 f"{r['sensitivity_s']:.2f} ({r['sensitivity_first_s']:.1f}) |")
  return lines
