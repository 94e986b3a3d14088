"""Exact enumeration of the AMD over all 2^d masks (the ground truth for small sites)."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bablate import amd, programs, progress, sharding
from bablate.amd import check_beta, nonfinite_error, prior_probs
from bablate.inference.posterior import Posterior
from bablate.tasks import Task
from bablate.taskset import TaskSet, sharing_problem

MAX_EXACT_UNITS = 24


def index_to_masks(index: jax.Array, num_units: int) -> jax.Array:
    """Masks ``[M, d]`` for integer indices ``[M]``: unit i is kept iff bit i is set."""
    return ((index[:, None] >> jnp.arange(num_units)[None, :]) & 1).astype(jnp.float32)


def table_marginals(log_probs: np.ndarray, num_units: int) -> np.ndarray:
    """Marginals q(m_i = 1) from a normalised log table (index bit i = unit i)."""
    p = np.exp(log_probs - log_probs.max())
    p /= p.sum()
    # Reshaped C-order, axis 0 is the most significant bit (unit d-1).
    cube = p.reshape((2,) * num_units)
    out = np.empty(num_units)
    for i in range(num_units):
        axis = num_units - 1 - i
        out[i] = np.moveaxis(cube, axis, 0)[1].sum()
    return out


def _check_size(task: Task, max_units: int) -> None:
    d = task.num_units
    if max_units > MAX_EXACT_UNITS:
        raise ValueError(f"max_units={max_units} is above the largest enumerable site, "
                         f"d = {MAX_EXACT_UNITS} (2^{MAX_EXACT_UNITS} masks); use "
                         f"max_units <= {MAX_EXACT_UNITS}, or method='importance' (any d).")
    if d > max_units:
        hint = (f"raise max_units (up to {MAX_EXACT_UNITS}), or use " if d <= MAX_EXACT_UNITS
                else "use ")
        raise ValueError(f"exact enumeration of task {task.name!r} needs 2^{d} masks, above "
                         f"max_units={max_units}; {hint}method='importance' (any d, with "
                         "standard errors) or method='auto'.")


def _posterior(task: Task, log_unnorm: np.ndarray, prior, beta: float, seconds: float,
               ) -> Posterior:
    d = task.num_units
    if not np.all(np.isfinite(log_unnorm)):
        bad = int((~np.isfinite(log_unnorm)).sum())
        raise nonfinite_error(task.name, f"{bad} of {log_unnorm.size} masks in exact "
                              "enumeration")
    log_z = float(np.logaddexp.reduce(log_unnorm))
    log_probs = log_unnorm - log_z
    p = np.exp(log_probs)
    entropy_bits = float(-(p * log_probs).sum() / np.log(2.0))
    return Posterior(task=task.name, method="exact", marginals=table_marginals(log_probs, d),
                     prior=np.asarray(prior_probs(prior, d)), beta=beta, log_probs=log_probs,
                     entropy_bits=entropy_bits, site=task.site.identity,
                     diagnostics={"log_z": log_z, "log_z_se": 0.0, "num_masks": 2 ** d,
                                  "seconds": seconds, "converged": True, "max_se": 0.0,
                                  "ess": None, "forward_passes": 2 ** d})


def _enumerate(score, args, d: int, chunk: int, desc: str) -> tuple[np.ndarray, float]:
    """Runs ``score(args, start) -> [..., chunk]`` over all 2^d mask indices.

    Returns the float64 table ``[..., 2^d]`` and the wall time in seconds.
    """
    total = 2 ** d
    start_time = time.perf_counter()
    pieces = []
    with progress.bar(total=total, desc=desc, unit="mask") as bar:
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            pieces.append(score(args, jnp.int32(start))[..., :n])  # stays on device
            bar.update(n)
    table = np.asarray(jnp.concatenate(pieces, axis=-1)).astype(np.float64)
    return table, time.perf_counter() - start_time


def _build_one(task: Task, smooth: bool, chunk: int):
    """The compiled scorer of one task: ``(args, start) -> [chunk]`` log joint densities of the
    masks ``start .. start + chunk - 1``, with ``args`` from :func:`bablate.amd.amd_args`
    (data, positives, prior and β are arguments)."""
    bare = dataclasses.replace(task, data={})  # the cache must not keep one task's arrays
    d = task.num_units

    def score(args, start):
        masks = sharding.constrain(index_to_masks(start + jnp.arange(chunk), d))
        return amd.log_density(masks, args, task=bare, smooth=smooth)

    return jax.jit(programs.trace_guard(score))


def _build_many(task_set: TaskSet, smooth: bool, chunk: int):
    """The compiled scorer of a task set: ``(args, start) -> [T, chunk]``; ``args`` holds the
    set's data (shared arrays, each task's rule data and positives), the prior and β."""
    bare = TaskSet(site=task_set.site, data={},
                   tasks=tuple(dataclasses.replace(t, data={}) for t in task_set.tasks))
    d = bare.num_units

    def score(args, start):
        masks = sharding.constrain(index_to_masks(start + jnp.arange(chunk), d))
        return amd.log_joint_from(bare, args["data"], masks, args["log_prior"], args["beta"],
                                  smooth)

    return jax.jit(programs.trace_guard(score))


def exact_many(tasks: TaskSet | list[Task], prior: ArrayLike = 0.5, beta: float = 1.0,
               smooth: bool = False, chunk_size: int = 4096, max_units: int = 20,
               ) -> list[Posterior]:
    """Exact AMDs of several tasks that share one site and one dataset, in one enumeration.

    The network runs once per mask and every task's rule reads the same outputs, so T tasks
    cost about one (e.g. one task per chunk of a sequence, or per feature of a toy model).
    Pass a :class:`~bablate.taskset.TaskSet`; a plain list of tasks built on the same inputs
    (the same objects) is recognised as one too, and tasks built with different inputs or
    sites fall back to one enumeration each.
    """
    if not isinstance(tasks, TaskSet):
        tasks = list(tasks)
        if not tasks:
            return []
        if sharing_problem(tasks) is not None:
            return [exact(t, prior, beta, smooth, chunk_size, max_units) for t in tasks]
        tasks = TaskSet.of(tasks)
    beta = check_beta(beta)
    base = tasks.tasks[0]
    _check_size(base, max_units)
    d = base.num_units
    chunk = sharding.round_up(min(chunk_size, 2 ** d))
    p = prior_probs(prior, d)
    rules = tuple(programs.program_key(t)[1:] for t in tasks)
    score = programs.cached_program(("exact_many", tasks.site, rules, smooth, chunk),
                                    lambda: _build_many(tasks, smooth, chunk))
    args = {"data": tasks.data, "log_prior": amd.amd_args(base, p, beta)["log_prior"],
            "beta": np.float32(beta)}
    table, seconds = _enumerate(score, args, d, chunk, f"exact x{len(tasks)} tasks")
    return [_posterior(t, row, prior, beta, seconds)
            for t, row in zip(tasks.tasks, table, strict=True)]


def exact(task: Task, prior: ArrayLike = 0.5, beta: float = 1.0, smooth: bool = False,
          chunk_size: int = 8192, max_units: int = 20) -> Posterior:
    """Enumerates every mask in vmapped, jitted chunks.

    Args:
      task: the task.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      smooth: use the smooth likelihood instead of hard counts.
      chunk_size: masks per jitted call.
      max_units: refuse larger sites (2^d grows fast); raise it knowingly up to 24.

    Raises:
      ValueError: d > max_units, naming the alternatives.
    """
    _check_size(task, max_units)
    beta = check_beta(beta)
    d = task.num_units
    chunk = sharding.round_up(min(chunk_size, 2 ** d))
    p = prior_probs(prior, d)
    score = programs.cached_program(("exact", *programs.program_key(task), smooth, chunk),
                                    lambda: _build_one(task, smooth, chunk))
    log_unnorm, seconds = _enumerate(score, amd.amd_args(task, p, beta), d, chunk,
                                     f"exact {task.name}")
    return _posterior(task, log_unnorm, prior, beta, seconds)


def mean_field_optimum(post: Posterior, init: np.ndarray | None = None, tol: float = 1e-9,
                       max_sweeps: int = 2000) -> tuple[np.ndarray, float]:
    """The best mean-field (independent Bernoulli) fit to an exact AMD, by coordinate ascent.

    Each sweep sets every unit's keep-probability to its optimum given the others,
    logit r_i = logit prior_i + E_{r_-i}[f(m_i = 1, m_-i) − f(m_i = 0, m_-i)], with
    f = β · log-odds read off the exact table; the ELBO never decreases, so the sweeps converge
    to a local optimum (the one reached from ``init``, by default the prior, where SVI starts
    too). This is the optimum :func:`bablate.svi` approximates, computed another way.

    Args:
      post: an exact posterior (with its table).
      init: starting keep-probabilities ``[d]`` (default: the prior).
      tol: stop when no probability moves by more than this in a sweep.
      max_sweeps: the most sweeps.

    Returns:
      (keep-probabilities ``[d]``, the ELBO − log Z in nats, i.e. −KL(r ‖ q) ≤ 0).
    """
    if post.log_probs is None:
        raise ValueError(f"mean_field_optimum needs an exact posterior (a table); "
                         f"{post.task!r} is {post.method}.")
    d = post.num_units
    bits = np.asarray(index_to_masks(jnp.arange(2 ** d), d), np.float64)
    p = np.asarray(post.prior, np.float64)
    log_prior = bits @ np.log(p) + (1 - bits) @ np.log1p(-p)
    f = post.log_probs - log_prior  # β · log-odds − log Z
    r = np.array(p if init is None else init, np.float64)
    logit_p = np.log(p) - np.log1p(-p)
    unit_log = lambda i, ri: np.where(bits[:, i] == 1, np.log(ri), np.log1p(-ri))
    log_r = bits @ np.log(r) + (1 - bits) @ np.log1p(-r)  # log r(m), kept up to date
    for _ in range(max_sweeps):
        moved = 0.0
        for i in range(d):
            w = np.exp(log_r - unit_log(i, r[i]))  # r_-i(m_-i)
            on = bits[:, i] == 1
            delta = w[on] @ f[on] - w[~on] @ f[~on]
            new = float(np.clip(1.0 / (1.0 + np.exp(-(logit_p[i] + delta))), 1e-12, 1 - 1e-12))
            log_r += unit_log(i, new) - unit_log(i, r[i])
            moved = max(moved, abs(new - r[i]))
            r[i] = new
        if moved < tol:
            break
    elbo = float(np.exp(log_r) @ (post.log_probs - log_r))
    return r, elbo
