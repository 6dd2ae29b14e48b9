"""MAML meta-training on Finn et al. 2017's sinusoid in PyTorch, the ways its users write it.

The problem is configs/sinusoid.py's: a 1-40-40-1 ReLU MLP, K = 10 context + 10 query points
per task, meta-batch 25, A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5], the mean squared error on
the context (inner loss) and on the queries (meta-loss, averaged over the tasks), inner step
α = 0.01, Adam at 1e-3 on the meta-parameters; second order unless `first_order`. Each
meta-step draws its tasks in torch, as ours draws them inside its compiled step. Every style
runs with torch.set_num_threads(os.cpu_count()) unless given another count.

Styles:
  clone_and_adapt  learn2learn's pattern (learn2learn/algorithms/maml.py and its
                   examples/maml_sine.py) in plain torch: per task, in a Python loop, the
                   meta-parameters are cloned into the graph (`maml.clone()`), each inner step
                   is `torch.autograd.grad(loss, params, retain_graph=second_order,
                   create_graph=second_order)` and `p − α·g` (`learner.adapt(loss)`), the
                   query losses are summed and divided by the tasks, one backward, Adam step.
                   learn2learn also re-routes each cloned module's `_parameters` in Python;
                   the functional forward here skips that, so if anything it is faster.
  learn2learn      the same loop with learn2learn's own `l2l.algorithms.MAML` class, where
                   learn2learn is installed (`optional("learn2learn")`).
  torch_func       PyTorch's functorch example (functorch/examples/maml_omniglot/
                   maml-omniglot-transforms.py): `grad` of a `functional_call` loss for the inner
                   steps, `vmap` over the meta-batch's tasks, `.backward()` of the mean query
                   loss, Adam step.
"""

import math
import os
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from benchmarks.peers import optional

STYLES = ("clone_and_adapt", "learn2learn", "torch_func")
WIDTHS = (40, 40)        # configs/sinusoid.py: model.widths
CONTEXT_POINTS = 10      # K context points, then K query points
QUERY_POINTS = 10
META_BATCH = 25          # train.batch_size
STEP_SIZE = 0.01         # inner step size α
META_LEARNING_RATE = 1e-3
AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)

# (x, y) [tasks, context + query points, 1] -> the mean query loss after adaptation
MetaLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_mlp(widths: tuple[int, ...] = WIDTHS) -> nn.Sequential:
  """Linear + ReLU layers of `widths`, then Linear(·, 1): Finn et al.'s 1-40-40-1."""
  layers, width_in = [], 1
  for width in widths:
    layers += [nn.Linear(width_in, width), nn.ReLU()]
    width_in = width
  return nn.Sequential(*layers, nn.Linear(width_in, 1))


def sample_sinusoids(tasks: int, points: int) -> tuple[torch.Tensor, torch.Tensor]:
  """x, y [tasks, points, 1]: y = A sin(x − φ), one (A, φ) per task."""
  amplitude = torch.empty(tasks, 1, 1).uniform_(*AMPLITUDE)
  phase = torch.empty(tasks, 1, 1).uniform_(*PHASE)
  x = torch.empty(tasks, points, 1).uniform_(*X_RANGE)
  return x, amplitude * torch.sin(x - phase)


