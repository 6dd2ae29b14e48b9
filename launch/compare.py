r"""Compares trained runs and baselines on the same held-out prompts; writes a report directory.

    python launch/compare.py --runs=transformer=runs/linear_regression \
        --baselines=least_squares,averaging --report_dir=reports/linear_regression
    python launch/compare.py --runs=a=runs/gd1,b=runs/gd2 --report_dir=reports/gd \
        --settings.num_prompts=2560 --settings.analyses="('errors','interpolation')"

Every field of metalearn.comparison.CompareSettings is a flag (--settings.<field>).
"""

import dataclasses
import logging as std_logging
import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ml_collections

import config_flag
import cpu_setup
import launch_logging
from metalearn.comparison import CompareSettings, compare, headline, parse_runs
from metalearn.learners import baseline_names
from metalearn.engine.workdir import WorkdirError

_OPTIONAL_TYPES = {"points": int, "analyses": tuple, "shots": tuple, "num_probes": int,
                   "shift_context": int, "probe_context": int, "icl_context": int}


def _settings_flags() -> ml_collections.ConfigDict:
  """CompareSettings' defaults as a ConfigDict; None fields accept a value of their type."""
  fields = {}
  for field in dataclasses.fields(CompareSettings):
    value = field.default
    fields[field.name] = (ml_collections.config_dict.placeholder(_OPTIONAL_TYPES[field.name])
                          if value is None else value)
  return ml_collections.ConfigDict(fields)


_RUNS = flags.DEFINE_list("runs", None, "runs to compare, each 'name=workdir' or 'workdir'")
_BASELINES = flags.DEFINE_list("baselines", [], "baselines beside them; allowed: "
                               + ", ".join(baseline_names()))
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "new or empty directory for the report")
_SETTINGS = config_flag.define_dict("settings", _settings_flags(),
                                    "what to measure (CompareSettings)", "metalearn compare")
_HUGEPAGES = cpu_setup.define_hugepages_flag()
# So that --help lists --settings and --hugepages, defined in those modules.
flags.adopt_module_key_flags(config_flag)
flags.adopt_module_key_flags(cpu_setup)
flags.mark_flags_as_required(["runs", "report_dir"])
log = std_logging.getLogger("metalearn.launch")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _HUGEPAGES.value:
    cpu_setup.use_hugepages()
  try:
    settings = CompareSettings(**_SETTINGS.value.to_dict())
    results = compare(parse_runs(_RUNS.value), _BASELINES.value, _REPORT_DIR.value, settings)
  except (ValueError, FileNotFoundError, FileExistsError, WorkdirError) as error:
    sys.exit(f"metalearn compare: {error}")
  for line in headline(results["errors"]):
    log.info("%s", line)
  log.info("ran %s; report (tables, figures, summary.md): %s", ", ".join(results),
           _REPORT_DIR.value)


if __name__ == "__main__":
  launch_logging.run(main, logging.ERROR)
