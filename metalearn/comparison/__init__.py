"""Comparing learners on the same held-out prompts (DESIGN.md, "What is compared").

`compare(runs, baselines, report_dir, settings)` is the one call behind launch/compare.py,
the tests and the notebooks.
"""

from metalearn.comparison.compare import compare, plan
from metalearn.comparison.entries import parse_runs
from metalearn.comparison.errors import headline
from metalearn.comparison.settings import ANALYSES, CompareSettings

__all__ = ["ANALYSES", "CompareSettings", "compare", "headline", "parse_runs", "plan"]
