"""The registry of learners, filled by the learner modules as they are imported."""

from metalearn.registry import Registry

LEARNERS = Registry("learner", section="model")
