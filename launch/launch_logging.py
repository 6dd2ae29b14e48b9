"""How every launcher and notebook logs: our progress lines at INFO, the libraries' quieter.

Orbax logs every file it writes at INFO and warns on every read-only restore, which would
bury the lines a researcher launched the job to see.
"""

import logging as std_logging
import sys
from typing import Callable

from absl import app, logging


def run(main: Callable[[list[str]], None], library_level: int = logging.WARNING) -> None:
  """absl's app.run(main), with the `metalearn` loggers at INFO and absl's at `library_level`."""
  logging.set_verbosity(library_level)
  std_logging.getLogger("metalearn").setLevel(std_logging.INFO)
  app.run(main)


def for_notebook() -> None:
  """The notebooks' set-up: the `metalearn` progress lines at INFO on stdout, once each.

  On stdout, as the notebooks print their results, not red on stderr; not passed on
  to the root logger, so a handler there does not print them twice. Idempotent, so a
  re-run cell adds no second handler.
  """
  log = std_logging.getLogger("metalearn")
  log.setLevel(std_logging.INFO)
  log.propagate = False
  if not any(isinstance(handler, _NotebookHandler) for handler in log.handlers):
    log.addHandler(_NotebookHandler(sys.stdout))


class _NotebookHandler(std_logging.StreamHandler):
  """The handler `for_notebook` adds (a class of its own, so that it is found again)."""
