"""bablate.testbeds.toy: the hidden site and "feature i reconstructed" tasks of toy models,
checked against the full model's forward pass and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate.models import toy
from bablate.testbeds import toy as toy_testbed


def _trained_like(spec: toy.ToySpec, seed: int) -> dict:
    """Random parameters of one instance (the testbed needs no training to be checked)."""
    params = toy.init_params(spec, jax.random.key(seed))
    return jax.tree.map(lambda a: a + 0.05, params)  # a nonzero bias too


@pytest.mark.parametrize("kind", ["relu_out", "linear", "relu_hidden"])
def test_task_inputs_are_conditioned_and_read_out_as_the_full_model(kind):
    spec = toy.ToySpec(6, 3, kind, toy.importance_geometric(6, 0.8))
    params = _trained_like(spec, 0)
    feature, num_pos, num_neg = 4, 40, 24
    x, hidden, target, out = toy_testbed.task_inputs(
        spec, params, jax.random.key(1), jnp.float32(0.3), jnp.int32(feature), num_pos, num_neg)
    x = np.asarray(x)
    assert x.shape == (num_pos + num_neg, 6)
    assert np.all(x[:num_pos, feature] != 0) and np.all(x[num_pos:, feature] == 0)
    model = spec.model()
    full = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
    # The readout after the hidden site is exactly the rest of the network.
    np.testing.assert_allclose(np.asarray(out), full[:, feature], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(hidden),
        np.asarray(model.apply({"params": params}, jnp.asarray(x), method="encode")),
        rtol=1e-6)
    expected_target = np.abs(x[:, feature]) if kind == "relu_hidden" else x[:, feature]
    np.testing.assert_array_equal(np.asarray(target), expected_target)


def test_feature_task_scores_masks_as_counted_by_hand():
    spec = toy.ToySpec(5, 2, "relu_out", toy.importance_geometric(5, 0.9))
    params = {"W": jnp.array([[1.0, -1.0, 0.0, 0.3, 0.0], [0.0, 0.0, 1.0, 0.2, 0.0]]),
              "b": jnp.zeros((5,))}
    key, eps, num_pos, num_neg, feature = jax.random.key(2), 0.25, 30, 20, 3
    task, intact = toy_testbed.feature_task(spec, params, 0.2, feature, key, epsilon=eps,
                                            num_positive=num_pos, num_negative=num_neg)
    assert task.name == "feature 3" and task.num_units == 2
    x = np.asarray(toy_testbed.task_inputs(spec, params, key, jnp.float32(0.2),
                                           jnp.int32(feature), num_pos, num_neg)[0])
    positive = np.arange(num_pos + num_neg) < num_pos

    def smoothed(correct):
        # Beta(1,1)-smoothed sensitivity and specificity, averaged.
        sens = (correct[positive].sum() + 1) / (num_pos + 2)
        spec_ = (correct[~positive].sum() + 1) / (num_neg + 2)
        return 0.5 * (sens + spec_)

    full = np.maximum(x @ np.asarray(params["W"]).T @ np.asarray(params["W"])[:, feature], 0)
    p_intact = smoothed(np.abs(full - x[:, feature]) < eps)
    np.testing.assert_allclose(intact, p_intact, rtol=1e-6)
    # Every unit zeroed: the output is relu(b_i) = 0, right on every negative and on the
    # positives with x_i < ε.
    p_none = smoothed(np.abs(x[:, feature]) < eps)
    got = task.p_correct(np.array([[1, 1], [0, 0]], bool))
    np.testing.assert_allclose(got, [p_intact, p_none], rtol=1e-5)


def test_feature_task_posterior_of_a_hand_built_code():
    # Feature 2 owns hidden dim 1; dim 0 carries features 0 and 1 only, so task 2 needs dim 1
    # and is indifferent to dim 0 (its marginal stays exactly at the prior).
    spec = toy.ToySpec(4, 2, "relu_out", (1.0,) * 4)
    params = {"W": jnp.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]),
              "b": jnp.zeros((4,))}
    task, intact = toy_testbed.feature_task(spec, params, 0.05, 2, jax.random.key(3),
                                            epsilon=0.1, num_positive=200, num_negative=200)
    assert intact > 0.99
    post = bb.infer(task, method="exact")
    assert post.marginals[1] > 0.9
    np.testing.assert_allclose(post.marginals[0], 0.5, atol=1e-6)


def test_hidden_site_prefix_and_suffix_compose_to_the_model():
    spec = toy.ToySpec(6, 4, "relu_hidden", toy.importance_geometric(6, 0.8))
    params = _trained_like(spec, 4)
    x = toy.sample_features(jax.random.key(5), 16, 6, 0.5, signed=True)
    site = toy_testbed.hidden_site(spec, params)
    assert site.num_units == 4
    out = site.suffix(site.prefix(x), x)
    full = spec.model().apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), rtol=1e-5, atol=1e-6)


def test_feature_tasks_of_one_instance_share_one_compiled_enumeration(monkeypatch):
    import chex

    from bablate import programs

    spec = toy.ToySpec(6, 3, "relu_out", toy.importance_geometric(6, 0.8))
    params = _trained_like(spec, 7)
    site = toy_testbed.hidden_site(spec, params)
    tasks = [toy_testbed.feature_task(spec, params, 0.3, i, jax.random.key(i), epsilon=0.25,
                                      num_positive=32, num_negative=32, site=site)[0]
             for i in range(3)]
    monkeypatch.setattr(programs, "trace_guard", lambda f: chex.assert_max_traces(f, n=1))
    programs.clear_cache()
    posts = [bb.infer(t, method="exact") for t in tasks]
    assert len(programs._PROGRAMS) == 1  # one scorer, traced once, for every feature
    programs.clear_cache()
    # The shared program scores each feature's own output: against its P(correct) by mask.
    masks = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1], [0, 0, 0]], np.float32)
    for i, (task, post) in enumerate(zip(tasks, posts, strict=True)):
        x = task.data["inputs"]
        for mask, p in zip(masks, task.p_correct(masks), strict=True):
            h = np.asarray(x) @ np.asarray(params["W"]).T * mask
            out = np.maximum(h @ np.asarray(params["W"])[:, i] + float(params["b"][i]), 0)
            hit = np.abs(out - np.asarray(x)[:, i]) < 0.25
            want = 0.5 * ((hit[:32].sum() + 1) / 34 + (hit[32:].sum() + 1) / 34)
            np.testing.assert_allclose(p, want, rtol=1e-5)
        assert post.marginals.shape == (3,)


def test_heldout_loss_of_the_zero_model_is_the_closed_form():
    # W = 0, b = 0: the output is 0, so the loss is Σ_i I_i E[x_i²] = (1 − S) / 3 · Σ_i I_i.
    spec = toy.ToySpec(5, 2, "relu_out", toy.importance_geometric(5, 0.7))
    params = {"W": jnp.zeros((2, 5)), "b": jnp.zeros((5,))}
    density = 0.2
    loss = float(toy_testbed.heldout_loss(spec, params, jax.random.key(6), jnp.float32(density),
                                          num_blocks=4, block=32_768))
    np.testing.assert_allclose(loss, density / 3 * sum(spec.importance), rtol=0.02)


def test_feature_out_of_range_is_one_clear_line():
    spec = toy.ToySpec(3, 2, "relu_out", (1.0, 1.0, 1.0))
    params = toy.init_params(spec, jax.random.key(0))
    with pytest.raises(ValueError, match=r"feature 3 is out of range .* pick one in 0\.\.2"):
        toy_testbed.feature_task(spec, params, 0.1, 3, jax.random.key(0), epsilon=0.1,
                                 num_positive=4, num_negative=4)


def test_abs_task_set_shares_one_probe_set_and_scores_each_feature():
    """Every feature's |x| task reads the same probes: N = n (P + Q) signed draws, positives
    where x_i ≠ 0; the intact model's P(correct) of each task is its balanced hit rate."""
    spec = toy.ToySpec(4, 2, "relu_hidden", toy.importance_geometric(4, 0.9))
    params = _trained_like(spec, 3)
    tasks = toy_testbed.abs_task_set(spec, params, 0.3, jax.random.key(2), epsilon=0.3,
                                     num_positive=5, num_negative=3)
    assert tasks.names == ["|x0|", "|x1|", "|x2|", "|x3|"]
    x = np.asarray(tasks.data["inputs"])
    assert x.shape == (4 * 8, 4) and (x < 0).any()  # signed draws
    for i, task in enumerate(tasks):
        np.testing.assert_array_equal(task.rule.positive, x[:, i] != 0)
    out = np.asarray(spec.model().apply({"params": params}, x))
    hit = (np.abs(out - np.abs(x)) < 0.3).astype(np.float32)
    want = [float(bb.rules.p_correct_from(hit[:, i], x[:, i] != 0)) for i in range(4)]
    np.testing.assert_allclose(tasks.p_correct(np.ones((1, 2), np.float32))[:, 0], want,
                               rtol=1e-6)
