"""Benchmarks of the MAML family: meta-training speed on the sinusoid beside PyTorch, memory.

Used by `benchmarks/benchmark.py --suite=inner_loop`, which prints `suite()`'s block.

Speed: the project's own train step on configs/sinusoid.py (1-40-40-1 MLP, K = 10 + 10,
meta-batch 25), one host call of 1,000 scanned meta-steps, timed alternately (A B A B, see
benchmarks/side_by_side.py) with the PyTorch peers of benchmarks/peers/maml_torch.py on the same
problem: learn2learn's clone-and-adapt loop written in plain torch, learn2learn's own MAML class
where it is installed, and a torch.func (`functional_call`, `grad`, `vmap`) loop. A peer's call
takes as many meta-steps as fill about the time of one of ours (5 to 200), each round compares
tasks/s, and the ratio's median and range are over the rounds. A peer runs with
os.cpu_count() threads where they beat 1 thread in both of two probes before the rounds, else
with 1 (`peer_meta_training`): on 2 busy cores PyTorch's OpenMP threads waiting for each other
made these loops of tiny ops 5-20x slower than 1 thread.
Under the table: XLA's cost analysis of each of our calls and a profile of the MAML calls by
part (benchmarks/inner_loop_profile.py).

Memory: XLA's compiled temporary memory (`memory_analysis().temp_size_in_bytes`) of one
meta-gradient, jax.grad of the query loss, for a conv-4 (64 filters, 28x28) on one 20-way
5-shot episode with 5 queries per class; it does not depend on the data, so the episode is
random numbers of the right shape.
"""

import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

from benchmarks import inner_loop_profile, side_by_side
from benchmarks.peers import optional

OUR_STEPS_PER_CALL = 1000
# (variant of configs/sinusoid.py, inner steps); maml and fomaml are timed beside the peers.
SPEED_ROWS = (("maml", 1), ("maml", 5), ("fomaml", 1), ("fomaml", 5), ("imaml", 5), ("anil", 1))
FIRST_ORDER = {"maml": False, "fomaml": True}  # the variants with a peer, and their order
PEERS = {"clone_and_adapt": "clone-and-adapt", "learn2learn": "learn2learn",
         "torch_func": "torch.func"}
GOALS = {"clone_and_adapt": 100.0, "learn2learn": 100.0, "torch_func": 50.0}  # issue 13
PROFILED = (("maml", 1), ("maml", 5))
PROFILE_STEPS = 100  # meta-steps of the profiled call
PEER_STEPS = (5, 200)  # the fewest and most meta-steps in one call of a peer
PROBE_STEPS = 5  # meta-steps of each probe of a peer's thread count
MEMORY_STEPS = (1, 5, 20)
MEMORY_KINDS = ("maml", "maml+remat", "first-order", "imaml")


def our_meta_training(variant: str, inner_steps: int, steps_per_call: int = OUR_STEPS_PER_CALL
                      ) -> tuple[Callable[[], None], dict]:
  """One host call of `steps_per_call` meta-steps of configs/sinusoid.py:`variant`, one device,
  compiled; and its compile seconds, meta-batch, cost analysis and optimised HLO text."""
  from configs import sinusoid
  from metalearn.engine.runs import build_experiment
  from metalearn.engine.data_parallel import Pmap
  from metalearn.engine.train_step import init_state
  config = sinusoid.get_config(variant)
  config.model.inner_steps = inner_steps
  config.train.update(steps_per_call=steps_per_call, num_steps=steps_per_call,
                      log_every=steps_per_call, checkpoint_every=steps_per_call)
  experiment = build_experiment(config)
  parallel = Pmap(1)
  state = [parallel.put(init_state(experiment))]
  start = time.perf_counter()
  compiled = parallel.train_step(experiment).lower(state[0]).compile()
  compile_s = time.perf_counter() - start

  def call():
    state[0], _ = jax.block_until_ready(compiled(state[0]))

  return call, {"compile_s": compile_s, "meta_batch": config.train.batch_size,
                "cost": inner_loop_profile.cost_per_meta_step(compiled),
                "hlo": compiled.as_text()}


