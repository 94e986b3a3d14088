"""The ablation mask distribution as a numpyro model.

    mask_i ~ Bernoulli(prior_i)   (inside a plate over units)
    factor  β · logit P(correct | task, mask)

so that log P(mask | task, correct) = log prior(mask) + β · log-odds(mask) − log Z, a Boltzmann
distribution over the hypercube (DESIGN §1). The paper's setting is prior 0.5, β = 1.

The AMD is written once: :func:`model` is the numpyro model (prior and β traced arguments, from
:func:`amd_args`; :func:`amd_model` is the same model taking them as numbers) and
:func:`log_joint_from` the batched density that exact enumeration, the MCMC kernel and the
stock sampler's scoring evaluate (:func:`log_density` is it for :func:`model`'s arguments).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

from bablate.tasks import Task, bind
from bablate.taskset import TaskSet

MASK_SITE = "mask"
_A = TypeVar("_A", jax.Array, np.ndarray)  # traced or host arrays, out as they came in


def prior_probs(prior: ArrayLike, num_units: int) -> np.ndarray:
    """The per-unit prior keep-probability ``[d]`` from a scalar or ``[d]`` array (host values)."""
    try:
        exact = np.broadcast_to(np.asarray(prior, np.float64), (num_units,))
    except (ValueError, TypeError):
        raise ValueError(f"prior must be a scalar or have shape ({num_units},), got shape "
                         f"{np.shape(prior)}.") from None
    if not np.all((exact > 0) & (exact < 1)):
        raise ValueError(f"prior keep-probabilities must lie in (0, 1), got {prior!r}.")
    p = exact.astype(np.float32)
    if not np.all((p > 0) & (p < 1)):
        bad = float(exact[~((p > 0) & (p < 1))][0])
        raise ValueError(f"prior keep-probability {bad!r} rounds to {int(bad > 0.5)} in "
                         "float32, the precision masks are scored in; use a value in "
                         "[1e-7, 1 - 1e-7].")
    return p


def check_beta(beta: Any) -> float:
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


def amd_args(task: Task, p: np.ndarray, beta: float, data: Any = None) -> dict:
    """The arrays of the AMD of ``task``, the argument of :func:`model` and of every compiled
    program (nothing of it is compiled in): the task's data (or ``data``), the rule's
    positives, the log prior ``[2, d]`` (``[log p, log(1 − p)]``) and β."""
    return {"data": task.data if data is None else data, "positive": task.rule.positive,
            "log_prior": np.stack([np.log(p), np.log1p(-p)]).astype(np.float32),
            "beta": np.float32(beta)}


def model(args: dict, *, task: Task, smooth: bool = False) -> None:
    """The AMD of ``task`` as a numpyro model, with the prior and β traced.

    Args:
      args: :func:`amd_args` (the task's data, positives, log prior ``[2, d]`` and β).
      task: the task whose log-odds make the likelihood (its data is not read).
      smooth: use the rule's smooth surrogate (needed for gradients).
    """
    log_p, log_not_p = args["log_prior"][0], args["log_prior"][1]
    with numpyro.plate("units", task.num_units):
        mask = numpyro.sample(MASK_SITE, dist.Bernoulli(logits=log_p - log_not_p))
    log_odds = bind(task, args).log_odds_fn(args["data"], mask[None], smooth)[0]
    numpyro.factor("log_odds", args["beta"] * log_odds)


def log_density(masks: jax.Array, args: dict, *, task: Task, smooth: bool = False
                ) -> jax.Array:
    """The log density of :func:`model` for a batch of masks ``[M, d]``, in one evaluation."""
    return log_joint_from(bind(task, args), args["data"], masks, args["log_prior"],
                          args["beta"], smooth)


def amd_model(data: Any, *, task: Task, prior: ArrayLike = 0.5, beta: float = 1.0,
              smooth: bool = False) -> None:
    """:func:`model` with the prior as keep-probabilities and β as a number (checked).

    Args:
      data: ``task.data`` (a jit argument, so caches are not baked into the program).
      task: the task whose log-odds make the likelihood.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature on the log-odds.
      smooth: use the rule's smooth surrogate (needed for gradients).
    """
    p = prior_probs(prior, task.num_units)
    model(amd_args(task, p, check_beta(beta), data), task=task, smooth=smooth)


def make_model(task: Task, prior: ArrayLike = 0.5, beta: float = 1.0, smooth: bool = False
               ) -> Callable[[Any], None]:
    """``amd_model`` with its static parts bound; call it as ``model(task.data)``."""
    return functools.partial(amd_model, task=task, prior=prior, beta=beta, smooth=smooth)


def log_joint(task: Task, data: Any, masks: jax.Array, prior: ArrayLike = 0.5, beta: float = 1.0,
              smooth: bool = False) -> jax.Array:
    """Unnormalised log P(mask | task, correct) for masks ``[M, d]``, vectorised.

    Equal to numpyro's ``log_density`` of :func:`amd_model` (a test checks it) but evaluates
    the whole batch of masks in one vmapped call.
    """
    p = prior_probs(prior, task.num_units)
    beta = check_beta(beta)
    return log_joint_from(task, data, masks, jnp.stack([jnp.log(p), jnp.log1p(-p)]), beta,
                          smooth)


def log_prior_of(masks: _A, log_prior_2xD: _A) -> _A:
    """log prior(mask) ``[M]`` of masks ``[M, d]`` (float 0/1) from ``[log p, log(1 − p)]``:
    a JAX array for JAX arrays (traced), a NumPy array for NumPy arrays (on the host)."""
    return masks @ log_prior_2xD[0] + (1.0 - masks) @ log_prior_2xD[1]


def log_joint_from(likelihood: Task | TaskSet, data: Any, masks: jax.Array,
                   log_prior_2xD: jax.Array, beta: float | jax.Array, smooth: bool = False
                   ) -> jax.Array:
    """The one batched density: log prior(mask) + β · log-odds(mask), unnormalised.

    The prior is given as ``[log p, log(1 − p)]`` ``[2, d]`` so that the prior and β can be
    traced arguments of a compiled program. ``likelihood`` is a :class:`~bablate.Task`
    (``[M]`` out) or anything with the same ``log_odds_fn(data, masks, smooth)``, such as a
    :class:`~bablate.taskset.TaskSet` (``[T, M]`` out: every rule of a shared dataset).
    """
    masks = masks.astype(jnp.float32)
    log_odds = likelihood.log_odds_fn(data, masks, smooth)
    log_prior = log_prior_of(masks, log_prior_2xD)
    return log_prior.reshape((1,) * (log_odds.ndim - 1) + log_prior.shape) + beta * log_odds
