"""Checksummed checkpoints: flipped bytes, checkpoints from before checksums, all damaged, output."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metalearn.engine.checkpoints import (CheckpointMismatchError, Checkpoints,
                                          DamagedCheckpointsError, state_checksums)
from metalearn.engine.runs import load_run
from metalearn.engine.train import train_and_evaluate

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(k: int) -> dict:
  """A tiny train-state-like pytree. Its arrays of random floats are too big for OCDBT to keep
  inline in its checksummed b-tree nodes: their bytes lie in a data file that nothing but our
  checksums covers, as a real run's parameters do."""
  rng = np.random.default_rng(k)
  return {"params": {"w": jnp.asarray(rng.standard_normal((48, 48)), jnp.float32),
                     "b": jnp.asarray(rng.standard_normal((40, 24)), jnp.float32)},
          "mu": {"b": jnp.arange(8, dtype=jnp.float32) * k},
          "step": jnp.int32(k)}


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _files(directory: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(root, name), directory)
                for root, _, names in os.walk(directory) for name in names)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
  """A work directory with checkpoints of `_state(1)` at step 1 and `_state(2)` at step 2."""
  workdir = str(tmp_path_factory.mktemp("saved"))
  checkpoints = Checkpoints(workdir)
  checkpoints.save(1, _state(1))
  checkpoints.save(2, _state(2))
  checkpoints.close()
  return workdir


def _restore(workdir: str) -> dict:
  checkpoints = Checkpoints(workdir)
  try:
    return checkpoints.restore_latest(_state(0))
  finally:
    checkpoints.close()


def test_every_flipped_byte_is_refused_or_restores_exactly_what_was_saved(saved, tmp_path, caplog):
  step_dir = os.path.join(saved, "checkpoints", "2")
  caught_by_checksums, cases = 0, 0
  for name in _files(step_dir):
    size = os.path.getsize(os.path.join(step_dir, name))
    for offset in sorted({0, size // 3, 2 * size // 3, size - 1}):
      workdir = str(tmp_path / f"flip{cases}")
      shutil.copytree(saved, workdir)
      path = os.path.join(workdir, "checkpoints", "2", name)
      with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))
      caplog.clear()
      with caplog.at_level(logging.WARNING, logger="metalearn"):
        restored = _restore(workdir)
      where = f"flip of byte {offset} of {name}"
      if os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "2")):
        assert "checkpoint at step 2 is damaged" in caplog.text, where
        _assert_trees_equal(restored, _state(1))  # the one before it
        if not name.startswith("checksums"):
          caught_by_checksums += "ChecksumError" in caplog.text
      else:
        _assert_trees_equal(restored, _state(2))
      shutil.rmtree(workdir)
      cases += 1
  assert cases >= 40
  # Some flips land in array bytes that orbax and tensorstore do not check: without our
  # checksums these restored different arrays.
  assert caught_by_checksums > 0


def test_a_checkpoint_that_lost_its_checksums_is_damaged(saved, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  shutil.copytree(saved, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "2", "checksums"))
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    _assert_trees_equal(_restore(workdir), _state(1))
  assert "checkpoint at step 2 is damaged" in caplog.text
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints_damaged"))) == ["2"]


def test_a_checkpoint_saved_before_checksums_restores_with_a_warning(tmp_path, caplog):
  workdir = str(tmp_path / "old")
  # As Checkpoints saved before checksums: one unnamed orbax item.
  manager = ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints"),
      options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
  manager.save(3, args=ocp.args.StandardSave(_state(3)))
  manager.wait_until_finished()
  manager.close()
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    _assert_trees_equal(_restore(workdir), _state(3))
  assert "step 3 was saved before checkpoints had checksums" in caplog.text
  checkpoints = Checkpoints(workdir)  # and the run goes on, checksummed from now on
  checkpoints.save(4, _state(4))
  checkpoints.close()
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4", "checksums"))
  _assert_trees_equal(_restore(workdir), _state(4))