def peer_meta_training(style: str, inner_steps: int, first_order: bool, target_s: float
                       ) -> dict | None:
  """A peer's call of about `target_s` seconds, at its faster thread count; None if missing.

  One thread and os.cpu_count() threads are probed in turn, twice, for PROBE_STEPS meta-steps
  each; more threads are kept only if they win both probes (on busy cores PyTorch's OpenMP
  threads wait for each other, and a count that was fast a moment ago can be ten times slower
  the next). A probe of more threads stops at twice the one-thread probe's time: it has lost.
  """
  from benchmarks.peers import maml_torch
  many = os.cpu_count() or 1
  runs = {n: maml_torch.make_meta_training(style, inner_steps, first_order, threads=n)
          for n in sorted({1, many})}
  if runs[1] is None:
    return None
  for run in runs.values():
    run(1)  # the first steps allocate
  one_thread, many_win = [], many > 1
  for _ in range(2):
    start = time.perf_counter()
    runs[1](PROBE_STEPS)
    one_thread.append(time.perf_counter() - start)
    start, steps = time.perf_counter(), 0
    while many_win and steps < PROBE_STEPS and time.perf_counter() - start < 2 * one_thread[-1]:
      runs[many](1)
      steps += 1
    many_win = many_win and steps == PROBE_STEPS and time.perf_counter() - start < one_thread[-1]
  threads = many if many_win else 1
  seconds = sum(one_thread) / len(one_thread) / PROBE_STEPS
  steps = int(min(max(round(target_s / seconds), PEER_STEPS[0]), PEER_STEPS[1]))
  return {"run": lambda: runs[threads](steps), "threads": threads, "steps": steps}


def speed_row(variant: str, inner_steps: int, rounds: int) -> dict:
  """Ours and, for maml/fomaml, each peer, timed alternately; tasks/s and per-round ratios."""
  label = f"{variant}, {inner_steps} inner step{'s' if inner_steps > 1 else ''}"
  ours, facts = our_meta_training(variant, inner_steps)
  ours()  # the first call after compiling can be slower
  start = time.perf_counter()
  ours()
  target_s = time.perf_counter() - start
  peers = {}
  if variant in FIRST_ORDER and optional("torch") is not None:
    for style in PEERS:
      peers[style] = peer_meta_training(style, inner_steps, FIRST_ORDER[variant], target_s)
  contenders = {"ours": ours, **{style: p["run"] for style, p in peers.items() if p}}
  times = side_by_side.alternate(contenders, rounds)
  steps = {"ours": OUR_STEPS_PER_CALL, **{style: p["steps"] for style, p in peers.items() if p}}
  per_step = {name: [t / steps[name] for t in times[name]] for name in contenders}
  tasks_per_s = {name: facts["meta_batch"] / statistics.median(s) for name, s in per_step.items()}
  row = {"variant": variant, "inner_steps": inner_steps, "label": label,
         "tasks_per_s": tasks_per_s["ours"], "peers": {}, **facts}
  for style, peer in peers.items():
    row["peers"][style] = None if peer is None else {
        "tasks_per_s": tasks_per_s[style], "threads": peer["threads"], "steps": peer["steps"],
        "ratio": side_by_side.speedup(per_step["ours"], per_step[style])}
  if (variant, inner_steps) in PROFILED:  # a shorter call: the profile of 1,000 steps is large
    short, short_facts = our_meta_training(variant, inner_steps, PROFILE_STEPS)
    short()
    row["profile"] = inner_loop_profile.profile_call(short, short_facts["hlo"], PROFILE_STEPS)
  del row["hlo"]
  return row


def _memory_learner(kind: str, inner_steps: int):
  from metalearn.learners import LEARNERS
  fields = {"network": "conv4", "filters": 64, "image_size": 28, "context_points": 100,
            "inner_steps": inner_steps, "step_size": 0.1, "inner_loss": "softmax_cross_entropy"}
  if kind == "imaml":
    return LEARNERS.build({"name": "imaml", **fields})
  return LEARNERS.build({"name": "maml", "first_order": kind == "first-order",
                         "remat": kind == "maml+remat", **fields})


def meta_gradient_memory(kind: str, inner_steps: int) -> int:
  """Compiled temporary bytes of one meta-gradient on a 20-way 5-shot (+5 queries) episode."""
  from metalearn.core.episode import Episode
  ways, shots, queries = 20, 5, 5
  points = ways * (shots + queries)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  episode = Episode(
      x=jax.random.uniform(keys[0], (1, points, 28 * 28)),
      y=jax.nn.one_hot(jax.random.randint(keys[1], (1, points), 0, ways), ways),
      mask=jnp.ones((1, points)), zero_loss=jnp.ones(1))
  learner = _memory_learner(kind, inner_steps)
  params = jax.eval_shape(learner.init, jax.random.PRNGKey(0), episode)

  def query_loss(params, episode):
    logits = learner.predict(params, episode)[:, ways * shots:]
    labels = episode.y[:, ways * shots:]
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))

  compiled = jax.jit(jax.grad(query_loss)).lower(params, episode).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def memory_rows() -> list[dict]:
  rows = []
  for kind in MEMORY_KINDS:
    sizes = {steps: meta_gradient_memory(kind, steps) for steps in MEMORY_STEPS}
    growth = {first: sizes[MEMORY_STEPS[-1]] / sizes[first] - 1 for first in MEMORY_STEPS[:-1]}
    rows.append({"kind": kind, "bytes": sizes, "growth": growth})
  return rows


