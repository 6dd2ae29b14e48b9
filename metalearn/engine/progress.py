"""A training progress bar (rate and time left), on an interactive terminal only.

The log lines stay as they are for files, schedulers and notebooks; on a terminal they
print above the bar instead of through it.
"""

import contextlib
import logging
import sys
from typing import IO, Iterator

import tqdm


def wanted(stream: IO[str] | None = None) -> bool:
  """Whether to draw a bar: only when `stream` (stderr by default) is a terminal."""
  stream = sys.stderr if stream is None else stream
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty())


class _AboveBar(logging.Handler):
  """Emits through `inner` with the bar cleared first and redrawn after.

  (tqdm's logging_redirect_tqdm swaps only plain StreamHandlers, not absl's.)
  """

  def __init__(self, inner: logging.Handler):
    super().__init__(inner.level)
    self.inner = inner

  def emit(self, record: logging.LogRecord) -> None:
    with tqdm.tqdm.external_write_mode(file=sys.stderr):
      self.inner.handle(record)


@contextlib.contextmanager
def _lines_above_bar() -> Iterator[None]:
  loggers = [logging.getLogger(), logging.getLogger("metalearn")]
  saved = [(logger, list(logger.handlers)) for logger in loggers]
  for logger, handlers in saved:
    logger.handlers = [_AboveBar(handler) for handler in handlers]
  try:
    yield
  finally:
    for logger, handlers in saved:
      logger.handlers = handlers


class _NoBar:
  def update(self, steps: int) -> None:
    pass


@contextlib.contextmanager
def progress_bar(total: int, initial: int, enabled: bool | None = None) -> Iterator[object]:
  """A bar over steps `initial`..`total` with `update(steps)`; a do-nothing one when not wanted.

  `enabled` None decides by `wanted()`.
  """
  if not (wanted() if enabled is None else enabled):
    yield _NoBar()
    return
  with _lines_above_bar(), tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                                    file=sys.stderr) as bar:
    yield bar
