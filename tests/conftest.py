"""Two simulated CPU devices for every test, quick compiles, and a shared compilation cache."""

import os
import tempfile

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

# Several tests compile the same smoke train step; the cache compiles it once. Set through the
# environment too, so that the launchers and notebook kernels the tests start share it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "metalearn-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_configure(config):
  # Runs before any test module is imported, so before jax starts its backend. Only the default
  # selection (setup.cfg's -m "not slow"): any other may hold slow tests.
  if (config.option.markexpr or "").strip() == "not slow":
    _add_xla_flag(_QUICK_COMPILES, "0")


@pytest.fixture
def smoke_config():
  """The linear-regression smoke config, unlocked so tests can change fields."""
  from configs.linear_regression import get_config
  config = get_config("smoke")
  config.unlock()
  return config
