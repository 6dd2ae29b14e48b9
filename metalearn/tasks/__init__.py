"""Task families: distributions over prompts, sampled on the device."""

from metalearn.tasks.base import TaskFamily
from metalearn.tasks.registry import TASKS
from metalearn.tasks import classification  # noqa: F401  (registers its tasks)
from metalearn.tasks import decision_tree  # noqa: F401
from metalearn.tasks import fewshot  # noqa: F401
from metalearn.tasks import linear  # noqa: F401
from metalearn.tasks import mixture  # noqa: F401
from metalearn.tasks import pool  # noqa: F401
from metalearn.tasks import relu_net  # noqa: F401
from metalearn.tasks import sinusoid  # noqa: F401


def make_task(section) -> TaskFamily:
  """Builds the task family a config's `task` section names."""
  return TASKS.build(section)
