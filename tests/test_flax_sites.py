"""Sites at values marked with flax's ``self.perturb`` ("<path>@<name>") and run_with_cache for
nnx models, against hand computations."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_models import dense, masked_outputs
from flax import nnx

import bablate as bb

# The targets are arbitrary (the checks compare outputs, not accuracy), so the task warns that
# the intact network fails it.
pytestmark = pytest.mark.filterwarnings("ignore:Task 'task'")


class Block(nn.Module):
    """An MLP block whose post-ReLU value is marked: the value no submodule returns."""

    @nn.compact
    def __call__(self, x):
        h = self.perturb("act", nn.relu(nn.Dense(8, name="up")(x)))
        return nn.Dense(4, name="down")(h)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(Block()(x))


class Flat(nn.Module):
    """A value marked in the top-level module: the site "@act"."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(self.perturb("act", nn.relu(nn.Dense(8)(x))))


class Twice(nn.Module):
    """One block applied twice: its marked value is masked at both calls (in place)."""

    @nn.compact
    def __call__(self, x):
        block = Block(name="shared")
        return block(nn.relu(block(x)))


X = jax.random.normal(jax.random.key(0), (64, 4)) + 0.5
MASKS = np.asarray(jax.random.bernoulli(jax.random.key(5), 0.5, (6, 8)), np.float32)
TARGETS = np.zeros(64, np.int32)


def _outputs(site, masks):
    return masked_outputs(site, X, TARGETS, masks)


def test_perturb_site_replaces_the_marked_value():
    model = Net()
    variables = model.init(jax.random.key(1), X)
    assert "perturbations" in variables  # flax's zero entry; the site works with or without it
    p = variables["params"]
    post = jax.nn.relu(dense(p["Block_0"]["up"], X))
    forward = lambda h: dense(p["head"], dense(p["Block_0"]["down"], h))
    for given in (variables, {"params": p}):
        site = bb.flax_site(model, given, "Block_0@act", X)
        assert site.num_units == 8 and site.name == "Block_0@act" and site.cached
        _, got = _outputs(site, MASKS)
        want = np.stack([forward(post * m[None]) for m in MASKS])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The all-ones mask is the model itself.
    _, intact = _outputs(site, np.ones((1, 8), np.float32))
    np.testing.assert_allclose(intact[0], model.apply(variables, X), rtol=1e-5, atol=1e-5)
    # Mean ablation uses the mean of the marked (post-ReLU) value, not the "up" output's.
    mean_site = bb.flax_site(model, variables, "Block_0@act", X, ablation="mean")
    task, got = _outputs(mean_site, MASKS)
    np.testing.assert_allclose(task.data["value"], post.mean(0), rtol=1e-5, atol=1e-6)
    pre = dense(p["Block_0"]["up"], X)
    assert not np.allclose(post.mean(0), pre.mean(0), atol=1e-3)
    want = np.stack([forward(post * m[None] + post.mean(0)[None] * (1 - m[None]))
                     for m in MASKS])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_perturb_sites_are_listed_and_cached():
    model = Net()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]
    sites = bb.list_sites(model, variables, X)
    assert sites["Block_0@act"] == (1, (64, 8))
    assert set(sites) == {"Block_0/up", "Block_0/down", "Block_0", "head", "Block_0@act"}
    out, cache = bb.run_with_cache(model, variables, X)
    np.testing.assert_allclose(out, model.apply(variables, X), rtol=1e-6)
    np.testing.assert_allclose(cache["Block_0@act"], jax.nn.relu(dense(p["Block_0"]["up"], X)),
                               rtol=1e-5, atol=1e-6)
    assert set(cache) == set(bb.list_sites(model, variables, X, inputs=True))
    # A value marked in the top-level module has an empty path.
    flat = Flat()
    flat_vars = flat.init(jax.random.key(2), X)
    q = flat_vars["params"]
    assert bb.list_sites(flat, flat_vars, X)["@act"] == (1, (64, 8))
    _, got = _outputs(bb.flax_site(flat, flat_vars, "@act", X), MASKS)
    post = jax.nn.relu(dense(q["Dense_1"], X))
    want = np.stack([dense(q["Dense_0"], post * m[None]) for m in MASKS])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_perturb_site_marked_at_every_call_is_masked_in_place():
    model = Twice()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]["shared"]
    block = lambda v, m: dense(p["down"], jax.nn.relu(dense(p["up"], v)) * m[None])
    assert bb.list_sites(model, variables, X)["shared@act"] == (2, (64, 8))
    site = bb.flax_site(model, variables, "shared@act", X)
    assert not site.cached
    _, got = _outputs(site, MASKS)
    want = np.stack([block(jax.nn.relu(block(X, m)), m) for m in MASKS])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unknown_named_sites_are_one_line_errors():
    model = Net()
    variables = model.init(jax.random.key(1), X)
    with pytest.raises(ValueError, match=r"Unknown site 'Block_0/act'.*Block_0@act.*'<path>@"):
        bb.flax_site(model, variables, "Block_0/act", X)
    with pytest.raises(ValueError, match=r"Unknown site 'Block_0@actt'"):
        bb.flax_site(model, variables, "Block_0@actt", X)
    small = model.init(jax.random.key(1), X[:2])  # zero perturbations shaped for 2 examples
    with pytest.raises(ValueError, match=r"holds 'act' for Block_0 with shape \(2, 8\).*"
                       r"shape \(64, 8\); pass the variables without it"):
        bb.flax_site(model, small, "Block_0@act", X)
    site = bb.flax_site(model, {"params": small["params"]}, "Block_0@act", X)
    assert site.num_units == 8
    with pytest.raises(TypeError, match=r"nnx_run_with_cache"):
        bb.run_with_cache(NnxNet(nnx.Rngs(0)), None, X)
    with pytest.raises(TypeError, match=r"bb.run_with_cache\(model, variables, inputs\)"):
        bb.nnx_run_with_cache(model, X)


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.up = nnx.Linear(4, 8, rngs=rngs)
        self.down = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        return self.down(nnx.relu(self.up(x)))


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.block = NnxBlock(rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.head(self.block(x)) @ jnp.ones((3, 4)))


def test_nnx_run_with_cache_matches_the_forward_pass_and_the_sites():
    model = NnxNet(nnx.Rngs(0))
    out, cache = bb.nnx_run_with_cache(model, X)
    np.testing.assert_allclose(out, model(X), rtol=1e-6)
    assert set(cache) == {"block", "block:input", "block/up", "block/up:input", "block/down",
                          "block/down:input", "head", "head:input"}
    up = model.block.up
    pre = X @ up.kernel[...] + up.bias[...][None]
    np.testing.assert_allclose(cache["block/up"], pre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache["block/down:input"], jax.nn.relu(pre), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(cache["block:input"], X)
    # Each cached activation is what the nnx site of the same name masks.
    for name in ("block", "block/up", "block/down:input"):
        site = bb.nnx_site(model, name, X)
        np.testing.assert_allclose(cache[name], site.prefix(X), rtol=1e-6)
    # "head" runs twice per forward pass: one array per call, in call order.
    assert isinstance(cache["head"], tuple) and len(cache["head"]) == 2
    np.testing.assert_allclose(cache["head"][1], out, rtol=1e-6)
    np.testing.assert_array_equal(cache["head:input"][0], cache["block"])
    _, outputs_only = bb.nnx_run_with_cache(model, X, inputs_too=False)
    assert set(outputs_only) == {"block", "block/up", "block/down", "head"}
