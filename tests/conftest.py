"""Two simulated CPU devices for every test, quick compiles, and a shared compilation cache."""

import os
import tempfile

# Before jax is imported anywhere (and inherited by the launchers and notebook kernels the tests
# start): data parallelism is tested on 2 host devices; and as the tests' models are tiny, XLA's
# compile, mostly its LLVM optimisation, takes most of their time: level 0 compiles the same
# computations about 4x faster.
_TEST_XLA_FLAGS = {"--xla_force_host_platform_device_count": "2",
                   "--xla_backend_optimization_level": "0"}
_flags = os.environ.get("XLA_FLAGS", "").split()
os.environ["XLA_FLAGS"] = " ".join(_flags + [f"{name}={value}"
                                             for name, value in _TEST_XLA_FLAGS.items()
                                             if not any(f.startswith(name) for f in _flags)])

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


@pytest.fixture
def smoke_config():
  """The linear-regression smoke config, unlocked so tests can change fields."""
  from configs.linear_regression import get_config
  config = get_config("smoke")
  config.unlock()
  return config
