"""Benchmarks of the comparison: how long scoring one learner on the held-out prompts takes.

`prefix_rows` times the baselines' predictions at every prefix against Garg et al.'s per-prefix
`torch.linalg.lstsq` loop (benchmarks/peers/prefix_lstsq.py), alternately in the same run, and
holds their errors to a float64 pseudo-inverse.

Used by `benchmarks/benchmark.py --suite=compare`. Garg et al.'s evaluation shape: 1,280 prompts
of 41 points at d = 20, in chunks of 256 (CompareSettings' defaults). For each learner, the
first call (which compiles) is timed apart from the median of the later calls; the measures
are those `metalearn.comparison.compare` runs: predictions and normalised errors at every
number of examples, implicit weights (40 probes) and sensitivities at k = d.
"""

import functools
import os
import statistics
import time
from typing import Callable

import jax
import numpy as np

from metalearn.comparison.entries import Entry
from metalearn.comparison.implicit_weights import implicit_weight_tables
from metalearn.comparison.sensitivity import sensitivity_tables
from metalearn.evaluation import prompts, scores
from metalearn.learners import make_learner
from metalearn.tasks import make_task
from benchmarks import side_by_side
from benchmarks.peers import optional, prefix_lstsq

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


PREFIX_LEARNERS = {
    "least_squares": {"name": "least_squares"},
    "ridge (λ = 1)": {"name": "ridge", "lam": 1.0},
    "bayes ridge (σ = 0.5, τ = 1: λ = 0.25)": {"name": "ridge", "lam": 0.25},
    "gd (1 step)": {"name": "gd", "steps": 1},
    "gd (5 steps, η = 0.1)": {"name": "gd", "steps": 5, "step_size": 0.1},
}
PREFIX_GOAL = 50.0
PEER = "torch.linalg.lstsq per prefix"


def _float64_least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """[B, P]: every prefix's minimum-norm solution in float64 (batched pseudo-inverses)."""
  x, y = x.astype(np.float64), y.astype(np.float64)
  out = np.zeros(y.shape)
  for i in range(1, x.shape[1]):
    w = np.linalg.pinv(x[:, :i]) @ y[:, :i, None]
    out[:, i] = (x[:, i:i + 1] @ w)[:, 0, 0]
  return out


def _deviation(predicted: np.ndarray, reference: np.ndarray, y: np.ndarray) -> float:
  """max over k ≥ d of |normalised error − the float64 one| (errors: mean over prompts / d)."""
  error = lambda p: np.mean(np.square(np.asarray(p, np.float64) - y), axis=0) / DIM
  return float(np.max(np.abs(error(predicted) - error(reference))[DIM:]))


def _faster_thread_count(make: Callable[[int], Callable[[], object]]
                         ) -> tuple[Callable[[], object], int]:
  """A peer's run at its faster thread count (1 or one per core), each timed twice after a
  warm-up: on busy cores PyTorch's threads wait for each other, one thread can be faster."""
  best = None
  for threads in sorted({1, os.cpu_count() or 1}):
    run = make(threads)
    seconds = _timed(run, 2)[1]
    if best is None or seconds < best[2]:
      best = (run, threads, seconds)
  return best[0], best[1]


def prefix_rows(calls: int) -> list[dict]:
  """Per baseline: ms to predict every prefix of the 1,280 prompts, and against the peer."""
  task = make_task({"name": "linear_regression", "dim": DIM})
  episode = prompts.held_out_episodes(task, PROMPTS, POINTS, 0)
  x, y = np.asarray(episode.x), np.asarray(episode.y)[..., 0]
  contenders, outputs = {}, {}
  for name, section in PREFIX_LEARNERS.items():
    # As the evaluation predicts: one chunk of all the prompts, split over the devices.
    predict = functools.partial(scores.predictions, make_learner(section), {}, episode, PROMPTS)
    contenders[name] = predict
    outputs[name] = lambda predict=predict: predict()[..., 0]
  torch = optional("torch")
  if torch is not None:
    peer, threads = _faster_thread_count(
        functools.partial(prefix_lstsq.prefix_least_squares, torch, x, y))
    contenders[PEER], outputs[PEER] = peer, lambda: peer().numpy()
  times = side_by_side.alternate(contenders, calls)
  reference = _float64_least_squares(x, y)
  rows = []
  for name, seconds in times.items():
    row = {"learner": name, "ms": 1e3 * statistics.median(seconds),
           "speedup": side_by_side.speedup(seconds, times[PEER]) if torch is not None else None}
    if name == PEER:
      row["threads"] = threads
    if name in ("least_squares", PEER):
      predicted = outputs[name]()
      row["error_at_d"] = float(np.mean(np.square(predicted[:, DIM] - y[:, DIM]))) / DIM
      row["deviation"] = _deviation(predicted, reference, y)
    rows.append(row)
  return rows


def prefix_table(rows: list[dict]) -> list[str]:
  lines = [f"| learner | ms, every prefix of {PROMPTS:,} prompts | {PEER} takes, x "
           f"(range over rounds) | goal ({PREFIX_GOAL:.0f}x) | normalised error at k = d | "
           "max deviation from float64, k ≥ d |", "|---|---:|---|---|---:|---:|"]
  for r in rows:
    ratio = r["speedup"]
    goal = ("-" if ratio is None or r["learner"] == PEER else
            "met" if ratio["median"] >= PREFIX_GOAL else "not met")
    shown = (f"(the peer, {r['threads']} thread{'s' if r['threads'] > 1 else ''})"
             if r["learner"] == PEER else side_by_side.describe(ratio))
    error = f"{r['error_at_d']:.1e}" if "error_at_d" in r else ""
    deviation = f"{r['deviation']:.1e}" if "deviation" in r else ""
    lines.append(f"| {r['learner']} | {r['ms']:,.1f} | {shown} | {goal} | {error} | "
                 f"{deviation} |")
  return lines
