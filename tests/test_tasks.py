"""Tasks and rules: the top-1 tie rule, and bad input refused with one clear error each."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb


class BiasFreeReadout(nn.Module):
    """The README's MLP with a bias-free output layer: zero ablation of every hidden unit
    makes every logit exactly 0 (a three-way tie on every example)."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, use_bias=False)(nn.relu(nn.Dense(8, name="hidden")(x)))


@pytest.fixture(scope="module")
def readme_mlp():
    x = jax.random.normal(jax.random.key(0), (512, 4))
    model = BiasFreeReadout()
    variables = model.init(jax.random.key(1), x)
    site = bb.flax_site(model, variables, "hidden", x)
    pred = np.asarray(model.apply(variables, x).argmax(-1))
    return site, x, pred


def test_a_tie_for_the_maximum_is_not_a_correct_answer(readme_mlp):
    site, x, pred = readme_mlp
    n = len(pred)
    task = bb.Task.build(site, x, bb.rules.top1(pred))
    # Closed form: all units off -> all logits 0 -> no example correct -> P = 1/(n+2).
    np.testing.assert_allclose(task.p_correct(np.zeros((1, 8))), [1 / (n + 2)], rtol=1e-6)
    # The intact network predicts its own arg-max: every example correct unless tied.
    np.testing.assert_allclose(task.p_correct(np.ones((1, 8))), [(n + 1) / (n + 2)], rtol=1e-6)
    # The old behaviour, explicitly: a tie counts as correct, so all-off looks intact.
    old = bb.Task.build(site, x, bb.rules.top1(pred, ties="correct"))
    np.testing.assert_allclose(old.p_correct(np.zeros((1, 8))), [(n + 1) / (n + 2)], rtol=1e-6)
    # Under the tie rule the all-off mask is no longer a sizeable part of the posterior.
    post, old_post = bb.infer(task, "exact"), bb.infer(old, "exact")
    assert np.exp(post.log_probs[0]) < 1e-3 < np.exp(old_post.log_probs[0])


def test_top1_tie_rule_against_a_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 3, size=(200, 4)).astype(np.float32)  # many ties
    y = rng.integers(0, 4, size=200)
    site = bb.Site.from_functions("id", 4, lambda x: x, lambda a, x: a)
    task = bb.Task.build(site, logits, bb.rules.top1(y), check_intact=False)
    others = np.where(np.eye(4, dtype=bool)[y], -np.inf, logits).max(1)
    correct = (logits[np.arange(200), y] > others).sum()
    np.testing.assert_allclose(task.p_correct(np.ones((1, 4))), [(correct + 1) / 202], rtol=1e-6)


def test_one_vs_rest_against_a_numpy_reference():
    """Class 2 of a 4-class head against the rest: "yes" where 2 is the unique arg-max; P
    is the mean of the Beta(1,1)-smoothed sensitivity and specificity, under masks too."""
    rng = np.random.default_rng(1)
    logits = rng.integers(0, 3, size=(300, 4)).astype(np.float32)  # many ties
    y = rng.integers(0, 4, size=300)
    site = bb.Site.from_functions("id", 4, lambda x: x, lambda a, x: a)
    task = bb.Task.build(site, logits, bb.rules.one_vs_rest(y, 2), check_intact=False)
    masks = np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], np.float32)
    expected = []
    for m in masks:
        z = logits * m
        yes = z[:, 2] > np.delete(z, 2, axis=1).max(1)
        pos = y == 2
        sens = ((yes & pos).sum() + 1) / (pos.sum() + 2)
        spec = ((~yes & ~pos).sum() + 1) / ((~pos).sum() + 2)
        expected.append((sens + spec) / 2)
    np.testing.assert_allclose(task.p_correct(masks), expected, rtol=1e-6)
    # The smooth rule: softmax probability of class 2 for positives, one minus it otherwise.
    p2 = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    soft = np.where(y == 2, p2[:, 2], 1 - p2[:, 2])
    pos = y == 2
    smooth = ((soft[pos].sum() + 1) / (pos.sum() + 2)
              + (soft[~pos].sum() + 1) / ((~pos).sum() + 2)) / 2
    np.testing.assert_allclose(task.p_correct(masks[:1], smooth=True), [smooth], rtol=1e-5)


