"""The context-writing launcher and its reports: tables and plots written, bad runs refused
before anything is written."""

import csv
import json
import os
import subprocess
import sys

import numpy as np

from metalearn.comparison.context_writing import write_distillation_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "launch", "context_writing.py")
PRETRAINED = os.path.join(ROOT, "metalearn", "pretrained")


def _launch(*flags):
  return subprocess.run([sys.executable, LAUNCHER, *flags], capture_output=True, text=True,
                        timeout=300)


def test_the_launcher_writes_a_pretrained_gd_layer_runs_accumulation(tmp_path):
  report = tmp_path / "report"
  done = _launch("--analysis=accumulation", f"--run={os.path.join(PRETRAINED, 'lsa_1layer')}",
                 f"--report_dir={report}", "--tasks=3", "--examples=5", "--decays=1,0",
                 "--prompts=12")
  assert done.returncode == 0, done.stderr[-2000:]
  with open(report / "context_accumulation.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["decay"], r["task"]) for r in rows] == [
      ("1", "0"), ("1", "1"), ("1", "2"), ("0", "0"), ("0", "1"), ("0", "2")]
  # Decay 0 keeps only the last write: the last task is as if written alone.
  last = rows[-1]
  np.testing.assert_allclose(float(last["error_after_all"]), float(last["error_alone"]),
                             rtol=1e-5)
  with open(report / "context_accumulation.json") as f:
    memory = json.load(f)["memory"]
  assert memory["context_tokens"] == 15 and memory["fast_weight_bytes"] > 0
  assert (report / "accumulation.png").stat().st_size > 1000
  assert "KV cache" in done.stderr


def test_the_launcher_refuses_what_it_cannot_measure_before_writing(tmp_path):
  lsa = os.path.join(PRETRAINED, "lsa_1layer")
  done = _launch("--analysis=distillation", f"--run={lsa}", f"--report_dir={tmp_path / 'a'}")
  assert done.returncode == 1
  assert done.stderr.strip().endswith("distillation trains a transformer's LoRA adapters; "
                                      "this run trained GDLayers")
  softmax = os.path.join(PRETRAINED, "linear_regression")
  done = _launch("--analysis=accumulation", f"--run={softmax}", f"--report_dir={tmp_path / 'b'}")
  assert done.returncode == 1
  assert "softmax attention has no exact weight update" in done.stderr
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "old.csv").write_text("kept")
  done = _launch("--analysis=accumulation", f"--run={lsa}", f"--report_dir={tmp_path / 'c'}")
  assert done.returncode == 1 and "already holds files" in done.stderr
  assert (tmp_path / "c" / "old.csv").read_text() == "kept"


def test_the_distillation_report_plots_gap_and_error_per_k(tmp_path):
  curve = lambda *v: {"gap": np.array(v), "error": np.array(v) + 0.5}
  result = {"in_context": {3: 0.4},
            "curves": {(3, "LoRA r=1", "in-context predictions at fresh inputs"):
                       curve(0.3, 0.1, 0.05),
                       (3, "LoRA r=1", "the k context labels"): curve(0.3, 0.2, 0.25)},
            "rows": [{"k": 3, "route": "LoRA r=1", "trained_on": on, "in_context_error": 0.4,
                      "zero_shot_gap": 0.3, "gap_at_budget": gap, "error_at_budget": gap + 0.5}
                     for on, gap in (("in-context predictions at fresh inputs", 0.05),
                                     ("the k context labels", 0.25))]
                    + [{"k": 3, "route": "written (exact)", "trained_on": "the context itself",
                        "in_context_error": 0.4, "zero_shot_gap": 0.0, "gap_at_budget": 0.0,
                        "error_at_budget": 0.4}]}
  lines = write_distillation_report(result, str(tmp_path), "test")
  assert "| 3 | written (exact) | the context itself | 0.4 | 0 | 0 | 0.4 |" in lines
  with open(tmp_path / "context_distillation.csv") as f:
    assert len(list(csv.reader(f))) == 4
  for name in ("distillation_gap_k3.png", "distillation_error_k3.png"):
    assert (tmp_path / name).stat().st_size > 1000
