"""The chunk-paper RNN model: training, per-step masking and injection (its testbed's site and
chunk tasks: tests/testbeds/test_testbed_rnn.py; the study: tests/studies/test_rnn_chunks.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from bablate.models import rnn


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