def _peer_cells(row: dict, style: str) -> tuple[str, str]:
  """(tasks/s, ratio against ours with its goal) of one peer in one row of the speed table."""
  if row["variant"] not in FIRST_ORDER:
    return "ours only", "-"
  peer = row["peers"].get(style)
  if peer is None:
    return "not installed", "-"
  ratio = peer["ratio"]
  goal = "met" if ratio["median"] >= GOALS[style] else "not met"
  threads = f"{peer['threads']} thread{'s' if peer['threads'] > 1 else ''}"
  return (f"{peer['tasks_per_s']:,.0f} ({threads}, {peer['steps']} steps/call)",
          f"{side_by_side.describe(ratio)}, {goal}")


def speed_table(rows: list[dict]) -> list[str]:
  header, rule = "| learner | ours tasks/s |", "| --- | ---: |"
  for style, name in PEERS.items():
    header += f" {name} tasks/s | ours / {name} (goal {GOALS[style]:.0f}x) |"
    rule += " ---: | ---: |"
  lines = [header + " compile s |", rule + " ---: |"]
  for row in rows:
    cells = [cell for style in PEERS for cell in _peer_cells(row, style)]
    lines.append(f"| {row['label']} | {row['tasks_per_s']:,.0f} | {' | '.join(cells)} | "
                 f"{row['compile_s']:.1f} |")
  return lines


def memory_table(rows: list[dict]) -> list[str]:
  last = MEMORY_STEPS[-1]
  header = " | ".join(f"{s} step{'s' if s > 1 else ''}" for s in MEMORY_STEPS)
  growth = " | ".join(f"growth {s} -> {last}" for s in MEMORY_STEPS[:-1])
  lines = [f"| meta-gradient | {header} | {growth} |",
           "| --- |" + " ---: |" * (2 * len(MEMORY_STEPS) - 1)]
  for r in rows:
    sizes = " | ".join(f"{r['bytes'][s] / 2**20:,.1f} MiB" for s in MEMORY_STEPS)
    growths = " | ".join(f"{100 * r['growth'][s]:+.0f}%" for s in MEMORY_STEPS[:-1])
    lines.append(f"| {r['kind']} | {sizes} | {growths} |")
  return lines


def suite(calls: int, machine: Callable[[], str], note: str = "") -> str:
  """The suite's markdown block: speed beside the peers, where our time goes, memory.

  `machine()` describes the machine and its load when the measurements are done.
  """
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  torch = optional("torch")
  rows = []
  for variant, inner_steps in SPEED_ROWS:
    rows.append(speed_row(variant, inner_steps, calls))
    print(f"{rows[-1]['label']}: {rows[-1]['tasks_per_s']:,.0f} tasks/s", flush=True)
  memory = memory_rows()
  peers = (f"PyTorch {torch.__version__} (benchmarks/peers/maml_torch.py)" if torch else
           "PyTorch not installed (`pip install -e '.[bench]'`)")
  lines = [f"### MAML family: {machine()} (before: {load_before})", "",
           "Meta-training speed, configs/sinusoid.py (1-40-40-1 MLP, K = 10 + 10, meta-batch 25, "
           f"Adam 1e-3), one device: {calls} rounds after 2 warm-up rounds, each timing one host "
           f"call of {OUR_STEPS_PER_CALL:,} meta-steps of ours and one call of each peer in turn; "
           "tasks/s is the median over the rounds, a ratio's median and range are over the "
           f"rounds' ratios. Peers: {peers}, each at {os.cpu_count()} threads where they beat 1 "
           "thread in two probes before the rounds, else at 1; maml rows against their "
           "second-order loops, fomaml rows against their first-order loops; iMAML and ANIL are "
           "ours only.", ""]
  lines += speed_table(rows)
  lines += ["", "Where our time goes:", ""]
  lines += [inner_loop_profile.cost_line(row) for row in rows]
  lines += [inner_loop_profile.profile_line(row["label"], row["profile"])
            for row in rows if "profile" in row]
  lines += ["", "Compiled temporary memory of one meta-gradient (XLA memory_analysis), conv-4 "
            "(64 filters, 28x28), one 20-way 5-shot episode with 5 queries per class:", ""]
  lines += memory_table(memory)
  if note:
    lines += ["", f"- {note}"]
  return "\n".join(lines) + "\n"
