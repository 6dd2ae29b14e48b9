"""von Oswald et al. 2022's comparison: a trained GD-layer network against tuned GD and GD++.

`gd_layers_report(workdir)` loads a trained `gd_layers` run with K layers and, on the same
held-out episodes (the run's eval seed), scores at the query after its N context pairs:

- the trained network, K-step GD with η tuned by line search (`tune_gd`), K-step recurrent
  GD++ with (η, γ) tuned by grid search (`tune_gd_plus_plus`, K ≥ 2; with K = 1 GD++ is GD),
  GD++ at the (η, γ) read off the trained weights (`GDLayers.implied_gd_plus_plus`, when the
  layers share one (η, γ): recurrent, or K = 1), least squares and the zero predictor;
- how alike the network and the tuned solvers are (metalearn/analysis/similarity.py): the cosine
  similarity and L2 difference of their sensitivities ∂ŷ/∂x_q, and the L2 difference of
  their predictions.

The tuning uses its own held-out tasks (eval seed + 1), never the scored ones. Losses are
½·mean squared error, the paper's loss; the training loss in metrics.jsonl is the squared
error, twice as large.
"""

from typing import Any

import jax
import numpy as np

from metalearn.analysis import similarity
from metalearn.core import losses
from metalearn.evaluation import prompts
from metalearn.evaluation.intervals import mean_and_interval
from metalearn.evaluation.scores import query_predictions
from metalearn.learners import LEARNERS
from metalearn.learners.capabilities import LinearAttentionLayers
from metalearn.learners.gd_solvers import tune_gd, tune_gd_plus_plus
from metalearn.engine.runs import load_run
from metalearn.tasks import make_task


_compare = jax.jit(similarity.compare, static_argnums=(0, 2, 5))


def _mean_and_stderr(values: np.ndarray) -> dict[str, float]:
  mean, stderr = mean_and_interval(values, z=1.0)
  return {"mean": mean, "stderr": stderr}


def gd_layers_report(workdir: str, num_prompts: int = 10_000, tune_prompts: int = 16_384,
                     tune_queries: int = 16, batch_size: int = 1000) -> dict[str, Any]:
  """The comparison for the run in `workdir` (see the module docstring), as a dict.

  `num_prompts` held-out prompts are scored; `tune_prompts` other prompts, each with
  `tune_queries` queries after its context, tune the solvers.
  """
  learner, params, config = load_run(workdir)
  if not isinstance(learner, LinearAttentionLayers):
    raise ValueError(f"{workdir!r} is a {config.model.name!r} run; the report compares "
                     "gd_layers networks")
  layout = learner.attention_layout()
  task = make_task(dict(config.task))
  steps = layout.depth
  context = (learner.context_points if learner.context_points is not None
             else config.data.points - 1)
  episode = prompts.held_out_episodes(task, num_prompts, context + 1, config.eval.seed)
  tuning = task.sample(jax.random.PRNGKey(config.eval.seed + 1), tune_prompts,
                       context + tune_queries)

  gd = tune_gd(tuning, context, steps)
  models = {"trained": (learner, params),
            f"gd_{steps}": (LEARNERS.build({"name": "gd", "steps": steps,
                                            "step_size": gd.step_size}), {})}
  report = {"workdir": workdir, "dim": task.dim, "context_points": context,
            "num_layers": steps, "recurrent": layout.weight_tied, "num_prompts": num_prompts,
            "tune_prompts": tune_prompts, "x_distribution": config.task.x_distribution,
            "tuned": {f"gd_{steps}": {"step_size": gd.step_size, "half_mse": gd.loss / 2}}}
  if steps > 1:
    plus = tune_gd_plus_plus(tuning, context, steps)
    models[f"gd_plus_plus_{steps}"] = (LEARNERS.build(
        {"name": "gd_plus_plus", "steps": steps, "step_size": plus.step_size,
         "gamma": plus.gamma}), {})
    report["tuned"][f"gd_plus_plus_{steps}"] = {"step_size": plus.step_size, "gamma": plus.gamma,
                                                "half_mse": plus.loss / 2}
  if not layout.nonlinear_options:
    implied = learner.implied_gd_plus_plus(params, task.dim)
    report["implied"] = implied
    if (layout.weight_tied or steps == 1) and implied[0]["eta"] > 0 and implied[0]["gamma"] >= 0:
      models["gd_plus_plus_implied"] = (LEARNERS.build(
          {"name": "gd_plus_plus", "steps": steps, "step_size": implied[0]["eta"],
           "gamma": implied[0]["gamma"]}), {})
  models["least_squares"] = (LEARNERS.build({"name": "least_squares"}), {})

  half_mse = {}
  for name, (model, model_params) in models.items():
    y_hat = query_predictions(model, model_params, episode, context, batch_size)  # [B, 1, out]
    squared = np.asarray(losses.squared_error(y_hat, episode.y[:, context:]))[:, 0]
    half_mse[name] = _mean_and_stderr(squared / 2)
  half_mse["zero"] = _mean_and_stderr(np.sum(np.square(np.asarray(episode.y[:, -1])), -1) / 2)
  report["half_mse"] = half_mse

  report["similarity"] = {}
  for name in [n for n in models if n.startswith("gd_")]:
    parts = [_compare(learner, params, models[name][0], {}, chunk, context)
             for chunk in prompts.chunks(episode, batch_size)]
    report["similarity"][name] = {
        key: float(np.mean(np.concatenate([np.asarray(p[key]) for p in parts])))
        for key in parts[0]}
  return report


def format_report(report: dict[str, Any]) -> str:
  """The report as text: losses, tuned values, implied (η, γ), similarities."""
  lines = [f"{report['workdir']}: {report['num_layers']} layer(s)"
           f"{' (recurrent)' if report['recurrent'] else ''}, d = {report['dim']}, "
           f"N = {report['context_points']}, x ~ {report['x_distribution']}, "
           f"{report['num_prompts']} held-out prompts",
           "½·MSE at the query (mean ± standard error):"]
  lines += [f"  {name:22s} {v['mean']:.4f} ± {v['stderr']:.4f}"
            for name, v in report["half_mse"].items()]
  lines.append("tuned on other held-out prompts:")
  lines += [f"  {name:22s} " + ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            for name, values in report["tuned"].items()]
  if "implied" in report:
    lines.append("(η, γ) read off the trained weights, per layer:")
    lines += ["  " + ", ".join(f"{k} {v:.4g}" for k, v in layer.items())
              for layer in report["implied"]]
  lines.append("trained network against:")
  lines += [f"  {name:22s} " + ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            for name, values in report["similarity"].items()]
  return "\n".join(lines)