def test_a_checkpoint_that_does_not_fit_is_refused_naming_each_difference(saved):
  target = _state(0)
  target["params"]["w"] = jnp.zeros((48, 47), jnp.float32)
  target["step"] = jnp.float32(0)
  del target["mu"]
  target["extra"] = jnp.zeros(2)
  message = (r"the checkpoint at step 2 in .* does not fit this config's train state .*: it lacks "
             r"extra; it has mu/b, which this config lacks; its shapes or dtypes differ: params/w "
             r"\(48, 48\) float32 saved, \(48, 47\) float32 here, step \(\) int32 saved, \(\) "
             r"float32 here\. Use a new workdir")
  with Checkpoints(saved, read_only=True) as checkpoints:
    with pytest.raises(CheckpointMismatchError, match=message):
      checkpoints.restore_latest(target)
  assert os.listdir(os.path.join(saved, "checkpoints")) and not os.path.exists(
      os.path.join(saved, "checkpoints_damaged"))


def test_a_restore_into_abstract_leaves_places_them_as_asked(saved):
  device = jax.devices()[1]
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
      a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(device)), _state(0))
  with Checkpoints(saved, read_only=True) as checkpoints:
    restored = checkpoints.restore_latest(target)
  _assert_trees_equal(restored, _state(2))
  assert all(leaf.devices() == {device} for leaf in jax.tree.leaves(restored))


def test_checksums_name_every_leaf_by_its_path():
  checksums = state_checksums(_state(1))
  assert sorted(checksums) == ["mu/b", "params/b", "params/w", "step"]
  assert checksums != state_checksums(_state(2))
  changed = _state(1)
  changed["params"]["w"] = changed["params"]["w"].at[3, 4].add(1e-7)
  assert [k for k in checksums if checksums[k] != state_checksums(changed)[k]] == ["params/w"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> str:
  """A finished smoke run (checkpoints at steps 10 and 20), to copy."""
  from configs.linear_regression import get_config
  workdir = str(tmp_path_factory.mktemp("smoke") / "run")
  train_and_evaluate(get_config("smoke"), workdir)
  return workdir


# Loads a run, then restores from three damaged copies of a checkpoint of many arrays, each with
# a flipped byte in the OCDBT b-tree file that indexes them: tensorstore fails on one array while
# orbax still reads the others, the case that printed a traceback per array.
_LOAD_AND_RESTORE_DAMAGED = textwrap.dedent("""
    import gc, logging, os, shutil, sys
    sys.path.insert(0, {repo!r})
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import jax.numpy as jnp, numpy as np
    from metalearn.engine.checkpoints import Checkpoints
    from metalearn.engine.runs import load_run
    load_run({run!r})
    print("loaded")
    rng = np.random.default_rng(0)
    state = {{f"w{{i}}": jnp.asarray(rng.standard_normal((24, 24)), jnp.float32) for i in range(16)}}
    saved = os.path.join({tmp!r}, "saved")
    checkpoints = Checkpoints(saved)
    checkpoints.save(1, state)
    checkpoints.save(2, state)
    checkpoints.close()
    btree = os.path.join(saved, "checkpoints", "2", "default", "d")
    (name,) = os.listdir(btree)
    for copy in range(3):
      workdir = os.path.join({tmp!r}, str(copy))
      shutil.copytree(saved, workdir)
      with open(os.path.join(workdir, "checkpoints", "2", "default", "d", name), "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 10 + copy] ^= 1
        f.seek(0)
        f.write(data)
      checkpoints = Checkpoints(workdir)
      assert checkpoints.restore_latest(state) is not None
      checkpoints.close()
      gc.collect()
    print("restored")
""")


def test_load_run_prints_nothing_and_a_damaged_checkpoint_one_readable_line(smoke_run, tmp_path):
  script = _LOAD_AND_RESTORE_DAMAGED.format(repo=_REPO, run=smoke_run, tmp=str(tmp_path))
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=_REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ["loaded", "restored"]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 3, result.stderr[-3000:]
  for line in lines:
    assert line.startswith("WARNING metalearn.engine.checkpoints: checkpoint at step 2 is damaged (")
    assert line.endswith("moved to checkpoints_damaged/2, trying the one before it")
    assert len(line) < 500 and "tensorstore_spec" not in line


def _losses(workdir: str) -> list[tuple[int, float]]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(row["step"], row["loss"]) for row in map(json.loads, f)]


