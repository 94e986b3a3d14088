"""The RNN testbed: the hidden-unit site masked at every step, and the chunk-task builder read
against a direct computation from the network's log-probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate.models import rnn
from bablate.testbeds import rnn as rnn_testbed
from bablate.testbeds import sequences


@pytest.fixture(scope="module")
def compositional_net():
    """A briefly trained linear RNN on the compositional family and held-out windows."""
    seq = sequences.compositional(0, n_draws=300)
    cfg = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=6)
    tc = rnn.TrainConfig(steps=100, window=50, batch=8, chunk=50, eval_every=0)
    variables, _ = rnn.train(cfg, tc, seq.tokens, jax.random.key(0))
    test = sequences.compositional(1, n_draws=100)
    return cfg, variables, test


def test_all_ones_mask_at_every_step_is_the_intact_network(reflection_net):
    cfg, variables, test = reflection_net
    site = rnn_testbed.hidden_site(cfg, variables)
    w = jnp.asarray(test[:2], jnp.int32)
    wi, ti = jnp.nonzero(jnp.ones((2, 199), bool))
    ones = jnp.ones(12)
    masked = site.apply(w, lambda h: bb.mask_activation(h, ones, 0.0))[wi, ti]
    intact = rnn.unroll_windows(cfg, variables, w)[0][wi, ti]
    np.testing.assert_allclose(masked, intact, atol=1e-6)


def _direct_p_correct(cfg, variables, seq, length, n_windows, k, masks, smooth):
    """P(correct) of chunk k's task per mask, computed without the testbed: positions read off
    the raw sequence, correctness = the target is the unique arg-max of the masked network's
    log-probs (or its probability), Beta(1,1)-smoothed."""
    tokens = np.asarray(seq.tokens[: n_windows * length]).reshape(n_windows, length)
    pos = [(i, t) for i in range(n_windows) for t in range(length - 1)
           if seq.chunk_ids[i * length + t + 1] == k and seq.chunk_pos[i * length + t + 1] >= 1]
    out = []
    for m in masks:
        logp, _ = rnn.unroll_windows(cfg, variables, jnp.asarray(tokens, jnp.int32),
                                     ablate=lambda h, m=m: h * jnp.asarray(m))
        logp = np.asarray(logp, np.float64)
        c = []
        for i, t in pos:
            lp, y = logp[i, t], tokens[i, t + 1]
            unique = np.sum(lp == lp.max()) == 1
            c.append(np.exp(lp[y]) if smooth else float(np.argmax(lp) == y and unique))
        out.append((sum(c) + 1.0) / (len(c) + 2.0))
    return np.asarray(out), len(pos)


@pytest.mark.parametrize("rule", ["top1", "smooth_top1"])
def test_chunk_tasks_p_correct_matches_a_direct_computation(compositional_net, rule):
    cfg, variables, seq = compositional_net
    length, n_windows = 40, 8
    w = rnn_testbed.to_windows(seq, length, n_windows * length)
    site = rnn_testbed.hidden_site(cfg, variables)
    tasks = rnn_testbed.chunk_tasks(site, w, seq.words, min_examples=3, rule=rule,
                                    check_intact=False)
    assert len(tasks) >= 2
    assert all(len(seq.words[seq.words.index(t.name)]) >= 2 for t in tasks)
    masks = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (6, cfg.hidden)),
                       np.float32)
    masks = np.concatenate([np.ones((1, cfg.hidden)), np.zeros((1, cfg.hidden)), masks])
    for task in tasks:
        k = seq.words.index(task.name)
        want, n = _direct_p_correct(cfg, variables, seq, length, n_windows, k, masks,
                                    rule == "smooth_top1")
        assert rnn_testbed.num_examples(task) == n >= 3
        np.testing.assert_allclose(task.p_correct(masks), want, atol=1e-5)


def test_chunk_tasks_share_one_enumeration(compositional_net):
    """The tasks share one site and one dataset: exact_many's single enumeration gives each
    task the AMD its own enumeration gives."""
    cfg, variables, seq = compositional_net
    w = rnn_testbed.to_windows(seq, 40, 320)
    site = rnn_testbed.hidden_site(cfg, variables)
    tasks = rnn_testbed.chunk_tasks(site, w, seq.words, min_examples=3, check_intact=False)
    assert len(tasks) >= 2
    assert all(t.site is site and t.data["inputs"] is tasks[0].data["inputs"] for t in tasks)
    together = bb.infer_many(tasks, method="exact")
    assert {p.diagnostics["seconds"] for p in together} == {together[0].diagnostics["seconds"]}
    for task, post in zip(tasks, together, strict=True):
        alone = bb.infer(task, method="exact")
        np.testing.assert_allclose(post.log_probs, alone.log_probs, atol=1e-5)


def test_chunk_tasks_selection_and_bad_input(compositional_net):
    cfg, variables, seq = compositional_net
    w = rnn_testbed.to_windows(seq, 40, 320)
    site = rnn_testbed.hidden_site(cfg, variables)
    every = rnn_testbed.chunk_tasks(site, w, seq.words, min_examples=3, check_intact=False)
    two = rnn_testbed.chunk_tasks(site, w, seq.words, min_examples=3, max_tasks=2,
                                  check_intact=False)
    assert [t.name for t in two] == [t.name for t in every][:2]
    some = [seq.words.index(every[-1].name)]
    (only,) = rnn_testbed.chunk_tasks(site, w, seq.words, word_ids=some, min_examples=3,
                                      check_intact=False)
    assert only.name == every[-1].name
    counts = [rnn_testbed.num_examples(t) for t in every]
    fewer = rnn_testbed.chunk_tasks(site, w, seq.words, min_examples=max(counts) + 1)
    assert fewer == []
    with pytest.raises(ValueError, match="unknown ablation rule 'top2'"):
        rnn_testbed.chunk_tasks(site, w, seq.words, rule="top2")
    with pytest.raises(ValueError, match="min_examples must be at least 1"):
        rnn_testbed.chunk_tasks(site, w, seq.words, min_examples=0)


def test_task_steps_are_the_steps_before_each_target(compositional_net):
    _, _, seq = compositional_net
    w = rnn_testbed.to_windows(seq, 40, 320)
    k = next(i for i, word in enumerate(seq.words) if len(word) >= 3)
    steps = rnn_testbed.task_steps(w, k).reshape(w.tokens.shape)
    assert not steps[:, -1].any()
    for i, t in zip(*np.nonzero(steps), strict=True):
        assert w.chunk_ids[i, t + 1] == k and w.chunk_pos[i, t + 1] >= 1
    # Every step of a chunk after its first symbol is preceded by a task step.
    inside = (w.chunk_ids[:, 1:] == k) & (w.chunk_pos[:, 1:] >= 1)
    assert steps[:, :-1].sum() == inside.sum() > 0


@pytest.mark.slow
def test_exact_and_mcmc_agree_on_an_rnn_site():
    # A small tanh RNN reads its prediction from the hidden state only, so the AMD of
    # "continue ABCD" in the context family is far from flat.
    seq = sequences.context(0, n_draws=3000)
    cfg = rnn.RNNConfig(num_symbols=5, hidden=12, cell="tanh")
    tc = rnn.TrainConfig(steps=200, batch=8, chunk=100, eval_every=0)
    variables, _ = rnn.train(cfg, tc, seq.tokens, jax.random.key(0))
    test = sequences.context(1, n_draws=300)
    w = rnn_testbed.to_windows(test, 100, 400)
    site = rnn_testbed.hidden_site(cfg, variables)
    (task,) = rnn_testbed.chunk_tasks(site, w, test.words, word_ids=[test.words.index("ABCD")],
                                      min_examples=10)
    exact = bb.infer(task, method="exact")
    assert np.max(np.abs(exact.marginals - 0.5)) > 0.1  # informative, not flat
    mc = bb.infer(task, method="mcmc", key=jax.random.key(0), num_samples=700,
                  num_warmup=150, num_chains=4)
    # Monte Carlo error of a marginal is at most 0.5 / sqrt(ESS): allow four of those.
    tol = 4 * 0.5 / np.sqrt(mc.diagnostics["ess_min"])
    assert tol < 0.2, mc.diagnostics
    np.testing.assert_allclose(mc.marginals, exact.marginals, atol=tol)
    assert np.corrcoef(mc.marginals, exact.marginals)[0, 1] > 0.95
