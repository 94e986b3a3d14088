"""Tasks: a site, a dataset and a correctness rule, giving P(correct | task, mask).

The likelihood of the ablation mask distribution is the *odds* of correctness (DESIGN §1). With
``c_n ∈ [0, 1]`` the per-example correctness (hard 0/1, or a probability for the smooth rule):

* balanced (binary targets): sens = (Σ_pos c + 1)/(P + 2), spec = (Σ_neg c + 1)/(N + 2),
  P(c) = (sens + spec)/2 — Beta(1,1) posterior means; averaging them into one P is our
  reconstruction of the paper's combination;
* pooled (multi-class, next token): P(c) = (Σ c + 1)/(n + 2).

The Beta(1,1) smoothing keeps the odds finite when the network is always right or always wrong.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bablate import sharding
from bablate.sites import Site, ablation_value, check_activation, check_mask_values, mask_activation

Array = jax.Array


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


def _check_targets(targets, n_dim: int, what: str) -> Array:
    targets = jnp.asarray(targets)
    if targets.ndim != n_dim:
        raise ValueError(f"{what}: targets must have {n_dim} dimension(s), got shape "
                         f"{tuple(targets.shape)}.")
    return targets


def _num_examples(outputs) -> int | None:
    """The example count of a rule's outputs (their leading axis), or None for a scalar."""
    leaves = jax.tree.leaves(outputs)
    if not leaves or not leaves[0].shape:
        return None
    return int(leaves[0].shape[0])


def _check_same_length(what: str, outputs, targets) -> None:
    n = _num_examples(outputs)
    if n is not None and n != targets.shape[0]:
        raise ValueError(f"{what}: the network gives {n} examples but there are "
                         f"{targets.shape[0]} targets; pass one target per input example.")


