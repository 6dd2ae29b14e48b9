"""The launcher as a user runs it: flags, overrides, bad input, preemption."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from metalearn.engine.train import PREEMPTED_EXIT_CODE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, *overrides, config="linear_regression.py:smoke"):
  command = [sys.executable, os.path.join(ROOT, "launch", "train.py"),
             "--config=" + os.path.join(ROOT, "configs", config),
             f"--workdir={workdir}", *overrides]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _run(launcher, *arguments):
  """A launcher run to its end, from a directory other than the repository's."""
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", launcher), *arguments],
                        cwd=os.path.dirname(ROOT), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("config, override, expected", [
    ("linear_regression.py:smoke", "--config.train.lerning_rate=0.1",
     "metalearn: --config.train.lerning_rate: config section 'train' has no field "
     "'lerning_rate' (did you mean \"learning_rate\"?); allowed: batch_size, checkpoint_every, "
     "data_parallel, grad_clip, "),
    ("nope.py", None, "metalearn: --config: no config file '{configs}/nope.py'; the config "
                      "files: {configs}/fewshot.py, {configs}/gd_layers.py, "
                      "{configs}/linear_regression.py, {configs}/recurrent.py, "
                      "{configs}/sinusoid.py, {configs}/task_diversity.py\n"),
    ("linear_regression.py:nope", None,
     "metalearn: --config={configs}/linear_regression.py:nope: unknown variant 'nope' of "
     "configs/linear_regression.py; allowed: default, smoke, garg, small, standard, akyurek, "
     "rotary\n"),
    # Slow: it starts jax; the library-level check of non-finite values is tested fast.
    pytest.param("linear_regression.py:smoke", "--config.train.learning_rate=inf",
                 "metalearn: bad config: train.learning_rate must be a finite number, got inf\n",
                 marks=pytest.mark.slow),
])
def test_bad_config_input_is_one_line_naming_it_before_anything_is_written(tmp_path, config,
                                                                           override, expected):
  configs = os.path.join(ROOT, "configs")
  arguments = [f"--config={configs}/{config}", f"--workdir={tmp_path / 'run'}"]
  result = _run("train.py", *arguments, *([override] if override else []))
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  assert expected.format(configs=configs) in result.stderr, result.stderr
  assert not (tmp_path / "run").exists()


def test_help_lists_every_flag_and_the_whole_usage():
  result = _run("train.py", "--help")
  assert result.stderr == ""  # absl's --help exits with status 1
  for flag in ("--config:", "--workdir:", "--[no]hugepages:", "--[no]multihost:",
               "--host_devices:", "--[no]print_config:"):
    assert flag in result.stdout, flag
  # The docstring's continuation line survives (a non-raw string would join the two).
  assert "--workdir=/tmp/smoke \\\n        --config.train.num_steps=40\n" in result.stdout
  result = _run("compare.py", "--help")
  assert result.stderr == ""
  for flag in ("--runs:", "--report_dir:", "--settings:", "--[no]hugepages:"):
    assert flag in result.stdout, flag
  assert "--runs=transformer=runs/linear_regression \\\n" in result.stdout


def test_print_config_shows_the_overrides_and_the_variants_and_writes_nothing(tmp_path):
  result = _run("train.py", f"--config={ROOT}/configs/sinusoid.py:maml-smoke",
                "--config.train.learning_rate=0.5", f"--workdir={tmp_path / 'run'}",
                "--print_config")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert "train.learning_rate = 0.5" in lines and "model.widths = (8, 8)" in lines
  assert "data.curriculum.interval = 2000" in lines and "model.name = 'maml'" in lines
  assert lines[-1].endswith(": maml, maml-smoke, fomaml, fomaml-smoke, metasgd, metasgd-smoke, "
                            "anil, anil-smoke, reptile, reptile-smoke, imaml, imaml-smoke")
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a launcher process; compare's settings checks are tested fast
def test_a_misspelt_compare_setting_is_one_line_naming_it(tmp_path):
  result = _run("compare.py", f"--runs={tmp_path}", f"--report_dir={tmp_path / 'report'}",
                "--settings.num_promts=5")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.startswith("metalearn compare: --settings.num_promts: --settings has no "
                                  "field 'num_promts' (did you mean \"num_prompts\"?)")
  assert not (tmp_path / "report").exists()


def test_bad_value_stops_the_launch_with_the_allowed_range(tmp_path):
  process = _launch(tmp_path / "run", "--config.train.learning_rate=-0.1")
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 1
  assert "bad config: train.learning_rate must be > 0, got -0.1" in stderr
  assert "Traceback" not in stderr


def test_sigterm_writes_a_checkpoint_before_exiting(tmp_path):
  workdir = tmp_path / "run"
  process = _launch(workdir, "--config.train.num_steps=100000", "--config.train.log_every=5",
                    "--config.train.checkpoint_every=50000", "--config.eval.baselines=()")
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().strip()):
    assert process.poll() is None, process.communicate()[1]
    assert time.time() < deadline, "the run logged no metrics in 120 s"
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == PREEMPTED_EXIT_CODE, stderr
  saved = [int(step) for step in os.listdir(workdir / "checkpoints")]
  assert len(saved) == 1 and 0 < saved[0] < 100000
  assert f"stopping at step {saved[0]} on request" in stderr
  assert not (workdir / "eval").exists()


def test_a_finished_run_prints_its_errors_by_number_of_examples(tmp_path):
  process = _launch(tmp_path / "run", "--config.eval.baselines=('least_squares',)")
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr
  with open(tmp_path / "run" / "eval" / "errors.json") as f:
    errors = json.load(f)  # [points] per learner: 7 points, k = 0 to 6
  assert list(errors) == ["transformer", "least_squares"]
  lines = [line.split("] ", 1)[-1] for line in stderr.splitlines()]
  start = lines.index("normalised error (1 = predicting zero) after k in-context examples, d = 3:")
  assert lines[start + 1].split() == [f"k={k}" for k in range(1, 7)]  # every k past 0: 7 points
  for name, line in zip(errors, lines[start + 2:start + 4], strict=True):
    assert line.split() == [name] + [f"{value:.3f}" for value in errors[name][1:]]
  # Past k = d = 3 noiseless least squares is exact.
  assert lines[start + 3].split()[3:] == ["0.000"] * 4
  assert "query metrics" not in stderr


@pytest.mark.slow  # trains a MAML run in a launcher process
def test_a_maml_run_launches_and_prints_its_query_table(tmp_path):
  process = _launch(tmp_path / "run", config="sinusoid.py:fomaml-smoke")
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr
  assert "maml, 10 steps" in stderr and "loss " in stderr and "knn" in stderr
  assert (tmp_path / "run" / "eval" / "query_errors.csv").exists()
