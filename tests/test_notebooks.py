"""Every Colab tutorial runs top to bottom (smoke settings) and shows what a correct run must,
so that none can rot."""

import ast
import glob
import json
import os
import re

import nbclient
import nbformat
import numpy as np
import pytest

from configs import gd_layers, linear_regression

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))


def test_there_are_five_tutorials():
  assert [os.path.basename(p)[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
  # The notebooks read these: tiny settings, this checkout, and a scratch directory for runs.
  monkeypatch.setenv("METALEARN_SMOKE", "1")
  monkeypatch.setenv("METALEARN_REPO", ROOT)
  monkeypatch.setenv("METALEARN_RUNS", str(tmp_path))
  # The kernel inherits the tests' environment: 2 host devices, no persistent compilation cache.
  notebook = nbformat.read(path, as_version=4)
  assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
      "commit notebooks without outputs"
  client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.dirname(path)}})
  client.execute()
  for cell in notebook.cells:  # every figure drawn
    if cell.cell_type == "code" and "plt.show()" in cell.source:
      assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source[:80]
  CHECKS[os.path.basename(path)](_printed(notebook), str(tmp_path))


# What each notebook prints, checked against what a correct smoke run must show: closed forms
# (least squares is exact from k = d examples on noiseless prompts), identities between its
# cells, and the files its runs wrote.

def _printed(notebook) -> str:
  """Everything the code cells wrote to stdout, in order."""
  return "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                 for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def _rows(text: str, header: str, count: int) -> dict[str, list[float]]:
  """The `count` rows after the line holding `header`, {label: its decimal numbers}; a line
  without decimals (a table's row of k) is not a row."""
  lines = text.splitlines()
  start = next(i for i, line in enumerate(lines) if header in line) + 1
  rows = {}
  for line in lines[start:]:
    if len(rows) == count:
      break
    first = _NUMBER.search(line)
    if first:
      label = " ".join(line[:first.start()].split())  # "linear       weights": "linear weights"
      rows[label] = [float(v) for v in _NUMBER.findall(line)]
  assert len(rows) == count, (header, rows)
  return rows


def _number_after(text: str, label: str) -> float:
  return float(_NUMBER.search(text, text.index(label) + len(label)).group())


def _ks(text: str, header_label: str) -> list[int]:
  """The integers of the first line that starts with `header_label` (an error table's k row)."""
  line = next(line for line in text.splitlines() if line.strip().startswith(header_label))
  return [int(v) for v in line.split()[1:]]


def _check_error_table(rows, ks, dim, saved_errors):
  """Normalised errors by k: both baselines predict 0 at k = 0, least squares is exact from
  k = d, and every row is the run's own evaluation (errors.json, the same prompts)."""
  assert rows["least_squares"][0] == rows["averaging"][0]
  assert all(v == 0 for k, v in zip(ks, rows["least_squares"]) if k >= dim)
  for name, values in rows.items():
    np.testing.assert_allclose(values, [saved_errors[name][k] for k in ks], atol=6e-4)


def _saved_errors(runs, run):
  with open(os.path.join(runs, run, "eval", "errors.json")) as f:
    return json.load(f)


def _check_quickstart(text, runs):
  config = linear_regression.get_config("smoke")
  assert f"normalised error on {config.eval.num_prompts} held-out prompts" in text
  ks = _ks(text, "k ")
  assert ks == [k for k in (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20) if k < config.data.points]
  _check_error_table(_rows(text, "normalised error on", 3), ks, config.task.dim,
                     _saved_errors(runs, "quickstart_linear_regression"))


def _check_a_layer_is_a_gradient_step(text, runs):
  config = gd_layers.get_config("smoke")
  dim = config.task.dim
  # The constructed layer is one GD step: equal predictions, sensitivities, and its W_V.
  difference = _number_after(text, "max |ŷ_network − ŷ_GD|")
  assert difference <= 1e-5 * _number_after(text, "(predictions of size")
  assert _number_after(text, "sensitivity cosine ∂ŷ/∂x_q (mean)") >= 0.99999
  matrix = text[text.index("[[", text.index("value weights W_V")):]
  matrix = matrix[:matrix.index("]]") + 2]
  value = np.array([[float(v) for v in row.split()] for row in matrix.strip("[]").split("]\n [")])
  np.testing.assert_array_equal(value, np.diag([0.0] * dim + [-1.0]))
  # The run's query losses, and ½·MSE on the same prompts by the notebook's own numpy: half
  # the loss, and a standard error (ddof = 1) that is the run's 95% interval (1.96·std/√n,
  # ddof = 0) divided by 1.96·√(n/(n − 1)).
  queries = _rows(text, "query loss (squared error) after the context", 3)
  assert list(queries) == ["gd_layers", "least_squares", "averaging"]
  assert queries["least_squares"] == [0.0, 0.0]
  half = _rows(text, "½·MSE at the query", 4)
  assert list(half) == ["trained LSA", "tuned GD", "least squares", "zero"]
  assert half["least squares"] == [0.0, 0.0]
  n = config.eval.num_prompts
  assert f"{n} held-out prompts" in text
  np.testing.assert_allclose(2 * half["trained LSA"][0], queries["gd_layers"][0], atol=2e-4)
  np.testing.assert_allclose(2 * 1.96 * half["trained LSA"][1] * np.sqrt((n - 1) / n),
                             queries["gd_layers"][1], atol=1e-3)
  assert f"tuned GD ({config.model.num_layers} steps)" in text
  assert text.count("of the trained network: η =") == config.model.num_layers
  assert -1 <= _number_after(text, "  sensitivity cosine") <= 1


