"""The comparison report end to end on smoke runs: its tables against numpy references,
refusals, the launcher (inner-loop runs: test_compare_inner_loop.py)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.gd_layers import get_config as gd_config
from configs.linear_regression import get_config as transformer_config
from metalearn.comparison import CompareSettings, compare, parse_runs
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate
from metalearn.tasks import make_task

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


# The full report's held-out prompts: its seed (0) and prompt count, and the fewest points any
# of its runs trained on (the GD-layer runs' 6).
POINTS = 6


def _held_out_prompts():
  """x [B, P, d], y [B, P, 1], zero_loss [B], w [B, d, 1] of the report's prompts, float64."""
  task = make_task(dict(transformer_config("smoke").task))
  episode = task.sample(jax.random.PRNGKey(0), SMALL["num_prompts"], POINTS)
  return tuple(np.asarray(a, np.float64) for a in (episode.x, episode.y, episode.zero_loss,
                                                   episode.info["w"]))


def _baseline_weights(x, y):
  """ŵ [B, P, d] after the pairs before each position (0 before any): minimum-norm least
  squares X⁺y, and averaging Xᵀy/k (Garg et al. 2022)."""
  least_squares, averaging = np.zeros(x.shape), np.zeros(x.shape)
  for b in range(x.shape[0]):
    for k in range(1, x.shape[1]):
      least_squares[b, k] = np.linalg.pinv(x[b, :k]) @ y[b, :k, 0]
      averaging[b, k] = x[b, :k].T @ y[b, :k, 0] / k
  return least_squares, averaging


def _read(directory, name):
  """(the CSV's header, its rows as {column: cell}, the JSON) of one table of the report."""
  with open(os.path.join(directory, f"{name}.csv"), newline="") as f:
    header, *rows = list(csv.reader(f))
  with open(os.path.join(directory, f"{name}.json")) as f:
    data = json.load(f)
  return header, [dict(zip(header, row)) for row in rows], data


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


def test_the_tables_written_hold_what_numpy_computes_for_the_baselines(full_report):
  """Least squares and averaging have closed forms: their errors, prediction difference,
  implicit weights and sensitivities (both predict x_qᵀŵ, so ∂ŷ/∂x_q = ŵ) in the files
  written are recomputed here in float64 from the held-out prompts alone."""
  _, directory = full_report
  x, y, zero_loss, w = _held_out_prompts()
  weights = dict(zip(("least_squares", "averaging"), _baseline_weights(x, y)))
  predicted = {name: np.einsum("bpd,bpd->bp", x, w_hat) for name, w_hat in weights.items()}

  _, rows, _ = _read(directory, "errors")
  assert [int(row["examples"]) for row in rows] == list(range(POINTS))
  for name, y_hat in predicted.items():
    expected = np.mean(np.square(y_hat - y[..., 0]) / zero_loss[:, None], axis=0)
    np.testing.assert_allclose([float(row[name]) for row in rows], expected, rtol=1e-4,
                               atol=1e-5, err_msg=name)

  _, rows, _ = _read(directory, "prediction_difference")
  np.testing.assert_allclose(
      [float(row["least_squares vs averaging"]) for row in rows],
      np.mean(np.square(predicted["least_squares"] - predicted["averaging"]), axis=0),
      rtol=1e-4, atol=1e-6)

  shots = (1, 3, 5)  # d/2, d, and 2d cut to the prompt, which is also the GD runs' context
  _, _, tables = _read(directory, "implicit_weights")
  for k in shots:
    for name, w_hat in weights.items():
      expected = np.mean(np.sum(np.square(w_hat[:, k] - w[..., 0]), axis=-1))
      assert tables["to_true_weights"][name][str(k)] == pytest.approx(expected, rel=1e-3,
                                                                       abs=1e-6), (name, k)
    apart = np.mean(np.sum(np.square(weights["least_squares"][:, k]
                                     - weights["averaging"][:, k]), axis=-1))
    assert tables["difference"]["least_squares vs averaging"][str(k)] == pytest.approx(
        apart, rel=1e-3), k

  _, _, tables = _read(directory, "sensitivity")
  for k in shots:
    a, b = weights["least_squares"][:, k], weights["averaging"][:, k]
    cosine = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    pair = tables["cosine"]["least_squares vs averaging"]
    assert pair[str(k)] == pytest.approx(np.mean(cosine), abs=1e-5), k
    assert tables["l2"]["least_squares vs averaging"][str(k)] == pytest.approx(
        np.mean(np.linalg.norm(a - b, axis=-1)), rel=1e-4), k
  # One example: least squares is x₁y₁/‖x₁‖², averaging x₁y₁, the same direction.
  assert tables["cosine"]["least_squares vs averaging"]["1"] == pytest.approx(1.0, abs=1e-5)


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


