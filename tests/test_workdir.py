"""The work directory under faults: concurrent launches, kill -9, changed configs, torn metrics,
unusable paths."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import pytest

from configs.linear_regression import get_config
from metalearn.engine.checkpoints import CheckpointMismatchError
from metalearn.comparison import CompareSettings, compare
from metalearn.engine.experiment import ConfigError
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate
from metalearn.engine.workdir import (CONFIG_CHANGES_FILE, CONFIG_FILE, LOCK_FILE, METRICS_FILE,
                               ConfigChangedError, DamagedMetricsError, WorkdirBusyError,
                               WorkdirError, WorkdirLock, check_config, config_in_effect,
                               lock_holder, read_metrics, record_config_change, rewind_metrics,
                               save_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = get_config("smoke")
  config.unlock()
  config.eval.baselines = ()
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A smoke run trained to its end (checkpoints at steps 10 and 20); tests change copies."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  train_and_evaluate(_config(), workdir)
  return workdir


@pytest.fixture
def run_copy(finished_run, tmp_path):
  copy = str(tmp_path / "run")
  shutil.copytree(finished_run, copy)
  return copy


def _snapshot(workdir):
  """Every file's bytes, so a test can assert a refused launch changed nothing."""
  files = {}
  for directory, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, workdir)] = f.read()
  return files


def _python(code):
  """A child python (inheriting the tests' 2 devices) that prints "ready" once it holds what
  it holds, then waits to be killed."""
  process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": ROOT})
  line = process.stdout.readline()
  assert line.strip() == "ready", process.communicate(timeout=60)[1]
  return process


def _kill(process):
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)


def _launch(workdir, *flags):
  command = [sys.executable, os.path.join(ROOT, "launch", "train.py"),
             "--config=" + os.path.join(ROOT, "configs", "linear_regression.py:smoke"),
             f"--workdir={workdir}", "--host_devices=0", "--nohugepages", *flags]
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


# The lock.

def test_a_second_holder_in_this_process_is_refused_and_the_lock_leaves_nothing(tmp_path):
  directory = str(tmp_path / "dir")
  with WorkdirLock(directory):
    with open(os.path.join(directory, LOCK_FILE)) as f:
      assert f.read().strip() == str(os.getpid())
    assert lock_holder(directory) == str(os.getpid())
    with pytest.raises(WorkdirBusyError, match=f"in use by process {os.getpid()}"):
      WorkdirLock(directory).acquire()
  assert os.listdir(directory) == [] and lock_holder(directory) is None
  with WorkdirLock(directory):  # free again
    pass


def test_a_second_launch_is_refused_naming_the_holder_and_kill_9_frees_it(tmp_path):
  workdir = str(tmp_path / "run")
  holder = _python(
      "import sys, time; sys.path.insert(0, 'tests'); import conftest\n"
      "from configs.linear_regression import get_config\n"
      "from metalearn.engine import train\n"
      "config = get_config('smoke'); config.unlock(); config.eval.baselines = ()\n"
      "def hold(*args):  # as a long training would, inside the call\n"
      "  print('ready', flush=True); time.sleep(600)\n"
      "train.train = hold\n"
      f"train.train_and_evaluate(config, {workdir!r})\n")
  try:
    with pytest.raises(WorkdirBusyError, match=f"in use by process {holder.pid}"):
      train_and_evaluate(_config(), workdir)
  finally:
    _kill(holder)
  # The OS dropped the dead holder's lock: a new launch takes the directory and trains.
  assert train_and_evaluate(_config(), workdir, should_stop=lambda step: True) is None
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["5"]
  assert [row["step"] for row in read_metrics(os.path.join(workdir, METRICS_FILE))] == [5]
  assert not os.path.exists(os.path.join(workdir, LOCK_FILE))


def test_a_second_compare_into_one_report_dir_is_refused_and_kill_9_frees_it(finished_run,
                                                                            tmp_path):
  report_dir = str(tmp_path / "report")
  settings = CompareSettings(num_prompts=32, batch_size=16, analyses=("errors",))
  holder = _python(
      "import sys, time; sys.path.insert(0, 'tests'); import conftest\n"
      "import dataclasses\n"
      "from metalearn.comparison import CompareSettings, compare, registry\n"
      "def hold(context):\n"
      "  print('ready', flush=True); time.sleep(600)\n"
      "errors = next(u for u in registry.UNITS if u.name == 'errors')\n"
      f"compare({{'tf': {finished_run!r}}}, [], {report_dir!r}, "
      "CompareSettings(num_prompts=32, batch_size=16, analyses=('errors',)), "
      "units=(dataclasses.replace(errors, run=hold),))\n")
  try:
    with pytest.raises(WorkdirBusyError, match=f"compare process {holder.pid}"):
      compare({"tf": finished_run}, [], report_dir, settings)
  finally:
    _kill(holder)
  results = compare({"tf": finished_run}, [], report_dir, settings)
  assert "tf" in results["errors"]
  assert "summary.md" in os.listdir(report_dir) and LOCK_FILE not in os.listdir(report_dir)
  with pytest.raises(FileExistsError, match="already holds files"):
    compare({"tf": finished_run}, [], report_dir, settings)


# The config.

def test_a_changed_config_is_refused_listing_every_field_and_the_run_is_untouched(run_copy):
  before = _snapshot(run_copy)
  config = _config()
  config.train.learning_rate = 0.002
  config.task.x_distribution = "uniform"
  config.model.hidden = 32
  with pytest.raises(ConfigChangedError) as refused:
    train_and_evaluate(config, run_copy)
  message = str(refused.value)
  for change in ('model.hidden 16 -> 32', 'task.x_distribution "normal" -> "uniform"',
                 'train.learning_rate 0.001 -> 0.002', "--allow_config_change"):
    assert change in message
  assert _snapshot(run_copy) == before


