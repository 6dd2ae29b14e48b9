"""Sweeps: members trained by one vmapped step are the runs they would be alone, each written as
its own run, resumable, and refused with the bad value when they cannot be one step."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import task_diversity
from metalearn.engine import sweep as sweep_module
from metalearn.engine.experiment import ConfigError, Member
from metalearn.engine.runs import build_experiment, load_run
from metalearn.engine.train import train_and_evaluate


def smoke(**sweep):
  config = ml_collections.ConfigDict(task_diversity.get_config("smoke").to_dict())
  config.eval.update(num_prompts=16, baselines=("dmmse",))
  if sweep:
    config.sweep = ml_collections.ConfigDict({"seeds": (), "task_sizes": (), **sweep})
  return config


def leaves(params):
  return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def test_members_are_the_runs_they_are_alone_and_a_stopped_sweep_resumes(tmp_path):
  config = smoke(seeds=(0, 1), task_sizes=(2, 4))
  workdir = str(tmp_path / "sweep")
  # Stopped at its first checkpoint (10 of 20 steps), then relaunched.
  assert train_and_evaluate(config, workdir, should_stop=lambda step: step >= 10,
                            writers=()) is None
  assert not os.path.exists(os.path.join(workdir, "members"))
  evaluation = train_and_evaluate(config, workdir, writers=())
  names = sorted(os.listdir(os.path.join(workdir, "members")))
  assert names == ["seed_0-size_2", "seed_0-size_4", "seed_1-size_2", "seed_1-size_4"]
  assert "transformer (latent) [seed_1-size_4]" in evaluation.errors
  assert os.path.exists(os.path.join(workdir, "eval", "errors.csv"))
  with pytest.raises(ValueError, match="is a sweep of 4 runs.*members"):
    load_run(workdir)

  alone = smoke()
  alone.seed, alone.task.size = 1, 4
  single = str(tmp_path / "alone")
  train_and_evaluate(alone, single, writers=())
  member = os.path.join(workdir, "members", "seed_1-size_4")
  _, member_params, member_config = load_run(member)
  assert member_config.seed == 1 and member_config.task.size == 4 and "sweep" not in member_config
  # vmapped matmuls add in another order than unbatched ones: equal to float32 rounding.
  for got, want in zip(leaves(member_params), leaves(load_run(single)[1]), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  rows = [json.loads(line) for line in open(os.path.join(member, "metrics.jsonl"))]
  want = [json.loads(line) for line in open(os.path.join(single, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [w["step"] for w in want] == [5, 10, 15, 20]
  np.testing.assert_allclose([r["loss"] for r in rows], [w["loss"] for w in want], rtol=1e-5)
  assert {"dmmse (pretrain)", "transformer (latent)"} <= set(
      open(os.path.join(member, "eval", "errors.csv")).readline().strip().split(","))


def test_members_are_written_again_when_a_launch_dies_writing_them(tmp_path, monkeypatch):
  config = smoke(seeds=(0, 1))
  workdir = str(tmp_path / "sweep")
  real = sweep_module.Checkpoints

  def dies_at_the_second(directory, **kw):
    if "seed_1" in directory:
      raise OSError("no space left on device")  # as a full disk fails a save
    return real(directory, **kw)

  monkeypatch.setattr(sweep_module, "Checkpoints", dies_at_the_second)
  with pytest.raises(OSError, match="no space"):
    train_and_evaluate(config, workdir, writers=())
  members = os.path.join(workdir, "members")
  assert sorted(os.listdir(members)) == ["seed_0", "seed_1.writing"]  # never a partial run
  monkeypatch.setattr(sweep_module, "Checkpoints", real)
  train_and_evaluate(config, workdir, writers=())  # the sweep has finished: it only writes
  assert sorted(os.listdir(members)) == ["seed_0", "seed_1"]
  assert load_run(os.path.join(members, "seed_1"))[2].seed == 1


@pytest.mark.parametrize("sweep, match", [
    ({"task_sizes": (4, 0)}, r"sweep.task_sizes\[1\] must be an integer >= 1, got 0"),
    ({"seeds": (0, 0)}, r"sweep.seeds=\(0, 0\) repeats a value"),
    ({"seeds": (0, 1.5)}, r"sweep.seeds\[1\] must be an integer"),
    ({"widths": (8, 16)}, r"config section 'sweep': unknown field\(s\) \['widths'\]"),
])
def test_bad_sweeps_are_refused_naming_the_value(sweep, match):
  with pytest.raises(ConfigError, match=match):
    build_experiment(smoke(**sweep))


def test_pool_sizes_need_a_pool_and_an_empty_sweep_is_one_run():
  from configs import linear_regression
  config = ml_collections.ConfigDict(linear_regression.get_config("smoke").to_dict())
  config.sweep = ml_collections.ConfigDict({"seeds": (), "task_sizes": (2, 4)})
  with pytest.raises(ConfigError, match=r"task_sizes=\(2, 4\) needs a task pool.*LinearRegr"):
    build_experiment(config)
  assert build_experiment(smoke(seeds=(), task_sizes=())).members == ()
  assert build_experiment(smoke(seeds=(3,), task_sizes=(2, 8))).members == (
      Member(3, 2), Member(3, 8))