def _products(layer):
  """(M = W_Kᵀ W_Q, V = P W_V), each [heads, e, e], of one GD-layer attention layer's weights."""
  layer = {name: np.asarray(a, np.float64) for name, a in layer.items()}
  return (np.swapaxes(layer["key"], 1, 2) @ layer["query"],
          layer["projection"] @ layer["value"])


def _query_loss(layers, x, y, zero_loss, context):
  """Mean over prompts of the normalised error at the query after `context` pairs of a plain
  linear self-attention network given per layer as (M, V): every layer adds
  Σ_h V_h S M_h e to each token e, S = (1/N) Σ_{i<N} e_i e_iᵀ over the N = `context` pair
  tokens (x_i, y_i); the prediction is minus the query token (x_q, 0)'s y entry after the last
  (von Oswald et al. 2022)."""
  pairs_ = np.concatenate([x[:, :context], y[:, :context]], axis=-1)
  query = np.concatenate([x[:, context], np.zeros_like(y[:, context])], axis=-1)[:, None]
  tokens = np.concatenate([pairs_, query], axis=1)
  for m, v in layers:
    s = np.einsum("bie,bif->bef", tokens[:, :context], tokens[:, :context]) / context
    tokens = tokens + np.einsum("hgf,bfe,hek,bjk->bjg", v, s, m, tokens)
  y_hat = -tokens[:, -1, x.shape[-1]:]
  return float(np.mean(np.sum(np.square(y_hat - y[:, context]), axis=-1) / zero_loss))


def _balanced(m, v):
  """Per head, (c·M, V/c) with c = √(‖V‖/‖M‖): the representative with ‖c·M‖ = ‖V/c‖."""
  c = np.sqrt(np.linalg.norm(v, axis=(1, 2)) / np.linalg.norm(m, axis=(1, 2)))[:, None, None]
  return c * m, v / c


def test_interpolation_losses_are_those_numpy_computes_for_the_two_networks(runs, full_report):
  """The path between gd1 and gd2 at α = 0, ½, 1 (interpolation_points = 3): the endpoints,
  the raw average of their weights and the midpoint of their aligned products, each scored
  here by a float64 forward pass of its own; the errors table scores gd1 the same."""
  _, directory = full_report
  x, y, zero_loss, _ = _held_out_prompts()
  context = 5  # the GD-layer runs' context_points
  layers = {}
  for name in ("gd1", "gd2"):
    _, params, _ = load_run(runs[name])
    layers[name] = [params[f"layer_{i}"] for i in range(2)]  # two layers, not weight-tied
  loss = lambda products: _query_loss(products, x, y, zero_loss, context)
  ends = [loss([_products(layer) for layer in layers[name]]) for name in ("gd1", "gd2")]
  raw = loss([_products({k: (a[k] + b[k]) / 2 for k in a})
              for a, b in zip(layers["gd1"], layers["gd2"])])
  aligned = []
  for a, b in zip(layers["gd1"], layers["gd2"]):
    (m_a, v_a), (m_b, v_b) = _balanced(*_products(a)), _balanced(*_products(b))
    sign = np.where(np.sum(m_a * m_b, axis=(1, 2)) < 0, -1.0, 1.0)[:, None, None]
    aligned.append(((m_a + sign * m_b) / 2, (v_a + sign * v_b) / 2))
  middle = loss(aligned)

  _, rows, tables = _read(directory, "interpolation")
  path = tables["gd1 vs gd2"]
  np.testing.assert_allclose(path["endpoints"], ends, rtol=1e-4)
  np.testing.assert_allclose(path["aligned"], [ends[0], middle, ends[1]], rtol=1e-4)
  np.testing.assert_allclose(path["raw"], [ends[0], raw, ends[1]], rtol=1e-4)
  chord = np.mean(ends)
  assert path["aligned_barrier"] == pytest.approx(max(middle - chord, 0.0), abs=1e-5)
  assert path["raw_barrier"] == pytest.approx(max(raw - chord, 0.0), abs=1e-5)
  assert [(row["pair"], row["path"]) for row in rows] == [("gd1 vs gd2", "aligned"),
                                                          ("gd1 vs gd2", "raw")]
  _, _, errors = _read(directory, "errors")
  assert errors["gd1"]["mean"][context] == pytest.approx(ends[0], rel=1e-4)