def test_an_allowed_change_is_recorded_with_its_step_and_the_run_loads_under_it(run_copy):
  saved = _snapshot(run_copy)[CONFIG_FILE]
  config = _config()
  config.train.update(learning_rate=0.002, num_steps=30)
  train_and_evaluate(config, run_copy, allow_config_change=True)
  assert _snapshot(run_copy)[CONFIG_FILE] == saved  # the launch config is kept
  with open(os.path.join(run_copy, CONFIG_CHANGES_FILE)) as f:
    assert [json.loads(line) for line in f] == [{"step": 20, "changes": [
        {"field": "train.learning_rate", "old": 0.001, "new": 0.002},
        {"field": "train.num_steps", "old": 20, "new": 30}]}]
  steps = [row["step"] for row in read_metrics(os.path.join(run_copy, METRICS_FILE))]
  assert steps == [5, 10, 15, 20, 25, 30]
  learner, params, loaded = load_run(run_copy)
  assert loaded.train.learning_rate == 0.002 and loaded.train.num_steps == 30
  assert check_config(run_copy, config, allow_change=False) == []  # relaunching it resumes


def test_a_change_the_checkpoint_cannot_take_leaves_the_run_loadable(run_copy):
  before = _snapshot(run_copy)
  config = _config()
  config.model.hidden = 32
  with pytest.raises(CheckpointMismatchError, match="step 20"):
    train_and_evaluate(config, run_copy, allow_config_change=True)
  assert _snapshot(run_copy) == before
  _, params, loaded = load_run(run_copy)
  assert loaded.model.hidden == 16


def test_recorded_changes_apply_in_order_and_may_add_or_remove_fields(tmp_path):
  directory = str(tmp_path)
  save_config(directory, {"a": 1, "b": {"c": [1, 2], "d": "x"}})
  record_config_change(directory, 10, [{"field": "b.c", "old": [1, 2], "new": [3]},
                                       {"field": "e", "new": 5}])
  record_config_change(directory, 20, [{"field": "b.d", "old": "x"},
                                       {"field": "b.c", "old": [3], "new": [4]}])
  assert config_in_effect(directory) == {"a": 1, "b": {"c": [4]}, "e": 5}
  changes = check_config(directory, {"a": 1, "b": {"c": [4], "d": "y"}}, allow_change=True)
  assert changes == [{"field": "b.d", "new": "y"}, {"field": "e", "old": 5}]
  with pytest.raises(ConfigChangedError, match=r'b.d \(absent\) -> "y"; e 5 -> \(absent\)'):
    check_config(directory, {"a": 1, "b": {"c": [4], "d": "y"}}, allow_change=False)


# The metrics log.

def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(
    finished_run, run_copy, caplog):
  # What a kill while logging step 20 leaves: its line cut short, its checkpoint never saved.
  shutil.rmtree(os.path.join(run_copy, "checkpoints", "20"))
  metrics = os.path.join(run_copy, METRICS_FILE)
  with open(metrics) as f:
    lines = f.readlines()
  with open(metrics, "w") as f:
    f.writelines(lines[:-1] + [lines[-1][:15]])
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    train_and_evaluate(_config(), run_copy)
  assert "dropped its last line, cut off mid-write" in caplog.text and metrics in caplog.text
  def logged(path):  # all but the timing
    return [{k: v for k, v in row.items() if k != "steps_per_sec"} for row in read_metrics(path)]
  assert logged(metrics) == logged(os.path.join(finished_run, METRICS_FILE))


def test_a_damaged_metrics_line_before_the_last_stops_the_relaunch_naming_it(run_copy):
  metrics = os.path.join(run_copy, METRICS_FILE)
  with open(metrics) as f:
    lines = f.readlines()
  lines[1] = lines[1].replace('"step"', '"st\x00p"')
  with open(metrics, "w") as f:
    f.writelines(lines)
  before = _snapshot(run_copy)
  with pytest.raises(DamagedMetricsError, match=f"{metrics} line 2 is damaged"):
    train_and_evaluate(_config(), run_copy)
  assert _snapshot(run_copy) == before


def test_rewinding_tells_a_torn_last_line_from_a_damaged_one(tmp_path, caplog):
  path = str(tmp_path / METRICS_FILE)
  rows = [json.dumps({"step": step, "loss": 1.0 / step}) for step in (5, 10, 15)]
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n" + '{"step": 20, "lo')
  assert [row["step"] for row in read_metrics(path)] == [5, 10, 15]
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    rewind_metrics(path, 10)
  assert "cut off mid-write" in caplog.text
  with open(path) as f:
    assert f.read() == rows[0] + "\n" + rows[1] + "\n"
  # A last line that ends with its newline was written whole: damage to it is not a tear.
  with open(path, "a") as f:
    f.write("{not json}\n")
  with pytest.raises(DamagedMetricsError, match="line 3 is damaged"):
    rewind_metrics(path, 10)


# Bad workdirs and devices: refused before anything is written.

def test_an_unusable_workdir_is_one_clear_line(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  with pytest.raises(WorkdirError, match="it is a file"):
    train_and_evaluate(_config(), str(a_file))
  launched = _launch(a_file / "run")
  assert launched.returncode == 1
  assert (f"metalearn: cannot use '{a_file / 'run'}' as a work directory: a part of the path is "
          "a file, not a directory") in launched.stderr
  assert "Traceback" not in launched.stderr
  assert a_file.read_text() == "not a directory"


def test_a_batch_the_devices_do_not_divide_is_refused_before_the_workdir_exists(tmp_path):
  config = _config()
  config.train.batch_size = 3
  with pytest.raises(ConfigError, match="train.batch_size=3 must be a multiple of the 2 devices"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()

