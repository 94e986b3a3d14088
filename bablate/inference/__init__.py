"""Inference of the ablation mask distribution: exact, MCMC and SVI behind one call."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.typing import ArrayLike

from bablate.inference.exact import (
    MAX_EXACT_UNITS,
    exact,
    exact_many,
    index_to_masks,
    mean_field_optimum,
    table_marginals,
)
from bablate.inference.importance import importance
from bablate.inference.kernels import FlipKernel, FlipState
from bablate.inference.mcmc import chain_diagnostics, mcmc
from bablate.inference.options import (
    OPTIONS,
    ExactOptions,
    ImportanceOptions,
    McmcOptions,
    Options,
    SviOptions,
    resolve,
)
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.inference.svi import svi
from bablate.tasks import Task, check_key
from bablate.taskset import TaskSet

METHODS = ("exact", "mcmc", "svi", "importance")
STOCHASTIC = ("mcmc", "svi", "importance")
MAX_EXACT = 16  # "auto" enumerates sites up to this many units (2^16 masks), samples beyond
LARGE = "importance"  # what "auto" runs above MAX_EXACT: the estimator whose error bars hold


def choose_method(num_units: int, method: str = "auto", max_exact: int = MAX_EXACT,
                  large: str = LARGE) -> str:
    """The inference method for a site of ``num_units`` units: ``method`` itself, or for
    "auto", "exact" when ``num_units <= max_exact``, else ``large`` (a stochastic method)."""
    if method not in (*METHODS, "auto"):
        raise ValueError(f"unknown inference method {method!r}; choose one of "
                         f"{(*METHODS, 'auto')}.")
    if large not in STOCHASTIC:
        raise ValueError(f"large={large!r} must be one of {STOCHASTIC} (the method for sites "
                         f"above max_exact units).")
    if method == "auto" and not 0 <= max_exact <= MAX_EXACT_UNITS:
        raise ValueError(f"max_exact={max_exact} is outside [0, {MAX_EXACT_UNITS}]: exact "
                         f"enumeration takes sites of at most {MAX_EXACT_UNITS} units (2^"
                         f"{MAX_EXACT_UNITS} masks); use max_exact <= {MAX_EXACT_UNITS}.")
    if method != "auto":
        return method
    return "exact" if num_units <= max_exact else large


def _require_key(key: jax.Array | None, method: str, what: str) -> jax.Array:
    if key is None:
        raise ValueError(f"{what}: method {method!r} draws random numbers and needs a PRNG key; "
                         "pass key=jax.random.key(seed).")
    return key


def _run(task: Task, chosen: str, requested: str, key: jax.Array | None, prior: ArrayLike,
         beta: float, opts: Options, max_exact: int) -> Posterior:
    kwargs = opts.kwargs()
    if chosen == "exact":
        if requested == "auto":
            kwargs.setdefault("max_units", max(max_exact, 20))
        return exact(task, prior=prior, beta=beta, **kwargs)
    key = _require_key(key, chosen, f"infer for task {task.name!r}")
    if chosen == "mcmc":
        return mcmc(task, key, prior=prior, beta=beta, **kwargs)
    if chosen == "importance":
        return importance(task, key, prior=prior, beta=beta, **kwargs)
    return svi(task, key, prior=prior, beta=beta, **kwargs)


def infer(task: Task, method: str = "exact", key: jax.Array | None = None, prior: ArrayLike = 0.5,
          beta: float = 1.0, *, max_exact: int = MAX_EXACT, large: str = LARGE,
          options: Options | Sequence[Options] | None = None, **keywords) -> Posterior:
    """Infers the AMD P(mask | task, correct) ∝ prior(mask) · odds(correct | task, mask)^β.

    Args:
      task: the task (:meth:`bablate.Task.build`).
      method: "exact" (d ≤ 20), "importance" (independent weighted draws from a proposal
        adapted over rounds until every marginal's standard error is at most ``target_se``:
        the certified estimator for large sites, whose error bars hold because the odds are
        bounded), "mcmc" (any d; a cross-check), "svi" (thousands of units; mean-field), or
        "auto" (:func:`choose_method`: exact up to ``max_exact`` units, else ``large``). The
        method used is on the posterior (``post.method``); every stochastic method's
        ``post.diagnostics`` carries ``converged``, ``max_se``, ``ess`` and
        ``forward_passes``.
      key: PRNG key, required by the stochastic methods (mcmc, svi, importance).
      prior: keep-probability of each unit, scalar or ``[d]`` (paper: 0.5).
      beta: inverse temperature on the log-odds (paper: 1).
      max_exact: the largest site "auto" enumerates.
      large: the method "auto" uses above ``max_exact`` units (a stochastic method;
        "importance" by default).
      options: the method's options (:class:`ExactOptions`, :class:`ImportanceOptions`,
        :class:`McmcOptions`, :class:`SviOptions`), or under "auto" one per method.
      **keywords: single options in keyword form (``num_samples=500``); they replace the
        fields of ``options`` (under "auto", of each method that has them).

    Returns:
      A :class:`Posterior`.

    Raises:
      ValueError: an unknown method or option, or a stochastic method without a key.
    """
    chosen = choose_method(task.num_units, method, max_exact, large)
    opts = resolve(chosen, method, options, keywords)
    return _run(task, chosen, method, key, prior, beta, opts, max_exact)


def infer_many(tasks: TaskSet | list[Task], method: str = "auto", key: jax.Array | None = None,
               prior: ArrayLike = 0.5, beta: float = 1.0, *, max_exact: int = MAX_EXACT,
               large: str = LARGE, options: Options | Sequence[Options] | None = None,
               **keywords) -> list[Posterior]:
    """:func:`infer` for many tasks, choosing the method per task in one place.

    "auto" enumerates tasks of at most ``max_exact`` units exactly and runs ``large``
    ("importance" by default, or "mcmc" or "svi") on the others. Exact inference of tasks
    that share a site and a dataset (a
    :class:`~bablate.taskset.TaskSet`) runs the network once per mask for all of them
    (:func:`exact_many`). Task ``i`` of a stochastic method gets the key
    ``jax.random.fold_in(key, i)``. ``options`` and ``**keywords`` as in :func:`infer`.

    Raises:
      ValueError: an unknown option, or a stochastic method (or "auto" choosing one) without
        a key.
    """
    items = list(tasks)
    chosen = [choose_method(t.num_units, method, max_exact, large) for t in items]
    opts = {c: resolve(c, method, options, keywords) for c in set(chosen)}  # fails fast
    keys: dict[int, jax.Array] = {}  # task i's key, for the tasks of a stochastic method
    stochastic_ids = [i for i, c in enumerate(chosen) if c in STOCHASTIC]
    if stochastic_ids:  # checked before any work, so a missing key fails fast
        what = f"infer_many over {len(items)} tasks"
        base = check_key(_require_key(key, chosen[stochastic_ids[0]], what), what)
        keys = {i: jax.random.fold_in(base, i) for i in stochastic_ids}
    out: dict[int, Posterior] = {}
    exact_ids = [i for i, c in enumerate(chosen) if c == "exact"]
    if exact_ids:
        exact_kwargs = opts["exact"].kwargs()
        if method == "auto":
            exact_kwargs.setdefault("max_units", max(max_exact, 20))
        group = (tasks if isinstance(tasks, TaskSet) and len(exact_ids) == len(items)
                 else [items[i] for i in exact_ids])
        for i, post in zip(exact_ids, exact_many(group, prior=prior, beta=beta,
                                                 **exact_kwargs), strict=True):
            out[i] = post
    for i, task_key in keys.items():
        out[i] = _run(items[i], chosen[i], method, task_key, prior, beta, opts[chosen[i]],
                      max_exact)
    return [out[i] for i in range(len(items))]


__all__ = ["LARGE", "MAX_EXACT", "METHODS", "OPTIONS", "STOCHASTIC", "ConvergenceWarning",
           "ExactOptions", "FlipKernel", "FlipState", "ImportanceOptions", "McmcOptions",
           "Options", "Posterior", "SviOptions", "chain_diagnostics", "choose_method", "exact",
           "exact_many", "importance", "index_to_masks", "infer", "infer_many", "mcmc",
           "mean_field_optimum", "svi", "table_marginals"]