@pytest.mark.parametrize("targets,cls,message", [
    (np.array([0, 1, 2]), 3, r"class 3 is out of range for 3 logits"),
    (np.array([0, 1, 2]), -1, r"positive_class must be a class index >= 0"),
    (np.array([0.0, 1.0, 2.0]), 1, r"must be integer class indices"),
    (np.array([0, 1]), 1, r"gives 3 examples but there are 2 targets"),
])
def test_bad_one_vs_rest_input_is_refused(targets, cls, message):
    with pytest.raises(ValueError, match=message):
        bb.Task.build(_identity_site(), np.eye(3, dtype=np.float32),
                      bb.rules.one_vs_rest(targets, cls))


def _identity_site(d=3):
    return bb.Site.from_functions("id", d, lambda x: x, lambda a, x: a)


@pytest.mark.parametrize("targets,message", [
    (np.array([0, 1, 3]), r"target class 3 is out of range for 3 logits"),
    (np.array([0, -1, 2]), r"class indices >= 0"),
    (np.array([0.0, 1.0, 2.0]), r"must be integer class indices, got dtype float64"),
    (np.array([0, 1]), r"gives 3 examples but there are 2 targets"),
])
def test_bad_top1_targets_are_refused(targets, message):
    with pytest.raises(ValueError, match=message):
        bb.Task.build(_identity_site(), np.eye(3, dtype=np.float32), bb.rules.top1(targets))


def test_top1_unknown_tie_rule_is_refused():
    with pytest.raises(ValueError, match="unknown ties='maybe'"):
        bb.rules.top1(np.array([0]), ties="maybe")


def test_binary_rule_needs_one_score_per_example():
    with pytest.raises(ValueError, match=r"binary rule: outputs must be one score per example.*"
                       r"one_vs_rest\(targets, c\) for one class"):
        bb.Task.build(_identity_site(), np.eye(3, dtype=np.float32),
                      bb.rules.binary(np.array([True, False, True])))


def test_binary_targets_of_the_wrong_length_are_refused():
    site = bb.Site.from_functions("s", 3, lambda x: x, lambda a, x: a.sum(-1))
    with pytest.raises(ValueError, match=r"gives 4 examples but there are 3 targets"):
        bb.Task.build(site, np.ones((4, 3), np.float32), bb.rules.binary(np.ones(3, bool)))


def test_an_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset is empty"):
        bb.Task.build(_identity_site(), np.zeros((0, 3), np.float32),
                      bb.rules.top1(np.zeros(0, int)))


@pytest.mark.parametrize("bad", [1.5, -0.2, np.nan])
def test_masks_outside_zero_one_are_refused(bad):
    task = bb.Task.build(_identity_site(), np.eye(3, dtype=np.float32),
                         bb.rules.top1(np.arange(3)))
    masks = np.array([[1.0, bad, 1.0]])
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        task.log_odds(masks)
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        task.p_correct(masks)
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        bb.mask_activation(jnp.ones((2, 3)), jnp.asarray(masks[0]), 0.0)


