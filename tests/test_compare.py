"""The comparison report end to end on smoke runs: known answers, refusals, the launcher."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs.gd_layers import get_config as gd_config
from configs.linear_regression import get_config as transformer_config
from metalearn.comparison import CompareSettings, compare, headline, parse_runs
from metalearn.engine.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(num_prompts=64, batch_size=32, bootstrap_resamples=200, probe_mlp_steps=20,
             icl_prompts=8, interpolation_points=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A smoke transformer and two smoke GD-layer networks (different seeds), d = 3."""
  root = tmp_path_factory.mktemp("runs")
  made = {}
  for name, config in (("tf", transformer_config("smoke")), ("gd1", gd_config("smoke")),
                       ("gd2", gd_config("smoke"))):
    config.unlock()
    config.eval.baselines = ()
    if name == "gd2":
      config.seed = 7
    train_and_evaluate(config, str(root / name))
    made[name] = str(root / name)
  return made


@pytest.fixture(scope="module")
def full_report(runs, tmp_path_factory):
  """Every analysis; the transformer twice (under two names), two baselines."""
  directory = str(tmp_path_factory.mktemp("report") / "report")
  results = compare({"tf": runs["tf"], "tf_again": runs["tf"], "gd1": runs["gd1"],
                     "gd2": runs["gd2"]}, ["least_squares", "averaging"], directory,
                    CompareSettings(**SMALL))
  return results, directory


def test_report_holds_every_analysis_and_a_summary_embedding_its_figures(full_report):
  results, directory = full_report
  assert list(results) == ["errors", "predictions", "implicit_weights", "sensitivity", "shifts",
                           "probing", "interpolation", "icl_vs_finetune"]
  files = set(os.listdir(directory))
  for name in ("errors", "prediction_difference", "implicit_weights", "sensitivity", "shifts",
               "probing", "interpolation", "icl_vs_finetune"):
    assert {f"{name}.csv", f"{name}.json"} <= files
  summary = open(os.path.join(directory, "summary.md")).read()
  for figure in ("errors.png", "prediction_difference.png", "shifts.png", "probing.png",
                 "interpolation.png", "icl_vs_finetune.png"):
    assert figure in files and f"]({figure})" in summary
  with open(os.path.join(directory, "errors.json")) as f:
    assert set(json.load(f)) == {"tf", "tf_again", "gd1", "gd2", "least_squares", "averaging"}


def test_a_learner_against_itself_differs_by_nothing(full_report):
  results, _ = full_report
  np.testing.assert_array_equal(results["predictions"]["tf vs tf_again"], 0.0)
  for k, value in results["implicit_weights"]["difference"]["tf vs tf_again"].items():
    assert value == 0.0, k
  for k, value in results["sensitivity"]["cosine"]["tf vs tf_again"].items():
    assert value == pytest.approx(1.0, abs=1e-5), k
    assert results["sensitivity"]["l2"]["tf vs tf_again"][k] == 0.0


def test_closed_forms_hold_in_the_report(full_report):
  """Least squares: zero error and its true weights from k = d = 3 on; the zero predictor
  would score 1; averaging's implicit weights are Xᵀy/k, away from least squares'."""
  results, _ = full_report
  curve = results["errors"]["least_squares"]
  np.testing.assert_allclose(curve["mean"][3:], 0.0, atol=1e-4)
  assert curve["low"][1] <= curve["mean"][1] <= curve["high"][1]
  np.testing.assert_allclose(curve["mean"][0], 1.0, atol=0.35)  # 64 prompts of Σ w_i x_i
  to_true = results["implicit_weights"]["to_true_weights"]
  assert to_true["least_squares"][3] < 1e-6 and to_true["averaging"][3] > 0.1


def test_fixed_context_learners_are_compared_at_their_context_only(full_report):
  results, _ = full_report
  gd = results["errors"]["gd1"]["mean"]
  assert np.isnan(gd[:5]).all() and np.isfinite(gd[5])
  difference = results["predictions"]["gd1 vs least_squares"]
  assert np.isnan(difference[:5]).all() and difference[5] > 0
  assert list(results["sensitivity"]["cosine"]["gd1 vs gd2"]) == [5]


def test_interpolation_endpoints_and_icl_control_are_reported(full_report):
  results, _ = full_report
  path = results["interpolation"]["gd1 vs gd2"]
  np.testing.assert_allclose(path["aligned"][[0, -1]], path["endpoints"], rtol=1e-4)
  icl = results["icl_vs_finetune"]
  assert set(icl) == {"tf", "tf_again"} and set(icl["tf"]) == {"trained", "random_init"}
  probes = results["probing"]["tf"]
  assert set(probes) == {"linear", "mlp"} and len(probes["linear"]["weights"]) == 2


def test_queries_after_a_fixed_context_are_scored_for_every_learner(full_report):
  """The GD-layer runs take 5 context pairs: every entry's queries after those 5 are scored
  from them alone; least squares, with 5 >= d = 3 noiseless pairs, recovers them exactly."""
  results, directory = full_report
  for name, curve in results["errors"].items():
    assert set(curve["queries"]) == {5}, name
    assert np.isfinite(curve["queries"][5]["normalised"]), name
  assert results["errors"]["least_squares"]["queries"][5]["normalised"] < 1e-6
  assert {"query_errors.csv", "query_errors.json"} <= set(os.listdir(directory))
  assert "queries after the first 5 examples" in open(os.path.join(directory,
                                                                   "summary.md")).read()


