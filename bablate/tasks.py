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
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bablate import programs, sharding
from bablate.callsite import warn_caller
from bablate.rules import Rule, check_same_length, num_examples, p_correct_from
from bablate.sites import Site, ablation_value, check_activation, check_mask_values, mask_activation

Array = jax.Array


def logit(p: Array) -> Array:
    return jnp.log(p) - jnp.log1p(-p)


def site_outputs(site: Site, data: dict, mask: Array) -> Any:
    """The network's outputs under one mask ``[d]`` at ``site``, rule-free.

    ``data`` holds ``"inputs"`` and, for cached and in-place sites, the ablation ``"value"``
    (and the cached activation ``"act"``), as :meth:`Task.build` stores them.
    """
    if site.apply_mask is not None:
        return site.apply_mask(mask, data["inputs"])
    if site.suffix is not None:  # a cached site (prefix + suffix)
        masked = mask_activation(data["act"], mask, data["value"], site.unit_axis, site.basis)
        return site.suffix(masked, data["inputs"])

    def ablate(h):
        return mask_activation(h, mask, data["value"], site.unit_axis, site.basis)

    if site.apply is None:  # Site's own checks leave no fourth kind
        raise ValueError(f"Site {site.name!r} has no network to run; build it with "
                         "Site.from_functions, Site.in_place or Site.mask_aware.")
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

    def __repr__(self) -> str:
        # The dataclass repr printed the site's functions and every array of the dataset.
        return (f"Task({self.name!r}, site {self.site.name!r} (d={self.num_units}), "
                f"{examples_text(self.data)}, rule {self.rule.name})")

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
        check_rule_type(rule, f"Task {name!r}")
        shared = shared_data(site, inputs, name, activation, key)
        task = cls(name=name, site=site, rule=rule, data={**shared, "rule": rule.data})
        task.check_rule()
        if check_intact:
            warn_if_intact_fails(name, float(task.log_odds(np.ones((1, site.num_units),
                                                            np.float32))[0]))
        return task

    @classmethod
    def build_many(cls, site: Site, inputs: Any, rules: dict[str, Rule], *,
                   key: Array | None = None, check_intact: bool = True) -> list[Task]:
        """Tasks on one site and one dataset that differ only in their rule: the tasks of
        :meth:`TaskSet.build` (which keeps the knowledge that they share their data)."""
        return list(build_shared(site, inputs, rules, key=key, check_intact=check_intact))

    def check_rule(self) -> None:
        """Checks the rule against the shapes of the network's outputs (without running it):
        a clear error for an empty dataset, targets of the wrong length or out of range."""
        out = jax.eval_shape(lambda d: self.outputs_fn(d, jnp.ones((self.num_units,))),
                             self.data)
        n = num_examples(out)
        if n == 0:
            raise ValueError(f"Task {self.name!r}: the network gives no examples (empty "
                             "dataset); a task without examples carries no evidence.")
        try:
            if self.rule.positive is not None:
                check_same_length(f"rule {self.rule.name!r} (positives)", out,
                                   self.rule.positive)
            if self.rule.check is not None:
                self.rule.check(out, self.rule.data)
        except ValueError as err:
            raise ValueError(f"Task {self.name!r}: {err}") from None

    def log_odds_bounds(self, smooth: bool = False) -> tuple[float, float]:
        """The least and the greatest log-odds any mask can have: every example wrong and
        every example right (the Beta(1,1) smoothing keeps both finite; for a pooled rule on
        n examples, ∓log(n + 1)). Importance sampling's weight bound rests on them."""
        del smooth  # per-example correctness lies in [0, 1] for the hard and smooth rules
        out = jax.eval_shape(lambda d: self.outputs_fn(d, jnp.ones((self.num_units,))),
                             self.data)
        n = num_examples(out)
        positive = None if self.rule.positive is None else np.asarray(self.rule.positive)
        if n is None:
            return -np.inf, np.inf
        ends = [p_correct_from(np.full((n,), c, np.float64), positive) for c in (0.0, 1.0)]
        lo, hi = (float(np.log(p) - np.log1p(-p)) for p in ends)
        return lo, hi

    # ---- pure evaluators (take ``data`` so they can be jitted / traced by samplers) ----

    def outputs_fn(self, data: dict, mask: Array) -> Any:
        """Network outputs under one mask ``[d]``."""
        return site_outputs(self.site, data, mask)

    def log_odds_fn(self, data: dict, masks: Array, smooth: bool = False) -> Array:
        """β-free log-odds of correctness for a batch of masks ``[M, d]`` -> ``[M]``."""
        return logit(self.p_correct_fn(data, masks, smooth))

    def p_correct_fn(self, data: dict, masks: Array, smooth: bool = False) -> Array:
        """P(correct | task, mask) for a batch of masks ``[M, d]`` -> ``[M]``."""
        if masks.ndim != 2 or masks.shape[-1] != self.num_units:
            raise ValueError(f"Task {self.name!r}: masks must be [num_masks, {self.num_units}], "
                             f"got shape {tuple(masks.shape)}.")
        correct = correct_fn(self.rule, smooth)

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


def examples_text(data: dict) -> str:
    """"<N> examples" of a task's data (the leading axis of its inputs), for reprs."""
    n = num_examples(data.get("inputs"))
    return f"{n} examples" if n is not None else "examples of unknown count"



