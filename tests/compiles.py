"""Counting XLA compiles in a test, from what jax reports for each one (no timing)."""

import contextlib

import jax

# jax._src.dispatch.BACKEND_COMPILE_EVENT, not public: a test using `counted` should also see a
# compile where one must happen, so that a renamed event fails it rather than passing unheard.
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counted():
  """Yields a list that gets one entry (the seconds it took) per XLA compile in the block."""
  compiles = []

  def heard(event, duration, **kwargs):
    if event == _BACKEND_COMPILE_EVENT:
      compiles.append(duration)
  jax.monitoring.register_event_duration_secs_listener(heard)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(heard)