def _copy_with_task(run: str, directory, **task_fields) -> str:
  """The run with its saved config's task changed (the checkpoint is never reached)."""
  copy = str(directory / os.path.basename(run))
  shutil.copytree(run, copy)
  with open(os.path.join(copy, "config.json")) as f:
    config = json.load(f)
  config["task"].update(task_fields)
  with open(os.path.join(copy, "config.json"), "w") as f:
    json.dump(config, f)
  return copy


def test_runs_of_different_dimension_or_task_are_refused_and_nothing_is_written(runs,
                                                                                tmp_path):
  wider = _copy_with_task(runs["tf"], tmp_path / "wider", dim=4)
  report = tmp_path / "report"
  with pytest.raises(ValueError, match=r"runs 'tf' and 'wide' cannot be compared: their "
                                       r"inputs have dimension 3 and 4"):
    compare({"tf": runs["tf"], "wide": wider}, [], str(report))
  noisy = _copy_with_task(runs["tf"], tmp_path / "noisy", noise_std=0.5)
  with pytest.raises(ValueError, match=r"different tasks, LinearRegression\(dim=3.*noise_std="
                                       r"0.0.*noise_std=0.5"):
    compare({"tf": runs["tf"], "noisy": noisy}, [], str(report))
  assert not report.exists()


@pytest.mark.parametrize("call, error, message", [
    (lambda r, d: compare({}, ["least_squares"], d), ValueError, "at least one run"),
    (lambda r, d: compare({"tf": r["tf"]}, ["ridge_regression"], d), ValueError,
     "unknown baseline 'ridge_regression'; allowed: "),
    (lambda r, d: compare({"tf": r["tf"]}, [], d, CompareSettings(analyses=("interpolation",))),
     ValueError, "analysis 'interpolation' does not apply: it needs two runs of plain"),
    (lambda r, d: compare({"gd1": r["gd1"]}, [], d, CompareSettings(analyses=("probing",))),
     ValueError, "'probing' does not apply: no run's learner exposes hidden states"),
    (lambda r, d: compare({"tf": r["tf"]}, [], d, CompareSettings(points=9)), ValueError,
     "points=9 is more than the runs were trained on; allowed: at most 7"),
    (lambda r, d: compare({"tf": r["tf"]}, [], d, CompareSettings(shots=(2, 7))), ValueError,
     r"shots \[7\] leave no query in prompts of 7 points"),
    (lambda r, d: compare({"tf": "/nonexistent/run"}, [], d), FileNotFoundError,
     "is not a metalearn run"),
    (lambda r, d: compare({"gd1": r["gd1"]}, [], d, CompareSettings(analyses=("shifts",))),
     ValueError, r"'shifts' does not apply: no learner predicts after shift_context=1 examples "
                 r"\(fixed-context learners: after \[5\] only\)"),
])
def test_bad_input_is_refused_before_anything_is_written(runs, tmp_path, call, error, message):
  report = tmp_path / "report"
  with pytest.raises(error, match=message):
    call(runs, str(report))
  assert not report.exists()


def test_a_report_never_overwrites_another(runs, tmp_path):
  (tmp_path / "report").mkdir()
  (tmp_path / "report" / "summary.md").write_text("earlier")
  with pytest.raises(FileExistsError, match="already holds files"):
    compare({"tf": runs["tf"]}, [], str(tmp_path / "report"))
  assert (tmp_path / "report" / "summary.md").read_text() == "earlier"


@pytest.mark.parametrize("settings, message", [
    (dict(num_prompts=0), "num_prompts must be an integer >= 1, got 0"),
    (dict(analyses=("errors", "ilwd")), r"unknown compare analyses \['ilwd'\]; allowed: errors"),
    (dict(shots=()), "shots must name at least one"),
    (dict(finetune_learning_rate=-1.0), "finetune_learning_rate must be a number > 0"),
    (dict(interpolation_points=1), "interpolation_points must be an integer >= 2"),
])
def test_bad_settings(settings, message):
  with pytest.raises(ValueError, match=message):
    CompareSettings(**settings)


def test_parse_runs():
  assert parse_runs(["a=/x/run1", "/y/run2/"]) == {"a": "/x/run1", "run2": "/y/run2/"}
  with pytest.raises(ValueError, match="two runs are named 'run'"):
    parse_runs(["/a/run", "/b/run"])


def test_launcher_refuses_incomparable_runs_without_a_traceback(runs, tmp_path):
  wider = _copy_with_task(runs["tf"], tmp_path / "wide", dim=4)
  process = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "compare.py"),
       f"--runs=tf={runs['tf']},wide={wider}", f"--report_dir={tmp_path / 'report'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert process.returncode == 1
  assert "metalearn compare: runs 'tf' and 'wide' cannot be compared" in process.stderr
  assert "Traceback" not in process.stderr and not (tmp_path / "report").exists()


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


def test_every_analysis_declares_when_it_applies():
  from metalearn.comparison.applicability import REQUIREMENTS
  from metalearn.comparison.settings import ANALYSES
  assert tuple(REQUIREMENTS) == ANALYSES


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
    own_table = train_and_evaluate(config, str(root / name))
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
             "icl_vs_finetune": "no run trained a transformer"}
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
