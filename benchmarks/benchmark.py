"""Training speed of the project's own train step: transformer sizes, and the MAML family.

    python -m benchmarks.benchmark --sizes=tiny,small,standard --output=benchmarks/RESULTS.md
    python -m benchmarks.benchmark --suite=inner_loop --output=benchmarks/RESULTS.md
    python -m benchmarks.benchmark --suite=compare --output=benchmarks/RESULTS.md

`--suite=inner_loop` times meta-training on the sinusoid and measures meta-gradient memory
(see benchmarks/inner_loop_benchmark.py); `--suite=compare` times scoring a learner on Garg et
al.'s 1,280 held-out prompts (see benchmarks/compare_benchmark.py); the rest of this docstring is
the transformer suite.

Garg et al.'s shapes: batch 64, 41 points, d = 20 (configs/linear_regression.py:garg, :small,
:standard). Each size compiles once; the compile call and one more call are warm-up and not
timed; the table gives the median over `--calls` timed calls of `--steps_per_call` steps each.
Beside it: the model FLOPs per step (counted analytically, see `step_flops`) and the fraction of
this machine's float32 matmul peak (a jitted large matmul, measured in the same run) they reach.

By default the step is mapped over one host device per core (`--devices`, set through XLA_FLAGS
before jax starts; on 2 cores this was 20-25% faster than one device using both cores) and the
process runs with glibc's malloc backing large blocks with transparent huge pages
(`--hugepages`, GLIBC_TUNABLES=glibc.malloc.hugetlb=1; XLA frees and re-allocates its ~2 GB of
temporaries each call, and 4 KB page faults cost the standard model ~1.3 s per step otherwise).
`launch/train.py` gets the same speed when run with the same two environment settings.
"""

import datetime
import os
import platform
import re
import statistics
import time

from absl import app, flags

from launch import cpu_setup

# jax and the library are imported in main(), after XLA_FLAGS is set from --devices.
jax = jnp = None

VARIANTS = {"tiny": "garg", "small": "small", "standard": "standard"}
# ms per step of Garg et al.'s PyTorch code (HF GPT-2 backbone, Adam) on 2 cores of this kind
# of machine, and the goal for each size (2x / 1.3x / 1.1x faster).
PYTORCH_MS = {"tiny": 230.0, "small": 1150.0, "standard": 6700.0}
SPEEDUP_GOAL = {"tiny": 2.0, "small": 1.3, "standard": 1.1}
MARKERS = {"transformer": ("<!-- benchmark:begin -->", "<!-- benchmark:end -->"),
           "inner_loop": ("<!-- benchmark-inner-loop:begin -->",
                          "<!-- benchmark-inner-loop:end -->"),
           "compare": ("<!-- benchmark-compare:begin -->", "<!-- benchmark-compare:end -->")}

_SUITE = flags.DEFINE_enum("suite", "transformer", list(MARKERS), "what to time: the "
                           "transformer sizes, the MAML family (speed and memory), or the "
                           "comparison's evaluation")
_SIZES = flags.DEFINE_list("sizes", ["tiny", "small", "standard"], "sizes to time: tiny, small, "
                           "standard")
_CALLS = flags.DEFINE_integer("calls", 5, "timed host calls per size (after 2 warm-up calls)")
_STEPS_PER_CALL = flags.DEFINE_list("steps_per_call", ["20", "4", "2"], "training steps per "
                                    "host call (lax.scan): one value, or one per size")
_BATCH = flags.DEFINE_integer("batch_size", 64, "prompts per step")
_DEVICES = flags.DEFINE_integer("devices", os.cpu_count() or 1, "host devices to map the step "
                                 "over (--xla_force_host_platform_device_count); 0: leave "
                                 "XLA_FLAGS as it is and use every local device")
_HUGEPAGES = cpu_setup.define_hugepages_flag()
_PEAK_N = flags.DEFINE_integer("peak_n", 2048, "side of the float32 matmul that measures peak")
_OUTPUT = flags.DEFINE_string("output", None, "markdown file for the table (e.g. "
                              "benchmarks/RESULTS.md); its generated block is replaced")
_APPEND = flags.DEFINE_bool("append", False, "add the table to --output after what is there, "
                            "instead of replacing the generated block")
_NOTE = flags.DEFINE_string("note", "", "one line printed under the table (what was changed)")


