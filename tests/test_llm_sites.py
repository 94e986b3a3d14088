"""The LLaMA sites' target read-out (``targets=`` of ``llm.build_site`` and
``llm.build_mlp_site``) against top-1 on the full next-token logits of the same site, on a tiny
random LLaMA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate import llm
from bablate.models import llama

CFG = llama.LlamaConfig(vocab_size=32, num_layers=4, width=32, mlp_width=48, num_heads=4,
                        num_kv_heads=2, rope_base=10000.0)
HEADS = llm.SiteSpec("heads", (0, 1, 2, 3))
# Each site as (builder of (site, inputs) from params, prompts and targets, its unit count).
SITES = {
    "heads_all": (lambda p, x, **kw: llm.build_site(p, CFG, HEADS, x, **kw), 16),
    "heads_last": (lambda p, x, **kw: llm.build_site(
        p, CFG, llm.SiteSpec("heads", (0, 1, 2, 3), positions="last"), x, **kw), 16),
    "mlp_layer2": (lambda p, x, **kw: llm.build_mlp_site(p, CFG, 2, x, **kw), CFG.mlp_width),
}


@pytest.mark.parametrize("name", sorted(SITES))
def test_target_readout_equals_top1_on_the_full_logits(name):
    build, d = SITES[name]
    params = llama.init_params(CFG, jax.random.key(0), scale=0.25)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, CFG.vocab_size, (8, 6)).astype(np.int32)
    valid = np.ones(tokens.shape, bool)
    valid[:3, :2] = False  # left padding on three rows
    prompts = llm.Prompts(tokens, valid)
    full, full_in = build(params, prompts)
    targets = np.asarray(llm.evaluate_masks(full, full_in, np.ones((1, d))))[0].argmax(-1)
    targets[:2] = (targets[:2] + 1) % CFG.vocab_size  # two prompts the intact model gets wrong
    small, small_in = build(params, prompts, targets=targets)
    t_full = bb.Task.build(full, full_in, bb.rules.top1(jnp.asarray(targets)), name="full",
                           check_intact=False)
    t_small = bb.Task.build(small, small_in, llm.target_rule(), name="small",
                            check_intact=False)
    masks = (rng.random((40, d)) < 0.5).astype(np.float32)
    masks[0] = 1.0
    for smooth in (False, True):
        np.testing.assert_allclose(t_small.p_correct(masks, smooth=smooth),
                                   t_full.p_correct(masks, smooth=smooth), atol=1e-5)
    hard = t_full.p_correct(masks)
    assert hard[0] == pytest.approx((6 + 1) / (8 + 2)) and np.ptp(hard) > 0  # masks matter
    logits = np.asarray(llm.evaluate_masks(full, full_in, masks[:3]))
    readout = np.asarray(llm.evaluate_masks(small, small_in, masks[:3]))
    assert readout.shape == (3, 8, 2)
    want = llm.target_readout(jnp.asarray(logits.reshape(-1, CFG.vocab_size)),
                              jnp.asarray(np.tile(targets, 3)))
    np.testing.assert_allclose(readout, np.asarray(want).reshape(3, 8, 2), atol=1e-5)
    with pytest.raises(ValueError, match="one token per prompt"):
        build(params, prompts, targets=targets[:3])