def _ridge_r2(features, targets, num_train, ridge=1e-3):
  """Held-out R² of ridge regression on train-standardised features with an unpenalised bias,
  fitted on the first `num_train` rows, pooled over the target's coordinates."""
  train = features[:num_train]
  std = train.std(0)
  phi = (features - train.mean(0)) / np.where(std > 0, std, 1.0)
  t_mean = targets[:num_train].mean(0)
  gram = phi[:num_train].T @ phi[:num_train] / num_train
  moment = phi[:num_train].T @ (targets[:num_train] - t_mean) / num_train
  fitted = phi @ np.linalg.solve(gram + ridge * np.eye(len(gram)), moment) + t_mean
  held_out = targets[num_train:]
  return 1 - (np.sum(np.square(held_out - fitted[num_train:]))
              / np.sum(np.square(held_out - t_mean)))


def test_probing_and_icl_tables_hold_the_transformer_numbers(runs, full_report):
  """The linear probe of the true weights at each layer, refitted here in float64 from the
  transformer's residual stream at the query after d = 3 pairs; ICL vs fine-tuning scored
  for each transformer entry alike (the same run under two names), cosines in [−1, 1]."""
  _, directory = full_report
  learner, params, _ = load_run(runs["tf"])
  task = make_task(dict(transformer_config("smoke").task))
  episode = task.sample(jax.random.PRNGKey(0), SMALL["num_prompts"], POINTS)
  context = 3  # probe_context's default: d
  residual = np.asarray(learner.intermediates(params, episode.prefix(context + 1))["residual"],
                        np.float64)[:, :, context]             # [layers + 1, prompts, hidden]
  w = np.asarray(episode.info["w"], np.float64).reshape(episode.batch_size, -1)
  num_train = round(0.8 * episode.batch_size)
  _, _, probes = _read(directory, "probing")
  assert set(probes) == {"tf", "tf_again"}
  np.testing.assert_allclose(probes["tf"]["linear"]["weights"],
                             [_ridge_r2(layer, w, num_train) for layer in residual],
                             rtol=1e-3, atol=1e-3)

  _, rows, icl = _read(directory, "icl_vs_finetune")
  assert set(icl) == {"tf", "tf_again"} and set(icl["tf"]) == {"trained", "random_init"}
  assert icl["tf"] == icl["tf_again"]
  for model in ("trained", "random_init"):
    assert len(icl["tf"][model]["cosine_mean"]) == 1  # one block
  cosines = [float(row["cosine"]) for row in rows]
  assert len(cosines) == 4 and all(-1 <= c <= 1 for c in cosines)


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


def test_every_analysis_is_a_unit_in_report_order():
  from metalearn.comparison.registry import UNITS
  from metalearn.comparison.settings import ANALYSES
  assert tuple(unit.name for unit in UNITS) == ANALYSES
