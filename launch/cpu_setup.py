"""Process settings that make XLA fast on a CPU-only machine; set before jax starts a backend.

Measured on 2 cores (benchmarks/RESULTS.md): one host device per core, with the step
pmapped over them, beats one device with two threads by 15-20%; huge pages for the
large temporaries XLA re-allocates every call cut the standard model's step by ~25%.
"""

import os
import sys

from absl import flags

HUGEPAGES = "glibc.malloc.hugetlb=1"
_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def define_hugepages_flag() -> flags.FlagHolder[bool]:
  """The launchers' --hugepages flag (on by default): see `use_hugepages`."""
  return flags.DEFINE_bool("hugepages", True, f"re-run under GLIBC_TUNABLES={HUGEPAGES} (large "
                           "XLA temporaries on transparent huge pages: faster on CPU)")


def use_hugepages() -> None:
  """Re-runs this same command under GLIBC_TUNABLES=glibc.malloc.hugetlb=1, once.

  glibc reads its tunables only at start-up, hence the re-run. The interpreter's own arguments
  (`sys.orig_argv`) are kept, so that `python -m benchmarks.benchmark` re-runs as a module.
  """
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if HUGEPAGES not in tunables:
    os.environ["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, HUGEPAGES) if t)
    os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])


def set_host_devices(count: int) -> None:
  """Splits the CPU into `count` XLA devices (replacing any count already in XLA_FLAGS)."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT)]
  os.environ["XLA_FLAGS"] = " ".join(kept + [f"{_DEVICE_COUNT}={count}"])