def check_rule_type(rule: Any, what: str) -> None:
    """Refuses anything but a :class:`Rule` (raw targets, say) with the fix."""
    if not isinstance(rule, Rule):
        raise TypeError(f"{what}: the rule must be a bablate Rule, got {type(rule).__name__}; "
                        "wrap the targets in one, e.g. bb.rules.top1(targets) or "
                        "bb.rules.binary(targets).")


def warn_if_intact_fails(name: str, full: float) -> None:
    """Refuses a non-finite log-odds of the intact network; warns when it fails the task."""
    if not np.isfinite(full):
        raise ValueError(f"Task {name!r}: the intact network gives a non-finite "
                         "log-odds; check the outputs for NaN/inf.")
    if full < 0:
        warn_caller(f"Task {name!r}: the intact network already fails it "
                      f"(P(correct) = {float(jax.nn.sigmoid(full)):.3f} < 0.5, log-odds "
                      f"{full:.2f}). The AMD is still defined, but it describes masks "
                      "that make a failing network fail less.")


def shared_data(site: Site, inputs: Any, name: str, activation: Array | None,
                 key: Array | None) -> dict:
    """The rule-free arrays of a task: inputs, cached activation and ablation value."""
    key = jax.random.key(0) if key is None else check_key(key, f"Task {name!r}")
    if site.prefix is not None:  # a cached site
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
    :func:`bablate.programs.program_key`) and takes the task's data and positives as
    arguments, so every task on one site with data of one shape shares one compilation, and
    ``p_correct`` and ``log_odds`` share it too.
    """
    key = ("evaluate", *programs.program_key(task), bool(smooth))
    return programs.cached_program(key, lambda: _build_evaluator(task, smooth))


def evaluator_args(task: Task) -> dict:
    """The arrays :func:`evaluator`'s program takes (nothing of them is compiled in)."""
    return {"data": sharding.replicate(task.data),
            "positive": sharding.replicate(task.rule.positive)}


def bind(task: Task, args: dict) -> Task:
    """``task``'s evaluators with the rule's ``positive`` taken from ``args`` (traced)."""
    rule = dataclasses.replace(task.rule, positive=args["positive"])
    return Task(name=task.name, site=task.site, rule=rule, data={})


def _build_evaluator(task: Task, smooth: bool):
    bare = dataclasses.replace(task, data={})  # the cache must not keep one task's arrays

    def evaluate(args, masks):
        p = bind(bare, args).p_correct_fn(args["data"], masks, smooth)
        return p, logit(p)

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

def build_shared(site: Site, inputs: Any, rules: dict[str, Rule], *,
                 activation: Array | None = None, key: Array | None = None,
                 check_intact: bool = True) -> tuple[Task, ...]:
    """The tasks of :meth:`bablate.TaskSet.build` (see there): the site's prefix runs once and
    every task holds the same inputs, cached activation and ablation value."""
    if not isinstance(rules, Mapping):
        raise TypeError(f"TaskSet.build: rules must be a dict of task name -> Rule, got "
                        f"{type(rules).__name__}.")
    if not rules:
        raise ValueError("TaskSet.build needs at least one rule; got an empty dict.")
    for name, rule in rules.items():
        check_rule_type(rule, f"TaskSet.build, task {name!r}")
    shared = shared_data(site, inputs, next(iter(rules)), activation, key)
    tasks = tuple(Task(name=name, site=site, rule=rule, data={**shared, "rule": rule.data})
                  for name, rule in rules.items())
    for task in tasks:
        task.check_rule()
    if check_intact:
        outputs = shared_outputs(site, shared, np.ones((1, site.num_units), np.float32))
        p = np.asarray(rules_p_correct(tuple(t.rule for t in tasks), outputs,
                                       [t.rule.data for t in tasks],
                                       [t.rule.positive for t in tasks], False))
        full = np.asarray(logit(jnp.asarray(p)))[:, 0]
        for task, value in zip(tasks, full, strict=True):
            warn_if_intact_fails(task.name, float(value))
    return tasks


def shared_outputs(site: Site, data: dict, masks: np.ndarray, chunk_size: int = 1024) -> Any:
    """The site's outputs under host masks ``[M, d]`` (leading axis M), rule-independent, in
    chunks: one compiled program per site (:func:`outputs_evaluator`)."""
    fn = outputs_evaluator(site)
    # The rule-free arrays only: tasks with other rules share the program.
    shared = {k: data[k] for k in ("inputs", "act", "value")}
    pieces = []
    for start in range(0, max(len(masks), 1), chunk_size):
        block = masks[start:start + chunk_size]
        pieces.append(jax.tree.map(np.asarray, fn(shared, jnp.asarray(block))))
    return jax.tree.map(lambda *p: np.concatenate(p), *pieces)


def rules_p_correct(rules: tuple[Rule, ...], outputs: Any, rule_data: list, positives: list,
                    smooth: bool) -> Array:
    """``[T, M]`` P(correct) of each rule from the outputs of M masks (leading axis M)."""
    rows = []
    for rule, data, positive in zip(rules, rule_data, positives, strict=True):
        correct = correct_fn(rule, smooth)
        c = jax.vmap(lambda out, correct=correct, data=data: correct(out, data))(outputs)
        rows.append(p_correct_from(c.astype(jnp.float32), positive))
    return jnp.stack(rows)


def correct_fn(rule: Rule, smooth: bool) -> Callable[[Any, Any], Array]:
    correct = rule.soft if smooth else rule.hard
    if correct is None:
        raise ValueError(f"Rule {rule.name!r} has no smooth surrogate; pass soft_fn= to "
                         "bablate.rules.custom or use the hard likelihood.")
    return correct

