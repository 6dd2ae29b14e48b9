"""The registry of learners, filled by the learner modules as they are imported."""

from metalearn.core.registry import Registry

LEARNERS = Registry("learner", section="model")
