"""The LLaMA sites' target read-out (``targets=`` of ``llm.build_site`` and
``llm.build_mlp_site``) against top-1 on the full next-token logits of the same site, on a tiny
random LLaMA."""

from __future__ import annotations

import warnings

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


def _prompts_with_header(rng, header: int, lengths: list[int], width: int = 0) -> llm.Prompts:
    """Left-padded prompts that start with the same ``header`` tokens, of the given lengths."""
    head = rng.integers(3, CFG.vocab_size, header)
    t = max(width, max(lengths))
    tokens = np.full((len(lengths), t), 2, np.int32)
    valid = np.zeros((len(lengths), t), bool)
    for n, length in enumerate(lengths):
        row = np.concatenate([head, rng.integers(3, CFG.vocab_size, length - header)])
        tokens[n, t - length:], valid[n, t - length:] = row, True
    return llm.Prompts(tokens, valid)


def test_shared_prefix_lays_out_the_same_sequences():
    rng = np.random.default_rng(1)
    prompts = _prompts_with_header(rng, 5, [9, 7, 12, 6])
    laid, p = llm.shared_prefix(prompts)
    assert p == 5 and laid.tokens.shape == (4, 5 + 7)
    for n in range(4):  # every prompt's real tokens, in order, are unchanged
        np.testing.assert_array_equal(laid.tokens[n][laid.valid[n]],
                                      prompts.tokens[n][prompts.valid[n]])
    assert laid.valid[:, :5].all()
    # A prompt that is all header keeps its last token as its own.
    _, p = llm.shared_prefix(_prompts_with_header(rng, 5, [5, 8]))
    assert p == 4
    # Nothing shared, or one prompt: unchanged.
    x = llm.Prompts(np.array([[3, 4], [5, 4]], np.int32), np.ones((2, 2), bool))
    assert llm.shared_prefix(x) == (x, 0)
    assert llm.shared_prefix(llm.Prompts(x.tokens[:1], x.valid[:1]))[1] == 0


@pytest.mark.parametrize("kind,layers,ablation", [
    ("heads", (0, 1, 2, 3), "zero"), ("heads", (1, 3), "mean"),
    ("neurons", (2,), "zero"), ("resid", (1,), "mean")])
def test_shared_prefix_site_equals_every_prompt_run_whole(kind, layers, ablation):
    """The site that runs the header once per mask gives the logits of the site that runs
    every prompt whole (which llama.run computes with the same interventions directly)."""
    rng = np.random.default_rng(2)
    params = llama.init_params(CFG, jax.random.key(3), scale=0.25)
    prompts = _prompts_with_header(rng, 6, [10, 8, 13, 7, 9], width=15)
    spec = llm.SiteSpec(kind, layers, ablation=ablation)
    shared, shared_in = llm.build_site(params, CFG, spec, prompts)
    whole, whole_in = llm.build_site(params, CFG, spec, prompts, share_prefix=False)
    assert shared_in["h_prefix"].shape[1] == 6 and "h_prefix" not in whole_in
    d = spec.num_units(CFG)
    masks = (rng.random((6, d)) < 0.5).astype(np.float32)
    masks[0] = 1.0
    got = np.asarray(llm.evaluate_masks(shared, shared_in, masks))
    want = np.asarray(llm.evaluate_masks(whole, whole_in, masks))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    assert np.abs(want - want[:1]).max() > 1e-2  # the masks change the logits
    # The unmasked site is the intact model.
    intact = np.asarray(llm.next_token_logits(params, CFG, prompts))
    np.testing.assert_allclose(got[0], intact, atol=2e-5, rtol=2e-5)


