"""Training speed of the project's own train step: transformer sizes, and the MAML family.

    python -m benchmarks.benchmark --sizes=tiny,small,standard --output=benchmarks/RESULTS.md
    python -m benchmarks.benchmark --suite=inner_loop --output=benchmarks/RESULTS.md
    python -m benchmarks.benchmark --suite=compare --output=benchmarks/RESULTS.md
    python -m benchmarks.benchmark --suite=scaling --calls=3 --output=benchmarks/RESULTS.md

`--suite=inner_loop` times meta-training on the sinusoid and measures meta-gradient memory
(see benchmarks/inner_loop_benchmark.py); `--suite=compare` times scoring a learner on Garg et
al.'s 1,280 held-out prompts (see benchmarks/compare_benchmark.py); `--suite=scaling` times the
tiny, small and standard transformers and MAML on 1 and 2 devices and 2 processes, on both
data-parallel paths (see benchmarks/scaling_benchmark.py; --sizes picks among tiny, small,
standard, maml); the rest of this docstring is the transformer suite.

The transformer suite (the default) times our train step and Garg et al.'s PyTorch code
alternately in the same run (see benchmarks/transformer_benchmark.py).

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

from absl import app, flags

from launch import cpu_setup

# jax and the library are imported in main(), after XLA_FLAGS is set from --devices.
jax = None

MARKERS = {"transformer": ("<!-- benchmark:begin -->", "<!-- benchmark:end -->"),
           "inner_loop": ("<!-- benchmark-inner-loop:begin -->",
                          "<!-- benchmark-inner-loop:end -->"),
           "compare": ("<!-- benchmark-compare:begin -->", "<!-- benchmark-compare:end -->"),
           "baselines": ("<!-- benchmark-baselines:begin -->",
                         "<!-- benchmark-baselines:end -->"),
           "scaling": ("<!-- benchmark-scaling:begin -->", "<!-- benchmark-scaling:end -->")}

_SUITE = flags.DEFINE_enum("suite", "transformer", list(MARKERS), "what to time: the "
                           "transformer sizes, the MAML family (speed and memory), the "
                           "comparison's evaluation, the baselines at every prefix, or "
                           "steps/s over devices, paths and processes")
_SIZES = flags.DEFINE_list("sizes", ["tiny", "small", "standard"], "sizes to time: tiny, small, "
                           "standard")
_CALLS = flags.DEFINE_integer("calls", 5, "timed host calls per size (after 2 warm-up calls)")
_STEPS_PER_CALL = flags.DEFINE_list("steps_per_call", ["20", "4", "2"], "training steps per "
                                    "host call (lax.scan): one value, or one per size")
_BATCH = flags.DEFINE_integer("batch_size", 64, "prompts per step")
_DEVICES = flags.DEFINE_integer("devices", os.cpu_count() or 1, "host devices to map the step "
                                 "over, or to split the baselines' prompts over "
                                 "(--xla_force_host_platform_device_count); 0: leave "
                                 "XLA_FLAGS as it is and use every local device")
_HUGEPAGES = cpu_setup.define_hugepages_flag()
_PEAK_N = flags.DEFINE_integer("peak_n", 2048, "side of the float32 matmul that measures peak")
_OUTPUT = flags.DEFINE_string("output", None, "markdown file for the table (e.g. "
                              "benchmarks/RESULTS.md); its generated block is replaced")
_APPEND = flags.DEFINE_bool("append", False, "add the table to --output after what is there, "
                            "instead of replacing the generated block")
_NOTE = flags.DEFINE_string("note", "", "one line printed under the table (what was changed)")


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read(), re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"
  except OSError:
    return platform.processor() or "unknown"


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


def transformer_suite(num_devices: int) -> str:
  """Our train step and Garg et al.'s PyTorch code, per size, timed alternately."""
  from benchmarks import transformer_benchmark as bench
  unknown = [s for s in _SIZES.value if s not in bench.VARIANTS]
  if unknown:
    raise app.UsageError(f"unknown size(s) {unknown}; allowed: {', '.join(bench.VARIANTS)}")
  per_call = [int(k) for k in _STEPS_PER_CALL.value]
  if len(per_call) == 1:
    per_call *= len(_SIZES.value)
  elif not _STEPS_PER_CALL.present:  # the defaults are per size
    per_call = [per_call[list(bench.VARIANTS).index(s)] for s in _SIZES.value]
  if len(per_call) != len(_SIZES.value) or min(per_call) < 1:
    raise app.UsageError(f"--steps_per_call={_STEPS_PER_CALL.value}: give one value >= 1, or "
                         f"one per size ({len(_SIZES.value)})")
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  peak_before = bench.matmul_peak(_PEAK_N.value)
  print(f"float32 matmul peak: {peak_before:.1f} GFLOP/s", flush=True)
  rows = []
  for size, steps in zip(_SIZES.value, per_call):
    rows.append(bench.compare_size(size, steps, _CALLS.value, _BATCH.value, num_devices))
    print(bench.summary(rows[-1]), flush=True)
  peaks = (peak_before, bench.matmul_peak(_PEAK_N.value))
  lines = [f"### Transformer: {machine_line(num_devices)} (before: {load_before})", ""]
  lines += bench.notes(rows, _PEAK_N.value, peaks, _CALLS.value, _BATCH.value)
  if _NOTE.value:
    lines[-1:-1] = [f"- {_NOTE.value}"]
  lines += bench.table(rows, max(peaks))
  return "\n".join(lines) + "\n"


