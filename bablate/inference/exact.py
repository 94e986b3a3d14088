"""Exact enumeration of the AMD over all 2^d masks (the ground truth for small sites)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from bablate import progress, sharding
from bablate.amd import log_joint, prior_probs
from bablate.inference.posterior import Posterior
from bablate.tasks import Task, p_correct_from

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
    if d > min(max_units, MAX_EXACT_UNITS):
        raise ValueError(f"exact enumeration of task {task.name!r} needs 2^{d} masks; it is "
                         f"limited to d <= {max_units}. Use method='mcmc' (any d) or "
                         "method='svi' (thousands of units), or raise max_units (<= 24).")


def _posterior(task: Task, log_unnorm: np.ndarray, prior, beta: float, seconds: float,
               ) -> Posterior:
    d = task.num_units
    if not np.all(np.isfinite(log_unnorm)):
        raise ValueError(f"task {task.name!r}: non-finite log-probabilities during enumeration.")
    log_z = float(np.logaddexp.reduce(log_unnorm))
    log_probs = log_unnorm - log_z
    p = np.exp(log_probs)
    entropy_bits = float(-(p * log_probs).sum() / np.log(2.0))
    return Posterior(task=task.name, method="exact", marginals=table_marginals(log_probs, d),
                     prior=np.asarray(prior_probs(prior, d)), beta=beta, log_probs=log_probs,
                     entropy_bits=entropy_bits,
                     diagnostics={"log_z": log_z, "num_masks": 2 ** d, "seconds": seconds})


def _enumerate(score, data, d: int, chunk: int, desc: str) -> tuple[np.ndarray, float]:
    """Runs ``score(data, start) -> [..., chunk]`` over all 2^d mask indices.

    Returns the float64 table ``[..., 2^d]`` and the wall time in seconds.
    """
    total = 2 ** d
    start_time = time.perf_counter()
    pieces = []
    with progress.bar(total=total, desc=desc, unit="mask") as bar:
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            pieces.append(score(data, jnp.int32(start))[..., :n])  # stays on device
            bar.update(n)
    table = np.asarray(jnp.concatenate(pieces, axis=-1)).astype(np.float64)
    return table, time.perf_counter() - start_time


def exact_many(tasks: list[Task], prior=0.5, beta: float = 1.0, smooth: bool = False,
               chunk_size: int = 4096, max_units: int = 20) -> list[Posterior]:
    """Exact AMDs of several tasks that share one site and one dataset, in one enumeration.

    The network runs once per mask and every task's rule reads the same outputs, so T tasks
    cost about one (e.g. one task per chunk of a sequence, or per feature of a toy model).
    Tasks built with different inputs or sites fall back to one enumeration each.
    """
    if not tasks:
        return []
    base = tasks[0]
    same_value = lambda t: (t.data["value"] is base.data["value"]
                            or np.array_equal(t.data["value"], base.data["value"]))
    shared = all(t.site is base.site and t.data["inputs"] is base.data["inputs"]
                 and t.data["act"] is base.data["act"] and same_value(t) for t in tasks)
    if not shared:
        return [exact(t, prior, beta, smooth, chunk_size, max_units) for t in tasks]
    _check_size(base, max_units)
    d = base.num_units
    chunk = sharding.round_up(min(chunk_size, 2 ** d))
    p = prior_probs(prior, d)
    log_p, log_1mp = jnp.log(p), jnp.log1p(-p)

    @jax.jit
    def score(datas, start):
        masks = sharding.constrain(index_to_masks(start + jnp.arange(chunk), d))
        outputs = jax.vmap(lambda m: base.outputs_fn(datas[0], m))(masks)
        log_prior = masks @ log_p + (1.0 - masks) @ log_1mp
        rows = []
        for task, data in zip(tasks, datas, strict=True):
            correct = task.rule.soft if smooth else task.rule.hard
            c = jax.vmap(lambda out, data=data, correct=correct: correct(out, data["rule"]))(
                outputs)
            pc = p_correct_from(c.astype(jnp.float32), task.rule.positive)
            rows.append(log_prior + beta * (jnp.log(pc) - jnp.log1p(-pc)))
        return jnp.stack(rows)

    table, seconds = _enumerate(score, [t.data for t in tasks], d, chunk,
                                f"exact x{len(tasks)} tasks")
    return [_posterior(t, row, prior, beta, seconds) for t, row in zip(tasks, table, strict=True)]


def exact(task: Task, prior=0.5, beta: float = 1.0, smooth: bool = False,
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
    d = task.num_units
    chunk = sharding.round_up(min(chunk_size, 2 ** d))

    @jax.jit
    def score(data, start):
        idx = start + jnp.arange(chunk)
        masks = sharding.constrain(index_to_masks(idx, d))
        return log_joint(task, data, masks, prior, beta, smooth)

    log_unnorm, seconds = _enumerate(score, task.data, d, chunk, f"exact {task.name}")
    return _posterior(task, log_unnorm, prior, beta, seconds)
