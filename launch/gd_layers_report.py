"""Compares a trained gd_layers run with tuned GD and GD++ (von Oswald et al. 2022).

    python launch/gd_layers_report.py --workdir=runs/gd_layers
    python launch/gd_layers_report.py --workdir=runs/gd_recurrent2 --output=/tmp/report.json

Prints the ½·MSE at the query after N context pairs of the network, of K tuned GD steps and
K tuned GD++ steps, the (η, γ) the trained weights imply, and the similarity of the network's
predictions and sensitivities to the solvers' (metalearn/analysis/gd_tuning.py).
"""

import json
import os
import sys

from absl import app, flags

# Config files saved in runs are rebuilt with the repository's packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import launch_logging
from metalearn.analysis.gd_tuning import format_report, gd_layers_report

_WORKDIR = flags.DEFINE_string("workdir", None, "a trained gd_layers run")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 10_000, "held-out prompts scored")
_TUNE_PROMPTS = flags.DEFINE_integer("tune_prompts", 16_384, "other prompts that tune η and γ")
_OUTPUT = flags.DEFINE_string("output", None, "also write the report here as JSON")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  report = gd_layers_report(_WORKDIR.value, _NUM_PROMPTS.value, _TUNE_PROMPTS.value)
  print(format_report(report))
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  launch_logging.run(main)
