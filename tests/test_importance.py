"""Importance sampling judged by calibration: its reported standard errors must cover its real
error, against exact enumeration (d ≤ 16, many seeds, tasks, priors and β) and against count
sites whose exact answer is known at d = 270 (bablate.testbeds.counts); adaptation must pay
for itself in forward passes; a run that has not seen enough says so."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from core_models import head_rule, trained_mlp

import bablate as bb
from bablate.inference import ConvergenceWarning
from bablate.testbeds import counts

SEEDS = 20


@pytest.fixture(scope="module")
def mlp_tasks():
    model, variables, x, ys = trained_mlp(hidden=12)
    site = bb.flax_site(model, variables, "Dense_0", x)
    return {head: bb.Task.build(site, x, head_rule(ys, head), name=head) for head in ys}


@pytest.fixture(scope="module")
def small_count_task():
    """A count site of 14 units (two groups of 5 and 4 irrelevant units), enumerable."""
    spec = counts.CountSpec("small", 14, ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)), 24,
                            np.clip(np.add.outer(np.arange(6), np.arange(6)) * 3 - 6, 0, 24))
    return spec, counts.count_task(spec)


def _coverage(task, exact, seeds, **options):
    """Per seed: the share of marginals within 2 reported s.e., |Δ log Z| / its s.e., and
    |ΔH| / its error."""
    out = []
    for seed in range(seeds):
        post = bb.infer(task, "importance", key=jax.random.key(seed), prior=exact.prior,
                        beta=exact.beta, **options)
        d = post.diagnostics
        se = np.asarray(d["marginal_se"])
        err = np.abs(post.marginals - exact.marginals)
        out.append((np.mean(err <= 2 * se), abs(d["log_z"] - exact.diagnostics["log_z"])
                    / d["log_z_se"], abs(post.entropy_bits - exact.entropy_bits)
                    / d["entropy_error"], d["converged"]))
    return np.asarray(out, np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("head,prior,beta", [("sum", 0.5, 1.0), ("diff", 0.5, 2.0),
                                             ("diff", 0.3, 1.0), ("sum", 0.7, 0.5)])
def test_standard_errors_cover_the_error_against_exact_enumeration(mlp_tasks, head, prior, beta):
    task = mlp_tasks[head]
    exact = bb.infer(task, "exact", prior=prior, beta=beta)
    # The informative units must have moved: agreeing with a flat AMD says little.
    assert np.abs(exact.marginals - prior).max() > 0.1
    cov = _coverage(task, exact, SEEDS, target_se=0.03, min_masks=1024)
    assert cov[:, 3].all()  # every run reached its target
    assert cov[:, 0].mean() >= 0.90, cov[:, 0]  # marginals within 2 s.e.
    assert np.mean(cov[:, 1] <= 3) >= 0.95, cov[:, 1]  # log Z within 3 s.e.
    assert np.mean(cov[:, 2] <= 3) >= 0.90, cov[:, 2]  # H(q) within 3 errors


@pytest.mark.slow
def test_standard_errors_cover_the_error_on_an_enumerable_count_site(small_count_task):
    spec, task = small_count_task
    exact = bb.infer(task, "exact", max_units=14)
    answer = counts.exact_answer(spec, task)
    # The count formula and enumeration of all 2^14 masks agree.
    np.testing.assert_allclose(answer.marginals, exact.marginals, atol=1e-6)
    assert answer.log_z == pytest.approx(exact.diagnostics["log_z"], abs=1e-5)
    assert answer.entropy_bits == pytest.approx(exact.entropy_bits, abs=1e-4)
    cov = _coverage(task, exact, SEEDS, target_se=0.03, min_masks=1024)
    assert cov[:, 0].mean() >= 0.90 and np.mean(cov[:, 1] <= 3) >= 0.95, cov


@pytest.fixture(scope="module")
def near_prior():
    spec = counts.near_prior()
    task = counts.count_task(spec)
    return task, counts.exact_answer(spec, task)


@pytest.mark.slow
def test_near_prior_site_of_270_units_converges_right_in_under_10000_passes(near_prior):
    task, answer = near_prior
    post = bb.infer(task, "importance", key=jax.random.key(0), target_se=0.0125)
    d = post.diagnostics
    err = np.abs(post.marginals - answer.marginals)
    assert d["converged"] and not post.warnings
    assert d["forward_passes"] <= 10_000
    assert d["max_se"] <= 0.0125 and err.max() <= 0.05
    assert err.max() <= 3.5 * d["max_se"]  # the largest of 270 errors, in the largest s.e.
    assert np.mean(err <= 2 * np.asarray(d["marginal_se"])) >= 0.9
    assert abs(d["log_z"] - answer.log_z) <= 3 * d["log_z_se"]
    assert abs(post.entropy_bits - answer.entropy_bits) <= 3 * d["entropy_error"]
    # The group units moved away from the prior: the answer is not the prior's.
    assert answer.marginals[:36].min() > 0.6
    # The tempering path reached β = 1 and the fitted proposal mixes the prior in.
    assert d["round_betas"][-1] == 1.0 and d["proposal"].startswith("prior (share 0.3)")


@pytest.mark.slow
def test_adaptation_pays_for_itself_in_forward_passes(near_prior):
    task, answer = near_prior
    adaptive, plain = (bb.infer(task, "importance", key=jax.random.key(1), adapt=adapt,
                                max_masks=40_000) for adapt in (True, False))
    for post in (adaptive, plain):
        d = post.diagnostics
        assert d["converged"]
        assert np.abs(post.marginals - answer.marginals).max() <= 4.5 * d["max_se"]
    # Plain importance sampling from the prior needs ~2.5x the masks for the same s.e.
    assert plain.diagnostics["forward_passes"] >= 2 * adaptive.diagnostics["forward_passes"]
    assert plain.diagnostics["proposal"] == "prior"


@pytest.mark.slow
@pytest.mark.parametrize("components", [1, 2])
def test_bimodal_site_far_from_the_prior_is_right_or_says_not_converged(components):
    """Two separated modes of prior mass 1/1024 each hold ~90% of the AMD. A mixture proposal
    finds both and converges to the exact answer; a single product component cannot cover
    both and must say so. A confident wrong answer fails either way."""
    spec = counts.bimodal()
    task = counts.count_task(spec)
    answer = counts.exact_answer(spec, task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        post = bb.infer(task, "importance", key=jax.random.key(2), components=components,
                        max_masks=40_000)
    d = post.diagnostics
    err = np.abs(post.marginals - answer.marginals)
    assert answer.marginals[0] > 0.85 and answer.marginals[5] < 0.15  # far from the prior
    if d["converged"]:
        assert err.max() <= 4.5 * d["max_se"] and err.max() <= 0.1
        assert abs(d["log_z"] - answer.log_z) <= 3 * d["log_z_se"]
    else:
        assert post.warnings and "not converged" in post.warnings[0]
    if components == 2:
        assert d["converged"]  # the mixture resolves both modes


def test_a_first_round_that_misses_the_modes_cannot_certify():
    """1024 draws of the prior often miss both modes of the bimodal site; with all weights
    equal the marginals' errors look tiny. min_masks keeps such a run going, and the unseen-mass
    bound says how much of the AMD could lie where no draw went."""
    spec = counts.bimodal()
    task = counts.count_task(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        post = bb.infer(task, "importance", key=jax.random.key(7), round_masks=512,
                        min_masks=512, max_masks=512)
    d = post.diagnostics
    # Whatever this short run saw, its unseen-mass bound is vacuous: 512 draws cannot rule
    # out a region of prior mass 3/512 holding the AMD (odds up to 101 against Z ≥ 1/101).
    assert d["unseen_mass_bound"] == 1.0
    assert d["weight_bound"] == pytest.approx(101.0 ** 2, rel=1e-3)


def test_beta_zero_gives_equal_weights_and_the_prior(mlp_tasks):
    task = mlp_tasks["diff"]
    post = bb.infer(task, "importance", key=jax.random.key(3), prior=0.3, beta=0.0,
                    min_masks=0)
    d = post.diagnostics
    # Equal weights, up to a later proposal that moved a unit by chance (a shrunk move).
    assert d["ess"] >= 0.99 * d["forward_passes"]
    # H(q) is then −mean log prior of the draws: the prior's entropy up to its standard error.
    h_prior = task.num_units * float(bb.metrics.bernoulli_entropy(0.3))
    assert 0 < d["entropy_error"] < 0.1
    assert abs(post.entropy_bits - h_prior) < 4.5 * d["entropy_error"]
    assert np.abs(post.marginals - 0.3).max() < 4.5 * np.sqrt(0.21 / d["forward_passes"])
    assert abs(d["log_z"]) <= 3 * d["log_z_se"] + 1e-9


def test_a_given_proposal_changes_the_draws_not_the_answer(mlp_tasks):
    task = mlp_tasks["diff"]
    exact = bb.infer(task, "exact")
    wrong = bb.infer(task, "importance", key=jax.random.key(1), adapt=False,
                     proposal=np.full(task.num_units, 0.9), target_se=0.02)
    assert wrong.diagnostics["proposal"].startswith("prior (share 0.3) mixed with 1")
    se = np.asarray(wrong.diagnostics["marginal_se"])
    assert np.all(np.abs(wrong.marginals - exact.marginals) < 4.5 * se + 1e-3)


def test_out_of_budget_warns_and_says_not_converged(mlp_tasks):
    with pytest.warns(ConvergenceWarning, match="not converged after 256 masks"):
        post = bb.infer(mlp_tasks["diff"], "importance", key=jax.random.key(4), round_masks=128,
                        max_masks=256, min_masks=0, target_se=0.005)
    assert post.diagnostics["converged"] is False and "raise max_masks" in post.warnings[0]


def test_reproducible_from_its_key(mlp_tasks):
    a, b = (bb.infer(mlp_tasks["sum"], "importance", key=jax.random.key(5), min_masks=1024,
                     target_se=0.04) for _ in range(2))
    np.testing.assert_array_equal(a.marginals, b.marginals)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_every_stochastic_method_reports_its_verdict(mlp_tasks):
    task = mlp_tasks["sum"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        posts = {"exact": bb.infer(task, "exact"),
                 "importance": bb.infer(task, "importance", key=jax.random.key(0)),
                 "mcmc": bb.infer(task, "mcmc", key=jax.random.key(0), num_samples=300,
                                  num_warmup=100),
                 "svi": bb.infer(task, "svi", key=jax.random.key(0), num_steps=200)}
    for method, post in posts.items():
        d = post.diagnostics
        assert isinstance(d["converged"], bool), method
        assert {"max_se", "ess", "forward_passes"} <= set(d), method
        assert d["forward_passes"] > 0, method
    assert posts["exact"].diagnostics["forward_passes"] == 2 ** 12
    assert posts["svi"].diagnostics["forward_passes"] == 200 * 32
    # 4 chains × (100 + 300 steps + the start) × (one mask and one gradient of 3 passes).
    assert posts["mcmc"].diagnostics["forward_passes"] == 4 * 401 * 4
    assert {"log_z", "log_z_se"} <= set(posts["importance"].diagnostics)


def test_auto_runs_the_certified_estimator_above_max_exact(mlp_tasks):
    task = mlp_tasks["sum"]
    post = bb.infer(task, "auto", key=jax.random.key(0), max_exact=8)
    assert post.method == "importance" and post.diagnostics["converged"]
    many = bb.infer_many([task], "auto", key=jax.random.key(0), max_exact=8)
    assert many[0].method == "importance"


@pytest.mark.parametrize("options,message", [
    ({"round_masks": 1}, "round_masks >= 2"),
    ({"max_masks": 1}, "max_masks >= 2"),
    ({"min_masks": -1}, "min_masks >= 0"),
    ({"proposal": np.full(3, 0.5)}, "12 keep-probabilities"),
    ({"defensive": 0.0}, "defensive must be in"),
    ({"target_se": 0.0}, "target_se must be in"),
    ({"components": 0}, "components >= 1"),
])
def test_bad_settings_are_refused_in_one_line(mlp_tasks, options, message):
    with pytest.raises(ValueError, match=message):
        bb.infer(mlp_tasks["sum"], "importance", key=jax.random.key(0), **options)
