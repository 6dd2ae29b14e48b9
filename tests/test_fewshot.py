"""Few-shot classification episodes: layout, label permutation, splits, images, Omniglot reader, errors."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from metalearn.tasks import TASKS, make_task, omniglot
from metalearn.tasks.fewshot import FewShotClassification

WAYS, SHOTS, QUERIES = 3, 2, 3
SIDE = 20           # side of the toy Omniglot drawings
ALPHABETS = {       # sub-archive -> alphabet -> drawings per character
    "images_background": {"Alpha": (4, 4, 5), "Beta": (4, 4)},
    "images_evaluation": {"Gamma": (4, 4, 4), "Delta": (4, 4)},
}


def digits_task(**fields):
  return make_task({"name": "fewshot_classification", "ways": WAYS, "shots": SHOTS,
                    "queries": QUERIES, **fields})


@functools.partial(jax.jit, static_argnames=("task", "batch", "active_dims"))
def sample(task, seed, batch, active_dims=None):
  return task.sample(jax.random.key(seed), batch, task.points, active_dims)


def check_layout(task, ep):
  """Support then queries, each exactly `shots`/`queries` points of every label."""
  labels = np.asarray(ep.info["labels"])
  np.testing.assert_array_equal(ep.y, np.eye(task.ways)[labels])
  for row in labels:
    np.testing.assert_array_equal(np.bincount(row[:task.context_points], minlength=task.ways),
                                  task.shots)
    np.testing.assert_array_equal(np.bincount(row[task.context_points:], minlength=task.ways),
                                  task.queries)
  classes = np.asarray(ep.info["classes"])
  assert all(len(set(row)) == task.ways for row in classes)
  assert set(classes.ravel()) <= set(task.class_ids)


@pytest.fixture(scope="module")
def digits():
  data = load_digits()
  lookup = {tuple(row.astype(int)): i for i, row in enumerate(data.data)}
  assert len(lookup) == len(data.data)  # every digit image is distinct
  return data, lookup


def test_shapes_properties_loss_and_metrics():
  task = digits_task()
  assert (task.out_dim, task.points, task.context_points) == (3, 15, 6)
  assert task.image_shape == (8, 8, 1) and task.dim == 64
  assert task.loss_name == "softmax_cross_entropy" and task.num_classes == 5
  assert hash(task) == hash(digits_task())  # a static jit argument: hashable by its fields
  assert {f.type for f in dataclasses.fields(FewShotClassification)} <= {int, str, bool}
  ep = sample(task, 0, 4)
  assert ep.x.shape == (4, 15, 64) and ep.x.dtype == jnp.float32
  assert ep.y.shape == (4, 15, 3) and ep.mask.shape == (4, 15)
  assert ep.info["classes"].shape == (4, 3) and ep.info["labels"].shape == (4, 15)
  np.testing.assert_allclose(ep.zero_loss, math.log(3), rtol=1e-6)
  np.testing.assert_allclose(task.loss(jnp.zeros_like(ep.y), ep.y), math.log(3), rtol=1e-6)
  accuracy = task.metrics(10 * ep.y, ep.y)["accuracy"]
  assert accuracy.shape == (4, 15) and float(accuracy.min()) == 1.0
  assert float(task.metrics(-ep.y, ep.y)["accuracy"].max()) == 0.0
  assert float(task.loss(100 * ep.y, ep.y).max()) < 1e-6
  masked = sample(task, 0, 4, active_dims=40)
  np.testing.assert_array_equal(masked.x[..., 40:], 0.0)
  np.testing.assert_array_equal(masked.x[..., :40], ep.x[..., :40])


def test_every_episode_has_shots_and_queries_of_each_class_in_random_order():
  task = digits_task()
  ep = sample(task, 1, 300)
  check_layout(task, ep)
  labels = np.asarray(ep.info["labels"])
  # Shuffled, not grouped by class: the first support and first query label take every value,
  # and the label sequences differ between episodes.
  assert set(labels[:, 0]) == set(range(WAYS)) == set(labels[:, task.context_points])
  assert len({tuple(row[:task.context_points]) for row in labels}) > 10
  assert len({tuple(row[task.context_points:]) for row in labels}) > 10
  # Classes are drawn from the whole split.
  assert set(np.asarray(ep.info["classes"]).ravel()) == set(task.class_ids)


def test_labels_are_permuted_across_episodes():
  task = digits_task()
  classes = np.asarray(sample(task, 2, 300).info["classes"])      # [batch, ways]: label -> class
  for cls in task.class_ids:
    episodes, labels = np.nonzero(classes == cls)
    assert len(episodes) > 30
    # A class gets every label, each about equally often.
    np.testing.assert_allclose(np.bincount(labels, minlength=WAYS) / len(labels), 1 / WAYS,
                               atol=0.2)


def test_digits_images_are_sklearns_and_distinct(digits):
  data, lookup = digits
  task = digits_task()
  ep = sample(task, 3, 50)
  x = np.asarray(ep.x) * 16
  np.testing.assert_array_equal(x, np.round(x))  # pixels / 16 exactly
  classes, labels = np.asarray(ep.info["classes"]), np.asarray(ep.info["labels"])
  for b in range(len(x)):
    indices = [lookup[tuple(row.astype(int))] for row in x[b]]
    # Each point is a digit of its class, and no image repeats (support and queries disjoint).
    np.testing.assert_array_equal(data.target[indices], classes[b][labels[b]])
    assert len(set(indices)) == task.points


def test_digits_split_follows_the_seeded_permutation():
  train, test = digits_task(), digits_task(split="test")
  order = np.asarray(jax.random.permutation(jax.random.PRNGKey(0), 10))
  np.testing.assert_array_equal(train.class_ids, np.sort(order[:5]))
  np.testing.assert_array_equal(test.class_ids, np.sort(order[5:]))
  assert not set(train.class_ids) & set(test.class_ids)
  assert not np.array_equal(digits_task(seed=1).class_ids, train.class_ids)
  ep = sample(test, 4, 100)
  check_layout(test, ep)
  assert set(np.asarray(ep.info["classes"]).ravel()) == set(test.class_ids)
  assert digits_task(train_classes=8, split="test", ways=2).num_classes == 2


def test_same_key_same_episode():
  task = digits_task()
  a, b, c = (sample(task, seed, 3) for seed in (5, 5, 6))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a.x, c.x)


def write_archive(root, layout, rng):
  """Writes random binary drawings as Omniglot PNGs (strokes black); returns them by path order."""
  drawings = []
  for archive, alphabets in sorted(layout.items()):
    for alphabet, characters in sorted(alphabets.items()):
      for c, count in enumerate(characters):
        directory = root / archive / alphabet / f"character{c + 1:02d}"
        directory.mkdir(parents=True)
        strokes = rng.random((count, SIDE, SIDE)) < 0.3
        for d, stroke in enumerate(strokes):
          Image.fromarray(~stroke).save(directory / f"{d:02d}.png")  # mode "1", white background
        drawings.append(strokes.astype(np.float32))
  return drawings


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  root = tmp_path_factory.mktemp("omniglot")
  return root, write_archive(root, ALPHABETS, np.random.default_rng(0))


def omniglot_task(root, **fields):
  return make_task({"name": "fewshot_classification", "dataset": "omniglot",
                    "data_dir": str(root), "image_size": SIDE, "dim": SIDE * SIDE,
                    "train_classes": 6, "rotations": True, "ways": 5, "shots": 1,
                    "queries": 3, **fields})


def test_omniglot_rotations_are_new_classes_in_their_split(archive):
  root, drawings = archive
  assert len(omniglot.character_dirs(str(root))) == len(drawings) == 10
  train, test = omniglot_task(root), omniglot_task(root, split="test")
  assert (train.num_classes, test.num_classes) == (24, 16)
  assert not set(train.class_ids) & set(test.class_ids)
  assert set(train.class_ids) | set(test.class_ids) == set(range(40))
  for task in (train, test):  # a character's four turns stay in its split
    base = task.class_ids % 10
    assert all(np.sum(base == b) == 4 for b in set(base))
  ep = sample(train, 7, 64)
  check_layout(train, ep)
  x = np.asarray(ep.x).reshape(64, train.points, SIDE, SIDE)
  classes, labels = np.asarray(ep.info["classes"]), np.asarray(ep.info["labels"])
  turns_seen = set()
  for b in range(64):
    for label in range(train.ways):
      turn, character = divmod(int(classes[b, label]), 10)
      turns_seen.add(turn)
      rotated = [np.rot90(d, turn) for d in drawings[character]]
      matches = [next(j for j, r in enumerate(rotated) if np.array_equal(r, image))
                 for image in x[b, labels[b] == label]]
      assert len(set(matches)) == train.shots + train.queries  # distinct drawings
  assert turns_seen == {0, 1, 2, 3}


def test_omniglot_flat_layout_resize_and_unequal_counts(archive, tmp_path):
  root, drawings = archive
  flat = write_archive(tmp_path, {".": {"Alpha": (4, 6), "Beta": (5,)}},
                       np.random.default_rng(1))
  images, counts = omniglot.read_archive(str(tmp_path), SIDE)
  np.testing.assert_array_equal(counts, [4, 6, 5])
  assert images.shape == (3, 6, SIDE * SIDE)
  for c, character in enumerate(flat):
    np.testing.assert_array_equal(images[c, :counts[c]], character.reshape(len(character), -1))
    np.testing.assert_array_equal(images[c, counts[c]:], 0.0)
  small, _ = omniglot.read_archive(str(root), 10)
  png = root / "images_background" / "Alpha" / "character01" / "00.png"
  resized = np.asarray(Image.open(png).convert("L").resize((10, 10), Image.LANCZOS), np.float32)
  np.testing.assert_allclose(small[0, 0], 1 - resized.ravel() / 255, atol=1e-6)
  task = omniglot_task(root, image_size=10, dim=100, rotations=False, ways=4)
  ep = sample(task, 8, 8)
  assert ep.x.shape == (8, 16, 100) and task.image_shape == (10, 10, 1)
  assert 0 <= float(ep.x.min()) and float(ep.x.max()) <= 1
  check_layout(task, ep)


@pytest.mark.parametrize("fields, match", [
    ({"dataset": "mnist"}, "unknown dataset 'mnist'; allowed: digits, omniglot"),
    ({"split": "val"}, "unknown split 'val'; allowed: train, test"),
    ({"dataset": "omniglot", "image_size": 28, "dim": 784}, "omniglot needs data_dir"),
    ({"dataset": "omniglot", "image_size": 28, "dim": 784, "data_dir": "/no/such/dir"},
     "'/no/such/dir' is not a directory"),
    ({"ways": 6}, "ways=6 exceeds the 5 classes of the 'train' split of digits"),
    ({"ways": 3, "train_classes": 8, "split": "test"}, "ways=3 exceeds the 2 classes of the 'test'"),
    ({"dim": 100}, r"dim=100 must equal .*8x8 = 64"),
    ({"image_size": 10, "dim": 100}, "digits images are 8x8: image_size must be 8, got 10"),
    ({"data_dir": "/tmp"}, "data_dir must be '', got '/tmp'"),
    ({"train_classes": 11}, r"train_classes must be in \[1, 10\].*got 11"),
    ({"train_classes": 0}, "train_classes must be >= 1, got 0"),
    ({"shots": 0}, "shots must be >= 1, got 0"),
    ({"queries": -1}, "queries must be >= 0, got -1"),
    ({"shots": 150, "queries": 30},
     r"digits class 0 has 178 examples, fewer than shots \+ queries = 150 \+ 30 = 180"),
])
def test_bad_inputs_fail_with_clear_messages(fields, match):
  with pytest.raises(ValueError, match=match):
    digits_task(**fields)


def test_bad_omniglot_archives_and_point_counts(archive, tmp_path):
  root, _ = archive
  with pytest.raises(ValueError, match=r"no character directories .*images_background"):
    omniglot_task(tmp_path)
  with pytest.raises(ValueError, match=r"has 4 examples, fewer than .* = 3 \+ 2 = 5"):
    omniglot_task(root, shots=3, queries=2)
  task = digits_task()
  match = r"exactly ways \* \(shots \+ queries\) = 3 \* \(2 \+ 3\) = 15 points, got 7"
  with pytest.raises(ValueError, match=match):
    task.check_points(7)
  with pytest.raises(ValueError, match=match):
    task.sample(jax.random.key(0), 2, 7)
  task.check_points(15)
  assert "fewshot_classification" in TASKS.names
