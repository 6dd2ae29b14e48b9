"""The registry of task families, filled by the task modules as they are imported."""

from metalearn.registry import Registry

TASKS = Registry("task")
