"""The shipped runs (metalearn/pretrained/) load read-only, install as package data, and still
score their headline numbers: each is recomputed here on held-out prompts, not read from the
run's eval/ files, and held to the value measured when the run was shipped, so that a changed
learner, task, evaluation or checkpoint format breaks this test rather than the notebooks."""

import configparser
import glob
import os

import pytest

from metalearn.evaluation import prompts, scores
from metalearn import pretrained
from metalearn.learners import make_baseline, make_learner
from metalearn.learners.gd_solvers import tune_gd, tune_gd_plus_plus
from metalearn.engine.runs import load_run
from metalearn.tasks import make_task
from metalearn.engine.workdir import CONFIG_FILE, EVAL_DIR, METRICS_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(pretrained.__file__))
SEED = 2027          # held-out prompts of the test's own (the runs' evaluations used 1234)
PROMPTS = 400        # enough for a stable mean; one compiled shape per learner
# Measured when the runs were shipped, on these prompts. 5% relative is far inside what a
# changed learner or task moves them, and the absolute term covers the near-zero ones.
RELATIVE, ABSOLUTE = 0.05, 1e-3
HEADLINES = {
    # normalised error at k = 2d = 10 examples (zero predictor = 1)
    "linear_regression": {"transformer": 0.035397, "least_squares": 1.789e-13},
    # ½·MSE (the paper's loss) at the query after N = 10 context pairs, against GD and GD++
    # tuned on other prompts (as metalearn/analysis/gd_tuning.py compares them)
    "lsa_1layer": {"trained": 0.17791, "gd_1": 0.17849},
    "lsa_recurrent2": {"trained": 0.10675, "gd_2": 0.14017, "gd_plus_plus_2": 0.10589},
    # MSE at the 10 queries after K = 10 context points, after 1 and 10 inner steps
    "sinusoid_maml": {"maml, 1 step": 0.34482, "maml, 10 steps": 0.11953},
}


def _transformer_headline(workdir: str) -> dict[str, float]:
  learner, params, config = load_run(workdir)
  task = make_task(dict(config.task))
  episode = prompts.held_out_episodes(task, PROMPTS, config.data.points, SEED)
  errors = scores.evaluate_learners(
      {"transformer": (learner, params),
       "least_squares": (make_baseline("least_squares", task), {})}, task, episode, PROMPTS).errors
  return {name: float(curve[2 * task.dim]) for name, curve in errors.items()}


def _lsa_headline(workdir: str) -> dict[str, float]:
  # gd_report's comparison without its similarity measures (per-prompt gradients, slow): the
  # network and the solvers tuned on other prompts (gd_report's tuners), scored at the query.
  learner, params, config = load_run(workdir)
  task = make_task(dict(config.task))
  steps, context = learner.num_layers, learner.context_points
  episode = prompts.held_out_episodes(task, PROMPTS, context + 1, SEED)
  tuning = prompts.held_out_episodes(task, 2048, context + 16, SEED + 1)
  gd = tune_gd(tuning, context, steps)
  models = {"trained": (learner, params),
            f"gd_{steps}": (make_learner({"name": "gd", "steps": steps,
                                          "step_size": gd.step_size}), {})}
  if steps > 1:
    plus = tune_gd_plus_plus(tuning, context, steps)
    models[f"gd_plus_plus_{steps}"] = (make_learner(
        {"name": "gd_plus_plus", "steps": steps, "step_size": plus.step_size,
         "gamma": plus.gamma}), {})
  return {name: float(scores.query_metrics(model, model_params, task, episode, context,
                                           PROMPTS)["loss"].mean() / 2)
          for name, (model, model_params) in models.items()}


def _maml_headline(workdir: str) -> dict[str, float]:
  learner, params, config = load_run(workdir)
  task = make_task(dict(config.task))
  episode = prompts.held_out_episodes(task, PROMPTS, config.data.points, SEED)
  return {name: float(scores.query_metrics(variant, params, task, episode,
                                           learner.context_points, PROMPTS)["loss"].mean())
          for name, variant in learner.evaluation_variants(config.model.name).items()
          if name in HEADLINES["sinusoid_maml"]}


