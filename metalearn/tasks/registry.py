"""The registry of task families, filled by the task modules as they are imported."""

from metalearn.core.registry import Registry

TASKS = Registry("task")
