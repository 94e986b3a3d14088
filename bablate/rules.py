"""Correctness rules: a network's outputs -> per-example correctness, and P(correct) from it.

A :class:`Rule` reads the outputs of the network under one mask and says, per example, whether
it is right (``hard``, 0/1: the likelihood of the AMD) and how nearly (``soft``, in [0, 1]:
the smooth likelihood and the gradient-informed proposals). :func:`p_correct_from` turns
per-example correctness into the Beta(1,1)-smoothed P(correct) whose odds are the likelihood
(see :mod:`bablate.tasks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Array = jax.Array
_A = TypeVar("_A", jax.Array, np.ndarray)  # traced or host arrays, out as they came in

__all__ = ["TIES", "Rule", "binary", "custom", "one_vs_rest", "p_correct_from", "smooth_top1",
           "top1"]


@dataclasses.dataclass(frozen=True, eq=False)
class Rule:
    """A correctness rule: outputs -> per-example correctness in [0, 1].

    Attributes:
      name: for reports.
      hard: ``(outputs, data) -> [N]`` 0/1 correctness (the reference likelihood).
      soft: ``(outputs, data) -> [N]`` differentiable surrogate in [0, 1] (smooth likelihood,
        gradient-informed proposals, relaxed SVI); None if the rule has none.
      data: arrays the rule reads (targets...), passed as jit arguments.
      positive: ``[N]`` bool marking positives for the balanced estimate, or None (pooled).
    """

    name: str
    hard: Callable[[Any, Any], Array]
    soft: Callable[[Any, Any], Array] | None
    data: Any
    positive: Array | None = None
    check: Callable[[Any, Any], None] | None = None

    def __repr__(self) -> str:
        n = num_examples(self.data) if self.data is not None else None
        return (f"Rule({self.name!r}" + (f", {n} targets" if n is not None else "")
                + (", sensitivity and specificity" if self.positive is not None else "") + ")")


def _check_targets(targets, n_dim: int, what: str) -> Array:
    targets = jnp.asarray(targets)
    if targets.ndim != n_dim:
        raise ValueError(f"{what}: targets must have {n_dim} dimension(s), got shape "
                         f"{tuple(targets.shape)}.")
    return targets


def num_examples(outputs) -> int | None:
    """The example count of a rule's outputs (their leading axis), or None for a scalar."""
    leaves = jax.tree.leaves(outputs)
    if not leaves or not leaves[0].shape:
        return None
    return int(leaves[0].shape[0])


def check_same_length(what: str, outputs, targets) -> None:
    n = num_examples(outputs)
    if n is not None and n != targets.shape[0]:
        raise ValueError(f"{what}: the network gives {n} examples but there are "
                         f"{targets.shape[0]} targets; pass one target per input example.")


def binary(targets: ArrayLike, threshold: float = 0.0, temperature: float = 1.0) -> Rule:
    """Binary classification read off a score: predicted positive where ``output > threshold``.

    Outputs must be ``[N]`` scores. Sensitivity and specificity are estimated separately.
    The smooth surrogate is ``sigmoid((output - threshold)/temperature)`` for the target class.
    For one class against the rest of a multi-class head's ``[N, C]`` logits use
    :func:`one_vs_rest`.
    """
    targets = _check_targets(targets, 1, "binary rule").astype(bool)

    def hard(out, y):
        return ((out > threshold) == y).astype(jnp.float32)

    def soft(out, y):
        p = jax.nn.sigmoid((out - threshold) / temperature)
        return jnp.where(y, p, 1.0 - p)

    def check(out, y):
        if not hasattr(out, "shape") or len(out.shape) != 1:
            raise ValueError(f"binary rule: outputs must be one score per example, shape [N]; "
                             f"got {getattr(out, 'shape', type(out).__name__)}. Use top1 for "
                             "[N, C] logits, one_vs_rest(targets, c) for one class of them "
                             "against the rest, or index the score column in the suffix.")
        check_same_length("binary rule", out, y)

    return Rule("binary", hard, soft, targets, positive=targets, check=check)


TIES = ("wrong", "correct")


def _class_targets(targets, what: str) -> Array:
    """Integer class indices ``[N]``, refusing floats and negative values."""
    arr = np.asarray(targets)
    if arr.ndim != 1:
        raise ValueError(f"{what}: targets must be one class index per example, shape [N]; got "
                         f"shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: targets must be integer class indices, got dtype "
                         f"{arr.dtype}; convert them with y.astype(int) (or use bablate.rules."
                         "binary for scores).")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{what}: targets must be class indices >= 0, got {int(arr.min())}.")
    return jnp.asarray(arr, jnp.int32)


