"""N-way K-shot image classification episodes (Vinyals et al. 2016), drawn on the device.

The images are loaded on the host once per (dataset, data_dir, image_size), split into
train and test classes by a seeded permutation, and kept on the device as one array
[base classes, max examples per class, pixels] with a count per class; an episode picks
classes and examples from it by index, inside the compiled step.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core import checks
from metalearn.tasks import omniglot
from metalearn.tasks.base import TaskFamily
from metalearn.tasks.registry import TASKS

DATASETS = ("digits", "omniglot")
SPLITS = ("train", "test")
DIGITS_SIZE = 8  # sklearn's digits are 8x8


@functools.lru_cache(maxsize=4)
def load_base_classes(dataset: str, data_dir: str, image_size: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Every base class on the host, sorted (digits by label, Omniglot characters by path).

  Returns images [classes, max_examples, image_size²] float32 in [0, 1], zero past a
  class's examples, and the examples per class [classes] int32; both read-only.
  """
  if dataset == "digits":
    from sklearn.datasets import load_digits  # Ships its data: no download.
    digits = load_digits()
    pixels = np.asarray(digits.images, np.float32).reshape(len(digits.target), -1) / 16.0
    labels = np.unique(digits.target)
    counts = np.array([np.sum(digits.target == label) for label in labels], np.int32)
    images = np.zeros((len(labels), counts.max(), pixels.shape[1]), np.float32)
    for c, label in enumerate(labels):
      images[c, :counts[c]] = pixels[digits.target == label]
  else:
    images, counts = omniglot.read_archive(data_dir, image_size)
  images.setflags(write=False)
  counts.setflags(write=False)
  return images, counts


def split_base_classes(num_base: int, train_classes: int, split: str, seed: int
                       ) -> np.ndarray:
  """The ids (positions in the sorted base classes) of a split's base classes, sorted.

  The first `train_classes` of a seeded permutation are the train split, the rest test.
  """
  with jax.ensure_compile_time_eval():
    order = np.asarray(jax.random.permutation(jax.random.PRNGKey(seed), num_base))
  return np.sort(order[:train_classes] if split == "train" else order[train_classes:])


def rotation_indices(image_size: int, turns: int) -> np.ndarray:
  """[turns, image_size²] int32: row k gathers a flattened image into np.rot90(image, k)."""
  flat = np.arange(image_size * image_size).reshape(image_size, image_size)
  return np.stack([np.rot90(flat, k).ravel() for k in range(turns)]).astype(np.int32)


class SplitArrays(NamedTuple):
  """One split's images on the device."""
  images: jax.Array     # [split base classes, max examples, pixels] float32
  counts: jax.Array     # [split base classes] int32 examples per class
  base_ids: jax.Array   # [split base classes] int32 positions in all sorted base classes
  rotations: jax.Array  # [turns, pixels] int32 pixel gathers for 0, 90, 180, 270 degrees


@functools.lru_cache(maxsize=8)
def split_arrays(dataset: str, data_dir: str, image_size: int, train_classes: int,
                 split: str, seed: int, rotations: bool) -> SplitArrays:
  """A split's images moved to the device once (cached by the task's fields).

  Rotated classes are not stored: a class's rotation is a pixel gather at sampling time,
  so the device holds the base images only.
  """
  images, counts = load_base_classes(dataset, data_dir, image_size)
  base_ids = split_base_classes(len(counts), train_classes, split, seed)
  # Made eagerly even when first asked for inside a trace, so the cache holds arrays, not tracers.
  with jax.ensure_compile_time_eval():
    return SplitArrays(
        images=jnp.asarray(images[base_ids]), counts=jnp.asarray(counts[base_ids]),
        base_ids=jnp.asarray(base_ids, jnp.int32),
        rotations=jnp.asarray(rotation_indices(image_size, 4 if rotations else 1)))