def _check_in_context_or_by_training(text, runs):
  config = linear_regression.get_config("smoke")
  dim, points = config.task.dim, config.data.points
  k = dim + 1
  assert f"K = {k} examples, {points - k} queries" in text
  ks = _ks(text, "k ")
  rows = _rows(text, "normalised error by number of examples k", 3)
  _check_error_table(rows, ks, dim, _saved_errors(runs, "transformer_smoke"))
  names = ["in context", "MAML, 10 steps", "fine-tuned", "least squares"]
  errors = _rows(text, f"normalised query error after K = {k} examples", 4)
  assert list(errors) == names and errors["least squares"] == [0.0, 0.0]
  # The squared prediction difference: symmetric, 0 on the diagonal, and beside least squares
  # (exact here) each learner's own normalised error (d is the zero predictor's error).
  spd = _rows(text, "squared prediction difference / d", 4)
  assert list(spd) == names
  matrix = np.array(list(spd.values()))
  np.testing.assert_array_equal(matrix, matrix.T)
  np.testing.assert_array_equal(np.diag(matrix), 0.0)
  np.testing.assert_allclose(matrix[:, -1], [errors[n][0] for n in names], atol=1.5e-3)
  # SimAOU: one cosine per layer, for the trained and the random model.
  layers = _rows(text, "layer   cosine (trained)", config.model.num_layers)
  for layer, values in layers.items():
    assert -1 <= values[0] <= 1 and -1 <= values[2] <= 1, layer


def _check_looking_inside(text, runs):
  config = linear_regression.get_config("smoke")
  dim, points = config.task.dim, config.data.points
  saved = _saved_errors(runs, "transformer_smoke")["transformer"]
  line = next(line for line in text.splitlines() if "normalised error at k examples:" in line)
  shown = ast.literal_eval(line.split(":", 1)[1].strip())
  assert list(shown) == sorted({1, dim // 2, dim, 2 * dim, points - 1})
  np.testing.assert_allclose(list(shown.values()), [saved[k] for k in shown], atol=6e-4)
  # From K >= d pairs least squares is w: their probes score alike, every layer and probe.
  for k in (dim, 2 * dim):
    rows = _rows(text, f"K = {k}: held-out R² by layer", 6)
    for probe in ("linear", "mlp"):
      assert len(rows[f"{probe} weights"]) == config.model.num_layers + 1
      np.testing.assert_allclose(rows[f"{probe} least_squares"], rows[f"{probe} weights"],
                                 atol=1.5e-3)
  # The embedding (layer 0) is an affine map of x_q: a linear probe reads x_q from it.
  assert _number_after(text, "x_q  linear R² by layer:") >= 0.99
  # Implicit weights by k: least squares recovers w from k = d on.
  ks = _ks(text, "k ")
  distances = _rows(text, "mean ‖ŵ_a − ŵ_b‖² over prompts", 6)
  for i, k in enumerate(ks):
    if k >= dim:
      assert distances["least squares vs true w"][i] == 0
      for a, b in (("transformer vs least squares", "transformer vs true w"),
                   ("least squares vs averaging", "averaging vs true w")):
        np.testing.assert_allclose(distances[a][i], distances[b][i], atol=1.5e-3)


def _check_from_context_to_weights(text, runs):
  # The GD construction is worth exactly one GD step, in context and in its written weights.
  assert "exchange rate of the GD construction: 1 step" in text
  assert _number_after(text, "GD construction: F's y-by-x block against") <= 1e-6
  for name in ("lsa_1layer", "lsa_recurrent2", "3-layer linear-attention transformer"):
    label = f"{name}: written vs in context, max |difference|"
    assert _number_after(text, label) <= 1e-5 * max(1.0, _number_after(
        text[text.index(label):], "(predictions of size"))
  assert "k = 5: in-context error" in text  # the shipped run: d = 5
  # Distillation learns from forward passes: its gap shrinks from the zero-shot one.
  rows = _rows(text, "distillation after", 2)
  distilled = next(v for label, v in rows.items() if label.endswith("distilled"))
  assert distilled[1] < distilled[0]
  # Accumulation: decay 0 keeps only the last write, which is then as if written alone.
  kept = {(decay, int(task)): [float(v) for v in values.split()] for decay, task, values in
          re.findall(r"decay (\S+) task (\d) \(\d written after\) (.*)", text)}
  assert sorted(kept) == [(d, t) for d in ("0.0", "0.5", "1.0") for t in range(4)]
  np.testing.assert_allclose(kept[("0.0", 3)][0], kept[("0.0", 3)][1], rtol=1e-5)
  tokens = int(re.search(r"(\d+) context tokens: fast weights", text).group(1))
  assert tokens == 4 * 10
  # One layer, one head, key width 11: a key and a value per token against one 11 x 11 matrix.
  assert f"fast weights {11 * 11 * 4} bytes, KV cache {2 * tokens * 11 * 4} bytes" in text


CHECKS = {"01_quickstart.ipynb": _check_quickstart,
          "02_a_layer_is_a_gradient_step.ipynb": _check_a_layer_is_a_gradient_step,
          "03_in_context_or_by_training.ipynb": _check_in_context_or_by_training,
          "04_looking_inside.ipynb": _check_looking_inside,
          "05_from_context_to_weights.ipynb": _check_from_context_to_weights}