def step_flops(hidden: int, layers: int, dim: int, out: int, batch: int, points: int) -> float:
  """Model FLOPs of one training step: forward matmuls and attention, backward = 2x forward.

  forward = 2 · (weights in matmuls) · tokens + layers · 2 · 2 · T² · hidden per sequence,
  where T = 2·points tokens, weights in matmuls = dim·hidden (read-in) + 12·hidden²·layers
  (qkv 3h², out h², MLP 8h²) and the read-out hidden·out on the `points` x tokens only;
  the attention term is QKᵀ and AV over the full T×T square (as computed, mask or not).
  Biases, LayerNorm, softmax, GELU and the optimizer are left out (well under 1%).
  """
  tokens = 2 * points
  matmul = 2 * batch * (tokens * (dim * hidden + 12 * hidden**2 * layers) + points * hidden * out)
  attention = 2 * 2 * tokens**2 * hidden * layers * batch
  return 3.0 * (matmul + attention)


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


def time_size(size: str, steps_per_call: int, calls: int, num_devices: int) -> dict:
  """Compiles the size's train step and times `calls` host calls after two warm-up calls."""
  from configs import linear_regression
  from metalearn.engine.experiment import check_devices
  from metalearn.engine.runs import build_experiment
  from metalearn.engine.train_step import init_state, make_train_step, replicate
  config = linear_regression.get_config(VARIANTS[size])
  config.train.batch_size = _BATCH.value
  config.train.steps_per_call = steps_per_call
  config.train.num_steps = config.train.log_every = config.train.checkpoint_every = steps_per_call
  experiment = build_experiment(config)
  check_devices(experiment.train, num_devices)
  train_step = make_train_step(experiment, num_devices)
  state = replicate(init_state(experiment), num_devices)
  start = time.perf_counter()
  state, metrics = train_step(state)
  jax.block_until_ready((state, metrics))
  compile_s = time.perf_counter() - start
  state, metrics = train_step(state)  # the first call after compiling can be slower
  jax.block_until_ready((state, metrics))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    state, metrics = train_step(state)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  ms = 1e3 * statistics.median(times) / steps_per_call
  model = config.model
  flops = step_flops(model.hidden, model.num_layers, config.task.dim, 1, _BATCH.value,
                     config.data.points)
  return {"size": size, "shape": f"{model.hidden}/{model.num_layers}/{model.num_heads}",
          "steps_per_call": steps_per_call, "ms": ms, "spread": 1e3 * (max(times) - min(times))
          / steps_per_call, "compile_s": compile_s, "flops": flops,
          "loss": float(metrics["loss"][0, -1])}


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"
  except OSError:
    return platform.processor() or "unknown"


