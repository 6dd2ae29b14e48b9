"""Mixture tasks and their Bayes predictor, against float64 numpy's exact marginal likelihoods."""

import json

import jax
import numpy as np
import pytest
from scipy import stats

from metalearn.learners import BayesMixture, make_baseline
from metalearn.core.episode import Episode
from metalearn.tasks import make_task

DIM = 3
NOISES = (0.1, 1.0)


def linear(noise_std, **fields):
  return {"name": "linear_regression", "dim": DIM, "noise_std": noise_std, **fields}


def noise_mixture(weights=(0.7, 0.3)):
  return make_task({"name": "mixture", "components": tuple(map(linear, NOISES)),
                    "weights": weights})


def sample(task, seed, batch=4000, points=6):
  return jax.jit(lambda key: task.sample(key, batch, points))(jax.random.PRNGKey(seed))


def test_each_prompt_follows_its_recorded_component_with_its_probability():
  task = noise_mixture()
  ep = sample(task, 0)
  component = np.asarray(ep.info["component"])
  frequency = np.mean(component == 0)
  assert abs(frequency - 0.7) < 5 * np.sqrt(0.7 * 0.3 / len(component)), frequency
  residual = np.asarray(ep.y) - np.einsum("bpd,bdo->bpo", np.asarray(ep.x),
                                          np.asarray(ep.info["w"]))
  for c, noise in enumerate(NOISES):
    np.testing.assert_allclose(residual[component == c].std(), noise, rtol=0.03)


def test_linear_with_sparse_and_the_components_scored_on_their_own():
  task = make_task({"name": "mixture", "components": (
      linear(0.0), {"name": "sparse_linear_regression", "dim": DIM, "sparsity": 1})})
  assert task.weights == (0.5, 0.5)  # uniform when not given
  ep = sample(task, 1, batch=2000)
  nonzero = np.count_nonzero(np.asarray(ep.info["w"])[..., 0], axis=-1)
  component = np.asarray(ep.info["component"])
  assert np.all(nonzero[component == 1] == 1) and np.all(nonzero[component == 0] == DIM)
  families = task.held_out_families()
  assert list(families) == ["mixture", "linear_regression", "sparse_linear_regression"]
  assert families["mixture"] is task and families[list(families)[2]] is task.components[1]
  assert list(noise_mixture().held_out_families())[1:] == ["noise_std=0.1", "noise_std=1.0"]


def test_a_saved_config_builds_the_same_mixture():
  section = {"name": "mixture", "components": tuple(map(linear, NOISES)), "weights": (0.7, 0.3)}
  reloaded = make_task(json.loads(json.dumps(section)))  # tuples become lists
  assert reloaded == noise_mixture() and hash(reloaded) == hash(noise_mixture())


@pytest.mark.parametrize("fields, match", [
    ({"weights": (0.5, 0.4)}, r"weights \(0.5, 0.4\) sum to 0.9.*summing to 1"),
    ({"weights": (1.2, -0.2)}, r"weights\[1\].*-0.2"),
    ({"weights": (1.0,)}, r"1 entries for 2 components"),
    ({"components": (linear(0.1),)}, "at least 2 components, got 1"),
    ({"components": (linear(0.1), {"name": "linear_regression", "dim": 4})},
     r"share one dim.*\[3, 4\]"),
    ({"components": (linear(0.1), {"name": "relu_net_regression", "dim": DIM})},
     "different shapes"),
    ({"components": (linear(0.1), {"name": "linear_classification", "dim": DIM})},
     "disagree in loss_name"),
    ({"components": (linear(0.1), {"name": "linear_regression", "dim": DIM, "nois": 1})},
     r"no field.*'nois'"),
])
def test_bad_mixtures_are_refused_naming_the_value(fields, match):
  section = {"name": "mixture", "components": tuple(map(linear, NOISES)), **fields}
  with pytest.raises(ValueError, match=match):
    make_task(section)