@TASKS.register("fewshot_classification")
@dataclasses.dataclass(frozen=True)
class FewShotClassification(TaskFamily):
  """`ways`-way `shots`-shot classification of images, with `queries` queries per class.

  An episode draws `ways` distinct classes of the split and `shots + queries` distinct
  examples of each, labels the classes by a fresh random permutation (a label means
  nothing across episodes), and lays out the `ways·shots` support points in a random
  order followed by the `ways·queries` query points in a random order. x holds the
  flattened images, y the one-hot labels [points, ways]; equal logits cost log(ways).

  Classes: the base classes (digits 0..9, or Omniglot characters sorted by path) are
  split by `split_base_classes`; with `rotations`, each base class c of the split also
  gives the classes "c turned by k·90 degrees" (Santoro et al. 2016, Finn et al. 2017),
  which stay in c's split. A class's global id is k·(number of base classes) + c.
  """

  dim: int = 64               # pixels per image; must equal image_size²
  dataset: str = "digits"     # "digits" (sklearn, 10 classes) or "omniglot" (read from data_dir)
  data_dir: str = ""          # Omniglot's alphabet/character/*.png archive; "" for digits
  split: str = "train"        # which classes episodes draw from: "train" or "test"
  ways: int = 5               # classes per episode
  shots: int = 1              # support examples per class
  queries: int = 5            # query examples per class
  train_classes: int = 5      # base classes in the train split (Omniglot standard: 1200 of 1623)
  rotations: bool = False     # 90/180/270-degree turns of every base class are new classes
  image_size: int = 8         # side of the square images (digits: 8; Omniglot is resized to it)
  seed: int = 0               # seed of the permutation that splits the base classes

  loss_name = "softmax_cross_entropy"

  def __post_init__(self):
    super().__post_init__()
    checks.check_one_of("dataset", self.dataset, DATASETS)
    checks.check_one_of("split", self.split, SPLITS)
    for name in ("ways", "shots", "train_classes"):
      checks.check_int(name, getattr(self, name), 1, name_kind=False)
    checks.check_int("queries", self.queries, 0, name_kind=False)
    if self.dataset == "digits":
      if self.image_size != DIGITS_SIZE:
        raise ValueError(f"digits images are {DIGITS_SIZE}x{DIGITS_SIZE}: image_size must be "
                         f"{DIGITS_SIZE}, got {self.image_size}")
      if self.data_dir:
        raise ValueError(f"digits ship with scikit-learn: data_dir must be '', got {self.data_dir!r}")
    else:
      checks.check_int("image_size", self.image_size, 1, name_kind=False)
      if not self.data_dir:
        raise ValueError(
            "omniglot needs data_dir: the directory holding alphabet/character/*.png, possibly "
            f"under {' and '.join(omniglot.SUB_ARCHIVES)}; got ''")
    pixels = self.image_size * self.image_size
    if self.dim != pixels:
      raise ValueError(f"dim={self.dim} must equal the pixels per image, image_size² = "
                       f"{self.image_size}x{self.image_size} = {pixels}")
    _, counts = load_base_classes(self.dataset, self.data_dir, self.image_size)
    if self.train_classes > len(counts):
      raise ValueError(f"train_classes must be in [1, {len(counts)}] (the {self.dataset} base "
                       f"classes), got {self.train_classes}")
    if self.ways > self.num_classes:
      raise ValueError(f"ways={self.ways} exceeds the {self.num_classes} classes of the "
                       f"{self.split!r} split of {self.dataset}")
    per_class = self.shots + self.queries
    base_ids = split_base_classes(len(counts), self.train_classes, self.split, self.seed)
    short = base_ids[counts[base_ids] < per_class]
    if len(short):
      raise ValueError(
          f"{self.dataset} class {short[0]} has {counts[short[0]]} examples, fewer than "
          f"shots + queries = {self.shots} + {self.queries} = {per_class}")

  @property
  def out_dim(self) -> int:
    return self.ways

  @property
  def context_points(self) -> int:
    """The support points that open every episode."""
    return self.ways * self.shots

  @property
  def points(self) -> int:
    """The only prompt length this family makes: support then queries."""
    return self.ways * (self.shots + self.queries)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 1)

  @property
  def num_base_classes(self) -> int:
    """Base classes of the whole dataset, both splits."""
    return len(load_base_classes(self.dataset, self.data_dir, self.image_size)[1])

  @property
  def num_classes(self) -> int:
    """Classes of this split, rotations included."""
    base = (self.train_classes if self.split == "train"
            else self.num_base_classes - self.train_classes)
    return base * (4 if self.rotations else 1)

  @property
  def class_ids(self) -> np.ndarray:
    """The global ids of this split's classes [num_classes], as `info["classes"]` gives them."""
    base_ids = split_base_classes(
        self.num_base_classes, self.train_classes, self.split, self.seed)
    turns = np.arange(4 if self.rotations else 1)
    return (turns[:, None] * self.num_base_classes + base_ids[None, :]).ravel()

  def check_points(self, points: int) -> None:
    if points != self.points:
      raise ValueError(
          f"fewshot_classification episodes have exactly ways * (shots + queries) = "
          f"{self.ways} * ({self.shots} + {self.queries}) = {self.points} points, got {points}")

  def sample_one(self, rng, points, dim_mask):
    self.check_points(points)
    data = split_arrays(self.dataset, self.data_dir, self.image_size, self.train_classes,
                        self.split, self.seed, self.rotations)
    k_class, k_example, k_support, k_query = jax.random.split(rng, 4)
    split_base = data.counts.shape[0]
    # An ordered draw without replacement: the class at position l gets label l, so the
    # labelling is a uniformly random permutation.
    local = jax.random.choice(k_class, self.num_classes, (self.ways,), replace=False)
    base, turn = local % split_base, local // split_base
    # Gumbel top-k over a class's valid examples: a uniform subset, without replacement.
    max_examples = data.images.shape[1]
    valid = jnp.arange(max_examples)[None, :] < data.counts[base][:, None]
    gumbel = jax.random.gumbel(k_example, (self.ways, max_examples))
    _, examples = jax.lax.top_k(jnp.where(valid, gumbel, -jnp.inf), self.shots + self.queries)
    images = data.images[base[:, None], examples]                 # [ways, shots+queries, pixels]
    images = jnp.take_along_axis(images, data.rotations[turn][:, None, :], axis=-1)
    labels = jnp.broadcast_to(jnp.arange(self.ways, dtype=jnp.int32)[:, None], examples.shape)

    def shuffled(part, key):
      flat_images = images[:, part].reshape(-1, self.dim)
      order = jax.random.permutation(key, flat_images.shape[0])
      return flat_images[order], labels[:, part].reshape(-1)[order]

    support_x, support_labels = shuffled(slice(0, self.shots), k_support)
    query_x, query_labels = shuffled(slice(self.shots, None), k_query)
    x = jnp.concatenate([support_x, query_x]) * dim_mask
    point_labels = jnp.concatenate([support_labels, query_labels])
    y = jax.nn.one_hot(point_labels, self.ways, dtype=jnp.float32)
    classes = turn * self.num_base_classes + data.base_ids[base]
    zero_loss = jnp.asarray(math.log(self.ways), jnp.float32)
    return x, y, zero_loss, {"classes": classes.astype(jnp.int32), "labels": point_labels}

  def metrics(self, y_hat: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Per-point accuracy [batch, points]: 1.0 where argmax ŷ is the true label."""
    hits = jnp.argmax(y_hat, axis=-1) == jnp.argmax(y, axis=-1)
    return {"accuracy": hits.astype(jnp.float32)}
