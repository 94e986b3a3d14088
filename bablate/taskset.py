"""Task sets: one site, one dataset, many rules — the tasks that read the same outputs, so the
network runs once per mask for all of them."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bablate.rules import Rule
from bablate.sites import Site
from bablate.tasks import (
    Task,
    build_shared,
    check_masks,
    examples_text,
    logit,
    masked_outputs,
    rules_p_correct,
    shared_outputs,
)

Array = jax.Array


def _same_arrays(a: Any, b: Any) -> bool:
    """Whether two pytrees are the same objects or hold equal arrays."""
    if a is b:
        return True
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    # jaxlib ships no stub for its compiled PyTreeDef, so mypy cannot see its __eq__.
    return tree_a == tree_b and all(  # type: ignore[operator]
        x is y or (np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y)))
        for x, y in zip(leaves_a, leaves_b, strict=True))


def sharing_problem(tasks: Sequence[Task]) -> str | None:
    """Why ``tasks`` do not share one site and one dataset (None: they do, and one evaluation
    of the network per mask serves them all): they must be on the same site object, with the
    same or equal inputs, cached activation and ablation value."""
    base = tasks[0]
    for task in tasks[1:]:
        if task.site is not base.site:
            return (f"task {task.name!r} is on another site than task {base.name!r} "
                    f"({task.site.identity}, not the same object as {base.site.identity})")
        for key, what in (("inputs", "inputs"), ("act", "cached activation"),
                          ("value", "ablation value")):
            if not _same_arrays(task.data[key], base.data[key]):
                return f"task {task.name!r} has other {what} than task {base.name!r}"
    return None


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
        return cls.of(build_shared(site, inputs, rules, activation=activation, key=key,
                                   check_intact=check_intact))

    @classmethod
    def of(cls, tasks: list[Task] | tuple[Task, ...]) -> TaskSet:
        """The set of ``tasks`` that share one site and one dataset (:meth:`build` makes them).

        Raises:
          ValueError: the tasks are on different site objects, or their inputs, cached
            activations or ablation values differ (a task set evaluates every rule on the
            first task's), naming the first such task and the fix.
        """
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("a TaskSet needs at least one task.")
        odd = next((i for i, t in enumerate(tasks) if not isinstance(t, Task)), None)
        if odd is not None:
            raise TypeError(f"TaskSet.of takes Task objects; item {odd} is a "
                            f"{type(tasks[odd]).__name__}.")
        problem = sharing_problem(tasks)
        if problem is not None:
            raise ValueError(f"TaskSet.of: {problem}; a task set holds tasks of one site and one "
                             "dataset: build it with TaskSet.build(site, inputs, rules), or pass "
                             "the tasks to bb.infer_many as a list (each is then inferred on its "
                             "own site and data).")
        base = tasks[0]
        data = {"inputs": base.data["inputs"], "act": base.data["act"],
                "value": base.data["value"], "rules": [t.rule.data for t in tasks],
                "positives": [t.rule.positive for t in tasks]}
        return cls(site=base.site, tasks=tasks, data=data)

    def __repr__(self) -> str:
        shown = ", ".join(f"{t.name!r} [{t.rule.name}]" for t in self.tasks[:6])
        more = f", and {len(self.tasks) - 6} more" if len(self.tasks) > 6 else ""
        return (f"TaskSet(site {self.site.name!r} (d={self.num_units}), "
                f"{examples_text(self.data)}, {len(self.tasks)} tasks: {shown}{more})")

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
        return rules_p_correct(self.rules, outputs, data["rules"], data["positives"], smooth)

    def log_odds_fn(self, data: dict, masks: Array, smooth: bool = False) -> Array:
        """β-free log-odds of correctness of every task, ``[T, M]``."""
        return logit(self.p_correct_fn(data, masks, smooth))

    # ---- host API ----

    def outputs(self, masks: ArrayLike, chunk_size: int = 1024) -> Any:
        """The site's outputs under masks ``[M, d]`` (leading axis M), rule-independent: one
        compiled program per site (:func:`outputs_evaluator`)."""
        masks = check_masks(masks, self.num_units, f"TaskSet {self.names}")
        return shared_outputs(self.site, self.data, masks, chunk_size)

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
                rows.append(rules_p_correct((task.rule,), own, [task.rule.data],
                                             [task.rule.positive], smooth)[0])
            return np.asarray(jnp.stack(rows)) if rows else np.zeros((0, per), np.float32)
        outputs = self.outputs(masks, chunk_size)
        return np.asarray(rules_p_correct(self.rules, outputs, self.data["rules"],
                                           self.data["positives"], smooth))

    def log_odds(self, masks: ArrayLike, smooth: bool = False, chunk_size: int = 1024
                  ) -> np.ndarray:
        """Log-odds of correctness of every task, ``[T, M]`` (masks as in :meth:`p_correct`)."""
        return np.asarray(logit(jnp.asarray(self.p_correct(masks, smooth, chunk_size))))
