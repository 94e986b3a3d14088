"""Importance sampling against exact enumeration: marginals within their own standard errors,
entropy and task information within theirs, a mean-field proposal that changes the draws but
not the answer, flat weights when β = 0, and the run that is too short says so."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from core_models import head_rule, trained_mlp

import bablate as bb
from bablate.inference import ConvergenceWarning


@pytest.fixture(scope="module")
def task():
    model, variables, x, ys = trained_mlp(hidden=10)
    site = bb.flax_site(model, variables, "Dense_0", x)
    return bb.Task.build(site, x, head_rule(ys, "diff"), name="diff")


@pytest.mark.parametrize("prior,beta", [(0.5, 1.0), (0.7, 1.0)])
def test_marginals_entropy_and_task_information_match_exact_within_their_errors(
        task, prior, beta):
    exact = bb.infer(task, "exact", prior=prior, beta=beta)
    post = bb.infer(task, "importance", key=jax.random.key(0), prior=prior, beta=beta,
                    num_samples=20_000)
    se = np.asarray(post.diagnostics["marginal_se"])
    assert post.method == "importance" and not post.warnings
    # The informative units must have moved: otherwise agreeing with exact says little.
    assert np.abs(exact.marginals - prior).max() > 0.2
    assert np.all(np.abs(post.marginals - exact.marginals) < 4.5 * se + 1e-3)
    assert 0.002 < se.max() < 0.02
    m, m_exact = bb.metrics.summarize(post), bb.metrics.summarize(exact)
    assert m.entropy_estimate == "importance sampling"
    assert abs(m.entropy - m_exact.entropy) < 4.5 * m.entropy_error + 0.01
    assert abs(m.task_information - m_exact.task_information) < 4.5 * m.entropy_error + 0.01
    # Resampled draws are draws of the AMD: their mean agrees with the weighted marginals.
    assert np.abs(post.samples.mean(0) - post.marginals).max() < 0.06


def test_a_mean_field_proposal_changes_the_draws_not_the_answer(task):
    exact = bb.infer(task, "exact")
    # A deliberately wrong proposal (every unit kept with 0.9) and SVI's fit.
    wrong = bb.infer(task, "importance", key=jax.random.key(1), num_samples=20_000,
                     proposal=np.full(task.num_units, 0.9))
    fit = bb.infer(task, "svi", key=jax.random.key(2), num_steps=400)
    guided = bb.infer(task, "importance", key=jax.random.key(1), num_samples=20_000,
                      proposal=fit, defensive=0.3)
    for post in (wrong, guided):
        se = np.asarray(post.diagnostics["marginal_se"])
        assert np.all(np.abs(post.marginals - exact.marginals) < 4.5 * se + 1e-3)
        assert post.diagnostics["proposal"].startswith("prior mixed with")
    prior_only = bb.infer(task, "importance", key=jax.random.key(1), num_samples=20_000)
    # SVI's fit is closer to the AMD than the prior: more effective draws from as many masks.
    assert guided.diagnostics["ess"] > prior_only.diagnostics["ess"]


def test_beta_zero_gives_equal_weights_and_the_prior(task):
    post = bb.infer(task, "importance", key=jax.random.key(3), prior=0.3, beta=0.0,
                    num_samples=4000)
    assert post.diagnostics["ess"] == pytest.approx(4000, rel=1e-6)
    # H(q) is then −mean log prior of the draws: the prior's entropy up to its standard error.
    h_prior = task.num_units * float(bb.metrics.bernoulli_entropy(0.3))
    assert 0 < post.diagnostics["entropy_error"] < 0.05
    assert abs(post.entropy_bits - h_prior) < 4.5 * post.diagnostics["entropy_error"]
    assert np.abs(post.marginals - 0.3).max() < 4.5 * np.sqrt(0.21 / 4000)


def test_too_few_draws_warn_and_say_so(task):
    with pytest.warns(ConvergenceWarning, match="raise num_samples"):
        post = bb.infer(task, "importance", key=jax.random.key(4), num_samples=64)
    assert "effective sample size" in post.warnings[0]


def test_reproducible_from_its_key(task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = (bb.infer(task, "importance", key=jax.random.key(5), num_samples=256)
                for _ in range(2))
    np.testing.assert_array_equal(a.marginals, b.marginals)
    np.testing.assert_array_equal(a.samples, b.samples)


@pytest.mark.parametrize("options,message", [
    ({"num_samples": 1}, "num_samples >= 2"),
    ({"proposal": np.full(3, 0.5)}, "10 keep-probabilities"),
    ({"proposal": np.full(10, 0.5), "defensive": 0.0}, "defensive must be in"),
    ({"max_se": 0.0}, "max_se must be > 0"),
])
def test_bad_settings_are_refused_in_one_line(task, options, message):
    with pytest.raises(ValueError, match=message):
        bb.infer(task, "importance", key=jax.random.key(0), **options)
