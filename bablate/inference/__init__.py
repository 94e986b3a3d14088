"""Inference of the ablation mask distribution: exact, MCMC and SVI behind one call."""

from __future__ import annotations

import jax

from bablate.inference.exact import exact, index_to_masks, table_marginals
from bablate.inference.kernels import FlipKernel, FlipState
from bablate.inference.mcmc import chain_diagnostics, mcmc
from bablate.inference.posterior import Posterior
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


__all__ = ["METHODS", "FlipKernel", "FlipState", "Posterior", "chain_diagnostics", "exact",
           "index_to_masks", "infer", "mcmc", "svi", "table_marginals"]
