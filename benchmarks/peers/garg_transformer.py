"""Garg et al. 2022's in-context regression transformer and its training step, in PyTorch.

Written as github.com/dtsip/in-context-learning writes it, the code the paper's users run:
  src/models.py  TransformerModel: an HF `GPT2Model` backbone (no dropout, no cache) between
                 `_read_in` Linear(d, hidden) and `_read_out` Linear(hidden, 1); `_combine`
                 interleaves x_i and y_i (y_i in the first coordinate of a d-wide zero vector);
                 the predictions are read at the x tokens;
  src/train.py   train_step: zero_grad, forward, loss, backward, step, loss.item();
  src/tasks.py   LinearRegression: w ~ N(0, I) per prompt, y = x·w (scale 1), loss the mean
                 squared error over every prediction (`mean_squared_error`);
  src/samplers.py  GaussianSampler: x ~ N(0, I), drawn in torch each step;
  conf/          Adam at learning rate 1e-4.
Their curriculum (shorter prompts and fewer active dimensions early on) is left out: the
benchmark times the full 41 points at d = 20, the shapes our compiled step always computes (its
curriculum masks), and a position table of 2 x 41 (their configs keep 2 x 101; a bigger table
adds no compute). The step gets every core's threads (torch.set_num_threads(os.cpu_count())).
With our weights copied in, it predicts as our transformer does (tests/test_transformer_peer.py).
"""

import os
from typing import Callable

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

LEARNING_RATE = 1e-4  # conf/base.yaml's training.learning_rate


class TransformerModel(nn.Module):
  """src/models.py's TransformerModel (their `n_positions` is the number of points)."""

  def __init__(self, n_dims: int, n_positions: int, n_embd: int, n_layer: int, n_head: int):
    super().__init__()
    configuration = GPT2Config(n_positions=2 * n_positions, n_embd=n_embd, n_layer=n_layer,
                               n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                               use_cache=False)
    self.n_positions = n_positions
    self.n_dims = n_dims
    self._read_in = nn.Linear(n_dims, n_embd)
    self._backbone = GPT2Model(configuration)
    self._read_out = nn.Linear(n_embd, 1)

  @staticmethod
  def _combine(xs_b: torch.Tensor, ys_b: torch.Tensor) -> torch.Tensor:
    """Interleaves the x's and the y's into one sequence [B, 2P, d]."""
    bsize, points, dim = xs_b.shape
    ys_b_wide = torch.cat((ys_b.view(bsize, points, 1),
                           torch.zeros(bsize, points, dim - 1, device=ys_b.device)), axis=2)
    zs = torch.stack((xs_b, ys_b_wide), dim=2)
    return zs.view(bsize, 2 * points, dim)

  def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    embeds = self._read_in(self._combine(xs, ys))
    output = self._backbone(inputs_embeds=embeds).last_hidden_state
    prediction = self._read_out(output)
    return prediction[:, ::2, 0]  # predict only on xs


def attention_implementation(model: TransformerModel) -> str:
  """Which attention kernel HF chose for the backbone (its default: what users get)."""
  return str(model._backbone.config._attn_implementation)


def make_training(hidden: int, layers: int, heads: int, steps: int, batch: int = 64,
                  points: int = 41, dim: int = 20, seed: int = 0
                  ) -> tuple[Callable[[], float], TransformerModel]:
  """A callable that takes `steps` training steps (returning the last loss), and the model.

  Each call continues the same run: the model and Adam's state persist between calls.
  """
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(seed)
  model = TransformerModel(dim, points, hidden, layers, heads)
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

  def train_steps() -> float:
    loss_value = float("nan")
    for _ in range(steps):
      xs = torch.randn(batch, points, dim)
      w_b = torch.randn(batch, dim, 1)
      ys = (xs @ w_b)[:, :, 0]
      optimizer.zero_grad()
      output = model(xs, ys)
      loss = (ys - output).square().mean()
      loss.backward()
      optimizer.step()
      loss_value = loss.detach().item()
    return loss_value

  return train_steps, model
