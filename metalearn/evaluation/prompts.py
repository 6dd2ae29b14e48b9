"""The held-out prompts every learner is scored on, in chunks, and split into one query each."""

import functools
from typing import Iterator

import jax
import jax.numpy as jnp

from metalearn.core.episode import Episode
from metalearn.tasks import TaskFamily


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def held_out_episodes(task: TaskFamily, num_prompts: int, points: int, seed: int) -> Episode:
  """The fixed evaluation prompts: every learner is scored on these same ones."""
  return task.sample(jax.random.PRNGKey(seed), num_prompts, points)


def chunks(episode: Episode, batch_size: int) -> Iterator[Episode]:
  """The episode's prompts in consecutive slices of at most `batch_size` (one compiled shape)."""
  for start in range(0, episode.batch_size, batch_size):
    yield jax.tree.map(lambda a: a[start:start + batch_size], episode)


def query_episodes(episode: Episode, context_points: int) -> Episode:
  """Every query j >= context_points as a prompt of its own: the context, then (x_j, y_j).

  [batch, points] -> [batch · queries, context_points + 1], so that a prefix learner
  predicts each query from the context alone, as a fixed-context learner does, and never
  from the queries before it.
  """
  queries = episode.num_points - context_points

  def split(a):
    context = jnp.broadcast_to(a[:, None, :context_points],
                               (a.shape[0], queries, context_points) + a.shape[2:])
    return jnp.concatenate([context, a[:, context_points:, None]], axis=2).reshape(
        (a.shape[0] * queries, context_points + 1) + a.shape[2:])

  repeat = lambda a: jnp.repeat(a, queries, axis=0)
  return Episode(x=split(episode.x), y=split(episode.y), mask=split(episode.mask),
                 zero_loss=repeat(episode.zero_loss), info=jax.tree.map(repeat, episode.info))