def top1(targets: ArrayLike, ties: str = "wrong") -> Rule:
    """Multi-class / next token: correct when the target is the unique arg-max of ``[N, C]``
    logits.

    Args:
      targets: ``[N]`` integer class indices in ``[0, C)``.
      ties: "wrong" (default): a tie for the maximum is not a correct answer, so a network
        whose ablated read-out gives equal logits (e.g. zero ablation before a bias-free
        layer makes every logit 0) is not credited with the task. "correct" counts a target
        tied for the maximum as correct (the behaviour of bablate 0.1.0).

    The smooth surrogate is the softmax probability of the target.
    """
    if ties not in TIES:
        raise ValueError(f"top1 rule: unknown ties={ties!r}; choose one of {TIES}.")
    targets = _class_targets(targets, "top1 rule")

    def hard(logits, y):
        target = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
        if ties == "correct":
            return (target >= logits.max(axis=-1)).astype(jnp.float32)
        # Comparing with the best other logit costs one fused pass, like the maximum (an
        # arg-max is several times slower on CPU).
        is_target = jnp.arange(logits.shape[-1])[None, :] == y[:, None]
        others = jnp.where(is_target, -jnp.inf, logits).max(axis=-1)
        return (target > others).astype(jnp.float32)

    def check(logits, y):
        if not hasattr(logits, "shape") or len(logits.shape) != 2:
            raise ValueError(f"top1 rule: outputs must be logits [N, C]; got "
                             f"{getattr(logits, 'shape', type(logits).__name__)}.")
        check_same_length("top1 rule", logits, y)
        hi = int(np.asarray(y).max()) if y.size else -1
        if hi >= logits.shape[1]:
            raise ValueError(f"top1 rule: target class {hi} is out of range for {logits.shape[1]}"
                             f" logits per example; targets must lie in [0, {logits.shape[1]}).")

    return Rule("top1", hard, _target_probability, targets, check=check)


def _target_probability(logits: Array, y: Array) -> Array:
    """The softmax probability of each example's target class: top1's smooth surrogate."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(probs, y[:, None], axis=-1)[:, 0]


def one_vs_rest(targets: ArrayLike, positive_class: int) -> Rule:
    """A binary task on a multi-class head: is an example of class ``positive_class``?

    The network says "yes" where ``positive_class`` is the unique arg-max of its ``[N, C]``
    logits (a tie is a "no", as :func:`top1` counts a tie as wrong); it is right where that
    answer matches ``targets == positive_class``. Sensitivity and specificity are estimated
    separately, as for :func:`binary`, so a mask that makes the network answer "no" to
    everything is not credited with the many negatives.

    Args:
      targets: ``[N]`` integer class indices (e.g. the network's own decisions).
      positive_class: the class the task asks about, in ``[0, C)``.

    The smooth surrogate is the softmax probability of ``positive_class`` for positives and
    one minus it for the rest.
    """
    what = f"one_vs_rest rule (class {positive_class!r})"
    if not isinstance(positive_class, int | np.integer) or isinstance(positive_class, bool) \
            or positive_class < 0:
        raise ValueError(f"{what}: positive_class must be a class index >= 0, got "
                         f"{positive_class!r}.")
    c = int(positive_class)
    is_c = _class_targets(targets, what) == c

    def says_c(logits):
        others = jnp.delete(logits, c, axis=-1, assume_unique_indices=True).max(axis=-1)
        return logits[:, c] > others

    def hard(logits, y):
        return (says_c(logits) == y).astype(jnp.float32)

    def soft(logits, y):
        p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, c]
        return jnp.where(y, p, 1.0 - p)

    def check(logits, y):
        if not hasattr(logits, "shape") or len(logits.shape) != 2 or logits.shape[1] < 2:
            raise ValueError(f"{what}: outputs must be logits [N, C] with C >= 2; got "
                             f"{getattr(logits, 'shape', type(logits).__name__)}. Use binary "
                             "for one score per example.")
        check_same_length(what, logits, y)
        if c >= logits.shape[1]:
            raise ValueError(f"{what}: class {c} is out of range for {logits.shape[1]} logits "
                             f"per example; positive_class must lie in [0, {logits.shape[1]}).")

    return Rule(f"one_vs_rest({c})", hard, soft, is_c, positive=is_c, check=check)


def smooth_top1(targets: ArrayLike) -> Rule:
    """The smooth variant of :func:`top1`: the probability of the correct class is the rule."""
    rule = top1(targets)
    return dataclasses.replace(rule, name="smooth_top1", hard=_target_probability)


def custom(correct_fn: Callable, positive: ArrayLike | None = None, data: Any = None,
           soft_fn: Callable | None = None, name: str = "custom") -> Rule:
    """A rule from a function ``correct_fn(outputs, data) -> [N]`` in [0, 1].

    Args:
      correct_fn: hard correctness per example.
      positive: optional ``[N]`` bool for the balanced (sensitivity/specificity) estimate.
      data: arrays the functions read (passed as jit arguments rather than baked in).
      soft_fn: optional differentiable surrogate with the same signature.
      name: for reports.
    """
    pos = None if positive is None else _check_targets(positive, 1, "custom rule").astype(bool)
    return Rule(name, correct_fn, soft_fn, data, positive=pos)


def p_correct_from(c: _A, positive: _A | None) -> _A:
    """Beta(1,1)-smoothed P(correct) from per-example correctness ``c`` (``[..., N]``): a JAX
    array for JAX arrays (traced), a NumPy array for NumPy arrays (on the host)."""
    if positive is None:
        return (c.sum(-1) + 1.0) / (c.shape[-1] + 2.0)
    pos = positive.astype(c.dtype).reshape((1,) * (c.ndim - 1) + positive.shape)
    sens = ((c * pos).sum(-1) + 1.0) / (pos.sum() + 2.0)
    spec = ((c * (1.0 - pos)).sum(-1) + 1.0) / ((1.0 - pos).sum() + 2.0)
    return 0.5 * (sens + spec)
