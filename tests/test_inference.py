"""MCMC and SVI against exact enumeration on a trained 12-unit site."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from core_models import head_rule, trained_mlp

import bablate as bb
from bablate import programs


@pytest.fixture(scope="module")
def task_and_exact():
    model, variables, x, ys = trained_mlp()
    site = bb.flax_site(model, variables, "Dense_0", x)
    task = bb.Task.build(site, x, head_rule(ys, "sum"), name="sum")
    return task, bb.infer(task, "exact")


@pytest.mark.slow
@pytest.mark.parametrize("sampler,flips", [("informed", "multi"), ("gradient", "multi"),
                                           ("informed", "single")])
def test_mcmc_marginals_match_exact(task_and_exact, sampler, flips):
    task, exact = task_and_exact
    num_samples = 5_000 if flips == "multi" else 10_000
    post = bb.infer(task, "mcmc", key=jax.random.key(0), sampler=sampler, flips=flips,
                    num_samples=num_samples, num_warmup=500, num_chains=4)
    # An ESS of >= 1000 per unit puts the Monte Carlo error of each marginal near 0.015.
    assert post.diagnostics["ess_min"] > 1000
    np.testing.assert_allclose(post.marginals, exact.marginals, atol=0.03)
    assert post.diagnostics["r_hat_max"] < 1.05
    assert post.samples.shape == (4 * num_samples, 12)
    assert 0.3 < post.diagnostics["accept_prob"] <= 1.0


def test_mcmc_is_reproducible_from_its_key(task_and_exact):
    task, _ = task_and_exact
    run = lambda: bb.infer(task, "mcmc", key=jax.random.key(7), num_samples=200, num_warmup=10,
                           num_chains=2).samples
    np.testing.assert_array_equal(run(), run())


@pytest.mark.slow
def test_svi_marginals_match_exact_within_mean_field_tolerance(task_and_exact):
    task, exact = task_and_exact
    post = bb.infer(task, "svi", key=jax.random.key(0), num_steps=1500, num_particles=32)
    # Tolerance 0.1: the mean-field guide cannot represent the correlations between units
    # (this posterior's total correlation is ~0.36 bits) and the score-function estimate
    # leaves a few hundredths of noise; measured error here is ~0.05.
    np.testing.assert_allclose(post.marginals, exact.marginals, atol=0.1)
    m = bb.metrics.summarize(post)
    assert m.total_correlation == pytest.approx(0.0, abs=1e-4)  # mean field: TC = 0
    assert m.entropy_estimate == "mean-field"


def test_stock_sampler_runs_on_the_same_model(task_and_exact):
    task, exact = task_and_exact
    post = bb.infer(task, "mcmc", key=jax.random.key(0), sampler="stock", num_samples=600,
                    num_warmup=100, num_chains=2)
    assert post.method == "mcmc-stock"
    np.testing.assert_allclose(post.marginals, exact.marginals, atol=0.15)


def test_gradient_sampler_needs_a_smooth_rule():
    site = bb.Site.from_functions("h", 3, lambda x: x, lambda a, x: a.sum(-1))
    rule = bb.rules.custom(lambda out, _: (out > 1.5).astype(np.float32))
    task = bb.Task.build(site, np.ones((4, 3), np.float32), rule)
    with pytest.raises(ValueError, match="smooth surrogate"):
        bb.infer(task, "mcmc", key=jax.random.key(0), sampler="gradient", num_samples=10,
                 num_warmup=1)


def test_exact_many_shares_one_enumeration_and_matches_one_task_at_a_time():
    model, variables, x, ys = trained_mlp()
    site = bb.flax_site(model, variables, "Dense_0", x)
    # Same site, same inputs and the same cached activation: one forward pass per mask.
    first, second = bb.Task.build_many(site, x, {h: head_rule(ys, h) for h in ("sum", "diff")})
    together = bb.infer_many([first, second], "exact")
    for task, post in zip([first, second], together, strict=True):
        alone = bb.infer(task, "exact")
        np.testing.assert_allclose(post.log_probs, alone.log_probs, atol=1e-5)
        assert post.task == task.name


def _two_tasks_on_one_site():
    """Two tasks with other data of the same shape (two halves of the inputs, each with the
    network's own predictions as targets), both with a rule from one factory."""
    model, variables, x, _ = trained_mlp()
    site = bb.flax_site(model, variables, "Dense_0", x)
    tasks = []
    for name, part in (("first", x[:128]), ("second", x[128:])):
        logits = model.apply(variables, part)
        tasks.append(bb.Task.build(site, part, bb.rules.top1(np.argmax(logits, -1)), name=name))
    return tasks


def test_tasks_on_one_site_share_one_compiled_sampling_loop(monkeypatch):
    tasks = _two_tasks_on_one_site()
    monkeypatch.setattr(programs, "trace_guard", lambda f: chex.assert_max_traces(f, n=1))
    programs.clear_cache()
    # The prior and β are arguments of the compiled loop too: another prior, no new program.
    kw = [dict(prior=0.5, beta=1.0), dict(prior=0.3, beta=2.0)]
    posts = [bb.infer(t, "mcmc", key=jax.random.key(i), num_samples=3000, num_warmup=300,
                      num_chains=4, **k) for i, (t, k) in enumerate(zip(tasks, kw, strict=True))]
    # One cache entry, each of its functions traced once (a retrace fails the chex guard).
    assert len(programs._PROGRAMS) == 1
    assert posts[0].method == posts[1].method == "mcmc-gradient-multi"
    # The shared program samples each task's own posterior.
    exact = [bb.infer(t, "exact", **k) for t, k in zip(tasks, kw, strict=True)]
    assert np.abs(exact[0].marginals - exact[1].marginals).max() > 0.2
    for post, reference in zip(posts, exact, strict=True):
        np.testing.assert_allclose(post.marginals, reference.marginals, atol=0.05)
    programs.clear_cache()


def test_chain_methods_give_the_same_draws(task_and_exact):
    task, _ = task_and_exact
    kw = dict(key=jax.random.key(3), num_samples=300, num_warmup=50, num_chains=2, thinning=3)
    vec = bb.infer(task, "mcmc", chain_method="vectorized", **kw)
    seq = bb.infer(task, "mcmc", chain_method="sequential", **kw)
    assert vec.samples.shape == (2 * 100, task.num_units)
    np.testing.assert_array_equal(seq.samples, vec.samples)
    assert seq.diagnostics["accept_prob"] == pytest.approx(vec.diagnostics["accept_prob"])


@pytest.mark.parametrize("options,message", [
    ({"chain_method": "pmap"}, "unknown chain_method"),
    ({"num_samples": 2, "thinning": 3}, "at least one kept draw"),
    ({"num_chains": 0}, "num_chains >= 1"),
])
def test_mcmc_bad_settings_are_refused(task_and_exact, options, message):
    task, _ = task_and_exact
    with pytest.raises(ValueError, match=message):
        bb.infer(task, "mcmc", key=jax.random.key(0), **options)


@pytest.mark.slow
def test_flip_kernel_still_runs_in_numpyros_mcmc_driver(task_and_exact):
    from numpyro.infer import MCMC

    task, exact = task_and_exact
    # The plain numpyro interface: per-mask model densities, one chain (an unbatched state).
    kernel = bb.FlipKernel(bb.make_model(task), proposal="gradient",
                           gradient_model=bb.make_model(task, smooth=True))
    driver = MCMC(kernel, num_warmup=300, num_samples=4000, num_chains=1, progress_bar=False)
    driver.run(jax.random.PRNGKey(0), task.data)
    samples = np.asarray(driver.get_samples()["mask"])
    assert samples.shape == (4000, task.num_units)
    np.testing.assert_allclose(samples.mean(0), exact.marginals, atol=0.06)


def test_a_second_task_on_one_site_compiles_nothing_for_exact_log_odds_and_p_correct(
        monkeypatch):
    from jax import monitoring

    tasks = _two_tasks_on_one_site()
    # From here every program is traced at most once (a retrace fails the chex guard) ...
    monkeypatch.setattr(programs, "trace_guard", lambda f: chex.assert_max_traces(f, n=1))
    programs.clear_cache()
    compiles = []

    def count(event, _secs, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    monitoring.register_event_duration_secs_listener(count)
    masks = np.random.default_rng(0).integers(0, 2, (64, 12)).astype(np.float32)
    kw = [dict(prior=0.5, beta=1.0), dict(prior=0.3, beta=2.0)]  # traced arguments too
    results = []
    for task, k in zip(tasks, kw, strict=True):
        before = len(compiles)
        results.append((bb.infer(task, "exact", **k), task.log_odds(masks),
                        task.p_correct(masks)))
        new = len(compiles) - before
    monitoring.unregister_event_duration_listener(count)
    # ... and the second task compiles nothing at all: one exact scorer and one evaluator
    # (P(correct) and log-odds from the same program) serve both tasks.
    assert new == 0
    assert len(programs._PROGRAMS) == 2
    (exact0, lo0, pc0), (exact1, lo1, pc1) = results
    assert np.abs(exact0.marginals - exact1.marginals).max() > 0.2
    # The shared programs compute each task's own numbers: against a fresh, uncached
    # evaluation of the second task's formula.
    for task, (post, lo, pc), k in zip(tasks, results, kw, strict=True):
        direct = np.asarray(jax.jit(lambda d, m, t=task: t.p_correct_fn(d, m))(task.data,
                                                                             masks))
        np.testing.assert_allclose(pc, direct, rtol=1e-6)
        np.testing.assert_allclose(lo, np.log(direct) - np.log1p(-direct), rtol=1e-4,
                                   atol=1e-5)
        bits = ((np.arange(2 ** 12)[:, None] >> np.arange(12)) & 1).astype(np.float32)
        table = bb.amd.log_joint(task, task.data, bits[:256], k["prior"], k["beta"])
        shift = post.log_probs[:256] - np.asarray(table)  # = −log Z for every mask
        np.testing.assert_allclose(shift, shift[0], atol=1e-4)
    programs.clear_cache()


# ---- method choice and keys ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["mcmc", "svi"])
def test_a_stochastic_method_without_a_key_names_the_fix(method, head_task_set):
    task_set = head_task_set
    for call in (lambda: bb.infer(task_set[0], method),
                 lambda: bb.infer_many(task_set, method),
                 lambda: bb.infer_many(task_set, "auto", max_exact=4, large=method)):
        with pytest.raises(ValueError, match=r"needs a PRNG key; pass key=jax\.random\.key"
                           r"\(seed\)\.$") as err:
            call()
        assert "\n" not in str(err.value)


def test_auto_enumerates_small_sites_without_a_key_and_records_the_method(head_task_set):
    task_set = head_task_set
    posts = bb.infer_many(task_set, "auto")  # d = 8 <= 16: exact, deterministic
    for task, post in zip(task_set, posts, strict=True):
        assert post.method == "exact"
        np.testing.assert_array_equal(post.log_probs, bb.infer(task, "exact").log_probs)
    # The options of the method not chosen are left out; one no method takes is refused.
    again = bb.infer_many(task_set, "auto", num_samples=10, chunk_size=64)
    np.testing.assert_array_equal(again[1].log_probs, posts[1].log_probs)
    with pytest.raises(ValueError, match=r"unknown inference option\(s\) \['num_sample'\]"):
        bb.infer_many(task_set, "auto", num_sample=10)


def test_auto_samples_large_sites_with_the_per_task_keys(head_task_set):
    task_set = head_task_set
    key = jax.random.key(7)
    opts = dict(num_steps=40, steps_per_call=10, num_draws=20)
    with pytest.warns(bb.inference.ConvergenceWarning):
        posts = bb.infer_many(task_set, "auto", key=key, max_exact=4, large="svi",
                              chunk_size=64, **opts)
        alone = [bb.infer(t, "svi", key=jax.random.fold_in(key, i), **opts)
                 for i, t in enumerate(task_set)]
    assert [p.method for p in posts] == ["svi-score", "svi-score"]
    for post, ref in zip(posts, alone, strict=True):
        np.testing.assert_array_equal(post.marginals, ref.marginals)
    assert bb.inference.choose_method(17) == "importance"
    assert bb.inference.choose_method(16) == "exact"
    with pytest.raises(ValueError, match="large='exact' must be one of"):
        bb.inference.choose_method(4, large="exact")