def test_bucket_rows_is_the_fewest_padded_tokens():
    """Against every split of the sorted rows into contiguous groups, by brute force."""
    import itertools

    rng = np.random.default_rng(4)
    for _ in range(20):
        lengths = rng.integers(1, 20, rng.integers(1, 9))
        for k in (1, 2, 3, 4):
            groups = llm.bucket_rows(lengths, k)
            assert len(groups) <= k
            rows = np.concatenate([r for r, _ in groups])
            assert sorted(rows.tolist()) == list(range(len(lengths)))
            assert all(w == lengths[r].max() for r, w in groups)
            got = sum(len(r) * w for r, w in groups)
            desc = np.sort(lengths)[::-1]
            best = min(sum(len(part) * part[0] for part in np.split(desc, list(cuts)))
                       for j in range(min(k, len(desc)))
                       for cuts in itertools.combinations(range(1, len(desc)), j))
            assert got == best
    # Equal lengths: one group, however many are allowed.
    assert len(llm.bucket_rows([5, 5, 5], 3)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("header", [0, 6])
@pytest.mark.parametrize("kind,layers", [("heads", (0, 1, 2, 3)), ("neurons", (2,))])
def test_length_buckets_give_the_logits_of_one_padded_batch(header, kind, layers):
    """Prompts of mixed lengths run in length groups (with and without a shared header): the
    same logits, in the prompts' order, as all of them padded to the longest."""
    rng = np.random.default_rng(5)
    params = llama.init_params(CFG, jax.random.key(6), scale=0.25)
    lengths = [15, 8, 13, 7, 9, 14]
    if header:
        prompts = _prompts_with_header(rng, header, lengths)
    else:
        prompts = _prompts_with_header(rng, 1, lengths)
        prompts.tokens[np.arange(len(lengths)), 15 - np.asarray(lengths)] = rng.integers(
            3, CFG.vocab_size, len(lengths))  # no common first token: nothing is shared
    spec = llm.SiteSpec(kind, layers)
    one, one_in = llm.build_site(params, CFG, spec, prompts)
    assert ("h_prefix" in one_in) == bool(header)
    bucketed, bucketed_in = llm.build_site(params, CFG, spec, prompts, length_buckets=3)
    masks = (rng.random((5, spec.num_units(CFG))) < 0.6).astype(np.float32)
    masks[0] = 1.0
    got = np.asarray(llm.evaluate_masks(bucketed, bucketed_in, masks))
    want = np.asarray(llm.evaluate_masks(one, one_in, masks))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    assert np.abs(want - want[:1]).max() > 1e-2  # the masks change the logits
    last = llm.SiteSpec(kind, layers, positions="last")
    with pytest.raises(ValueError, match="length_buckets=3 groups prompts only with "
                                         "positions='all'"):
        llm.build_site(params, CFG, last, prompts, length_buckets=3)


def test_bf16_speedup_is_measured_and_slow_bf16_warns(monkeypatch):
    """`llama.bf16_speedup` times both dtypes on this backend; a site asked for bf16
    projections where they measure slower warns, naming the fix, and otherwise does not."""
    speedup = llama.bf16_speedup(tokens=64, width=32, hidden=48)
    assert np.isfinite(speedup) and speedup > 0
    params = llama.init_params(CFG, jax.random.key(0), scale=0.25)
    prompts = llm.Prompts(tokens=np.ones((2, 5), np.int32), valid=np.ones((2, 5), bool))
    bf16 = CFG.replace(matmul_dtype="bfloat16")
    monkeypatch.setattr(llama, "bf16_speedup", lambda: 0.6)
    assert llm.bf16_speedup_here(bf16) == 0.6 and llm.bf16_speedup_here(CFG) is None
    for builder in (lambda c: llm.build_site(params, c, HEADS, prompts),
                    lambda c: llm.build_mlp_site(params, c, 2, prompts)):
        monkeypatch.setattr(llama, "bf16_speedup", lambda: 0.6)
        with pytest.warns(llm.SlowBf16Warning, match=r"run 1\.7x slower than float32 on this "
                          r"CPU .* use float32, the full-precision model \(the LLM study: "
                          r"--config\.ablation_matmuls=float32\)"):
            builder(bf16)
        monkeypatch.setattr(llama, "bf16_speedup", lambda: 1.6)
        with warnings.catch_warnings():
            warnings.simplefilter("error", llm.SlowBf16Warning)
            builder(bf16)
        monkeypatch.setattr(llama, "bf16_speedup", lambda: 0.6)
        with warnings.catch_warnings():  # float32 is never second-guessed
            warnings.simplefilter("error", llm.SlowBf16Warning)
            builder(CFG)
