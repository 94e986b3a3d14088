"""Sites at a submodule's input ("<path>:input"), linen and nnx, against hand computations."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from core_models import masked_outputs
from flax import nnx

import bablate as bb


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(8, name="hidden")(x)))


class Shared(nn.Module):
    """One Dense applied twice: its input is masked at both calls (an in-place site)."""

    @nn.compact
    def __call__(self, x):
        d = nn.Dense(4, name="shared")
        return d(nn.relu(d(x)))


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.linear1 = nnx.Linear(4, 8, rngs=rngs)
        self.linear2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.linear2(nnx.relu(self.linear1(x)))


X = jax.random.normal(jax.random.key(0), (64, 4)) + 0.5
MASKS = np.asarray(jax.random.bernoulli(jax.random.key(5), 0.5, (6, 8)), np.float32)
TARGETS = np.zeros(64, np.int32)


def _outputs(site, masks, ablation_inputs=X):
    return masked_outputs(site, ablation_inputs, TARGETS, masks)


def test_linen_input_site_is_the_post_activation_value():
    model = MLP()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]
    post = jax.nn.relu(X @ p["hidden"]["kernel"] + p["hidden"]["bias"][None])
    site = bb.flax_site(model, variables, "Dense_0:input", X)
    assert site.num_units == 8 and site.name == "Dense_0:input"
    _, got = _outputs(site, MASKS)
    want = [(post * m[None]) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None]
            for m in MASKS]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)
    # Mean ablation uses the post-ReLU mean, not the mean before the ReLU ("hidden").
    task = bb.Task.build(bb.flax_site(model, variables, "Dense_0:input", X, ablation="mean"),
                         X, bb.rules.top1(TARGETS))
    np.testing.assert_allclose(task.data["value"], post.mean(0), rtol=1e-5, atol=1e-6)
    pre = X @ p["hidden"]["kernel"] + p["hidden"]["bias"][None]
    assert not np.allclose(post.mean(0), pre.mean(0), atol=1e-3)
    sites = bb.list_sites(model, variables, X, inputs=True)
    assert sites["Dense_0:input"] == (1, (64, 8)) and sites["hidden:input"] == (1, (64, 4))
    assert set(bb.list_sites(model, variables, X)) == {"hidden", "Dense_0"}


def test_linen_input_site_of_a_shared_module_masks_every_call():
    model = Shared()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]["shared"]
    dense = lambda v: v @ p["kernel"] + p["bias"][None]
    site = bb.flax_site(model, variables, "shared:input", X)
    masks = MASKS[:, :4]
    _, got = _outputs(site, masks)
    want = [dense(jax.nn.relu(dense(X * m[None])) * m[None]) for m in masks]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)


def test_nnx_input_site_matches_the_hand_computation():
    model = NnxMLP(nnx.Rngs(0))
    post = jax.nn.relu(X @ model.linear1.kernel[...] + model.linear1.bias[...][None])
    site = bb.nnx_site(model, "linear2:input", X)
    assert site.num_units == 8
    _, got = _outputs(site, MASKS)
    want = [(post * m[None]) @ model.linear2.kernel[...] + model.linear2.bias[...][None]
            for m in MASKS]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)
    # The output site of linear1 is the pre-activation value: a different lesion.
    _, pre_site = _outputs(bb.nnx_site(model, "linear1", X), MASKS)
    pre = X @ model.linear1.kernel[...] + model.linear1.bias[...][None]
    want_pre = [jax.nn.relu(pre * m[None]) @ model.linear2.kernel[...]
                + model.linear2.bias[...][None] for m in MASKS]
    np.testing.assert_allclose(pre_site, np.stack(want_pre), rtol=1e-5, atol=1e-5)


def test_bad_site_parts_are_one_line_errors():
    model = MLP()
    variables = model.init(jax.random.key(1), X)
    with pytest.raises(ValueError, match=r"unknown site part 'inpt' in 'hidden:inpt'"):
        bb.flax_site(model, variables, "hidden:inpt", X)
    with pytest.raises(ValueError, match=r"Unknown site 'hiden:input'.*append ':input'"):
        bb.flax_site(model, variables, "hiden:input", X)
    with pytest.raises(ValueError, match=r"unknown site part 'post'"):
        bb.nnx_site(NnxMLP(nnx.Rngs(0)), "linear1:post", X)


def test_run_with_cache_returns_every_site_for_one_batch():
    model = MLP()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]
    out, cache = bb.run_with_cache(model, variables, X)
    np.testing.assert_allclose(out, model.apply(variables, X), rtol=1e-6)
    assert set(cache) == set(bb.list_sites(model, variables, X, inputs=True))
    pre = X @ p["hidden"]["kernel"] + p["hidden"]["bias"][None]
    np.testing.assert_allclose(cache["hidden"], pre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache["Dense_0:input"], jax.nn.relu(pre), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache["hidden:input"], X)
    _, shared = bb.run_with_cache(Shared(), Shared().init(jax.random.key(1), X), X,
                                  inputs_too=False)
    assert isinstance(shared["shared"], tuple) and len(shared["shared"]) == 2
