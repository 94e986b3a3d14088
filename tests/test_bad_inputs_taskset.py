"""Task sets of tasks that do not share one site and one dataset, and rules that are not rules:
one line naming the task and the fix. A task set evaluates every rule on its first task's site
and data, so mixing silently returned task 2's posterior computed on task 1's network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb

X = jax.random.normal(jax.random.key(2), (50, 3))
Y = (X[:, 0] > 0).astype(np.int32)
FIX = ("; a task set holds tasks of one site and one dataset: build it with "
       "TaskSet.build(site, inputs, rules), or pass the tasks to bb.infer_many as a list (each "
       "is then inferred on its own site and data).")


def _site(name: str, seed: int) -> bb.Site:
    w = jax.random.normal(jax.random.key(seed), (3, 2))
    return bb.Site.from_functions(name, 3, prefix=lambda x: x, suffix=lambda h, x: h @ w)


SITE, OTHER = _site("h", 1), _site("h2", 5)


def _task(site: bb.Site, x, name: str) -> bb.Task:
    return bb.Task.build(site, x, bb.rules.top1((x[:, 0] > 0).astype(np.int32)), name=name,
                         check_intact=False)


def _one_line(info) -> str:
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("rule", [np.asarray(Y), jnp.asarray(Y), [0, 1]],
                         ids=["numpy", "jax", "list"])
def test_raw_targets_as_a_rule_are_one_line(rule):
    fix = ("the rule must be a bablate Rule, got {}; wrap the targets in one, e.g. "
           "bb.rules.top1(targets) or bb.rules.binary(targets).")
    with pytest.raises(TypeError) as info:
        bb.TaskSet.build(SITE, X, {"a": bb.rules.top1(Y), "b": rule})
    assert _one_line(info) == "TaskSet.build, task 'b': " + fix.format(type(rule).__name__)
    with pytest.raises(TypeError) as info:
        bb.Task.build(SITE, X, rule, name="a")
    assert _one_line(info) == "Task 'a': " + fix.format(type(rule).__name__)


def test_rules_not_in_a_dict_are_one_line():
    with pytest.raises(TypeError) as info:
        bb.TaskSet.build(SITE, X, [bb.rules.top1(Y)])
    assert _one_line(info) == "TaskSet.build: rules must be a dict of task name -> Rule, got list."


def test_task_set_over_two_datasets_is_one_line_and_one_dataset_built_apart_is_not():
    t1 = _task(SITE, X, "t1")
    x2 = jax.random.normal(jax.random.key(3), (30, 3))
    with pytest.raises(ValueError) as info:
        bb.TaskSet.of([t1, _task(SITE, x2, "t2")])
    assert _one_line(info) == "TaskSet.of: task 't2' has other inputs than task 't1'" + FIX
    # Equal data need not be the same objects: two Task.build calls on the same inputs.
    t2 = bb.Task.build(SITE, X, bb.rules.top1(1 - Y), name="t2", check_intact=False)
    assert t1.data["act"] is not t2.data["act"]
    posts = bb.infer_many(bb.TaskSet.of([t1, t2]), "exact")
    for task, post in zip((t1, t2), posts, strict=True):
        np.testing.assert_allclose(post.marginals, bb.infer(task, method="exact").marginals,
                                   atol=1e-6)


def test_task_set_over_two_sites_of_one_shape_is_refused_not_silent():
    t1, t3 = _task(SITE, X, "t1"), _task(OTHER, X, "t3")
    with pytest.raises(ValueError) as info:
        bb.TaskSet.of([t1, t3])
    assert _one_line(info) == (
        "TaskSet.of: task 't3' is on another site than task 't1' (h2 (d=3, zero ablation), not "
        "the same object as h (d=3, zero ablation))" + FIX)
    # The fix the message names gives each task its own network's posterior.
    posts = bb.infer_many([t1, t3], "exact")
    for task, post in zip((t1, t3), posts, strict=True):
        np.testing.assert_allclose(post.marginals, bb.infer(task, method="exact").marginals,
                                   atol=1e-6)
    assert np.abs(posts[1].marginals - posts[0].marginals).max() > 0.05  # the sites differ


def test_task_set_of_other_activations_or_ablation_values_is_one_line():
    site = bb.Site.from_functions("h", 3, prefix=lambda x: x, suffix=SITE.suffix,
                                  ablation="resample")
    t1 = _task(site, X, "t1")
    t2 = bb.Task.build(site, X, bb.rules.top1(Y), name="t2", check_intact=False,
                       activation=X + 1.0)
    with pytest.raises(ValueError) as info:
        bb.TaskSet.of([t1, t2])
    assert _one_line(info) == ("TaskSet.of: task 't2' has other cached activation than task "
                               "'t1'" + FIX)
    t3 = bb.Task.build(site, X, bb.rules.top1(Y), name="t3", check_intact=False,
                       key=jax.random.key(7))  # another resampling permutation
    with pytest.raises(ValueError) as info:
        bb.TaskSet.of([t1, t3])
    assert _one_line(info) == "TaskSet.of: task 't3' has other ablation value than task 't1'" + FIX


def test_task_set_of_something_else_than_tasks_is_one_line():
    with pytest.raises(TypeError) as info:
        bb.TaskSet.of([_task(SITE, X, "t1"), np.asarray(Y)])
    assert _one_line(info) == "TaskSet.of takes Task objects; item 1 is a ndarray."
