"""The comparison report end to end on smoke runs: known answers, refusals, the launcher."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs.gd_layers import get_config as gd_config
from configs.linear_regression import get_config as transformer_config
from metalearn.comparison import CompareSettings, compare, parse_runs
from metalearn.train import train_and_evaluate

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
