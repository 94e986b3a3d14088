"""Joint sites (one mask over several places) on linen and nnx models, and sites at values an
nnx model marks with ``self.perturb``, checked against hand-written forward passes."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_models import dense, masked_outputs
from flax import nnx

import bablate as bb

# The targets are arbitrary (the checks compare outputs), so the task may warn that the intact
# network fails it.
pytestmark = pytest.mark.filterwarnings("ignore:Task 'task'")

X = jax.random.normal(jax.random.key(0), (48, 4)) + 0.5
TARGETS = np.asarray(jax.random.randint(jax.random.key(3), (48,), 0, 3), np.int32)


class Deep(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8, name="a")(x))
        h = nn.relu(nn.Dense(6, name="b")(h))
        return nn.Dense(3, name="c")(h)


class Marked(nn.Module):
    """A marked post-ReLU value inside a block, then a head."""

    @nn.compact
    def __call__(self, x):
        h = self.perturb("act", nn.relu(nn.Dense(8, name="up")(x)))
        return nn.Dense(3, name="head")(nn.Dense(5, name="down")(h))


def _masks(d, n=6, seed=5):
    return np.asarray(jax.random.bernoulli(jax.random.key(seed), 0.5, (n, d)), np.float32)


def _outputs(site, masks):
    return masked_outputs(site, X, TARGETS, masks)


def _deep_by_hand(p, m_a, m_b, fill_a=0.0, fill_b=0.0):
    a = dense(p["a"], X)
    a = a * m_a[None] + jnp.reshape(fill_a, (1, -1)) * (1 - m_a[None])
    b = dense(p["b"], jax.nn.relu(a))  # the second place sees the first one masked
    b = b * m_b[None] + jnp.reshape(fill_b, (1, -1)) * (1 - m_b[None])
    return dense(p["c"], jax.nn.relu(b))


@pytest.mark.slow
def test_linen_joint_site_masks_each_place_in_one_pass():
    model = Deep()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]
    site = bb.flax_site(model, variables, ["a", "b"], X[:4])
    assert site.num_units == 14 and site.name == "a+b" and not site.cached
    masks = _masks(14)
    task, got = _outputs(site, masks)
    want = np.stack([_deep_by_hand(p, m[:8], m[8:]) for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The units follow the order given.
    _, swapped = _outputs(bb.flax_site(model, variables, ["b", "a"], X), masks)
    want = np.stack([_deep_by_hand(p, m[6:], m[:6]) for m in masks])
    np.testing.assert_allclose(swapped, want, rtol=1e-5, atol=1e-5)
    # The batched evaluators (vmapped blocks of masks) agree with the one-mask outputs.
    # top1 counts only a unique arg-max (a masked-out row gives all-zero logits: a tie).
    target = np.take_along_axis(got, TARGETS[None, :, None], -1)
    correct = ((got < target).sum(-1) == 2).astype(np.float64)
    np.testing.assert_allclose(task.p_correct(masks), (correct.sum(-1) + 1) / (48 + 2),
                               rtol=1e-6)


def test_linen_joint_mean_ablation_uses_each_places_intact_mean_over_the_task_inputs():
    model = Deep()
    variables = model.init(jax.random.key(1), X)
    p = variables["params"]
    # Built from 4 examples; the means come from the task's 48 inputs, in the intact network.
    site = bb.flax_site(model, variables, ["a", "b"], X[:4], ablation="mean")
    assert "mean ablation" in site.identity
    intact_a = dense(p["a"], X)
    intact_b = dense(p["b"], jax.nn.relu(intact_a))
    masks = _masks(14, seed=7)
    _, got = _outputs(site, masks)
    want = np.stack([_deep_by_hand(p, m[:8], m[8:], intact_a.mean(0), intact_b.mean(0))
                     for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Under the same masks zero ablation gives other outputs: the fill is really used.
    _, zero = _outputs(bb.flax_site(model, variables, ["a", "b"], X), masks)
    assert np.abs(zero - got).max() > 1e-2


def test_joint_site_of_a_marked_value_and_an_input():
    model = Marked()
    variables = model.init(jax.random.key(2), X)
    p = variables["params"]
    site = bb.flax_site(model, variables, ["@act", "head:input"], X)
    assert site.num_units == 13
    masks = _masks(13, seed=9)
    _, got = _outputs(site, masks)
    post = jax.nn.relu(dense(p["up"], X))
    want = np.stack([dense(p["head"], dense(p["down"], post * m[None, :8]) * m[None, 8:])
                     for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_one_place_in_a_list_is_the_plain_site():
    model = Deep()
    variables = model.init(jax.random.key(1), X)
    listed = bb.flax_site(model, variables, ["b"], X, ablation="mean")
    assert listed.cached and listed.name == "b"
    masks = _masks(6)
    np.testing.assert_allclose(_outputs(listed, masks)[1],
                               _outputs(bb.flax_site(model, variables, "b", X,
                                                     ablation="mean"), masks)[1])


def test_bad_joint_sites_are_one_line_errors():
    model = Deep()
    variables = model.init(jax.random.key(1), X)
    with pytest.raises(ValueError, match=r"Unknown site 'd'.*a \(4, 8\) x1"):
        bb.flax_site(model, variables, ["a", "d"], X[:4])
    with pytest.raises(ValueError, match=r"names a place twice"):
        bb.flax_site(model, variables, ["a", "a"], X[:4])
    with pytest.raises(ValueError, match=r"a name or a list of names"):
        bb.flax_site(model, variables, [], X[:4])
    with pytest.raises(ValueError, match=r"joint site 'a\+b': ablation must be 'zero' or 'mean'"):
        bb.flax_site(model, variables, ["a", "b"], X[:4], ablation="resample")
    with pytest.raises(ValueError, match=r"joint site 'a\+b': a basis acts on one activation"):
        bb.flax_site(model, variables, ["a", "b"], X[:4],
                     basis=bb.Basis.orthogonal(jnp.eye(14)))
    with pytest.raises(ValueError, match=r"unknown site part 'inpt'"):
        bb.flax_site(model, variables, ["a", "b:inpt"], X[:4])


# ---- nnx ---------------------------------------------------------------------------------


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.up = nnx.Linear(4, 8, rngs=rngs)
        self.down = nnx.Linear(8, 5, rngs=rngs)

    def __call__(self, x):
        return self.down(self.perturb("act", nnx.relu(self.up(x))))


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.block = NnxBlock(rngs)
        self.head = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.perturb("mid", self.block(x)))


class NnxTwice(nnx.Module):
    """One marked block applied twice: the marked value is masked at both calls."""

    def __init__(self, rngs):
        self.block = NnxBlock(rngs)
        self.proj = nnx.Linear(5, 4, rngs=rngs)

    def __call__(self, x):
        return self.block(self.proj(self.block(x)))


def _lin(layer, v):
    return v @ layer.kernel[...] + layer.bias[...][None]


def test_nnx_marked_values_are_sites_and_the_model_is_untouched():
    model = NnxNet(nnx.Rngs(0))
    before = nnx.state(model)
    with warnings.catch_warnings():
        # nnx's own perturb stores a variable and warns outside nnx.capture; ours does neither.
        warnings.simplefilter("error")
        site = bb.nnx_site(model, "block@act", X)
        out, cache = bb.nnx_run_with_cache(model, X)
        top = bb.nnx_site(model, "@mid", X)
    assert site.cached and site.num_units == 8 and top.num_units == 5
    assert not hasattr(model.block, "act") and not hasattr(model, "mid")
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model), before)
    post = jax.nn.relu(_lin(model.block.up, X))
    np.testing.assert_allclose(cache["block@act"], post, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache["@mid"], cache["block"], rtol=1e-6)
    np.testing.assert_allclose(out, _lin(model.head, _lin(model.block.down, post)), rtol=1e-5,
                               atol=1e-5)
    masks = _masks(8)
    _, got = _outputs(site, masks)
    want = np.stack([_lin(model.head, _lin(model.block.down, post * m[None])) for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"Unknown site 'block@actt'.*block@act \(48, 8\) x1"):
        bb.nnx_site(model, "block@actt", X)


def test_nnx_marked_value_reached_twice_is_masked_in_place():
    model = NnxTwice(nnx.Rngs(1))
    site = bb.nnx_site(model, "block@act", X)
    assert not site.cached
    block = lambda v, m: _lin(model.block.down, jax.nn.relu(_lin(model.block.up, v)) * m[None])
    masks = _masks(8, seed=11)
    _, got = _outputs(site, masks)
    want = np.stack([block(_lin(model.proj, block(X, m)), m) for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nnx_joint_site_with_mean_ablation():
    model = NnxNet(nnx.Rngs(2))
    site = bb.nnx_site(model, ["block/up", "head:input"], X[:4], ablation="mean")
    assert site.num_units == 13 and site.name == "block/up+head:input"
    up = _lin(model.block.up, X)
    mid = _lin(model.block.down, jax.nn.relu(up))  # intact: the mean of the second place
    masks = _masks(13, seed=13)
    _, got = _outputs(site, masks)
    want = []
    for m in masks:
        a = up * m[None, :8] + up.mean(0)[None] * (1 - m[None, :8])
        b = _lin(model.block.down, jax.nn.relu(a))
        want.append(_lin(model.head, b * m[None, 8:] + mid.mean(0)[None] * (1 - m[None, 8:])))
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)


# ---- bb.mark: a marked value without flax's perturb ------------------------------------------


class NnxMarkedBlock(nnx.Module):
    def __init__(self, rngs):
        self.up = nnx.Linear(4, 8, rngs=rngs)
        self.down = nnx.Linear(8, 5, rngs=rngs)

    def __call__(self, x):
        return self.down(bb.mark(self, "act", nnx.relu(self.up(x))))


class NnxMarkedNet(nnx.Module):
    def __init__(self, rngs):
        self.block = NnxMarkedBlock(rngs)
        self.head = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(bb.mark(self, "mid", self.block(x)))


def test_nnx_perturb_warns_on_every_call_of_the_model_and_bb_mark_never_does():
    """The reason for bb.mark: flax >= 0.12 deprecates nnx's perturb outside nnx.capture, so a
    model marked with it warns whenever the user runs it; bb.mark is an identity there."""
    with pytest.warns(DeprecationWarning, match="perturb"):
        NnxNet(nnx.Rngs(0))(X)
    model = NnxMarkedNet(nnx.Rngs(0))
    before = nnx.state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model(X)
        site = bb.nnx_site(model, "block@act", X)
        top = bb.nnx_site(model, "@mid", X)
        _, cache = bb.nnx_run_with_cache(model, X)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model), before)  # nothing stored
    post = jax.nn.relu(_lin(model.block.up, X))
    np.testing.assert_allclose(out, _lin(model.head, _lin(model.block.down, post)), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(cache["block@act"], post, rtol=1e-5, atol=1e-6)
    assert site.cached and site.num_units == 8 and top.num_units == 5
    masks = _masks(8)
    _, got = _outputs(site, masks)
    want = np.stack([_lin(model.head, _lin(model.block.down, post * m[None])) for m in masks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_linen_bb_mark_is_the_same_site_as_perturb():
    class MarkedByBb(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = bb.mark(self, "act", nn.relu(nn.Dense(8, name="up")(x)))
            return nn.Dense(3, name="head")(nn.Dense(5, name="down")(h))

    variables = Marked().init(jax.random.key(1), X)  # the same parameter tree
    masks = _masks(8)
    _, want = _outputs(bb.flax_site(Marked(), variables, "@act", X), masks)
    _, got = _outputs(bb.flax_site(MarkedByBb(), variables, "@act", X), masks)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert bb.list_sites(MarkedByBb(), variables, X)["@act"] == (1, (48, 8))


def test_nnx_list_sites_lists_outputs_marks_and_inputs():
    model = NnxMarkedNet(nnx.Rngs(0))
    found = bb.nnx_list_sites(model, X)
    assert found == {"block/up": (1, (48, 8)), "block@act": (1, (48, 8)),
                     "block/down": (1, (48, 5)), "block": (1, (48, 5)), "@mid": (1, (48, 5)),
                     "head": (1, (48, 3))}
    with_inputs = bb.nnx_list_sites(model, X, inputs=True)
    assert with_inputs["head:input"] == (1, (48, 5)) and set(found) < set(with_inputs)
    with pytest.raises(TypeError, match=r"for a flax nnx model use bb.nnx_list_sites"):
        bb.list_sites(model, None, X)
    with pytest.raises(TypeError, match=r"bb.list_sites\(model, variables, example_inputs\)"):
        bb.nnx_list_sites(Marked(), X)


@pytest.mark.parametrize("unit_axis,message", [
    (0, r"Site 'a': unit_axis=0 is the example axis \(axis 0\) of the activation of shape "
        r"\(48, 8\)"),
    (-2, r"unit_axis=-2 is the example axis"),
    (2, r"Site 'a': unit_axis=2 is not an axis of the activation of shape \(48, 8\)"),
])
def test_a_unit_axis_on_the_examples_is_refused_when_the_site_is_built(unit_axis, message):
    """Not later in Task.build: the site would otherwise claim 48 "units" (the examples)."""
    model = Deep()
    variables = model.init(jax.random.key(1), X)
    for names in ("a", ["a", "b"]):
        with pytest.raises(ValueError, match=message) as err:
            bb.flax_site(model, variables, names, X, unit_axis=unit_axis)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=message.replace("'a'", "'block/up'")):
        bb.nnx_site(NnxNet(nnx.Rngs(0)), "block/up", X, unit_axis=unit_axis)
