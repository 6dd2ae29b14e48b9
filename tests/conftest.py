"""Two simulated CPU devices for every test, quick compiles, no persistent compilation cache."""

import faulthandler
import gc
import os

# Before jax is imported anywhere (and inherited by the launchers and notebook kernels the tests
# start): data parallelism is tested on 2 host devices.
_DEVICE_COUNT = "--xla_force_host_platform_device_count"
# The fast tests' models are tiny: XLA's compile, mostly its LLVM optimisation, takes most of their
# time, and level 0 compiles the same computations about 4x faster. Slow tests train for minutes,
# where optimised code pays for its compile, so they keep XLA's default.
_QUICK_COMPILES = "--xla_backend_optimization_level"


def _add_xla_flag(name: str, value: str) -> None:
  flags = os.environ.get("XLA_FLAGS", "").split()
  if not any(flag.startswith(name) for flag in flags):
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"{name}={value}"])


_add_xla_flag(_DEVICE_COUNT, "2")

import jax  # noqa: E402
import pytest  # noqa: E402

# No persistent compilation cache, here or in the launchers and notebook kernels the tests start:
# with jax 0.10.2 on 2 host devices, writing a collective step's executable to it aborted a test
# worker (tests/test_host_devices.py, reproduced here) and reading one back crashed another in CI,
# and the run then hung. The cache saved about 2 of 14 minutes.
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
jax.config.update("jax_enable_compilation_cache", False)

# A test that hangs fails with every thread's stack after this long instead of stalling the run
# (setup.cfg sets the default selection's limit; a slow test may train for longer).
_SLOW_TEST_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items):
  for item in items:
    if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
      item.add_marker(pytest.mark.timeout(_SLOW_TEST_TIMEOUT_S))


# pytest-timeout's thread needs the GIL to end a stuck test: in CI a worker died, its replacement
# stalled with no output, and the run hung until the CI's limit. faulthandler's watchdog is a C
# thread that needs no GIL: this long after a test's own limit it prints every thread's stack
# and ends the worker, which xdist replaces.
_WATCHDOG_MARGIN_S = 120
_WORKER_START_LIMIT_S = 600  # a (replacement) worker's imports and collection: under a minute
_watchdog_output = []  # the process's stderr, kept before pytest captures it (pytest_configure)


def _arm_watchdog(seconds: float) -> None:
  faulthandler.dump_traceback_later(seconds, exit=True,
                                    file=_watchdog_output[0] if _watchdog_output else 2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  marker = item.get_closest_marker("timeout")
  limit = float(marker.args[0] if marker and marker.args else item.config.getini("timeout") or 0)
  if limit > 0:
    _arm_watchdog(limit + _WATCHDOG_MARGIN_S)
  try:
    yield
  finally:
    faulthandler.cancel_dump_traceback_later()


def pytest_configure(config):
  _watchdog_output.append(os.fdopen(os.dup(2), "w"))
  if hasattr(config, "workerinput"):  # an xdist worker: its start and its collection
    _arm_watchdog(_WORKER_START_LIMIT_S)
  # Runs before any test module is imported, so before jax starts its backend. Only the default
  # selection (setup.cfg's -m "not slow"): any other may hold slow tests.
  if (config.option.markexpr or "").strip() == "not slow":
    _add_xla_flag(_QUICK_COMPILES, "0")


def pytest_collection_finish(session):
  faulthandler.cancel_dump_traceback_later()


# Every compiled executable keeps its code in memory maps of its own (a two-device pmap step about
# a dozen), and jax's caches keep every executable for the process's life. A worker that ran most
# of the suite passed Linux's limit of 65,530 maps per process (vm.max_map_count) at about 95%:
# the next compile's mmap failed and the worker aborted or segfaulted, in CI and here. After a
# test file, a worker past a third of its limit drops the caches; clearing after every file
# would also drop the small eager-op programs every file shares and compile them again.
_MAPS = "/proc/self/maps"


def _map_limit() -> int:
  try:
    with open("/proc/sys/vm/max_map_count") as limit:
      return int(limit.read())
  except OSError:
    return 65530


_CLEAR_AT_MAPS = _map_limit() // 3


def _maps_in_use() -> int | None:
  try:
    with open(_MAPS) as maps:
      return sum(1 for _ in maps)
  except OSError:  # no /proc (macOS): no count to go by
    return None


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
  yield
  in_use = _maps_in_use()
  if in_use is None or in_use > _CLEAR_AT_MAPS:
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def smoke_config():
  """The linear-regression smoke config, unlocked so tests can change fields."""
  from configs.linear_regression import get_config
  config = get_config("smoke")
  config.unlock()
  return config
