"""Masked evaluation: identities (all-ones = intact, cached = uncached) and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_models import head_rule, trained_mlp

import bablate as bb


@pytest.fixture(scope="module")
def mlp():
    return trained_mlp()


def _rule(ys):
    return head_rule(ys, "sum")


def test_unknown_site_lists_the_sites_that_exist(mlp):
    model, variables, x, _ = mlp
    with pytest.raises(ValueError, match=r"Unknown site 'Dense_7'.*Dense_0 \(256, 12\)"):
        bb.flax_site(model, variables, "Dense_7", x)
    assert set(bb.list_sites(model, variables, x)) == {"Dense_0", "Dense_1"}


def test_all_ones_mask_reproduces_the_intact_network(mlp):
    model, variables, x, ys = mlp
    site = bb.flax_site(model, variables, "Dense_0", x)
    task = bb.Task.build(site, x, _rule(ys))
    intact = model.apply(variables, x)
    out = task.outputs_fn(task.data, jnp.ones(12))
    np.testing.assert_allclose(out, intact, rtol=1e-6, atol=1e-6)


def test_cached_equals_uncached_and_zero_ablation_is_a_real_lesion(mlp):
    model, variables, x, ys = mlp
    cached = bb.flax_site(model, variables, "Dense_0", x)

    def apply(inputs, ablate):  # the same lesion, with the whole network run per mask
        params = variables["params"]
        h = ablate(inputs @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None])
        return jax.nn.relu(h) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"][None]

    uncached = bb.Site.in_place("Dense_0", 12, apply)
    masks = np.asarray(jax.random.bernoulli(jax.random.key(3), 0.5, (64, 12)), np.float32)
    a = bb.Task.build(cached, x, _rule(ys)).log_odds(masks)
    b = bb.Task.build(uncached, x, _rule(ys)).log_odds(masks)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert a.std() > 0.1  # different lesions really change the answer


def test_mean_and_resample_ablation_values(mlp):
    model, variables, x, ys = mlp
    acts = model.bind(variables).apply(variables, x, capture_intermediates=True)[1]
    h = acts["intermediates"]["Dense_0"]["__call__"][0]
    mean_site = bb.flax_site(model, variables, "Dense_0", x, ablation="mean")
    task = bb.Task.build(mean_site, x, _rule(ys))
    np.testing.assert_allclose(task.data["value"], h.mean(0), rtol=1e-5, atol=1e-6)
    # Mean-ablating every unit gives every example the same hidden state: one output row.
    out = task.outputs_fn(task.data, jnp.zeros(12))
    np.testing.assert_allclose(out, jnp.broadcast_to(out[0], out.shape), atol=1e-5)
    resample = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x, ablation="resample"),
                             x, _rule(ys), key=jax.random.key(1))
    value = np.asarray(resample.data["value"])
    assert sorted(map(tuple, value.round(5))) == sorted(map(tuple, np.asarray(h).round(5)))


def test_basis_site_with_all_ones_mask_is_exact_and_rotation_changes_lesions(mlp):
    model, variables, x, ys = mlp
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (12, 12)))
    rotated = bb.flax_site(model, variables, "Dense_0", x, basis=bb.Basis.orthogonal(q))
    task = bb.Task.build(rotated, x, _rule(ys))
    np.testing.assert_allclose(task.outputs_fn(task.data, jnp.ones(12)), model.apply(variables, x),
                               rtol=1e-4, atol=1e-4)
    neuron = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, _rule(ys))
    lesion = np.ones((1, 12), np.float32)
    lesion[0, :6] = 0
    assert not np.allclose(task.log_odds(lesion), neuron.log_odds(lesion))


def test_mask_of_wrong_length_is_refused(mlp):
    model, variables, x, ys = mlp
    task = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, _rule(ys))
    with pytest.raises(ValueError, match=r"masks must be \[num_masks, 12\]"):
        task.log_odds(np.ones((2, 11)))


def test_nan_activations_are_refused():
    site = bb.Site.from_functions("h", 3, lambda x: x, lambda a, x: a.sum(-1))
    x = jnp.array([[1.0, jnp.nan, 0.0]])
    with pytest.raises(ValueError, match="NaN/inf"):
        bb.Task.build(site, x, bb.rules.binary(jnp.ones(1, bool)))


def test_wrong_unit_count_is_refused():
    site = bb.Site.from_functions("h", 4, lambda x: x, lambda a, x: a.sum(-1))
    with pytest.raises(ValueError, match="declares 4 units"):
        bb.Task.build(site, jnp.ones((2, 3)), bb.rules.binary(jnp.ones(2, bool)))


def test_a_task_the_intact_network_fails_warns_but_stays_defined(mlp):
    model, variables, x, ys = mlp
    wrong = {"sum": 1 - ys["sum"]}
    with pytest.warns(UserWarning, match="already fails"):
        task = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, _rule(wrong))
    assert np.isfinite(task.log_odds(np.ones((1, 12)))).all()


def test_unknown_ablation_is_refused():
    with pytest.raises(ValueError, match="unknown ablation"):
        bb.Site.from_functions("h", 3, lambda x: x, lambda a, x: a, ablation="noise")


def test_half_a_cached_pair_beside_an_in_place_network_is_refused():
    # No site kind has a prefix without its suffix (or the reverse): the evaluator would call
    # the missing half.
    def apply(x, ablate):
        return ablate(x)

    for half in ({"prefix": lambda x: x}, {"suffix": lambda h, x: h}):
        with pytest.raises(ValueError, match=r"give exactly one of prefix\+suffix \(cached\)"):
            bb.Site(name="bad", num_units=3, apply=apply, **half)


def test_mean_ablation_of_an_in_place_site_without_reference_is_one_line():
    # Site.in_place refuses it; the constructor and dataclasses.replace reach ablation_value.
    site = bb.Site(name="rnn", num_units=3, apply=lambda x, ablate: ablate(x), ablation="mean")
    with pytest.raises(ValueError) as info:
        bb.Task.build(site, jnp.ones((2, 3)), bb.rules.top1(np.array([0, 1])))
    assert str(info.value) == ("Site 'rnn': mean ablation of an in-place site needs `reference` "
                               "activations; build it with Site.in_place(..., reference=...).")


def test_nnx_model_site_matches_a_hand_written_lesion():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.l1(x)))

    net = Net(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (32, 4))
    with pytest.raises(ValueError, match=r"Unknown site .l9.*: l1 \(32, 8\) x1, l2 \(32, 3\) x1"):
        bb.nnx_site(net, "l9", x)
    site = bb.nnx_site(net, "l1", x)
    targets = jnp.argmax(net(x), -1)
    task = bb.Task.build(site, x, bb.rules.top1(targets))
    mask = jnp.array([1, 0, 1, 1, 0, 1, 1, 1], jnp.float32)
    expect = net.l2(nnx.relu(net.l1(x) * mask[None]))
    np.testing.assert_allclose(task.outputs_fn(task.data, mask), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(task.outputs_fn(task.data, jnp.ones(8)), net(x), atol=1e-5)


def test_the_masked_evaluator_compiles_once_for_any_number_of_masks(mlp):
    model, variables, x, ys = mlp
    task = bb.Task.build(bb.flax_site(model, variables, "Dense_0", x), x, _rule(ys))
    from bablate.tasks import evaluator

    fn = evaluator(task, smooth=False)
    before = fn._cache_size()  # Task.build already scored the intact mask (one shape)
    for m in (5, 7, 6, 300, 2000, 700):
        task.log_odds(np.ones((m, 12), np.float32), chunk_size=256)
    # Chunks are padded to power-of-two buckets: 5-7 masks share one shape, >= 256 another.
    assert fn._cache_size() - before == 2


def test_mean_ablation_of_multi_dimensional_units_keeps_each_units_mean_vector():
    # Units = "heads": activation [N, H=3, D=2], units on axis 1.
    act = jax.random.normal(jax.random.key(0), (50, 3, 2))
    site = bb.Site.from_functions("heads", 3, lambda x: x, lambda a, x: a.reshape(50, 6),
                                  unit_axis=1, ablation="mean")
    rule = bb.rules.custom(lambda out, _: jnp.ones(out.shape[0]), name="always")
    task = bb.Task.build(site, act, rule)
    out = task.outputs_fn(task.data, jnp.array([1.0, 0.0, 1.0]))
    expect = act.at[:, 1, :].set(act[:, 1, :].mean(0)[None]).reshape(50, 6)
    np.testing.assert_allclose(out, expect, rtol=1e-6, atol=1e-6)


def test_mask_aware_site_hands_the_mask_to_the_network():
    # Units spread over two "layers": the network applies mask[:2] and mask[2:] itself.
    def network(mask, x):
        h = jnp.tanh(x * mask[None, :2].sum(-1, keepdims=True))
        return h * mask[None, 2:].sum(-1, keepdims=True)

    x = jnp.linspace(-1, 1, 8)[:, None]
    site = bb.Site.mask_aware("spread", 4, network)
    rule = bb.rules.custom(lambda out, _: (out[:, 0] > -2).astype(jnp.float32), name="ok")
    task = bb.Task.build(site, x, rule)
    mask = jnp.array([1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(task.outputs_fn(task.data, mask), network(mask, x))
    assert "zero ablation" in site.identity
    # The network applies its own ablation value; `ablation` names it for reports, and what
    # the network cannot do through the mask alone is refused.
    assert "mean ablation" in bb.Site.mask_aware("spread", 4, network, ablation="mean").identity
    with pytest.raises(ValueError, match="applies masks itself"):
        bb.Site(name="bad", num_units=4, apply_mask=network, ablation="resample")
    with pytest.raises(ValueError, match="applies masks itself"):
        bb.Site(name="bad", num_units=4, apply_mask=network,
                basis=bb.Basis.orthogonal(jnp.eye(4)))
