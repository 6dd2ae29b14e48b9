"""LSTM and GRU in-context learners: a flax cell under a scan per layer (Hochreiter and
Schmidhuber 1997; Cho et al. 2014), the baselines of Chan et al. 2022 and of the peer frameworks.

The state size is the cell's width, `hidden` (the residual stream is as wide): an LSTM carries
its hidden and cell vectors, 2·hidden floats per layer; a GRU its hidden vector alone.
"""

import dataclasses

import flax.linen as nn

from metalearn.core.episode import Episode
from metalearn.learners.base import Params
from metalearn.learners.registry import LEARNERS
from metalearn.learners.sequence_model import SequenceLearner


@LEARNERS.register("lstm")
@dataclasses.dataclass(frozen=True)
class LSTM(SequenceLearner):
  """Stacked residual LSTM layers; `hidden` is each cell's width (its state: 2·hidden)."""

  def layer(self, index: int) -> nn.Module:
    return nn.RNN(nn.OptimizedLSTMCell(self.hidden), name=f"lstm_{index}")

  def state_floats(self, params: Params, episode: Episode) -> int:
    return self.num_layers * 2 * self.hidden


@LEARNERS.register("gru")
@dataclasses.dataclass(frozen=True)
class GRU(SequenceLearner):
  """Stacked residual GRU layers; `hidden` is each cell's width and state."""

  def layer(self, index: int) -> nn.Module:
    return nn.RNN(nn.GRUCell(self.hidden), name=f"gru_{index}")

  def state_floats(self, params: Params, episode: Episode) -> int:
    return self.num_layers * self.hidden