def _exact_bayes(components, x, y):
  """float64: at each position, Σ_c p(c | pairs before) x_iᵀ E[w | pairs before, c], from the
  Gaussian marginal N(0, X S_c² Xᵀ + σ_c² I) of each component."""
  points = x.shape[0]
  out = np.zeros(points)
  for i in range(points):
    xs, ys = x[:i], y[:i, 0]
    log_post, means = [], []
    for p, std, noise in components:
      prior = np.diag(np.square(std))
      cov = xs @ prior @ xs.T + noise**2 * np.eye(i)
      log_post.append(np.log(p) + (stats.multivariate_normal(np.zeros(i), cov).logpdf(ys)
                                   if i else 0.0))
      mean_w = prior @ xs.T @ np.linalg.solve(cov, ys) if i else np.zeros(len(std))
      means.append(x[i] @ mean_w)
    post = np.exp(np.array(log_post) - max(log_post))
    out[i] = np.dot(post / post.sum(), means)
  return out


def _predict(learner, ep):
  return np.asarray(jax.jit(lambda e: learner.predict({}, e))(ep))


def _linear_with_sparse():
  return make_task({"name": "mixture", "weights": (0.25, 0.75), "components": (
      linear(0.3, w_scale=0.5), {"name": "sparse_linear_regression", "dim": DIM,
                                 "sparsity": 2, "noise_std": 0.2})})


# Noise levels; linear with sparse, whose prior is one Gaussian then one per C(3, 2) support.
@pytest.mark.parametrize("mixture, components", [(noise_mixture, 2), (_linear_with_sparse, 4)])
def test_the_bayes_predictor_is_the_exact_posterior_mean(mixture, components):
  learner = make_baseline("bayes_mixture", mixture())
  assert len(learner.components) == components
  ep = sample(mixture(), 2, batch=12, points=8)
  got = _predict(learner, ep)
  x, y = np.asarray(ep.x, np.float64), np.asarray(ep.y, np.float64)
  for b in range(12):
    np.testing.assert_allclose(got[b, :, 0], _exact_bayes(learner.components, x[b], y[b]),
                               rtol=1e-4, atol=1e-4)


def test_one_gaussian_component_is_bayes_ridge():
  task = make_task(linear(0.5, w_scale=0.8))
  ep = sample(task, 4, batch=32, points=8)
  np.testing.assert_allclose(_predict(make_baseline("bayes_mixture", task), ep),
                             _predict(make_baseline("bayes_ridge", task), ep),
                             rtol=1e-4, atol=1e-5)


def test_many_prompts_go_through_in_chunks_alike():
  task = noise_mixture()
  learner = make_baseline("bayes_mixture", task)
  ep = sample(task, 5, batch=300, points=5)
  small = Episode(x=ep.x[:10], y=ep.y[:10], mask=ep.mask[:10], zero_loss=ep.zero_loss[:10],
                  info={})
  np.testing.assert_allclose(_predict(learner, ep)[:10], _predict(learner, small), rtol=1e-6,
                             atol=1e-6)


def test_tasks_without_a_gaussian_prior_and_noiseless_components_are_refused():
  with pytest.raises(ValueError, match="bayes_mixture.*Gaussian prior.*Sinusoid has none"):
    make_baseline("bayes_mixture", make_task({"name": "sinusoid", "dim": 1}))
  relu_net = {"name": "relu_net_regression", "dim": DIM, "hidden": 2}
  with pytest.raises(ValueError, match=r"component 0 \(relu_net_regression\) has no Gaussian"):
    make_baseline("bayes_mixture", make_task({"name": "mixture",
                                              "components": (relu_net, relu_net)}))
  with pytest.raises(ValueError, match="component 1 has noise std 0.0.*> 0"):
    make_baseline("bayes_mixture", make_task({"name": "mixture", "components": (
        linear(0.1), linear(0.0))}))
  with pytest.raises(ValueError, match="probabilities sum to 0.5"):
    BayesMixture(((0.5, (1.0,) * DIM, 0.1),))
