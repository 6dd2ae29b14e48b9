"""Runs of real processes on localhost (`jax.distributed`, CPU backend): one run over all their
devices, on both data-parallel paths, written once, resumable after a kill."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
# 20 steps in calls of 5; a checkpoint at 10 and 20; a metrics row every 5.
OVERRIDES = {"train.num_steps": 20, "train.steps_per_call": 5, "train.log_every": 5,
             "train.checkpoint_every": 10}
_TIMEOUT = 240  # seconds a launch of all its processes may take before the test kills them


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(num_processes, devices, workdir, out, overrides, kill_after=None):
  """Starts the processes of one run, waits for all of them; returns their exit statuses."""
  return _wait(_start(num_processes, devices, workdir, out, overrides, kill_after))


def _start(num_processes, devices, workdir, out, overrides, kill_after=None):
  os.makedirs(out, exist_ok=True)
  port = _free_port()
  processes = []
  for process_id in range(num_processes):
    spec = {"process_id": process_id, "num_processes": num_processes, "port": port,
            "devices": devices, "workdir": workdir, "out": out, "overrides": overrides,
            "kill_after": kill_after}
    log = open(os.path.join(out, f"log.{process_id}.txt"), "ab")
    processes.append(subprocess.Popen([sys.executable, WORKER, json.dumps(spec)], cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
  return processes


def _wait(processes):
  try:
    return [process.wait(timeout=_TIMEOUT) for process in processes]
  finally:
    for process in processes:  # a process left waiting for a dead peer is stopped here
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _logs(out):
  return "\n".join(open(os.path.join(out, name), errors="replace").read()[-3000:]
                   for name in sorted(os.listdir(out)) if name.startswith("log."))


def _params(out, process):
  with np.load(os.path.join(out, f"params.{process}.npz")) as saved:
    return [saved[str(i)] for i in range(len(saved.files))]


def _reference(overrides, tmp_path):
  """The params of one process training the same global batch on 2 devices: launched as its
  own process too, so that an XLA abort in a two-device compile fails this test alone (one in
  a pytest worker ended the worker, and the CI run then hung)."""
  out = str(tmp_path / "reference")
  assert _launch(1, 2, out + "/run", out, overrides) == [0], _logs(out)
  return _params(out, 0)


def _metric_steps(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


def _assert_written_once(workdir):
  assert _metric_steps(workdir) == [5, 10, 15, 20]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert {"errors.csv", "errors.json", "errors.png"} <= set(os.listdir(os.path.join(workdir,
                                                                                    "eval")))


def test_two_processes_pmap_train_one_run_written_once_and_resume_after_a_kill(tmp_path):
  workdir, out = str(tmp_path / "run"), str(tmp_path / "out")
  overrides = {**OVERRIDES, "train.data_parallel": "pmap"}
  killed = _launch(2, 1, workdir, out, overrides, kill_after=10)
  assert killed == [-signal.SIGKILL] * 2, _logs(out)
  assert _metric_steps(workdir) == [5, 10]  # the kill came after the checkpoint at 10
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10"]
  assert _launch(2, 1, workdir, out, overrides) == [0, 0], _logs(out)
  _assert_written_once(workdir)
  # All-reduces of two devices' sums in any order give the same floats: bit for bit.
  reference = _reference(overrides, tmp_path)
  for process in (0, 1):
    for got, want in zip(_params(out, process), reference, strict=True):
      np.testing.assert_array_equal(got, want)


def test_two_processes_jit_over_a_mesh_equal_one_process(tmp_path):
  # (jit against pmap, on the same devices: tests/test_data_parallel.py)
  workdir, out = str(tmp_path / "run"), str(tmp_path / "out")
  overrides = {**OVERRIDES, "train.data_parallel": "jit"}
  assert _launch(2, 1, workdir, out, overrides) == [0, 0], _logs(out)
  _assert_written_once(workdir)
  reference = _reference(overrides, tmp_path)
  for process in (0, 1):
    for got, want in zip(_params(out, process), reference, strict=True):
      np.testing.assert_array_equal(got, want)  # one partitioned program, split alike


@pytest.mark.slow
@pytest.mark.parametrize("path", ["pmap", "jit"])
def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path, path):
  overrides = {**OVERRIDES, "train.data_parallel": path}
  single, split = str(tmp_path / "single"), str(tmp_path / "split")
  assert _launch(1, 4, single + "/run", single, overrides) == [0], _logs(single)
  assert _launch(2, 2, split + "/run", split, overrides) == [0, 0], _logs(split)
  _assert_written_once(split + "/run")
  for process in (0, 1):
    for got, want in zip(_params(split, process), _params(single, 0), strict=True):
      # Four devices' sums are added in another order across processes than within one (seen:
      # 5e-7 after 20 Adam steps, whose normalised updates magnify the last bits of small grads).
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_processes_set_a_damaged_checkpoint_aside_once_and_resume_before_it(tmp_path):
  workdir, out = str(tmp_path / "run"), str(tmp_path / "out")
  overrides = {**OVERRIDES, "train.data_parallel": "pmap"}
  assert _launch(2, 1, workdir, out, overrides) == [0, 0], _logs(out)
  path = os.path.join(workdir, "checkpoints", "20", "checksums", "metadata")
  with open(path) as f:
    checksums = json.load(f)
  checksums["leaves"]["step"] = "0" * 64  # as a flipped bit in any array reads
  with open(path, "w") as f:
    json.dump(checksums, f)
  # The relaunch trains steps 11-20 again from the checkpoint before the damaged one.
  assert _launch(2, 1, workdir, out, overrides) == [0, 0], _logs(out)
  assert os.listdir(os.path.join(workdir, "checkpoints_damaged")) == ["20"]
  _assert_written_once(workdir)
  reference = _reference(overrides, tmp_path)
  for process in (0, 1):
    for got, want in zip(_params(out, process), reference, strict=True):
      np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_one_checkpoint(tmp_path):
  workdir, out = str(tmp_path / "run"), str(tmp_path / "out")
  overrides = {**OVERRIDES, "train.data_parallel": "pmap", "train.num_steps": 400,
               "train.checkpoint_every": 200}
  processes = _start(2, 1, workdir, out, overrides)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.monotonic() + _TIMEOUT
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):
    assert time.monotonic() < deadline and all(p.poll() is None for p in processes), _logs(out)
    time.sleep(0.1)
  processes[1].send_signal(signal.SIGTERM)  # a preemption notice that reaches one host only
  assert _wait(processes) == [75, 75], _logs(out)
  saved = sorted(map(int, os.listdir(os.path.join(workdir, "checkpoints"))))
  assert len(saved) == 1 and saved[0] < 400 and _metric_steps(workdir)[-1] <= saved[0]
  assert _launch(2, 1, workdir, out, overrides) == [0, 0], _logs(out)
  assert _metric_steps(workdir) == list(range(5, 405, 5))
  reference = _reference(overrides, tmp_path)
  for process in (0, 1):
    for got, want in zip(_params(out, process), reference, strict=True):
      np.testing.assert_array_equal(got, want)
