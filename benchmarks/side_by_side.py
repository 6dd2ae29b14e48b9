"""Timing the project's code and a peer's in the same run, alternately (A B A B ...).

A ratio against a number measured elsewhere says little: machines, libraries and the load
differ. Here each round times every contender once, in turn, so that a change of load
reaches all of them alike, and each round gives its own ratio.
"""

import statistics
import time
from typing import Callable


def alternate(contenders: dict[str, Callable[[], object]], rounds: int,
              warmup: int = 2) -> dict[str, list[float]]:
  """Seconds of each call, per contender: `warmup` untimed rounds, then `rounds` timed ones.

  Each callable does one unit of work and returns only when it is finished (block on the
  result inside it); the rounds call the contenders in the order given.
  """
  if rounds < 1:
    raise ValueError(f"rounds must be at least 1, got {rounds}")
  for _ in range(warmup):
    for run in contenders.values():
      run()
  times = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, run in contenders.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return times


def speedup(ours: list[float], peer: list[float]) -> dict[str, float]:
  """The peer's time over ours, per round: median, lowest and highest (1 = as fast)."""
  if len(ours) != len(peer) or not ours:
    raise ValueError(f"need one time per round from each, got {len(ours)} and {len(peer)}")
  ratios = [p / o for o, p in zip(ours, peer)]
  return {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}


def describe(ratio: dict[str, float] | None) -> str:
  """'2.31x (2.10-2.52)', or the reason there is none."""
  if ratio is None:
    return "not installed"
  return f"{ratio['median']:.2f}x ({ratio['low']:.2f}-{ratio['high']:.2f})"
