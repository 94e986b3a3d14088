"""Inference of the ablation mask distribution: exact, MCMC and SVI behind one call."""

from __future__ import annotations

import jax

from bablate.inference.exact import (
    exact,
    exact_many,
    index_to_masks,
    mean_field_optimum,
    table_marginals,
)
from bablate.inference.kernels import FlipKernel, FlipState
from bablate.inference.mcmc import chain_diagnostics, mcmc
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.inference.svi import svi
from bablate.tasks import Task

METHODS = ("exact", "mcmc", "svi")


def infer(task: Task, method: str = "exact", key: jax.Array | None = None, prior=0.5,
          beta: float = 1.0, **options) -> Posterior:
    """Infers the AMD P(mask | task, correct) ∝ prior(mask) · odds(correct | task, mask)^β.

    Args:
      task: the task (:meth:`bablate.Task.build`).
      method: "exact" (d ≤ 20), "mcmc" (any d) or "svi" (thousands of units).
      key: PRNG key (mcmc, svi); default ``jax.random.key(0)``.
      prior: keep-probability of each unit, scalar or ``[d]`` (paper: 0.5).
      beta: inverse temperature on the log-odds (paper: 1).
      **options: passed to :func:`exact`, :func:`mcmc` or :func:`svi`.

    Returns:
      A :class:`Posterior`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown inference method {method!r}; choose one of {METHODS}.")
    if method == "exact":
        return exact(task, prior=prior, beta=beta, **options)
    key = jax.random.key(0) if key is None else key
    if method == "mcmc":
        return mcmc(task, key, prior=prior, beta=beta, **options)
    return svi(task, key, prior=prior, beta=beta, **options)


def infer_many(tasks: list[Task], method: str = "exact", key: jax.Array | None = None,
               prior=0.5, beta: float = 1.0, **options) -> list[Posterior]:
    """:func:`infer` for a list of tasks; exact inference of tasks that share a site and a
    dataset runs the network once per mask for all of them (:func:`exact_many`)."""
    if method == "exact":
        return exact_many(list(tasks), prior=prior, beta=beta, **options)
    key = jax.random.key(0) if key is None else key
    return [infer(t, method, jax.random.fold_in(key, i), prior, beta, **options)
            for i, t in enumerate(tasks)]


__all__ = ["METHODS", "ConvergenceWarning", "FlipKernel", "FlipState", "Posterior",
           "chain_diagnostics", "exact", "exact_many", "index_to_masks", "infer", "infer_many",
           "mcmc", "mean_field_optimum", "svi", "table_marginals"]
