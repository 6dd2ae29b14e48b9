"""The transformer suite: our train step against Garg et al.'s PyTorch code, side by side.

Used by `benchmarks/benchmark.py --suite=transformer`; each function returns rows or lines.

Garg et al.'s shapes: batch 64, 41 points, d = 20 (configs/linear_regression.py:garg, :small,
:standard). Each size compiles once (the compile call is timed apart); then our host call of
`steps_per_call` steps and the same number of steps of the PyTorch peer
(benchmarks/peers/garg_transformer.py) run alternately, ours, peer, ours, peer, ... (two
untimed warm-up rounds first), never at once: XLA's host devices and torch's threads would
compete for the same cores. Each round gives its own ratio, so a change of load reaches both.
Beside it: the model FLOPs per step (counted analytically, see `step_flops`) and the fraction
of this machine's float32 matmul peak (a jitted large matmul, measured in the same run) they
reach. Where torch or transformers is not installed, the peer's columns say so.

Read a ratio with its load column: outside load slows the peer far more than ours. Its two
OpenMP threads meet after each of its ~2,300 ops per tiny step, so while another process held
one of the 2 cores the tiny peer took ~1,880 ms/step (167-203 on an idle machine) and ours
200-226 (108-133).
"""

import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from benchmarks import side_by_side
from benchmarks.peers import optional

VARIANTS = {"tiny": "garg", "small": "small", "standard": "standard"}  # size -> config variant
# The goals: the peer's time over ours, per size (standard: reported, no goal).
SPEEDUP_GOAL = {"tiny": 2.5, "small": 1.5}
WARMUP_ROUNDS = 2


def step_flops(hidden: int, layers: int, dim: int, out: int, batch: int, points: int) -> float:
  """Model FLOPs of one training step: the forward pass of every prompt (counted as
  analysis/exchange_rate.transformer_forward_flops says), backward = 2x forward."""
  from metalearn.analysis.exchange_rate import transformer_forward_flops
  return 3.0 * batch * transformer_forward_flops(hidden, layers, dim, out, points)


def matmul_peak(n: int, repeats: int = 10) -> float:
  """GFLOP/s of a jitted n×n float32 matmul, median over `repeats` calls."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  for _ in range(2):
    matmul(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times) / 1e9


def size_config(size: str, steps_per_call: int, batch: int) -> ml_collections.ConfigDict:
  """configs/linear_regression.py's variant for `size`, one host call of `steps_per_call`."""
  from configs import linear_regression
  config = linear_regression.get_config(VARIANTS[size])
  config.train.batch_size = batch
  config.train.steps_per_call = steps_per_call
  config.train.num_steps = config.train.log_every = config.train.checkpoint_every = steps_per_call
  return config


def our_training(config: ml_collections.ConfigDict, num_devices: int | None,
                 path: str = "pmap") -> tuple[Callable[[], float], float]:
  """A callable that runs one host call of our train step (returning the last loss), compiled,
  on `num_devices` (None: every device of every process) by data-parallel `path`.

  Also returns the seconds the first call (tracing, compiling, running) took. The state is
  carried from call to call, as in training.
  """
  from metalearn.engine.data_parallel import make_data_parallel
  from metalearn.engine.experiment import check_devices
  from metalearn.engine.runs import build_experiment
  from metalearn.engine.train_step import init_state
  experiment = build_experiment(config)
  parallel = make_data_parallel(path, num_devices)
  check_devices(experiment.train, parallel.num_devices)
  train_step = parallel.train_step(experiment)
  state = parallel.put(init_state(experiment))

  def one_call() -> float:
    nonlocal state
    state, metrics = jax.block_until_ready(train_step(state))
    return float(parallel.get(metrics)["loss"][-1])

  start = time.perf_counter()
  one_call()
  return one_call, time.perf_counter() - start


def peer_installed() -> bool:
  """Whether torch and transformers (the `bench` extra) can be imported."""
  return optional("torch") is not None and optional("transformers") is not None


def peer_description(attention: str) -> str:
  """Which peer ran (`attention`: HF's attention kernel), versions and threads, or why none."""
  if not peer_installed():
    return "PyTorch peer: not installed (`pip install -e '.[bench]'`)"
  torch, transformers = optional("torch"), optional("transformers")
  return (f"PyTorch peer: Garg et al.'s TransformerModel (HF GPT2Model backbone, {attention} "
          f"attention, Adam 1e-4; benchmarks/peers/garg_transformer.py), torch "
          f"{torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads")


def peer_training(config: ml_collections.ConfigDict) -> tuple[Callable[[], float] | None, str]:
  """The peer's callable for the same shapes and steps per call, and its attention kernel."""
  if not peer_installed():
    return None, "not installed"
  from benchmarks.peers import garg_transformer
  model = config.model
  run, torch_model = garg_transformer.make_training(
      model.hidden, model.num_layers, model.num_heads, config.train.steps_per_call,
      config.train.batch_size, config.data.points, config.task.dim, config.seed)
  return run, garg_transformer.attention_implementation(torch_model)