# How each run's headline is recomputed; linear_regression (the transformer's and least squares'
# normalised error at k = 2d) is measured once the default transformer's run is shipped.
MEASURES = {"linear_regression": _transformer_headline, "lsa_1layer": _lsa_headline,
            "lsa_recurrent2": _lsa_headline, "sinusoid_maml": _maml_headline}


def _snapshot(directory: str) -> dict[str, tuple[int, int]]:
  """Every file and folder under `directory`, with its size and modification time."""
  found = {}
  for parent, folders, files in os.walk(directory):
    for name in folders + files:
      stat = os.stat(os.path.join(parent, name))
      found[os.path.relpath(os.path.join(parent, name), directory)] = (stat.st_size,
                                                                       stat.st_mtime_ns)
  return found


def test_every_shipped_run_has_a_headline_and_a_measure():
  assert set(pretrained.NAMES) == set(HEADLINES) and set(HEADLINES) <= set(MEASURES)


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_run_scores_its_headline_and_is_left_unchanged(name):
  workdir = pretrained.path(name)
  before = _snapshot(workdir)
  measured = MEASURES[name](workdir)
  assert _snapshot(workdir) == before, "loading a shipped run wrote to its directory"
  expected = HEADLINES[name]
  assert set(measured) == set(expected)
  for key, value in expected.items():
    assert measured[key] == pytest.approx(value, rel=RELATIVE, abs=ABSOLUTE), (name, key)


def test_shipped_transformer_has_learned_in_context():
  # At k = 2d the default transformer is far below the zero predictor (1), near least squares.
  values = HEADLINES["linear_regression"]
  assert values["least_squares"] < 1e-6 and values["transformer"] < 0.05


def test_shipped_lsa_matches_tuned_gd():
  # von Oswald et al.: a trained LSA layer reaches one tuned GD step's loss (within 5%).
  one = HEADLINES["lsa_1layer"]
  assert one["trained"] == pytest.approx(one["gd_1"], rel=0.05)
  # Two weight-tied layers beat two tuned GD steps and come within 5% of tuned GD++.
  two = HEADLINES["lsa_recurrent2"]
  assert two["trained"] < 0.9 * two["gd_2"]
  assert two["trained"] == pytest.approx(two["gd_plus_plus_2"], rel=0.05)


def test_path_names_the_bad_name_and_the_allowed_ones():
  with pytest.raises(ValueError, match=r"'transformer'.*allowed: .*sinusoid_maml"):
    pretrained.path("transformer")


def test_shipped_runs_hold_only_the_final_checkpoint_and_no_plots():
  total = 0
  for name in pretrained.NAMES:
    workdir = pretrained.path(name)
    assert os.path.exists(os.path.join(workdir, CONFIG_FILE))
    assert os.path.exists(os.path.join(workdir, METRICS_FILE))
    assert glob.glob(os.path.join(workdir, EVAL_DIR, "*.json"))
    steps = os.listdir(os.path.join(workdir, "checkpoints"))
    assert len(steps) == 1 and steps[0].isdigit(), (name, steps)
    files = [os.path.join(parent, f) for parent, _, fs in os.walk(workdir) for f in fs]
    assert not [f for f in files if f.endswith(".png") or "tfevents" in f
                or os.path.basename(f).startswith("lock")], name
    total += sum(os.path.getsize(f) for f in files)
  assert total < 8 * 2**20, f"the shipped runs take {total / 2**20:.1f} MB"


def test_package_data_installs_every_shipped_file():
  # setup.cfg's globs, expanded as setuptools expands them, must reach every file of every run:
  # otherwise a regular (non-editable) install ships a run that cannot be loaded.
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, "setup.cfg"))
  patterns = parser["options.package_data"]["metalearn.pretrained"].split()
  installed = {os.path.normpath(f) for pattern in patterns
               for f in glob.glob(pattern, root_dir=PACKAGE, recursive=True)
               if os.path.isfile(os.path.join(PACKAGE, f))}
  shipped = {os.path.relpath(os.path.join(parent, f), PACKAGE)
             for name in pretrained.NAMES
             for parent, _, fs in os.walk(pretrained.path(name)) for f in fs}
  assert shipped - installed == set()