def _functional_mlp(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
  """make_mlp's network run on the tensors `params` (weight, bias per layer) in place of its own."""
  for i in range(0, len(params) - 2, 2):
    x = torch.relu(F.linear(x, params[i], params[i + 1]))
  return F.linear(x, params[-2], params[-1])


def clone_and_adapt_loss(model: nn.Sequential, inner_steps: int, first_order: bool) -> MetaLoss:
  """learn2learn's clone()/adapt() meta-loss, task by task, in plain torch."""
  second_order = not first_order

  def meta_loss(x, y):
    total = 0.0
    for task in range(x.shape[0]):
      x_c, y_c = x[task, :CONTEXT_POINTS], y[task, :CONTEXT_POINTS]
      x_q, y_q = x[task, CONTEXT_POINTS:], y[task, CONTEXT_POINTS:]
      params = [p.clone() for p in model.parameters()]  # maml.clone(): in the graph
      for _ in range(inner_steps):
        loss = F.mse_loss(_functional_mlp(params, x_c), y_c)
        grads = torch.autograd.grad(loss, params, retain_graph=second_order,
                                    create_graph=second_order)
        params = [p - STEP_SIZE * g for p, g in zip(params, grads)]
      total = total + F.mse_loss(_functional_mlp(params, x_q), y_q)
    return total / x.shape[0]

  return meta_loss


def learn2learn_loss(maml: nn.Module, inner_steps: int) -> MetaLoss:
  """examples/maml_sine.py's loop around an `l2l.algorithms.MAML` wrapper."""
  def meta_loss(x, y):
    total = 0.0
    for task in range(x.shape[0]):
      learner = maml.clone()
      for _ in range(inner_steps):
        learner.adapt(F.mse_loss(learner(x[task, :CONTEXT_POINTS]), y[task, :CONTEXT_POINTS]))
      total = total + F.mse_loss(learner(x[task, CONTEXT_POINTS:]), y[task, CONTEXT_POINTS:])
    return total / x.shape[0]

  return meta_loss


def torch_func_loss(model: nn.Module, inner_steps: int, first_order: bool) -> MetaLoss:
  """functorch's MAML: grad of a functional_call loss inside, vmap over the tasks."""
  def mse(params, x, y):
    return F.mse_loss(functional_call(model, params, (x,)), y)

  def query_loss(params, x, y):
    x_c, y_c = x[:CONTEXT_POINTS], y[:CONTEXT_POINTS]
    x_q, y_q = x[CONTEXT_POINTS:], y[CONTEXT_POINTS:]
    for _ in range(inner_steps):
      grads = grad(mse)(params, x_c, y_c)
      if first_order:  # constants of the meta-gradient
        grads = {name: g.detach() for name, g in grads.items()}
      params = {name: p - STEP_SIZE * grads[name] for name, p in params.items()}
    return mse(params, x_q, y_q)

  def meta_loss(x, y):
    params = dict(model.named_parameters())
    return vmap(query_loss, in_dims=(None, 0, 0))(params, x, y).mean()

  return meta_loss


def make_meta_training(style: str, inner_steps: int, first_order: bool,
                       threads: int | None = None, seed: int = 0
                       ) -> Callable[[int], float] | None:
  """A callable that takes a number of meta-steps and returns the last meta-loss; None where
  the style's library is not installed. Each call continues the same run (weights, Adam state)
  and sets torch's threads (`threads`, by default os.cpu_count()) first, as the benchmark
  alternates peers that may use different counts."""
  if style not in STYLES:
    raise ValueError(f"unknown style {style!r}; allowed: {', '.join(STYLES)}")
  threads = threads or os.cpu_count() or 1
  torch.manual_seed(seed)
  model = make_mlp()
  if style == "learn2learn":
    l2l = optional("learn2learn")
    if l2l is None:
      return None
    maml = l2l.algorithms.MAML(model, lr=STEP_SIZE, first_order=first_order)
    meta_loss = learn2learn_loss(maml, inner_steps)
  elif style == "clone_and_adapt":
    meta_loss = clone_and_adapt_loss(model, inner_steps, first_order)
  else:
    meta_loss = torch_func_loss(model, inner_steps, first_order)
  optimizer = torch.optim.Adam(model.parameters(), lr=META_LEARNING_RATE)

  def meta_steps(steps: int) -> float:
    torch.set_num_threads(threads)
    for _ in range(steps):
      x, y = sample_sinusoids(META_BATCH, CONTEXT_POINTS + QUERY_POINTS)
      loss = meta_loss(x, y)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
    return loss.item()

  return meta_steps
