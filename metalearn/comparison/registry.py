"""Every analysis a report can hold, as units in report order (names: settings.ANALYSES)."""

from metalearn.comparison import (errors, icl_vs_finetune, implicit_weights, interpolation,
                                  predictions, probing, sensitivity, shifts, task_diversity)
from metalearn.comparison.unit import Unit

UNITS: tuple[Unit, ...] = (errors.UNIT, predictions.UNIT, implicit_weights.UNIT,
                           sensitivity.UNIT, shifts.UNIT, probing.UNIT, interpolation.UNIT,
                           icl_vs_finetune.UNIT, task_diversity.UNIT)