@pytest.mark.parametrize("beta", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("method", ["exact", "mcmc", "svi"])
def test_a_negative_or_non_finite_beta_is_refused_by_name(beta, method):
    task = bb.Task.build(_identity_site(), np.eye(3, dtype=np.float32),
                         bb.rules.top1(np.arange(3)))
    with pytest.raises(ValueError, match=r"beta \(β"):
        bb.infer(task, method, key=jax.random.key(0), beta=beta)


@pytest.mark.parametrize("method", ["mcmc", "svi"])
def test_an_integer_key_is_refused(method):
    task = bb.Task.build(_identity_site(), np.eye(3, dtype=np.float32),
                         bb.rules.top1(np.arange(3)))
    with pytest.raises(TypeError, match=r"key must be a JAX PRNG key such as jax.random.key"):
        bb.infer(task, method, key=123)


@pytest.mark.parametrize("kwargs,message", [
    (dict(encoder=np.ones((3, 2)), decoder=np.ones((3, 2))), r"encoder must be \[d_act, k\]"),
    (dict(encoder=np.ones((3,)), decoder=np.ones((3,))), r"encoder must be \[d_act, k\]"),
    (dict(encoder=np.ones((3, 2)), decoder=np.ones((2, 3)), center=np.ones(2)),
     r"center must be \[d_act\] = \(3,\)"),
])
def test_a_basis_with_wrong_shapes_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bb.Basis(**kwargs)


def test_unit_axis_on_the_example_axis_is_refused():
    site = bb.Site.from_functions("h", 4, lambda x: x, lambda a, x: a, unit_axis=0)
    with pytest.raises(ValueError, match=r"unit_axis=0 is the example axis"):
        bb.Task.build(site, np.ones((4, 4), np.float32), bb.rules.top1(np.zeros(4, int)))


@pytest.mark.parametrize("max_units,message", [
    (8, r"needs 2\^10 masks, above max_units=8; raise max_units \(up to 24\)"),
    (30, r"max_units=30 is above the largest enumerable site"),
])
def test_exact_size_messages_say_what_is_possible(max_units, message):
    site = bb.Site.from_functions("h", 10, lambda x: x, lambda a, x: a)
    task = bb.Task.build(site, np.eye(10, dtype=np.float32), bb.rules.top1(np.arange(10)))
    with pytest.raises(ValueError, match=message):
        bb.infer(task, "exact", max_units=max_units)


# ---- TaskSet: one site, one dataset, many rules ---------------------------------------------


@pytest.fixture(scope="module")
def head_task_set():
    from core_models import head_rule, trained_mlp

    model, variables, x, ys = trained_mlp(hidden=8)
    site = bb.flax_site(model, variables, "Dense_0", x)
    rules = {"sum": head_rule(ys, "sum"), "diff": head_rule(ys, "diff"),
             "top1": bb.rules.top1(np.asarray(model.apply(variables, x)).argmax(-1))}
    return bb.TaskSet.build(site, x, rules), model, variables, x


def test_task_set_tasks_share_the_same_data_objects(head_task_set):
    task_set, *_ = head_task_set
    assert task_set.names == ["sum", "diff", "top1"] and len(task_set) == 3
    first = task_set[0]
    for task in task_set:
        for k in ("inputs", "act", "value"):
            assert task.data[k] is first.data[k] is task_set.data[k]
        assert task.data["rule"] is task.rule.data
    # A slice is the task set of those tasks, still sharing the site and the dataset.
    part = task_set[1:]
    assert isinstance(part, bb.TaskSet) and part.names == ["diff", "top1"]
    assert part.site is task_set.site and part.data["inputs"] is task_set.data["inputs"]
    np.testing.assert_array_equal(part.p_correct(np.ones((1, 8), np.float32)),
                                  task_set.p_correct(np.ones((1, 8), np.float32))[1:])
    # Task.build_many is the same construction, as a list.
    assert isinstance(bb.Task.build_many(first.site, first.data["inputs"],
                                         {"sum": first.rule}), list)


def test_task_set_outputs_are_the_networks_outputs(head_task_set):
    task_set, model, variables, x = head_task_set
    masks = np.ones((2, 8), np.float32)
    masks[1, :3] = 0.0
    out = task_set.outputs(masks)
    # The intact mask against flax's own forward pass; the ablated one by hand (zero
    # ablation of the first three hidden units, then the read-out layer).
    np.testing.assert_allclose(out[0], model.apply(variables, x), atol=1e-5)
    params = variables["params"]
    hidden = np.maximum(np.asarray(x) @ params["Dense_0"]["kernel"]
                        + params["Dense_0"]["bias"][None], 0.0) * masks[1][None]
    np.testing.assert_allclose(
        out[1], hidden @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"][None],
        atol=1e-5)


def test_task_set_p_correct_equals_each_tasks_own(head_task_set):
    task_set, *_ = head_task_set
    rng = np.random.default_rng(0)
    masks = (rng.random((20, 8)) < 0.5).astype(np.float32)
    together = task_set.p_correct(masks)
    assert together.shape == (3, 20)
    for row, task in zip(together, task_set, strict=True):
        np.testing.assert_allclose(row, task.p_correct(masks), rtol=1e-6)
    np.testing.assert_allclose(task_set.log_odds(masks),
                               np.stack([t.log_odds(masks) for t in task_set]), atol=1e-5)
    # Each task under its own masks: [T, M, d] -> [T, M].
    own = (rng.random((3, 5, 8)) < 0.5).astype(np.float32)
    each = task_set.p_correct(own)
    for j, task in enumerate(task_set):
        np.testing.assert_allclose(each[j], task.p_correct(own[j]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"must have T = 3"):
        task_set.p_correct(own[:2])


def test_exact_many_on_a_task_set_equals_exact_per_task(head_task_set):
    task_set, *_ = head_task_set
    together = bb.inference.exact_many(task_set, prior=0.3, beta=1.5)
    as_list = bb.inference.exact_many(list(task_set), prior=0.3, beta=1.5)
    for task, post, listed in zip(task_set, together, as_list, strict=True):
        alone = bb.infer(task, "exact", prior=0.3, beta=1.5)
        np.testing.assert_allclose(post.log_probs, alone.log_probs, atol=1e-5)
        np.testing.assert_array_equal(post.log_probs, listed.log_probs)
        assert post.task == task.name


def test_an_empty_task_set_is_refused():
    with pytest.raises(ValueError, match="at least one rule"):
        bb.TaskSet.build(_identity_site(), np.eye(3, dtype=np.float32), {})


def test_task_sets_on_one_site_share_one_compiled_outputs_program(head_task_set, monkeypatch):
    import chex

    from bablate import programs

    task_set, *_ = head_task_set
    site, x = task_set.site, task_set.data["inputs"]
    other = bb.TaskSet.build(site, x + 1.0, {"sum": task_set[0].rule}, check_intact=False)
    monkeypatch.setattr(programs, "trace_guard", lambda f: chex.assert_max_traces(f, n=1))
    programs.clear_cache()
    masks = np.ones((4, 8), np.float32)
    first, second = task_set.outputs(masks), other.outputs(masks)
    assert not np.allclose(first, second)  # other data, same program
    programs.clear_cache()


def test_site_task_and_task_set_print_compactly(readme_mlp):
    """Name, d, examples and rules, not the functions' addresses and the dataset's arrays
    (the dataclass reprs ran to thousands of characters)."""
    site, x, pred = readme_mlp
    task = bb.Task.build(site, x, bb.rules.top1(pred), name="all")
    task_set = bb.TaskSet.build(site, x, {f"class {c}": bb.rules.one_vs_rest(pred, c)
                                          for c in range(3)})
    assert repr(site) == "Site('hidden', d=8, cached, zero ablation)"
    assert repr(task) == "Task('all', site 'hidden' (d=8), 512 examples, rule top1)"
    assert repr(task.rule) == "Rule('top1', 512 targets)"
    assert repr(task_set) == (
        "TaskSet(site 'hidden' (d=8), 512 examples, 3 tasks: 'class 0' [one_vs_rest(0)], "
        "'class 1' [one_vs_rest(1)], 'class 2' [one_vs_rest(2)])")
    assert repr(task_set.tasks[0].rule) == (
        "Rule('one_vs_rest(0)', 512 targets, sensitivity and specificity)")
    rnn = bb.Site.in_place("h", 3, lambda x, ablate: ablate(x), unit_axis=1, ablation="mean",
                           reference=np.ones((2, 3), np.float32))
    assert repr(rnn) == "Site('h', d=3, in place, mean ablation, unit_axis=1)"
