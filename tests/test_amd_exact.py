"""Exact enumeration against closed forms and against numpyro's own log density."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

import bablate as bb


def _logic_site(fn, d=3):
    """A site whose output is a boolean function of which units are kept."""
    return bb.Site.from_functions("logic", d, prefix=lambda x: x, suffix=lambda act, x: fn(act))


def _all_positive_task(fn, n=10, d=3):
    site = _logic_site(fn, d)
    return bb.Task.build(site, jnp.ones((n, d)), bb.rules.binary(jnp.ones(n, bool), 0.5))


def _odds_all_positive(correct: bool, n: int) -> float:
    # Only positives: sens = (TP+1)/(n+2), spec has no data = 1/2, P = (sens + spec)/2.
    sens = ((n if correct else 0) + 1) / (n + 2)
    p = (sens + 0.5) / 2
    return p / (1 - p)


def test_or_of_two_units_matches_closed_form():
    task = _all_positive_task(lambda a: a[:, 0] + a[:, 1] - a[:, 0] * a[:, 1])
    post = bb.infer(task, "exact")
    good, bad = _odds_all_positive(True, 10), _odds_all_positive(False, 10)
    # unit 2 is irrelevant: per unit-2 state, 3 masks pass (good), 1 fails (bad).
    q0 = 2 * good / (3 * good + bad)
    np.testing.assert_allclose(post.marginals, [q0, q0, 0.5], atol=1e-6)
    # Joint entropy: 8 masks, 6 with weight good, 2 with weight bad.
    w = np.array([good] * 6 + [bad] * 2)
    w = w / w.sum()
    m = bb.metrics.summarize(post)
    np.testing.assert_allclose(m.entropy, -(w * np.log2(w)).sum(), atol=1e-5)
    assert m.unit_information[2] == pytest.approx(0.0, abs=1e-7)


def test_necessary_unit_and_and_gate():
    task = _all_positive_task(lambda a: a[:, 0] * a[:, 1])
    post = bb.infer(task, "exact")
    good, bad = _odds_all_positive(True, 10), _odds_all_positive(False, 10)
    # AND: unit 0 kept in the one passing mask pair and in one failing one.
    q0 = (good + bad) / (good + 3 * bad)
    np.testing.assert_allclose(post.marginals, [q0, q0, 0.5], atol=1e-6)
    assert q0 > 0.75  # necessary units are kept far more often than the prior 0.5


def test_harmful_unit_has_importance_below_half():
    task = _all_positive_task(lambda a: 1.0 - a[:, 2])
    post = bb.infer(task, "exact")
    assert post.marginals[2] < 0.2
    np.testing.assert_allclose(post.marginals[:2], 0.5, atol=1e-6)


def test_table_marginals_follow_the_bit_convention():
    post = bb.infer(_all_positive_task(lambda a: a[:, 0] + a[:, 1] - a[:, 0] * a[:, 1]), "exact")
    p = post.probs()
    masks = np.array(list(itertools.product([0, 1], repeat=3)))[:, ::-1]  # bit i = unit i
    idx = (masks * (2 ** np.arange(3))).sum(1)
    np.testing.assert_allclose((p[idx, None] * masks).sum(0), post.marginals, atol=1e-12)
    top, probs = post.top_masks(2)
    assert top.shape == (2, 3) and probs[0] >= probs[1]


def test_log_joint_equals_numpyro_log_density_with_prior_and_beta():
    task = _all_positive_task(lambda a: a[:, 0] * (1 - a[:, 1]) + a[:, 2] * 0.0)
    prior, beta = jnp.array([0.3, 0.6, 0.8]), 1.7
    model = bb.make_model(task, prior=prior, beta=beta)
    masks = bb.inference.index_to_masks(jnp.arange(8), 3)
    ours = bb.log_joint(task, task.data, masks, prior, beta)
    theirs = jnp.stack([log_density(model, (task.data,), {}, {"mask": m})[0] for m in masks])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    post = bb.infer(task, "exact", prior=prior, beta=beta)
    expect = jax.nn.softmax(theirs)
    np.testing.assert_allclose(post.probs(), expect, atol=1e-6)


def test_exact_refuses_large_sites_and_names_alternatives():
    d = 21
    site = bb.Site.from_functions("big", d, lambda x: x, lambda a, x: a.sum(-1))
    task = bb.Task.build(site, jnp.ones((4, d)), bb.rules.binary(jnp.ones(4, bool), 0.5))
    with pytest.raises(ValueError, match="needs 2\\^21 masks.*method='importance'"):
        bb.infer(task, "exact")


def test_unknown_method_is_refused():
    task = _all_positive_task(lambda a: a[:, 0])
    with pytest.raises(ValueError, match="exact"):
        bb.infer(task, "gibbs")


def test_posterior_save_load_round_trip(tmp_path):
    post = bb.infer(_all_positive_task(lambda a: a[:, 0] * a[:, 1]), "exact")
    path = tmp_path / "post.npz"
    post.save(path)
    back = bb.Posterior.load(path)
    np.testing.assert_array_equal(back.log_probs, post.log_probs)
    np.testing.assert_array_equal(back.marginals, post.marginals)
    assert back.method == "exact" and back.diagnostics == post.diagnostics
    assert [p.name for p in tmp_path.iterdir()] == ["post.npz"]  # no temp file left behind
