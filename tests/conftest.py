"""Two simulated CPU devices for every test, and a shared compilation cache."""

import os
import tempfile

# Before jax is imported anywhere: data parallelism is tested on 2 host devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import pytest  # noqa: E402

# Several tests compile the same smoke train step; the cache compiles it once.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "metalearn-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def smoke_config():
  """The linear-regression smoke config, unlocked so tests can change fields."""
  from configs.linear_regression import get_config
  config = get_config("smoke")
  config.unlock()
  return config
