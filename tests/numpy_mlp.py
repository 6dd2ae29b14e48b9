"""The MAML family's base MLP by hand in float64 numpy: ReLU layers and a linear head, forward,
backpropagation and SGD steps. The inner loops are checked against it.

Parameters are {"W1", "b1", ..., "WL", "bL"}: layer i's kernel and bias, layer L the head.
"""

import numpy as np


def from_flax(net_params) -> dict[str, np.ndarray]:
  """An mlp BaseNetwork's params {"body": {"dense_0", ...}, "head"} (or any pytree shaped
  like them, such as Meta-SGD's rates) as {"W1", "b1", ...} in float64."""
  body = net_params["body"]
  layers = [body[f"dense_{i}"] for i in range(len(body))] + [net_params["head"]]
  p = {}
  for i, layer in enumerate(layers, start=1):
    p[f"W{i}"] = np.asarray(layer["kernel"], np.float64)
    p[f"b{i}"] = np.asarray(layer["bias"], np.float64)
  return p


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
  """ŷ [N, out] for the rows of x [N, dim]."""
  return _activations(p, x)[-1]


def _activations(p, x):
  """Each layer's input, then the output: [x, h1, ..., h_{L−1}, ŷ]."""
  layers, values = len(p) // 2, [x]
  for i in range(1, layers + 1):
    out = values[-1] @ p[f"W{i}"] + p[f"b{i}"]
    values.append(out if i == layers else np.maximum(out, 0.0))
  return values


def squared_error_gradient(p: dict[str, np.ndarray], x: np.ndarray,
                           y: np.ndarray) -> dict[str, np.ndarray]:
  """∇ of mean_i Σ_out (ŷ_i − y_i)² over the rows of x, by backpropagation."""
  values = _activations(p, x)
  d_out = 2.0 * (values[-1] - y) / len(x)
  grads = {}
  for i in range(len(p) // 2, 0, -1):
    grads[f"W{i}"], grads[f"b{i}"] = values[i - 1].T @ d_out, d_out.sum(0)
    if i > 1:  # back through the ReLU whose output is layer i's input
      d_out = (d_out @ p[f"W{i}"].T) * (values[i - 1] > 0)
  return grads


def step(p: dict[str, np.ndarray], grads: dict[str, np.ndarray], rate) -> dict[str, np.ndarray]:
  """p − rate·g; `rate` a number or a dict like p (Meta-SGD's per-parameter rates)."""
  return {k: p[k] - (rate[k] if isinstance(rate, dict) else rate) * grads[k] for k in p}


def sgd(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, rate: float,
        steps: int) -> dict[str, np.ndarray]:
  """`steps` gradient steps on the squared error of the rows (x, y), from p."""
  for _ in range(steps):
    p = step(p, squared_error_gradient(p, x, y), rate)
  return p
