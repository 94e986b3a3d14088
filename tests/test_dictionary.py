"""Dictionary learning: recovery of known sparse features, exact dictionary sites, save/load."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_models import head_rule, trained_mlp
from scipy import optimize

import bablate as bb
from bablate import dictionary as dl


@functools.cache
def synthetic(signed: bool, n: int = 3000, d: int = 16, f: int = 10, p: float = 0.15, seed=0):
    """Activations built from f known unit features with sparse non-negative coefficients.

    Non-negative features (each on a random ~30% of the d coordinates) for NMF; signed Gaussian
    features, more of them than dimensions (overcomplete), for the sparse autoencoders.
    """
    k_f, k_mask, k_on, k_val = jax.random.split(jax.random.key(seed), 4)
    if signed:
        feats = jax.random.normal(k_f, (f, d))
    else:
        feats = jax.random.uniform(k_f, (f, d)) * (jax.random.uniform(k_mask, (f, d)) < 0.3)
    feats = feats / jnp.linalg.norm(feats, axis=1, keepdims=True)
    on = jax.random.uniform(k_on, (n, f)) < p
    coef = jnp.where(on, jax.random.uniform(k_val, (n, f), minval=0.2, maxval=1.0), 0.0)
    return np.asarray(coef @ feats), np.asarray(feats)


@pytest.mark.slow
def test_nmf_recovers_nonnegative_features():
    x, feats = synthetic(signed=False)
    basis, report = dl.fit(x, dl.DictionaryConfig("nmf", 10, steps=500, l1=0.3), jax.random.key(1))
    cos = dl.max_cosine(basis.decoder, feats)
    assert cos.min() > 0.9, cos
    assert report.fvu < 1e-3
    # Sparse data: far fewer active codes than codes (1.5 true features active on average).
    assert report.l0 < 4 and report.dead_codes == 0
    assert float(jnp.min(basis.decoder)) >= 0


@pytest.mark.parametrize("method,kw", [("sae_topk", {"top_k": 3}), ("sae_l1", {"l1": 0.5})])
def test_sparse_autoencoder_recovers_overcomplete_signed_features(method, kw):
    x, feats = synthetic(signed=True, d=16, f=24, p=0.06)
    cfg = dl.DictionaryConfig(method, 32, steps=1000, **kw)
    basis, report = dl.fit(x, cfg, jax.random.key(1))
    cos = dl.max_cosine(basis.decoder, feats)
    assert cos.min() > 0.9, (method, np.sort(cos)[:5])
    # A random unit direction in 16-d has max cosine ~0.5 against 32 rows: recovery is real.
    rand = dl.max_cosine(basis.decoder, np.asarray(jax.random.normal(jax.random.key(9), (24, 16))))
    assert rand.mean() < 0.8
    assert report.fvu < 0.2 and report.l0 < 4


@pytest.mark.slow
def test_reconstruction_improves_with_codes():
    x, _ = synthetic(signed=False)
    fvus = [dl.fit(x, dl.DictionaryConfig("nmf", k, steps=250), jax.random.key(2))[1].fvu
            for k in (2, 5, 10)]
    assert fvus[0] > fvus[1] > fvus[2], fvus
    assert fvus[0] < 1.0


def test_nnls_codes_match_scipy():
    x, feats = synthetic(signed=False)
    basis, _ = dl.fit(x, dl.DictionaryConfig("nmf", 10, steps=250), jax.random.key(1))
    rows = x[:20] + 0.05 * np.abs(np.random.default_rng(0).normal(size=(20, x.shape[1])))
    ours = np.asarray(basis.encode(jnp.asarray(rows, jnp.float32)))
    ref = np.stack([optimize.nnls(np.asarray(basis.decoder, np.float64).T, r)[0] for r in rows])
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def _relu_site(basis=None):
    model, variables, x, ys = trained_mlp()
    p = variables["params"]
    site = bb.Site.from_functions(
        "relu_hidden", 12 if basis is None else basis.num_units,
        prefix=lambda inputs: jax.nn.relu(inputs @ p["Dense_0"]["kernel"]
                                          + p["Dense_0"]["bias"][None]),
        suffix=lambda h, inputs: h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"][None],
        basis=basis)
    return site, model, variables, x, ys


@pytest.mark.slow
@pytest.mark.parametrize("method", ["nmf", "sae_topk"])
def test_dictionary_site_all_ones_is_exact_and_all_zeros_leaves_the_residual(method):
    site, model, variables, x, ys = _relu_site()
    acts = site.prefix(x)
    cfg = dl.DictionaryConfig(method, 16, steps=300, top_k=3)  # overcomplete: 16 codes, 12 units
    basis, report = dl.fit(acts, cfg, jax.random.key(0))
    dsite = _relu_site(basis)[0]
    task = bb.Task.build(dsite, x, head_rule(ys, "sum"))
    np.testing.assert_allclose(task.outputs_fn(task.data, jnp.ones(16)), model.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    # Every code ablated: only the reconstruction error (plus the centre) reaches the readout.
    codes = basis.encode(acts)
    left = acts - codes @ basis.decoder
    np.testing.assert_allclose(task.outputs_fn(task.data, jnp.zeros(16)), site.suffix(left, x),
                               rtol=1e-4, atol=1e-4)
    assert report.fvu < 0.5
    assert np.ptp(task.log_odds(np.eye(16, dtype=np.float32))) > 0  # codes matter differently


@pytest.mark.slow
def test_save_load_round_trip(tmp_path):
    x, _ = synthetic(signed=True, f=24, p=0.06)
    basis, report = dl.fit(x, dl.DictionaryConfig("sae_topk", 20, steps=100, top_k=2),
                           jax.random.key(0))
    path = tmp_path / "dict.npz"
    dl.save(path, basis, report)
    loaded, loaded_report = dl.load(path)
    assert loaded_report == report and loaded.encoding == "topk" and loaded.top_k == 2
    np.testing.assert_array_equal(loaded.encode(jnp.asarray(x[:50])), basis.encode(x[:50]))
    nmf, _ = dl.fit(np.abs(x), dl.DictionaryConfig("nmf", 8, steps=50), jax.random.key(0))
    dl.save(tmp_path / "nmf.npz", nmf)
    again, no_report = dl.load(tmp_path / "nmf.npz")
    assert no_report is None and again.center is None and again.encoding == "nnls"
    np.testing.assert_allclose(again.encode(np.abs(x[:20])), nmf.encode(np.abs(x[:20])),
                               atol=1e-6)


def test_bad_input_raises_clear_errors(tmp_path):
    x, _ = synthetic(signed=True, f=24, p=0.06)
    with pytest.raises(ValueError, match="non-negative"):
        dl.fit(x, dl.DictionaryConfig("nmf", 4, steps=10), jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        dl.fit(x[None], dl.DictionaryConfig("sae_l1", 4, steps=10), jax.random.key(0))
    with pytest.raises(ValueError, match="unknown dictionary method"):
        dl.DictionaryConfig("pca")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a dictionary file"):
        dl.load(tmp_path / "other.npz")
