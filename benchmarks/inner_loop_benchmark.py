"""Benchmarks of the MAML family: meta-training speed on the sinusoid, meta-gradient memory.

Used by `benchmarks/benchmark.py --suite=inner_loop`; each function returns table rows.

Speed: the project's own train step on configs/sinusoid.py (1-40-40-1 MLP, K = 10 + 10,
meta-batch 25), several meta-steps per host call, timed after compiling; tasks/s = 25 x
meta-steps/s. learn2learn (the most used PyTorch MAML library) does about 250 tasks/s with
1 inner step and 95 with 5 on this kind of 2-core machine; the goal is 100x that.

Memory: XLA's compiled temporary memory (`memory_analysis().temp_size_in_bytes`) of one
meta-gradient, jax.grad of the query loss, for a conv-4 (64 filters, 28x28) on one 20-way
5-shot episode with 5 queries per class; it does not depend on the data, so the episode is
random numbers of the right shape.
"""

import statistics
import time

import jax
import jax.numpy as jnp

# tasks/s of learn2learn's MAML on the sinusoid, by inner steps, and the speed-up goal.
LEARN2LEARN_TASKS_PER_S = {1: 250.0, 5: 95.0}
SPEEDUP_GOAL = 100.0
MEMORY_STEPS = (1, 5, 20)
MEMORY_KINDS = ("maml", "maml+remat", "first-order", "imaml")


def time_meta_training(variant: str, inner_steps: int, steps_per_call: int, calls: int) -> dict:
  """Meta-steps per second of configs/sinusoid.py:`variant` with `inner_steps`, one device."""
  from configs import sinusoid
  from metalearn.engine.runs import build_experiment
  from metalearn.engine.train_step import init_state, make_train_step, replicate
  config = sinusoid.get_config(variant)
  config.model.inner_steps = inner_steps
  config.train.update(steps_per_call=steps_per_call, num_steps=steps_per_call,
                      log_every=steps_per_call, checkpoint_every=steps_per_call)
  experiment = build_experiment(config)
  train_step = make_train_step(experiment, 1)
  state = replicate(init_state(experiment), 1)
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(train_step(state))
  compile_s = time.perf_counter() - start
  state, metrics = jax.block_until_ready(train_step(state))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train_step(state))
    times.append(time.perf_counter() - start)
  steps_per_s = steps_per_call / statistics.median(times)
  tasks_per_s = steps_per_s * config.train.batch_size
  reference = LEARN2LEARN_TASKS_PER_S.get(inner_steps)
  return {"variant": variant, "inner_steps": inner_steps, "steps_per_call": steps_per_call,
          "steps_per_s": steps_per_s, "tasks_per_s": tasks_per_s, "compile_s": compile_s,
          "reference": reference, "speedup": tasks_per_s / reference if reference else None,
          "spread": (max(times) - min(times)) / statistics.median(times)}


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


def speed_table(rows: list[dict]) -> list[str]:
  lines = ["| learner | inner steps | meta-steps/call | meta-steps/s | tasks/s | learn2learn "
           "tasks/s | speed-up | goal (100x) | compile s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
  for r in rows:
    reference = f"{r['reference']:.0f}" if r["reference"] else "-"
    speedup = f"{r['speedup']:.0f}x" if r["speedup"] else "-"
    goal = ("-" if r["speedup"] is None else
            "met" if r["speedup"] >= SPEEDUP_GOAL else "not met")
    lines.append(f"| {r['variant']} | {r['inner_steps']} | {r['steps_per_call']} | "
                 f"{r['steps_per_s']:,.0f} (±{50 * r['spread']:.0f}%) | {r['tasks_per_s']:,.0f} | "
                 f"{reference} | {speedup} | {goal} | {r['compile_s']:.1f} |")
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
