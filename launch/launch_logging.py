"""How every launcher logs: our progress lines at INFO, the libraries' at a quieter level.

Orbax logs every file it writes at INFO and warns on every read-only restore, which would
bury the lines a researcher launched the job to see.
"""

import logging as std_logging
from typing import Callable

from absl import app, logging


def run(main: Callable[[list[str]], None], library_level: int = logging.WARNING) -> None:
  """absl's app.run(main), with the `metalearn` loggers at INFO and absl's at `library_level`."""
  logging.set_verbosity(library_level)
  std_logging.getLogger("metalearn").setLevel(std_logging.INFO)
  app.run(main)