def inner_loop_suite() -> str:
  """The MAML family's speed beside PyTorch (sinusoid) and memory (conv-4, 20-way 5-shot)."""
  from benchmarks import inner_loop_benchmark as bench
  return bench.suite(_CALLS.value, lambda: machine_line(1), _NOTE.value)


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


def baselines_suite() -> str:
  """The baselines at every prefix against Garg et al.'s per-prefix torch.linalg.lstsq loop."""
  from benchmarks import compare_benchmark as bench
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  rows = bench.prefix_rows(_CALLS.value)
  lines = [f"### Baselines at every prefix: {machine_line(jax.local_device_count())} (before: "
           f"{load_before})", "", "Predicting every position of 1,280 held-out prompts of 41 "
           "points, d = 20 (noiseless), from the pairs before it; each round times every "
           f"contender once, in turn; median of {_CALLS.value} rounds after 2 warm-up rounds:",
           ""]
  lines += bench.prefix_table(rows)
  if _NOTE.value:
    lines += ["", f"- {_NOTE.value}"]
  return "\n".join(lines) + "\n"


def scaling_suite() -> str:
  """Steps/s of each model on 1 and 2 devices and 2 processes, pmap and jit."""
  from benchmarks import scaling_benchmark as bench
  unknown = [m for m in _SIZES.value if m not in bench.MODELS]
  if unknown:
    raise app.UsageError(f"unknown model(s) {unknown}; allowed: {', '.join(bench.MODELS)}")
  models = _SIZES.value if _SIZES.present else list(bench.MODELS)
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  measured = bench.rows(models, _CALLS.value)
  lines = [f"### Scaling: {machine_line(1)} (before: {load_before})", "",
           "Steps/s of our train step (batch 64, 41 points, d = 20; MAML: the sinusoid, meta-"
           f"batch {bench.MAML_BATCH}, 1 inner step, second order), median of "
           f"{_CALLS.value} host calls after one untimed call (range in brackets; × the same "
           "path's 1-device rate); steps per call: "
           + ", ".join(f"{m} {bench.STEPS_PER_CALL[m]}" for m in models) + ".", ""]
  lines += bench.table(measured)
  if _NOTE.value:
    lines += ["", f"- {_NOTE.value}"]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _SUITE.value in ("inner_loop", "compare", "baselines", "scaling"):
    if _HUGEPAGES.value and _SUITE.value != "inner_loop":
      cpu_setup.use_hugepages()
    # The evaluation splits prompts over this process's devices (evaluation/device_split.py):
    # the baselines are timed as it runs them, on one host device per core.
    if _SUITE.value == "baselines" and _DEVICES.value:
      cpu_setup.set_host_devices(_DEVICES.value)
    global jax
    import jax
    block = {"inner_loop": inner_loop_suite, "compare": compare_suite,
             "baselines": baselines_suite, "scaling": scaling_suite}[_SUITE.value]()
    print(block)
    if _OUTPUT.value:
      write(_OUTPUT.value, block, _APPEND.value, _SUITE.value)
    return
  if _HUGEPAGES.value:
    cpu_setup.use_hugepages()
  if _DEVICES.value:
    cpu_setup.set_host_devices(_DEVICES.value)
  global jax
  import jax
  block = transformer_suite(_DEVICES.value or jax.local_device_count())
  print(block)
  if _OUTPUT.value:
    write(_OUTPUT.value, block, _APPEND.value, "transformer")


if __name__ == "__main__":
  app.run(main)
