"""Reads the Omniglot archive (Lake et al. 2015) from its standard directory layout.

The archive holds `alphabet/character/*.png`, one PNG per drawing, usually split into the
sub-archives `images_background/` and `images_evaluation/`. This module only reads it;
the few-shot task family (`fewshot.py`) splits and samples it.
"""

import pathlib

import numpy as np

# The standard sub-archives; where neither exists, alphabets sit in the directory itself.
SUB_ARCHIVES = ("images_background", "images_evaluation")


def character_dirs(data_dir: str) -> list[pathlib.Path]:
  """Every character directory (one holding PNG drawings) of the archive, sorted by path."""
  root = pathlib.Path(data_dir)
  if not root.is_dir():
    raise ValueError(f"omniglot data_dir {data_dir!r} is not a directory")
  roots = [root / name for name in SUB_ARCHIVES if (root / name).is_dir()] or [root]
  found = sorted(
      character for archive in roots for alphabet in archive.iterdir() if alphabet.is_dir()
      for character in alphabet.iterdir()
      if character.is_dir() and any(character.glob("*.png")))
  if not found:
    raise ValueError(
        f"no character directories (alphabet/character/*.png) under {data_dir!r} or its "
        f"sub-archives {', '.join(SUB_ARCHIVES)}")
  return found


def read_drawing(path: pathlib.Path, image_size: int) -> np.ndarray:
  """One drawing as [image_size, image_size] float32: strokes 1.0, background 0.0."""
  from PIL import Image  # Only Omniglot needs Pillow.
  with Image.open(path) as image:
    image = image.convert("L")
    if image.size != (image_size, image_size):
      image = image.resize((image_size, image_size), resample=Image.LANCZOS)
    return 1.0 - np.asarray(image, np.float32) / 255.0


def read_archive(data_dir: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """All characters, sorted by path: images [characters, max_drawings, pixels] float32
  (zero past a character's drawings) and the drawings per character [characters] int32."""
  drawings = [[read_drawing(png, image_size) for png in sorted(character.glob("*.png"))]
              for character in character_dirs(data_dir)]
  counts = np.array([len(d) for d in drawings], np.int32)
  images = np.zeros((len(drawings), counts.max(), image_size * image_size), np.float32)
  for c, character in enumerate(drawings):
    images[c, :len(character)] = np.reshape(character, (len(character), -1))
  return images, counts
