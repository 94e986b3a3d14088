"""The chunk-paper RNN: training, per-step masking and injection, Bayesian ablation on its
hidden units (exact vs MCMC), and a smoke run of every rnn_chunks config variant."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate import runs, sequences
from bablate.models import rnn
from bablate.studies import rnn_chunks
from experiments import rnn_chunks as rnn_config


@pytest.fixture(scope="module")
def reflection_net():
    seq = sequences.reflection(0, n_repeats=300)
    test = sequences.reflection(1, n_repeats=100)
    cfg = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=12)
    tc = rnn.TrainConfig(steps=300, batch=8, chunk=100, eval_every=0)
    variables, _ = rnn.train(cfg, tc, seq.tokens, jax.random.key(0))
    return cfg, variables, rnn.windows(test.tokens, 200)


def test_training_beats_the_majority_baseline(reflection_net):
    cfg, variables, test = reflection_net
    acc = rnn.accuracy(cfg, variables, test)
    # Always predicting the filler 'E' scores its frequency (about 9.5 / 13.5 = 0.70); the
    # symbols inside 'ABCD' and the 'A' after a run are what a trained network adds.
    majority = float(np.mean(test[:, 1:] == "ABCDE".index("E")))
    assert majority < 0.75
    assert acc >= 0.85
    untrained = rnn.accuracy(cfg, rnn.init(cfg, jax.random.key(1)), test)
    assert untrained < 0.5


def test_all_ones_mask_at_every_step_is_the_intact_network(reflection_net):
    cfg, variables, test = reflection_net
    site = rnn_chunks.hidden_site(cfg, variables)
    w = jnp.asarray(test[:2], jnp.int32)
    wi, ti = jnp.nonzero(jnp.ones((2, 199), bool))
    inputs = {"windows": w, "w": wi, "t": ti}
    ones = jnp.ones(12)
    masked = site.apply(inputs, lambda h: bb.mask_activation(h, ones, 0.0))
    intact = rnn.unroll_windows(cfg, variables, w)[0][wi, ti]
    np.testing.assert_allclose(masked, intact, atol=1e-6)


def test_zero_mask_removes_the_state_at_every_step(reflection_net):
    cfg, variables, test = reflection_net
    w = jnp.asarray(test[0], jnp.int32)
    logp, hs = rnn.unroll(cfg, variables, w, ablate=lambda h: h * 0.0)
    assert float(jnp.abs(hs).max()) == 0.0
    # With h = 0 at every step the paper's readout sees only the one-hot input.
    p = variables["params"]["out"]
    expected = jax.nn.log_softmax(p["kernel"][w] + p["bias"][None, :])
    np.testing.assert_allclose(logp, expected, atol=1e-5)


def test_injection_equals_restarting_from_the_injected_state(reflection_net):
    cfg, variables, test = reflection_net
    w = jnp.asarray(test[0], jnp.int32)
    state = jax.random.normal(jax.random.key(3), (12,))
    t = 50
    inj_h = jnp.zeros((200, 12)).at[t].set(state)
    inj_m = jnp.zeros((200,), bool).at[t].set(True)
    logp, hs = rnn.unroll(cfg, variables, w, inject_h=inj_h, inject_mask=inj_m)
    tail_logp, tail_hs = rnn.unroll(cfg, variables, w[t + 1:], h0=state)
    np.testing.assert_allclose(hs[t], state)
    np.testing.assert_allclose(hs[t + 1:], tail_hs, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logp[t + 1:], tail_logp, atol=1e-4)


@pytest.mark.slow
def test_exact_and_mcmc_agree_on_an_rnn_site():
    # A small tanh RNN reads its prediction from the hidden state only, so the AMD of
    # "continue ABCD" in the context family is far from flat.
    seq = sequences.context(0, n_draws=3000)
    cfg = rnn.RNNConfig(num_symbols=5, hidden=12, cell="tanh")
    tc = rnn.TrainConfig(steps=200, batch=8, chunk=100, eval_every=0)
    variables, _ = rnn.train(cfg, tc, seq.tokens, jax.random.key(0))
    test = sequences.context(1, n_draws=300)
    w = rnn_chunks.to_windows(test, 100, 400)
    site = rnn_chunks.hidden_site(cfg, variables)
    (task,) = rnn_chunks.chunk_tasks(site, w, test.words, [test.words.index("ABCD")], 10)
    exact = bb.infer(task, method="exact")
    assert np.max(np.abs(exact.marginals - 0.5)) > 0.1  # informative, not flat
    mc = bb.infer(task, method="mcmc", key=jax.random.key(0), num_samples=700,
                  num_warmup=150, num_chains=4)
    # Monte Carlo error of a marginal is at most 0.5 / sqrt(ESS): allow four of those.
    tol = 4 * 0.5 / np.sqrt(mc.diagnostics["ess_min"])
    assert tol < 0.2, mc.diagnostics
    np.testing.assert_allclose(mc.marginals, exact.marginals, atol=tol)
    assert np.corrcoef(mc.marginals, exact.marginals)[0, 1] > 0.95


TINY = {"compare_seeds": 1, "train.steps": 20, "train.chunk": 20, "train.eval_every": 20,
        "dsc.max_tokens": 2000, "grafting.seeds": 2, "grafting.steps": 5,
        "grafting.eval_every": 5, "grafting.chunk": 5, "ablation.windows": 1,
        "ablation.window": 50, "ablation.max_tasks": 1, "ablation.min_examples": 2,
        "ablation.mcmc.num_samples": 10, "ablation.mcmc.num_warmup": 5,
        "ablation.mcmc.num_chains": 1}
N_DRAWS = {"reflection": 60, "compositional": 300, "context": 400, "hierarchy": 1500}


@pytest.mark.slow
@pytest.mark.parametrize("variant", rnn_config.VARIANTS)
def test_every_variant_runs_tiny(variant, tmp_path):
    config = rnn_config.get_config(variant)
    for key, value in {**TINY, "n_draws": N_DRAWS[config.family]}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    if config.model.hidden > 16:
        config.model.hidden = 17  # keeps the MCMC path (hidden > 16) but small
    if variant not in ("quick", "tanh64"):  # those two cover ablation (exact, MCMC), grafting
        config.ablation.enabled = False
        config.grafting.enabled = False
    assert runs.run_one(config, tmp_path / variant) == "ran"
    results = json.loads((tmp_path / variant / "results.json").read_text())
    for key in ("accuracy", "decoding_accuracy", "n_unique_states", "vocab_size",
                "vocab_size_count_gt5", "parse_length"):
        assert key in results, key
    assert set(results["n_unique_states"]) == {"trained", "untrained"}
    assert set(results["dsc"]) == {"long", "authors"}
    for d in results["dsc"].values():
        assert set(d) == {"trained", "untrained"}
        assert d["trained"]["n_unique_states"] >= 1
    # The headline keys are the long protocol's.
    assert results["dsc"]["long"]["trained"]["vocab_size"] == results["vocab_size"]["trained"]
    if config.ablation.enabled:
        for key in ("unit_importance", "polysemanticity_mean", "distributedness_mean",
                    "ablation_chunk_agreement"):
            assert key in results, key
        assert len(results["unit_importance"][0]) == config.model.hidden
    assert (tmp_path / variant / "figures" / "dsc_trained_vs_untrained.png").exists()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        rnn_config.get_config("nope")


def test_untrained_network_is_the_trained_networks_own_start():
    cfg = rnn_chunks.from_config(rnn_config.get_config("quick"))
    seq = sequences.reflection(0, n_repeats=60)
    tc = rnn.TrainConfig(steps=0, batch=2, chunk=10, eval_every=0)
    start, _ = rnn.train(cfg.model, tc, seq.tokens, jax.random.key(7))
    jax.tree.map(np.testing.assert_array_equal, rnn_chunks.initial_variables(cfg, 7), start)


def test_dsc_protocol_is_checked():
    assert rnn_chunks.dsc_protocols("both") == ("long", "authors")
    assert rnn_chunks.dsc_protocols("authors") == ("authors",)
    with pytest.raises(ValueError, match="dsc.protocol"):
        rnn_chunks.dsc_protocols("paper")