def table(rows: list[dict], peak: float, machine: dict) -> str:
  lines = [
      f"### {machine['date']}: {machine['cpu']}, {machine['cores']} cores, jax "
      f"{machine['jax']}, {machine['devices']} device(s)", "",
      f"- float32 matmul peak ({_PEAK_N.value}x{_PEAK_N.value}, jit): {peak:.1f} GFLOP/s",
      f"- load average before / after: {machine['load_before']} / {machine['load_after']}",
      f"- XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}`; GLIBC_TUNABLES: "
      f"`{os.environ.get('GLIBC_TUNABLES', '')}`",
      f"- batch {_BATCH.value}, 41 points, d = 20; median of {_CALLS.value} timed calls after "
      "2 warm-up calls", ""]
  if _NOTE.value:
    lines[-1:-1] = [f"- {_NOTE.value}"]
  lines += ["| size (hidden/layers/heads) | steps/call | ms/step | steps/s | GFLOP/step | GFLOP/s "
            "| % of peak | PyTorch ms/step | speed-up | goal | compile s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for row in rows:
    rate = row["flops"] / row["ms"] / 1e6
    speedup = PYTORCH_MS[row["size"]] / row["ms"]
    goal = SPEEDUP_GOAL[row["size"]]
    lines.append(
        f"| {row['size']} ({row['shape']}) | {row['steps_per_call']} | {row['ms']:.1f} "
        f"(±{row['spread'] / 2:.1f}) | {1e3 / row['ms']:.2f} | {row['flops'] / 1e9:.1f} | "
        f"{rate:.1f} | {100 * rate / peak:.0f}% | {PYTORCH_MS[row['size']]:,.0f} | "
        f"{speedup:.2f}x | {goal}x {'met' if speedup >= goal else 'not met'} | "
        f"{row['compile_s']:.1f} |")
  return "\n".join(lines) + "\n"


def write(path: str, block: str, append: bool, suite: str = "transformer") -> None:
  """Replaces the suite's generated block in `path` (or appends, or starts the file)."""
  begin, end = MARKERS[suite]
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  old = open(path).read() if os.path.exists(path) else ""
  if append:
    text = old.rstrip("\n") + "\n\n" + block if old else block
  elif begin in old and end in old:
    head, rest = old.split(begin, 1)
    text = head + begin + "\n" + block + end + rest.split(end, 1)[1]
  elif old:
    text = old.rstrip("\n") + f"\n\n{begin}\n{block}{end}\n"
  else:
    text = f"# Benchmarks\n\n{begin}\n{block}{end}\n"
  with open(path, "w") as out:
    out.write(text)


def machine_line(num_devices: int) -> str:
  return (f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}: {cpu_model()}, "
          f"{os.cpu_count()} cores, jax {jax.__version__}, {num_devices} device(s), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def inner_loop_suite() -> str:
  """The MAML family's speed (sinusoid) and memory (conv-4, 20-way 5-shot) tables."""
  from benchmarks import inner_loop_benchmark as bench
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  speed = []
  for variant, steps in (("maml", 1), ("maml", 5), ("fomaml", 1), ("anil", 1), ("imaml", 5)):
    speed.append(bench.time_meta_training(variant, steps, 1000, _CALLS.value))
    print(f"{variant}, {steps} inner steps: {speed[-1]['tasks_per_s']:,.0f} tasks/s", flush=True)
  memory = bench.memory_rows()
  lines = [f"### MAML family: {machine_line(1)} (before: {load_before})", "",
           "Meta-training speed, configs/sinusoid.py (1-40-40-1 MLP, K = 10 + 10, meta-batch 25), "
           f"one device, median of {_CALLS.value} host calls of 1,000 meta-steps after 2 "
           "warm-up calls:", ""]
  lines += bench.speed_table(speed)
  lines += ["", "Compiled temporary memory of one meta-gradient (XLA memory_analysis), conv-4 "
            "(64 filters, 28x28), one 20-way 5-shot episode with 5 queries per class:", ""]
  lines += bench.memory_table(memory)
  if _NOTE.value:
    lines += ["", f"- {_NOTE.value}"]
  return "\n".join(lines) + "\n"


def compare_suite() -> str:
  """Seconds to score one learner on 1,280 prompts of 41 points at d = 20."""
  from benchmarks import compare_benchmark as bench
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  rows = bench.evaluation_rows(_CALLS.value)
  lines = [f"### Comparison: {machine_line(jax.local_device_count())} (before: {load_before})",
           "", "Scoring one learner (random weights: the time does not depend on them) on "
           "1,280 held-out prompts of 41 points, d = 20, chunks of 256: median of "
           f"{_CALLS.value} calls after the first, which compiles (its time in brackets):", ""]
  lines += bench.table(rows)
  if _NOTE.value:
    lines += ["", f"- {_NOTE.value}"]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _SUITE.value in ("inner_loop", "compare"):
    if _HUGEPAGES.value and _SUITE.value == "compare":
      cpu_setup.use_hugepages()
    global jax
    import jax
    block = inner_loop_suite() if _SUITE.value == "inner_loop" else compare_suite()
    print(block)
    if _OUTPUT.value:
      write(_OUTPUT.value, block, _APPEND.value, _SUITE.value)
    return
  unknown = [s for s in _SIZES.value if s not in VARIANTS]
  if unknown:
    raise app.UsageError(f"unknown size(s) {unknown}; allowed: {', '.join(VARIANTS)}")
  per_call = [int(k) for k in _STEPS_PER_CALL.value]
  if len(per_call) == 1:
    per_call *= len(_SIZES.value)
  elif not _STEPS_PER_CALL.present:  # the defaults are per size
    per_call = [per_call[list(VARIANTS).index(s)] for s in _SIZES.value]
  if len(per_call) != len(_SIZES.value) or min(per_call) < 1:
    raise app.UsageError(f"--steps_per_call={_STEPS_PER_CALL.value}: give one value >= 1, or "
                         f"one per size ({len(_SIZES.value)})")
  if _HUGEPAGES.value:
    cpu_setup.use_hugepages()
  if _DEVICES.value:
    cpu_setup.set_host_devices(_DEVICES.value)
  global jax, jnp
  import jax
  import jax.numpy as jnp
  num_devices = _DEVICES.value or jax.local_device_count()
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  peak = matmul_peak(_PEAK_N.value)
  print(f"float32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
  rows = []
  for size, steps in zip(_SIZES.value, per_call):
    rows.append(time_size(size, steps, _CALLS.value, num_devices))
    print(f"{size}: {rows[-1]['ms']:.1f} ms/step (compile {rows[-1]['compile_s']:.1f}s)",
          flush=True)
  machine = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
             "cores": os.cpu_count(), "jax": jax.__version__, "devices": num_devices,
             "load_before": load_before,
             "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())}
  block = table(rows, peak, machine)
  print(block)
  if _OUTPUT.value:
    write(_OUTPUT.value, block, _APPEND.value, "transformer")


if __name__ == "__main__":
  app.run(main)
