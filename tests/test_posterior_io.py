"""Posterior.save / bb.load_posterior: every method's posterior loads back equal, the file is
plain npz data, and a file that is not one gives one line naming it."""

from __future__ import annotations

import dataclasses
import json
import warnings
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate.inference.posterior import PosteriorFileError


@pytest.fixture(scope="module")
def posts():
    site = bb.Site.from_functions(
        "h", 5, lambda x: x, lambda a, x: jnp.stack([a[:, :3].sum(-1), a[:, 3:].sum(-1)], -1))
    x = np.abs(np.random.default_rng(0).normal(size=(32, 5))).astype(np.float32)
    y = (x[:, :3].sum(-1) > x[:, 3:].sum(-1)).astype(np.int32)
    task = bb.Task.build(site, x, bb.rules.top1(y), name="t", check_intact=False)
    out = {"exact": bb.infer(task, "exact")}
    with warnings.catch_warnings():  # short runs may warn about convergence: not tested here
        warnings.simplefilter("ignore")
        for method in ("mcmc", "svi", "importance"):
            out[method] = bb.infer(task, method, key=jax.random.key(0))
    return out


def _assert_equal(a: bb.Posterior, b: bb.Posterior) -> None:
    for f in dataclasses.fields(bb.Posterior):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        elif f.name == "sample_stats":
            assert x.keys() == y.keys()
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])
                assert np.asarray(x[k]).dtype == y[k].dtype
        else:
            assert x == y, f.name


@pytest.mark.parametrize("method", ["exact", "mcmc", "svi", "importance"])
def test_a_saved_posterior_loads_equal(posts, method, tmp_path):
    post = posts[method]
    post.save(tmp_path / "p.npz")
    back = bb.load_posterior(tmp_path / "p.npz")
    _assert_equal(post, back)
    assert repr(back) == repr(post)


def test_the_file_is_plain_npz_data(posts, tmp_path):
    """What Posterior.save documents: numpy reads it without pickle, meta is JSON."""
    post = posts["mcmc"]
    post.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        assert meta["format"] == "bablate.Posterior" and meta["version"] == 1
        assert meta["task"] == "t" and meta["method"] == post.method
        np.testing.assert_array_equal(f["samples"], post.samples)
        np.testing.assert_array_equal(f["sample_stat__accept_prob"],
                                      post.sample_stats["accept_prob"])
        assert f["samples"].dtype == np.uint8


def test_a_file_written_by_bablate_0_1_0_still_loads(posts, tmp_path):
    """0.1.0's files have no format and version in meta."""
    post = posts["exact"]
    meta = {"task": post.task, "method": post.method, "beta": post.beta,
            "entropy_bits": post.entropy_bits, "mean_field": post.mean_field,
            "diagnostics": post.diagnostics, "site": post.site, "num_chains": None}
    np.savez_compressed(tmp_path / "old.npz", meta=np.asarray(json.dumps(meta)),
                        marginals=post.marginals, prior=post.prior, log_probs=post.log_probs)
    _assert_equal(post, bb.Posterior.load(tmp_path / "old.npz"))


def _one_line(path, match: str) -> None:
    with pytest.raises(PosteriorFileError) as err:
        bb.load_posterior(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and match in text, text


def test_bad_files_give_one_line_naming_the_file(posts, tmp_path):
    good = tmp_path / "good.npz"
    posts["mcmc"].save(good)
    data = good.read_bytes()

    text = tmp_path / "notes.txt"
    text.write_text("marginals: 0.5 0.5\n")
    _one_line(text, "is not an .npz archive")

    for cut in (len(data) // 2, len(data) - 10, 10):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(data[:cut])
        _one_line(truncated, "truncated or corrupt")

    corrupt = tmp_path / "corrupt.npz"  # bytes changed inside the compressed samples
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("samples.npy")
    at = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    corrupt.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at:at + 8]) + data[at + 8:])
    _one_line(corrupt, "truncated or corrupt")

    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    _one_line(other, "without the 'meta' entry")

    newer = tmp_path / "newer.npz"
    np.savez(newer, meta=np.asarray(json.dumps({"format": "bablate.Posterior", "version": 9})))
    _one_line(newer, "upgrade bablate")

    odd = tmp_path / "odd.npz"
    np.savez(odd, meta=np.asarray(json.dumps({"task": "t", "method": "exact", "beta": "1"})),
             marginals=np.full(2, 0.5), prior=np.full(2, 0.5))
    _one_line(odd, "beta is '1'")

    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, meta=np.asarray(json.dumps({"task": "t", "method": "exact",
                                                     "beta": 1.0})),
             marginals=np.full(3, 0.5), prior=np.full(2, 0.5))
    _one_line(mismatched, "prior of shape (2,) for 3 units")

    with pytest.raises(FileNotFoundError):
        bb.load_posterior(tmp_path / "missing.npz")
