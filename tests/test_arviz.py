"""Posterior.chains and Posterior.to_arviz: arviz's R-hat and ESS agree with numpyro's."""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np
import pytest
from core_models import head_rule, trained_mlp
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

import bablate as bb
from bablate.inference import chain_diagnostics
from bablate.inference.posterior import import_arviz

pytest.importorskip("arviz", reason="arviz is not installed (pip install 'bablate[arviz]')")
az = import_arviz()  # arviz, with its import-time FutureWarning silenced


def _ar1_chains(num_chains=4, num_draws=800, d=5, rho=0.8, seed=0) -> np.ndarray:
    """Binary chains ``[C, S, d]``: thresholded AR(1) processes (autocorrelated, known layout)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((num_chains, num_draws, d), np.uint8)
    for c in range(num_chains):
        z = rng.standard_normal(d)
        for s in range(num_draws):
            z = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(d)
            x[c, s] = z > np.linspace(-1, 1, d)
    return x


def _synthetic(x_CxSxD: np.ndarray) -> bb.Posterior:
    c, s, d = x_CxSxD.shape
    flat = x_CxSxD.reshape(-1, d)
    return bb.Posterior(task="ar1", method="mcmc-test", marginals=flat.mean(0),
                        prior=np.full(d, 0.5), beta=1.0, samples=flat,
                        diagnostics=chain_diagnostics(x_CxSxD), num_chains=c,
                        log_density=np.zeros(c * s))


def test_chains_is_the_chain_major_view_of_samples():
    x = _ar1_chains()
    post = _synthetic(x)
    np.testing.assert_array_equal(post.chains(), x)
    assert post.samples.shape == (4 * 800, 5)  # the flat layout callers rely on is unchanged
    assert post.chain_log_density().shape == (4, 800)


def test_arviz_rhat_and_ess_match_numpyro_per_unit():
    x = _ar1_chains()
    idata = _synthetic(x).to_arviz()
    assert idata.posterior["mask"].dims == ("chain", "draw", "unit")
    np.testing.assert_array_equal(idata.posterior["mask"].values, x)
    ours_rhat = np.asarray(split_gelman_rubin(x.astype(np.float64)))
    ours_ess = np.asarray(effective_sample_size(x.astype(np.float64)))
    summary = az.summary(idata, round_to="none")
    # For a binary variable the rank normalisation is an affine map, so arviz's default
    # (rank-normalised split) R-hat is numpyro's split R-hat exactly.
    np.testing.assert_allclose(summary["r_hat"].to_numpy(), ours_rhat, rtol=1e-9)
    # arviz's bulk ESS splits each chain in two before Geyer's estimator; numpyro's does
    # not. Measured gap on these chains: under 2.5 %.
    np.testing.assert_allclose(summary["ess_bulk"].to_numpy(), ours_ess, rtol=0.05)


def test_mcmc_posterior_to_arviz_matches_its_own_diagnostics():
    model, variables, x, ys = trained_mlp()
    site = bb.flax_site(model, variables, "Dense_0", x)
    task = bb.Task.build(site, x, head_rule(ys, "sum"), name="sum")
    post = bb.infer(task, "mcmc", key=jax.random.key(0), num_samples=1500, num_warmup=300,
                    num_chains=4)
    assert post.chains().shape == (4, 1500, 12)
    # The reshape is the one the sampler's diagnostics were computed on.
    keys = ("num_moving_units", "ess_min", "ess_mean", "r_hat_max", "max_se")
    again = chain_diagnostics(post.chains())
    assert {k: again[k] for k in keys} == pytest.approx(
        {k: post.diagnostics[k] for k in keys}, rel=1e-12)
    idata = post.to_arviz()
    summary = az.summary(idata, round_to="none")
    moving = post.samples.std(0) > 0
    assert summary["r_hat"].to_numpy()[moving].max() == pytest.approx(
        post.diagnostics["r_hat_max"], rel=1e-9)
    # arviz's bulk ESS rank-normalises the draws and ours does not: on binary chains with
    # many ties they differ by a few percent (8% on the chains this test draws on an Intel
    # Xeon, under 5% on an AMD EPYC: float rounding changes the chains).
    assert summary["ess_bulk"].to_numpy()[moving].min() == pytest.approx(
        post.diagnostics["ess_min"], rel=0.12)
    np.testing.assert_allclose(summary["mean"].to_numpy(), post.marginals, atol=1e-12)
    stats = idata.sample_stats
    np.testing.assert_array_equal(stats["lp"].values, post.chain_log_density())
    accept = stats["acceptance_rate"].values
    assert accept.shape == (4, 1500) and 0.0 <= accept.min() and accept.max() <= 1.0
    assert 0.2 < accept.mean() < 0.9  # the step size adapts towards 0.5
    step = stats["step_size"].values
    assert np.all(step == step[:, :1])  # frozen after warm-up: one value per chain
    assert step.mean() == pytest.approx(post.diagnostics["step_size"], rel=1e-6)
    np.testing.assert_array_equal(idata.constant_data["prior"].values, post.prior)
    assert idata.posterior.attrs["task"] == "sum"


def test_sample_stats_survive_save_and_load(tmp_path):
    post = _synthetic(_ar1_chains(num_chains=2, num_draws=50))
    post = dataclasses.replace(post, sample_stats={
        "accept_prob": np.linspace(0, 1, 100, dtype=np.float32)})
    post.save(tmp_path / "p.npz")
    back = bb.Posterior.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.sample_stats["accept_prob"],
                                  post.sample_stats["accept_prob"])
    np.testing.assert_array_equal(back.chains(), post.chains())


def test_exact_posterior_has_no_draws_to_convert():
    post = bb.Posterior(task="t", method="exact", marginals=np.full(2, 0.5),
                        prior=np.full(2, 0.5), beta=1.0, log_probs=np.log(np.full(4, 0.25)))
    with pytest.raises(ValueError, match=r"to_arviz\(\) needs draws.*exact"):
        post.to_arviz()


def test_independent_draws_are_one_chain():
    draws = (np.random.default_rng(0).random((300, 3)) < 0.7).astype(np.uint8)
    post = bb.Posterior(task="t", method="svi-test", marginals=draws.mean(0),
                        prior=np.full(3, 0.5), beta=1.0, samples=draws)
    idata = post.to_arviz()
    assert idata.posterior["mask"].shape == (1, 300, 3)
    assert "sample_stats" not in idata.groups()


def test_missing_arviz_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # import arviz now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'bablate\[arviz\]'"):
        _synthetic(_ar1_chains(num_chains=1, num_draws=10)).to_arviz()


def test_posterior_repr_is_one_short_line():
    post = _synthetic(_ar1_chains())
    text = repr(post)
    assert "\n" not in text and len(text) < 160 and "array(" not in text
    assert "'ar1'" in text and "4 chain(s) x 800 draws" in text