def compare_size(size: str, steps_per_call: int, rounds: int, batch: int,
                 num_devices: int) -> dict:
  """Compiles our step for `size`, then times it and the peer alternately for `rounds`."""
  config = size_config(size, steps_per_call, batch)
  load = os.getloadavg()[0]
  ours, compile_s = our_training(config, num_devices)
  peer, attention = peer_training(config)
  runs = {"ours": ours} if peer is None else {"ours": ours, "peer": peer}
  losses = {}  # each one's loss after its last call (printed: a check that both train)

  def keeping_loss(name: str) -> Callable[[], None]:
    def run() -> None:
      losses[name] = runs[name]()
    return run

  times = side_by_side.alternate({name: keeping_loss(name) for name in runs}, rounds,
                                 WARMUP_ROUNDS)
  model = config.model
  per_step = lambda seconds: [1e3 * s / steps_per_call for s in seconds]
  row = {"size": size, "shape": f"{model.hidden}/{model.num_layers}/{model.num_heads}",
         "steps_per_call": steps_per_call, "compile_s": compile_s, "ms": per_step(times["ours"]),
         "flops": step_flops(model.hidden, model.num_layers, config.task.dim, 1, batch,
                             config.data.points),
         "loss": losses["ours"], "peer_loss": losses.get("peer"), "peer_ms": None,
         "ratio": None, "peer_attention": attention, "load": (load, os.getloadavg()[0])}
  if peer is not None:
    row.update(peer_ms=per_step(times["peer"]),
               ratio=side_by_side.speedup(times["ours"], times["peer"]))
  return row


def summary(row: dict) -> str:
  """One line per size for the log: the times, the ratio and both losses."""
  ours = (f"{row['size']}: ours {_ms(row['ms'])} ms/step (compile {row['compile_s']:.1f} s, "
          f"loss {row['loss']:.3f})")
  if row["peer_ms"] is None:
    return ours + "; PyTorch: not installed"
  return (ours + f"; PyTorch {_ms(row['peer_ms'])} ms/step (loss {row['peer_loss']:.3f}); "
          f"PyTorch / ours {side_by_side.describe(row['ratio'])}")


def _ms(times: list[float] | None) -> str:
  if times is None:
    return "not installed"
  return f"{statistics.median(times):,.1f} ({min(times):,.1f}-{max(times):,.1f})"


def _goal(size: str, ratio: dict | None) -> str:
  goal = SPEEDUP_GOAL.get(size)
  if goal is None:
    return "none"
  if ratio is None:
    return f"{goal}x: not measured"
  return f"{goal}x {'met' if ratio['median'] >= goal else 'not met'}"


def _fraction(flops: float, times: list[float] | None, peak: float) -> str:
  if times is None:
    return "not installed"
  rate = flops / statistics.median(times) / 1e6  # GFLOP/s
  return f"{rate:.1f} ({100 * rate / peak:.0f}%)"


def table(rows: list[dict], peak: float) -> list[str]:
  """The markdown table: ms/step of each, the ratio per round, FLOP/s against the peak."""
  lines = ["| size (hidden/layers/heads) | steps/call | ours ms/step | PyTorch ms/step | "
           "PyTorch / ours | goal | GFLOP/step | ours GFLOP/s (% of peak) | "
           "PyTorch GFLOP/s (% of peak) | compile s | load before / after |",
           "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
  for row in rows:
    lines.append(
        f"| {row['size']} ({row['shape']}) | {row['steps_per_call']} | {_ms(row['ms'])} | "
        f"{_ms(row['peer_ms'])} | {side_by_side.describe(row['ratio'])} | "
        f"{_goal(row['size'], row['ratio'])} | {row['flops'] / 1e9:.1f} | "
        f"{_fraction(row['flops'], row['ms'], peak)} | "
        f"{_fraction(row['flops'], row['peer_ms'], peak)} | {row['compile_s']:.1f} | "
        f"{row['load'][0]:.2f} / {row['load'][1]:.2f} |")
  return lines


def notes(rows: list[dict], peak_n: int, peaks: tuple[float, float], rounds: int,
          batch: int) -> list[str]:
  """The lines above the table: the peak, the process settings, the peer, the method."""
  return [
      f"- float32 matmul peak ({peak_n}x{peak_n}, jit), before / after the sizes: "
      f"{peaks[0]:.1f} / {peaks[1]:.1f} GFLOP/s; the fractions below are of the higher",
      f"- ours: XLA_FLAGS `{os.environ.get('XLA_FLAGS', '')}`; GLIBC_TUNABLES "
      f"`{os.environ.get('GLIBC_TUNABLES', '')}`",
      f"- {peer_description(rows[0]['peer_attention'])}",
      f"- batch {batch}, 41 points, d = 20; timed rounds: {rounds}, each one host call of ours "
      f"then the same steps of the peer, after {WARMUP_ROUNDS} warm-up rounds; ms/step: median "
      "(range); the ratio: median (range) of the rounds' ratios", ""]