def binary(targets: ArrayLike, threshold: float = 0.0, temperature: float = 1.0) -> Rule:
    """Binary classification read off a score: predicted positive where ``output > threshold``.

    Outputs must be ``[N]`` scores. Sensitivity and specificity are estimated separately.
    The smooth surrogate is ``sigmoid((output - threshold)/temperature)`` for the target class.
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
                             "[N, C] logits, or index the score column in the suffix.")
        _check_same_length("binary rule", out, y)

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

    def soft(logits, y):
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(probs, y[:, None], axis=-1)[:, 0]

    def check(logits, y):
        if not hasattr(logits, "shape") or len(logits.shape) != 2:
            raise ValueError(f"top1 rule: outputs must be logits [N, C]; got "
                             f"{getattr(logits, 'shape', type(logits).__name__)}.")
        _check_same_length("top1 rule", logits, y)
        hi = int(np.asarray(y).max()) if y.size else -1
        if hi >= logits.shape[1]:
            raise ValueError(f"top1 rule: target class {hi} is out of range for {logits.shape[1]}"
                             f" logits per example; targets must lie in [0, {logits.shape[1]}).")

    return Rule("top1", hard, soft, targets, check=check)


def smooth_top1(targets: ArrayLike) -> Rule:
    """The smooth variant of :func:`top1`: the probability of the correct class is the rule."""
    rule = top1(targets)
    return dataclasses.replace(rule, name="smooth_top1", hard=rule.soft)


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


def p_correct_from(c: Array, positive: Array | None) -> Array:
    """Beta(1,1)-smoothed P(correct) from per-example correctness ``c`` (``[..., N]``)."""
    if positive is None:
        return (c.sum(-1) + 1.0) / (c.shape[-1] + 2.0)
    pos = positive.astype(c.dtype).reshape((1,) * (c.ndim - 1) + positive.shape)
    sens = ((c * pos).sum(-1) + 1.0) / (pos.sum() + 2.0)
    spec = ((c * (1.0 - pos)).sum(-1) + 1.0) / ((1.0 - pos).sum() + 2.0)
    return 0.5 * (sens + spec)


def _logit(p: Array) -> Array:
    return jnp.log(p) - jnp.log1p(-p)


def site_outputs(site: Site, data: dict, mask: Array) -> Any:
    """The network's outputs under one mask ``[d]`` at ``site``, rule-free.

    ``data`` holds ``"inputs"`` and, for cached and in-place sites, the ablation ``"value"``
    (and the cached activation ``"act"``), as :meth:`Task.build` stores them.
    """
    if site.apply_mask is not None:
        return site.apply_mask(mask, data["inputs"])
    if site.cached:
        masked = mask_activation(data["act"], mask, data["value"], site.unit_axis, site.basis)
        return site.suffix(masked, data["inputs"])

    def ablate(h):
        return mask_activation(h, mask, data["value"], site.unit_axis, site.basis)

    return site.apply(data["inputs"], ablate)


def masked_outputs(site: Site, data: dict, masks: Array, vectorized: bool = False) -> Any:
    """The site's outputs under each of the masks ``[M, d]`` (leading axis M), rule-free.

    The one map from masks to outputs: every evaluator of many masks goes through it.
    ``vectorized`` evaluates the masks together (``vmap``, as the exact scorer does on its
    chunks); by default they go one after another (``lax.map``), so memory does not grow with
    M (an LLM's logits per mask are large).
    """
    one = functools.partial(site_outputs, site, data)
    return jax.vmap(one)(masks) if vectorized else jax.lax.map(one, masks)


def outputs_evaluator(site: Site) -> Callable[[dict, Array], Any]:
    """The compiled ``(data, masks [M, d]) -> outputs`` of ``site`` (:func:`masked_outputs`),
    one program per site object (cached; data and masks are arguments)."""
    from bablate.inference import programs  # the inference package imports this module

    def evaluate(data: dict, masks: Array) -> Any:
        return masked_outputs(site, data, masks)

    return programs.cached_program(("outputs", site),
                                   lambda: jax.jit(programs.trace_guard(evaluate)))


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A site + a dataset + a correctness rule. Build with :meth:`Task.build`.

    ``data`` holds every array (inputs, cached activation, ablation value, rule data) so the
    evaluators take it as a jit argument; the callables live on ``site`` and ``rule``.
    """

    name: str
    site: Site
    rule: Rule
    data: dict

    @property
    def num_units(self) -> int:
        return self.site.num_units

    @classmethod
    def build(cls, site: Site, inputs: Any, rule: Rule, *, name: str = "task",
              activation: Array | None = None, key: Array | None = None,
              check_intact: bool = True) -> Task:
        """Runs the site's prefix once and packs what the masked evaluator needs.

        Args:
          site: where masks apply.
          inputs: the dataset (any pytree the site's functions take).
          rule: the correctness rule.
          name: task name.
          activation: a precomputed prefix output to share between tasks on the same inputs.
          key: PRNG key for resample ablation (default ``jax.random.key(0)``).
          check_intact: warn when the intact network already fails the task.
        """
        shared = _shared_data(site, inputs, name, activation, key)
        task = cls(name=name, site=site, rule=rule, data={**shared, "rule": rule.data})
        task.check_rule()
        if check_intact:
            _check_intact(name, float(task.log_odds(np.ones((1, site.num_units),
                                                            np.float32))[0]))
        return task

    @classmethod
    def build_many(cls, site: Site, inputs: Any, rules: dict[str, Rule], *,
                   key: Array | None = None, check_intact: bool = True) -> list[Task]:
        """Tasks on one site and one dataset that differ only in their rule: the tasks of
        :meth:`TaskSet.build` (which keeps the knowledge that they share their data)."""
        return list(TaskSet.build(site, inputs, rules, key=key, check_intact=check_intact))

    def check_rule(self) -> None:
        """Checks the rule against the shapes of the network's outputs (without running it):
        a clear error for an empty dataset, targets of the wrong length or out of range."""
        out = jax.eval_shape(lambda d: self.outputs_fn(d, jnp.ones((self.num_units,))),
                             self.data)
        n = _num_examples(out)
        if n == 0:
            raise ValueError(f"Task {self.name!r}: the network gives no examples (empty "
                             "dataset); a task without examples carries no evidence.")
        try:
            if self.rule.positive is not None:
                _check_same_length(f"rule {self.rule.name!r} (positives)", out,
                                   self.rule.positive)
            if self.rule.check is not None:
                self.rule.check(out, self.rule.data)
        except ValueError as err:
            raise ValueError(f"Task {self.name!r}: {err}") from None

    # ---- pure evaluators (take ``data`` so they can be jitted / traced by samplers) ----

    def outputs_fn(self, data: dict, mask: Array) -> Any:
        """Network outputs under one mask ``[d]``."""
        return site_outputs(self.site, data, mask)

    def log_odds_fn(self, data: dict, masks: Array, smooth: bool = False) -> Array:
        """β-free log-odds of correctness for a batch of masks ``[M, d]`` -> ``[M]``."""
        return _logit(self.p_correct_fn(data, masks, smooth))

    def p_correct_fn(self, data: dict, masks: Array, smooth: bool = False) -> Array:
        """P(correct | task, mask) for a batch of masks ``[M, d]`` -> ``[M]``."""
        if masks.ndim != 2 or masks.shape[-1] != self.num_units:
            raise ValueError(f"Task {self.name!r}: masks must be [num_masks, {self.num_units}], "
                             f"got shape {tuple(masks.shape)}.")
        correct = _correct_fn(self.rule, smooth)

        def one(data, positive, mask):
            c = correct(self.outputs_fn(data, mask), data["rule"])
            return p_correct_from(c.astype(jnp.float32), positive)

        def blocks(data_and_positive, masks):
            # Vmapping a whole chunk materialises every mask's intermediates at once; blocks
            # of a few MiB stay in cache, which on CPU is several times faster than one wide
            # vmap.
            data, positive = data_and_positive
            return jax.lax.map(lambda mask: one(data, positive, mask), masks,
                               batch_size=_block_size(self, data, masks))

        # Each device evaluates its share of the masks in blocks. The positives travel with
        # the data: a compiled program may take them as an argument (a traced value).
        return sharding.map_masks(blocks, (data, self.rule.positive),
                                  masks.astype(jnp.float32))

    # ---- host API: jitted, chunked over masks, sharded over devices ----

    def log_odds(self, masks: ArrayLike, smooth: bool = False, chunk_size: int = 1024
                  ) -> np.ndarray:
        """Log-odds of correctness for masks ``[M, d]`` (jitted, chunked, sharded)."""
        return _chunked(self, "log_odds", masks, smooth, chunk_size)

    def p_correct(self, masks: ArrayLike, smooth: bool = False, chunk_size: int = 1024
                  ) -> np.ndarray:
        """P(correct | task, mask) for masks ``[M, d]``."""
        return _chunked(self, "p_correct", masks, smooth, chunk_size)


def _check_intact(name: str, full: float) -> None:
    """Refuses a non-finite log-odds of the intact network; warns when it fails the task."""
    if not np.isfinite(full):
        raise ValueError(f"Task {name!r}: the intact network gives a non-finite "
                         "log-odds; check the outputs for NaN/inf.")
    if full < 0:
        warnings.warn(f"Task {name!r}: the intact network already fails it "
                      f"(P(correct) = {float(jax.nn.sigmoid(full)):.3f} < 0.5, log-odds "
                      f"{full:.2f}). The AMD is still defined, but it describes masks "
                      "that make a failing network fail less.", stacklevel=3)


def _shared_data(site: Site, inputs: Any, name: str, activation: Array | None,
                 key: Array | None) -> dict:
    """The rule-free arrays of a task: inputs, cached activation and ablation value."""
    key = jax.random.key(0) if key is None else check_key(key, f"Task {name!r}")
    if site.cached:
        act = jax.jit(site.prefix)(inputs) if activation is None else activation
        if act.ndim >= 1 and act.shape[0] == 0:  # before a mean of nothing turns into NaN
            raise ValueError(f"Task {name!r}: the dataset is empty (the site's activation "
                             f"has shape {tuple(act.shape)}); a task without examples "
                             "carries no evidence about the mask.")
        check_activation(site, act)
        value = ablation_value(site, act, key)
    else:
        act = None
        if site.reference is not None:
            check_activation(site, site.reference)
        value = ablation_value(site, None, key)
    return {"inputs": inputs, "act": act, "value": value}


BLOCK_BYTES = 2 << 20


def _block_size(task: Task, data: dict, masks: Array) -> int:
    """Masks per vmapped block so one block's outputs and activation copy fit ~2 MiB."""
    out = jax.eval_shape(lambda m: task.outputs_fn(data, m), masks[0])
    nbytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(out))
    act = data.get("act")
    if act is not None:
        nbytes = max(nbytes, act.size * act.dtype.itemsize)
    return int(max(1, min(masks.shape[0], BLOCK_BYTES // max(nbytes, 1))))


def evaluator(task: Task, smooth: bool = False) -> Callable[[dict, Array], tuple[Array, Array]]:
    """The compiled evaluator of ``task``'s masks: ``fn(args, masks) -> (p_correct, log_odds)``
    with ``args = evaluator_args(task)``.

    It is compiled for what it depends on beyond arrays (the site object and the rule's code,
    :func:`bablate.inference.programs.program_key`) and takes the task's data and positives as
    arguments, so every task on one site with data of one shape shares one compilation, and
    ``p_correct`` and ``log_odds`` share it too.
    """
    from bablate.inference import programs  # the inference package imports this module

    key = ("evaluate", *programs.program_key(task), bool(smooth))
    return programs.cached_program(key, lambda: _build_evaluator(task, smooth))


def evaluator_args(task: Task) -> dict:
    """The arrays :func:`evaluator`'s program takes (nothing of them is compiled in)."""
    return {"data": sharding.replicate(task.data),
            "positive": sharding.replicate(task.rule.positive)}


def _build_evaluator(task: Task, smooth: bool):
    from bablate import amd
    from bablate.inference import programs

    bare = dataclasses.replace(task, data={})  # the cache must not keep one task's arrays

    def evaluate(args, masks):
        p = amd.bind(bare, args).p_correct_fn(args["data"], masks, smooth)
        return p, _logit(p)

    return jax.jit(programs.trace_guard(evaluate))


def check_masks(masks: ArrayLike, num_units: int, what: str) -> np.ndarray:
    """Host masks ``[M, d]`` as float32, refusing a wrong shape or values outside [0, 1]."""
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 2 or masks.shape[1] != num_units:
        raise ValueError(f"{what}: masks must be [num_masks, {num_units}], got shape "
                         f"{masks.shape}.")
    check_mask_values(masks, what)
    return masks


def check_key(key: Any, what: str) -> Array:
    """A JAX PRNG key (typed, or raw uint32 words), or a clear error naming the fix."""
    ok = isinstance(key, jax.Array | np.ndarray) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == np.uint32 and key.shape == (2,)))
    if not ok:
        raise TypeError(f"{what}: key must be a JAX PRNG key such as jax.random.key(0), got "
                        f"{type(key).__name__} {key!r:.40}.")
    return key


def _chunked(task: Task, kind: str, masks, smooth: bool, chunk_size: int) -> np.ndarray:
    masks = check_masks(masks, task.num_units, f"Task {task.name!r}")
    fn = evaluator(task, smooth)
    args = evaluator_args(task)
    which = 0 if kind == "p_correct" else 1
    # Power-of-two buckets bound the number of compiled shapes to log2(chunk_size).
    bucket = 1 << max(len(masks) - 1, 0).bit_length()
    chunk = sharding.round_up(min(chunk_size, bucket))
    out = []
    for start in range(0, len(masks), chunk):
        block = masks[start:start + chunk]
        n = len(block)
        if n < chunk:  # pad so every call has one shape: one compile
            block = np.concatenate([block, np.ones((chunk - n, block.shape[1]), np.float32)])
        out.append(np.asarray(fn(args, sharding.shard_masks(block))[which])[:n])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


# ---- many rules on one site and one dataset ------------------------------------------------


def _correct_fn(rule: Rule, smooth: bool) -> Callable[[Any, Any], Array]:
    correct = rule.soft if smooth else rule.hard
    if correct is None:
        raise ValueError(f"Rule {rule.name!r} has no smooth surrogate; pass soft_fn= to "
                         "bablate.rules.custom or use the hard likelihood.")
    return correct


def _rules_p_correct(rules: tuple[Rule, ...], outputs: Any, rule_data: list, positives: list,
                     smooth: bool) -> Array:
    """``[T, M]`` P(correct) of each rule from the outputs of M masks (leading axis M)."""
    rows = []
    for rule, data, positive in zip(rules, rule_data, positives, strict=True):
        correct = _correct_fn(rule, smooth)
        c = jax.vmap(lambda out, correct=correct, data=data: correct(out, data))(outputs)
        rows.append(p_correct_from(c.astype(jnp.float32), positive))
    return jnp.stack(rows)


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSet:
    """One site, one dataset, many rules: the tasks that read the same outputs.

    The network runs once per mask for all of them (:meth:`outputs`, :meth:`p_correct`,
    :func:`bablate.inference.exact_many`). Build with :meth:`build`.

    Attributes:
      site: where masks apply.
      tasks: one :class:`Task` per rule, all holding the same inputs, cached activation and
        ablation value (the same objects).
      data: the shared arrays (``"inputs"``, ``"act"``, ``"value"``) and, per task in order,
        the rule's data (``"rules"``) and positives (``"positives"``): the argument of the
        traced evaluators (:meth:`log_odds_fn`).
    """

    site: Site
    tasks: tuple[Task, ...]
    data: dict

    @classmethod
    def build(cls, site: Site, inputs: Any, rules: dict[str, Rule], *,
              activation: Array | None = None, key: Array | None = None,
              check_intact: bool = True) -> TaskSet:
        """Runs the site's prefix once and makes one task per rule on its outputs.

        Args:
          site: where masks apply.
          inputs: the dataset (any pytree the site's functions take).
          rules: task name -> correctness rule.
          activation: a precomputed prefix output (cached sites), else it is computed.
          key: PRNG key for resample ablation (default ``jax.random.key(0)``); drawn once.
          check_intact: warn for each task the intact network already fails.
        """
        if not rules:
            raise ValueError("TaskSet.build needs at least one rule; got an empty dict.")
        shared = _shared_data(site, inputs, next(iter(rules)), activation, key)
        tasks = tuple(Task(name=name, site=site, rule=rule, data={**shared, "rule": rule.data})
                      for name, rule in rules.items())
        for task in tasks:
            task.check_rule()
        out = cls.of(tasks)
        if check_intact:
            full = out.log_odds(np.ones((1, site.num_units), np.float32))[:, 0]
            for task, value in zip(tasks, full, strict=True):
                _check_intact(task.name, float(value))
        return out

    @classmethod
    def of(cls, tasks: list[Task] | tuple[Task, ...]) -> TaskSet:
        """The set of ``tasks`` that are known to share one site and one dataset (their data
        is taken from the first; nothing is checked: use :meth:`build` to make them)."""
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("a TaskSet needs at least one task.")
        base = tasks[0]
        data = {"inputs": base.data["inputs"], "act": base.data["act"],
                "value": base.data["value"], "rules": [t.rule.data for t in tasks],
                "positives": [t.rule.positive for t in tasks]}
        return cls(site=base.site, tasks=tasks, data=data)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(t.rule for t in self.tasks)

    @property
    def num_units(self) -> int:
        return self.site.num_units

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @typing.overload
    def __getitem__(self, i: int) -> Task: ...

    @typing.overload
    def __getitem__(self, i: slice) -> TaskSet: ...

    def __getitem__(self, i: int | slice) -> Task | TaskSet:
        """Task ``i``, or for a slice the task set of those tasks (same site and dataset)."""
        if isinstance(i, slice):
            return TaskSet.of(self.tasks[i])
        return self.tasks[i]

    # ---- pure evaluators (take ``data`` so they can be jitted) ----

    def p_correct_fn(self, data: dict, masks: Array, smooth: bool = False,
                     vectorized: bool = True) -> Array:
        """P(correct | task, mask) of every task for masks ``[M, d]`` -> ``[T, M]``; the
        network runs once per mask (``data`` as :attr:`data`)."""
        outputs = masked_outputs(self.site, data, masks, vectorized=vectorized)
        return _rules_p_correct(self.rules, outputs, data["rules"], data["positives"], smooth)

    def log_odds_fn(self, data: dict, masks: Array, smooth: bool = False) -> Array:
        """β-free log-odds of correctness of every task, ``[T, M]``."""
        return _logit(self.p_correct_fn(data, masks, smooth))

    # ---- host API ----

    def outputs(self, masks: ArrayLike, chunk_size: int = 1024) -> Any:
        """The site's outputs under masks ``[M, d]`` (leading axis M), rule-independent: one
        compiled program per site (:func:`outputs_evaluator`)."""
        masks = check_masks(masks, self.num_units, f"TaskSet {self.names}")
        fn = outputs_evaluator(self.site)
        # The rule-free arrays only: task sets with other rules share the program.
        shared = {k: self.data[k] for k in ("inputs", "act", "value")}
        pieces = []
        for start in range(0, max(len(masks), 1), chunk_size):
            block = masks[start:start + chunk_size]
            pieces.append(jax.tree.map(np.asarray, fn(shared, jnp.asarray(block))))
        return jax.tree.map(lambda *p: np.concatenate(p), *pieces)

    def p_correct(self, masks: ArrayLike, smooth: bool = False, chunk_size: int = 1024
                  ) -> np.ndarray:
        """Hard (or smooth) P(correct) of every task, ``[T, M]``.

        ``masks`` is ``[M, d]`` (every task under the same masks) or ``[T, M, d]`` (task t
        under its own ``masks[t]``); either way the network runs once per mask.
        """
        masks = np.asarray(masks, np.float32)
        if masks.ndim == 3:
            if masks.shape[0] != len(self):
                raise ValueError(f"TaskSet of {len(self)} tasks: masks [T, M, d] must have "
                                 f"T = {len(self)}, got shape {masks.shape}.")
            flat = self.outputs(masks.reshape(-1, masks.shape[-1]), chunk_size)
            per = masks.shape[1]
            rows = []
            for j, task in enumerate(self.tasks):
                own = jax.tree.map(lambda o, j=j: o[j * per:(j + 1) * per], flat)
                rows.append(_rules_p_correct((task.rule,), own, [task.rule.data],
                                             [task.rule.positive], smooth)[0])
            return np.asarray(jnp.stack(rows)) if rows else np.zeros((0, per), np.float32)
        outputs = self.outputs(masks, chunk_size)
        return np.asarray(_rules_p_correct(self.rules, outputs, self.data["rules"],
                                           self.data["positives"], smooth))

    def log_odds(self, masks: ArrayLike, smooth: bool = False, chunk_size: int = 1024
                  ) -> np.ndarray:
        """Log-odds of correctness of every task, ``[T, M]`` (masks as in :meth:`p_correct`)."""
        return np.asarray(_logit(jnp.asarray(self.p_correct(masks, smooth, chunk_size))))
