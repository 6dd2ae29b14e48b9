"""The comparison of inner-loop runs (MAML on few-shot digits and on the sinusoid): the analyses
that apply to a fixed-context learner on tasks without linear weights, and query metrics that
are the runs' own evaluation's."""

import os
import re

import numpy as np
import pytest

from metalearn.comparison import CompareSettings, compare, headline
from metalearn.engine.train import train_and_evaluate

SMALL = dict(num_prompts=64, batch_size=32, bootstrap_resamples=200)


@pytest.mark.slow
def test_maml_on_the_sinusoid_is_compared_at_its_context_size(tmp_path):
  """A fixed-context learner on a task without linear weights: the analyses that apply."""
  from configs.sinusoid import get_config
  config = get_config("maml-smoke")
  config.unlock()
  config.eval.baselines = ()
  train_and_evaluate(config, str(tmp_path / "maml"))
  results = compare({"maml": str(tmp_path / "maml")}, ["knn"], str(tmp_path / "report"),
                    CompareSettings(**SMALL))
  assert list(results) == ["errors", "predictions", "sensitivity"]
  variants = [name for name in results["errors"] if name != "knn"]
  assert len(variants) == len(config.model.eval_inner_steps)  # one entry per inner-step count
  for name in variants:
    mean = results["errors"][name]["mean"]
    assert np.isfinite(mean[10]) and np.isnan(np.delete(mean, 10)).all()
  assert np.isfinite(results["errors"]["knn"]["mean"]).all()
  assert list(results["sensitivity"]["cosine"][f"{variants[0]} vs knn"]) == [10]


@pytest.fixture(scope="module")
def inner_loop_runs(tmp_path_factory):
  """Smoke MAML runs on few-shot digits (an MLP base network, to keep it cheap) and on the
  sinusoid, each with two inner-step counts: {name: (workdir, its own evaluation's table,
  compare settings that draw the same held-out prompts as that evaluation)}."""
  from configs.fewshot import get_config as fewshot_config
  from configs.sinusoid import get_config as sinusoid_config
  root = tmp_path_factory.mktemp("inner_loop_runs")
  fewshot = fewshot_config("maml-1shot-smoke")
  fewshot.unlock()
  fewshot.model.update(network="mlp", widths=(8,))
  sinusoid = sinusoid_config("maml-smoke")
  sinusoid.unlock()
  made = {}
  for name, config in (("fewshot", fewshot), ("sinusoid", sinusoid)):
    config.model.eval_inner_steps = (0, 1)
    config.eval.baselines = ()
    own_table = train_and_evaluate(config, str(root / name)).queries
    made[name] = (str(root / name), own_table, dict(
        num_prompts=config.eval.num_prompts, batch_size=config.eval.batch_size,
        seed=config.eval.seed, bootstrap_resamples=50))
  return made


def _assert_queries_match_own_evaluation(errors, own_table, context):
  for variant, row in own_table.items():
    for metric, value in row.items():
      assert errors[variant]["queries"][context][metric] == pytest.approx(value, rel=1e-4), (
          variant, metric)


def test_a_fewshot_run_is_compared_with_the_analyses_that_apply(inner_loop_runs, tmp_path,
                                                                 caplog):
  """Issue 11: the default analyses crashed on few-shot episodes ("... exactly 30 points, got
  2"), even with points=30. Those that do not apply are named, with why, before any runs."""
  path, own_table, settings = inner_loop_runs["fewshot"]
  report_dir = tmp_path / "report"
  with caplog.at_level("INFO", logger="metalearn.comparison"):
    results = compare({"maml": path}, ["knn"], str(report_dir),
                      CompareSettings(points=30, **settings))
  assert list(results) == ["errors", "predictions", "sensitivity"]
  skipped = {"implicit_weights": "the task FewShotClassification has no true linear weights",
             "shifts": "shifts are defined for linear regression, not FewShotClassification",
             "probing": "the task FewShotClassification has no true linear weights",
             "interpolation": "it needs two runs of plain GD-layer networks",
             "icl_vs_finetune": "no run trained a transformer",
             "task_diversity": "the task FewShotClassification is not a pool of "
                               "linear_regression tasks"}
  summary = (report_dir / "summary.md").read_text()
  logged = [r.getMessage() for r in caplog.records if "compare skips" in r.getMessage()]
  assert len(logged) == len(skipped)
  for analysis, reason in skipped.items():
    assert f"- `{analysis}`: {reason}" in summary
    assert any(m.startswith(f"compare skips {analysis!r}: {reason}") for m in logged)
  # Each query scored from the 5-image support set alone, as the run's own evaluation does.
  _assert_queries_match_own_evaluation(results["errors"], own_table, 5)
  assert 0 <= results["errors"]["knn"]["queries"][5]["accuracy"] <= 1
  assert list(results["sensitivity"]["cosine"]["maml, 0 steps vs knn"]) == [5]
  assert {"errors.csv", "query_errors.csv", "sensitivity.csv"} <= set(os.listdir(report_dir))


def test_a_maml_run_under_errors_alone_shows_its_numbers(inner_loop_runs, tmp_path):
  """Issue 11: with analyses=('errors',) a MAML run showed '–' at every k. It shows its query
  loss after its context size, the numbers its own evaluation gives, and the launcher's
  lines for it are those numbers."""
  path, own_table, settings = inner_loop_runs["sinusoid"]
  report_dir = tmp_path / "report"
  results = compare({"maml": path}, [], str(report_dir),
                    CompareSettings(analyses=("errors",), **settings))
  assert list(results) == ["errors"]
  _assert_queries_match_own_evaluation(results["errors"], own_table, 10)
  summary = (report_dir / "summary.md").read_text()
  for variant in own_table:
    rows = [line for line in summary.splitlines() if line.startswith(f"| {variant} |")]
    assert len(rows) == 2  # by number of examples, then its queries
    assert all(re.search(r"\| \d+\.\d{3} ", row) for row in rows), rows
  assert "Analyses that do not apply" not in summary  # nothing else was asked for
  lines = headline(results["errors"])
  assert len(lines) == len(own_table)
  for line, variant in zip(lines, own_table):
    assert line.startswith(f"{variant}: queries after 10 examples: ")
    normalised = results["errors"][variant]["queries"][10]["normalised"]
    assert f"normalised {normalised:.3f} ± " in line and "–" not in line


@pytest.mark.parametrize("run, settings, message", [
    ("fewshot", dict(points=20), r"fewshot_classification episodes have exactly ways \* "
                                 r"\(shots \+ queries\) = 5 \* \(1 \+ 5\) = 30 points, got 20"),
    ("fewshot", dict(analyses=("shifts",)), "'shifts' does not apply: shifts are defined for "
                                            "linear regression, not FewShotClassification"),
    ("sinusoid", dict(analyses=("errors", "probing")),
     "'probing' does not apply: the task Sinusoid has no true linear weights"),
])
def test_analyses_asked_for_that_do_not_apply_are_refused(inner_loop_runs, tmp_path, run,
                                                          settings, message):
  with pytest.raises(ValueError, match=message):
    compare({"maml": inner_loop_runs[run][0]}, [], str(tmp_path / "report"),
            CompareSettings(**settings))
  assert not (tmp_path / "report").exists()
