"""The ablation mask distribution as a numpyro model.

    mask_i ~ Bernoulli(prior_i)   (inside a plate over units)
    factor  β · logit P(correct | task, mask)

so that log P(mask | task, correct) = log prior(mask) + β · log-odds(mask) − log Z, a Boltzmann
distribution over the hypercube (DESIGN §1). The paper's setting is prior 0.5, β = 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bablate.tasks import Task

MASK_SITE = "mask"


def prior_probs(prior, num_units: int) -> np.ndarray:
    """The per-unit prior keep-probability ``[d]`` from a scalar or ``[d]`` array (host values)."""
    try:
        p = np.broadcast_to(np.asarray(prior, np.float32), (num_units,))
    except ValueError:
        raise ValueError(f"prior must be a scalar or have shape ({num_units},), got shape "
                         f"{np.shape(prior)}.") from None
    if not np.all((p > 0) & (p < 1)):
        raise ValueError(f"prior keep-probabilities must lie in (0, 1), got {prior!r}.")
    return p


def check_beta(beta) -> float:
    """β as a float, refusing a negative or non-finite value with a clear error."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta (β, the inverse temperature on the log-odds) must be a number, "
                         f"got {beta!r}.") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"beta (β, the inverse temperature on the log-odds) must be finite and "
                         f">= 0, got {beta!r}; the paper uses β = 1.")
    return value


def nonfinite_error(task_name: str, where: str) -> ValueError:
    """The one error every inference method raises for a NaN/inf log density."""
    return ValueError(f"task {task_name!r}: non-finite log-probabilities ({where}); the rule's "
                      "correctness or the network's outputs are NaN/inf under some masks. Check "
                      "the rule and the outputs under ablation (e.g. task.p_correct(masks)).")


def amd_model(data, *, task: Task, prior, beta: float = 1.0, smooth: bool = False):
    """numpyro model of the AMD for ``task`` (pass ``task.data`` as the model argument).

    Args:
      data: ``task.data`` (a jit argument, so caches are not baked into the program).
      task: the task whose log-odds make the likelihood.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature on the log-odds.
      smooth: use the rule's smooth surrogate (needed for gradients).
    """
    p = prior_probs(prior, task.num_units)
    beta = check_beta(beta)
    with numpyro.plate("units", task.num_units):
        mask = numpyro.sample(MASK_SITE, dist.Bernoulli(probs=p))
    numpyro.factor("log_odds", beta * task.log_odds_fn(data, mask[None], smooth)[0])


def make_model(task: Task, prior=0.5, beta: float = 1.0, smooth: bool = False):
    """``amd_model`` with its static parts bound; call it as ``model(task.data)``."""
    return functools.partial(amd_model, task=task, prior=prior, beta=beta, smooth=smooth)


def log_joint(task: Task, data, masks: jax.Array, prior=0.5, beta: float = 1.0,
              smooth: bool = False) -> jax.Array:
    """Unnormalised log P(mask | task, correct) for masks ``[M, d]``, vectorised.

    Equal to numpyro's ``log_density`` of :func:`amd_model` (a test checks it) but evaluates
    the whole batch of masks in one vmapped call.
    """
    p = prior_probs(prior, task.num_units)
    beta = check_beta(beta)
    return log_joint_from(task, data, masks, jnp.stack([jnp.log(p), jnp.log1p(-p)]), beta,
                          smooth)


def log_joint_from(task: Task, data, masks: jax.Array, log_prior_2xD: jax.Array, beta,
                   smooth: bool = False) -> jax.Array:
    """:func:`log_joint` with the prior given as ``[log p, log(1 − p)]`` ``[2, d]``, so that the
    prior and β can be traced arguments of a compiled program."""
    masks = masks.astype(jnp.float32)
    log_prior = masks @ log_prior_2xD[0] + (1.0 - masks) @ log_prior_2xD[1]
    return log_prior + beta * task.log_odds_fn(data, masks, smooth)