def _damage_every_checkpoint(workdir: str) -> None:
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    path = os.path.join(workdir, "checkpoints", step, "checksums", "metadata")
    with open(path) as f:
      checksums = json.load(f)
    checksums["leaves"]["step"] = "0" * 64  # as a flipped bit in any array reads
    with open(path, "w") as f:
      json.dump(checksums, f)


def test_a_run_whose_checkpoints_are_all_damaged_refuses_to_start_over(smoke_run, smoke_config,
                                                                       tmp_path, caplog):
  workdir = str(tmp_path / "run")
  shutil.copytree(smoke_run, workdir)
  _damage_every_checkpoint(workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    metrics = f.read()
  with pytest.raises(DamagedCheckpointsError, match="damaged .steps 10, 20 left in .* .read-only"):
    load_run(workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
  message = (r"every checkpoint in .*checkpoints is damaged \(steps 10, 20 moved to "
             r".*checkpoints_damaged\)\. Refusing to start over from step 0 .*restart_if_damaged")
  with pytest.raises(DamagedCheckpointsError, match=message):
    train_and_evaluate(smoke_config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints_damaged"))) == ["10", "20"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == metrics  # nothing trained, nothing rewound
  # Relaunched, with nothing left in checkpoints/, the run still does not start over silently.
  with pytest.raises(DamagedCheckpointsError, match=r"no checkpoint left; set aside earlier: 10, "
                                                    r"20\)\. Refusing to start over"):
    train_and_evaluate(smoke_config, workdir)
  with caplog.at_level(logging.WARNING, logger="metalearn"):
    train_and_evaluate(smoke_config, workdir, restart_if_damaged=True)
  assert "starting over from step 0 (restart_if_damaged)" in caplog.text
  assert _losses(workdir) == _losses(smoke_run)  # the same seed trains the same run again
  _assert_trees_equal(load_run(workdir)[1], load_run(smoke_run)[1])


@pytest.mark.slow  # a launcher process; the library's refusal is tested fast above
def test_the_launcher_says_in_one_line_that_every_checkpoint_is_damaged(smoke_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(smoke_run, workdir)
  _damage_every_checkpoint(workdir)
  result = subprocess.run(
      [sys.executable, "launch/train.py", "--config=configs/linear_regression.py:smoke",
       f"--workdir={workdir}", "--host_devices=0"],
      capture_output=True, text=True, timeout=300, cwd=_REPO)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("metalearn: every checkpoint in ") and "--restart_if_damaged" in last
  assert "Traceback" not in result.stderr


def test_a_changed_config_on_damaged_checkpoints_restarts_only_when_asked(smoke_run, smoke_config,
                                                                          tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(smoke_run, workdir)
  _damage_every_checkpoint(workdir)
  smoke_config.train.learning_rate *= 2
  with pytest.raises(DamagedCheckpointsError, match="Refusing to start over"):
    train_and_evaluate(smoke_config, workdir, allow_config_change=True)
  assert not os.path.exists(os.path.join(workdir, "config_changes.jsonl"))
  train_and_evaluate(smoke_config, workdir, allow_config_change=True, restart_if_damaged=True)
  with open(os.path.join(workdir, "config_changes.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [0]
  assert _losses(workdir)[-1][0] == smoke_config.train.num_steps
