"""What a comparison measures and on how many held-out prompts; checked before anything loads."""

import dataclasses

from metalearn.core import checks

# Every analysis a report can hold, in report order (its unit: comparison/<name>.py, all in
# comparison/registry.py).
ANALYSES = ("errors", "predictions", "implicit_weights", "sensitivity", "shifts", "probing",
            "interpolation", "icl_vs_finetune", "task_diversity")


@dataclasses.dataclass(frozen=True)
class CompareSettings:
  """How `compare` evaluates; None picks a value from the runs' task (see each field)."""

  num_prompts: int = 1280   # held-out prompts every learner sees (Garg et al. evaluate on 1,280)
  seed: int = 0             # draws the held-out prompts, probes and resamples: one per report
  batch_size: int = 256     # prompts per compiled call
  points: int | None = None  # points per prompt; None: the fewest any run was trained on
  analyses: tuple[str, ...] | None = None  # None: every analysis that applies to the runs
  bootstrap_resamples: int = 1000  # resamples behind the 90% intervals of the error curves
  # Examples for weights/sensitivity; None: d/2, d, 2d (the support set on few-shot tasks)
  # and the context sizes of the fixed-context learners.
  shots: tuple[int, ...] | None = None
  num_probes: int | None = None  # probe inputs per prompt for implicit weights; None: 2·d
  shift_context: int | None = None  # context pairs before the queries under shifts; None: d/2
  shift_queries: int = 8    # queries per prompt under each shift
  # Context pairs before the probed query; None: d (the support set on few-shot tasks).
  probe_context: int | None = None
  probe_mlp_steps: int = 500  # Adam steps of each MLP read-out
  interpolation_points: int = 11  # α values from 0 to 1 on the interpolation path
  # Context pairs for ICL vs fine-tuning; None: d (the support set on few-shot tasks).
  icl_context: int | None = None
  icl_prompts: int = 256    # prompts for ICL vs fine-tuning (one fine-tuning per prompt)
  finetune_steps: int = 10  # SGD steps of the fine-tuning side
  finetune_learning_rate: float = 1e-2  # their step size

  def __post_init__(self):
    for field in ("num_prompts", "batch_size", "bootstrap_resamples", "probe_mlp_steps",
                  "icl_prompts", "shift_queries"):
      checks.check_int(f"compare {field}", getattr(self, field), 1)
    checks.check_int("compare seed", self.seed, 0)
    checks.check_int("compare interpolation_points", self.interpolation_points, 2)
    checks.check_int("compare finetune_steps", self.finetune_steps, 0)
    for field in ("points", "num_probes", "shift_context", "probe_context", "icl_context"):
      checks.check_int(f"compare {field}", getattr(self, field), 1, optional=True)
    if self.shots is not None:
      if not self.shots:
        raise ValueError("compare shots must name at least one number of examples, or be None")
      for k in self.shots:
        checks.check_int("compare shots", k, 0)
    if self.analyses is not None:
      unknown = [a for a in self.analyses if a not in ANALYSES]
      if unknown or not self.analyses:
        raise ValueError(f"unknown compare analyses {unknown or '(none given)'}; allowed: "
                         f"{', '.join(ANALYSES)}")
    checks.check_positive("compare finetune_learning_rate", self.finetune_learning_rate)

  def default_shots(self, dim: int, points: int, contexts: tuple[int, ...] = (),
                    support: int | None = None) -> tuple[int, ...]:
    """The example counts of the weight and sensitivity tables, within the prompt: `shots`,
    or d/2, d, 2d (the task's `support` set instead, where its episodes open with one) and
    the context sizes of the fixed-context learners (`contexts`)."""
    if self.shots is None:
      shots = ((support,) if support is not None else (max(dim // 2, 1), dim, 2 * dim))
      return tuple(sorted({min(k, points - 1) for k in shots + tuple(contexts)}))
    too_many = [k for k in self.shots if k >= points]
    if too_many:
      raise ValueError(f"compare shots {too_many} leave no query in prompts of {points} points; "
                       f"allowed: 0 to {points - 1}")
    return tuple(sorted(set(self.shots)))

  def context(self, field: str, dim: int, support: int | None = None) -> int:
    """The context pairs of `field` ('probe_context', 'icl_context' or 'shift_context'): its
    value, or else the task's `support` set where its episodes open with one, else d (d/2
    for shifts, whose orthogonal query needs a direction the context leaves free)."""
    value = getattr(self, field)
    if value is not None:
      return value
    if field == "shift_context":
      return max(dim // 2, 1)
    return support if support is not None else dim
