"""Importance sampling of the AMD: independent draws, a reference that cannot get stuck.

Masks are drawn independently from a proposal r, by default the prior, and weighted by
w(m) = prior(m) · odds(m)^β / r(m). The self-normalised estimates

    q_i = Σ_j w_j m_ji / Σ_j w_j,   Z = mean_j w_j,   H(q) = log Z − Σ_j w_j log q̃(m_j) / Σ_j w_j

(q̃ = prior · odds^β, Z its normaliser) are consistent, and because the draws are independent
their Monte Carlo error is known from the run itself: the standard error of each marginal
(delta method) and Kish's effective sample size ESS = (Σ w)² / Σ w². Nothing has to mix, so
where a chain stays in one mode for its whole run (R-hat far from 1) these estimates still
converge, at a rate set by how uneven the weights are.

The weights are bounded: the odds of the hard-count likelihood lie in [1/(n+1), n+1] for n
examples, and a proposal other than the prior is mixed with it (``defensive`` share), so
w ≤ (n+1)^β / defensive. Under the prior, ESS / draws is the prior's mass where the task is
performed, relative to the odds' spread; a mean-field proposal (an SVI fit) that is close to
the AMD raises it, and one that is wrong costs at most the factor ``defensive``.
"""

from __future__ import annotations

import time
import warnings

import jax
import numpy as np
from jax.typing import ArrayLike

from bablate import progress
from bablate.amd import check_beta, nonfinite_error, prior_probs
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.tasks import Task, check_key

LN2 = float(np.log(2.0))
# Kish's ESS itself is noisy below about a hundred; a run under it is flagged whatever its
# standard errors say.
MIN_ESS = 100.0


def importance(task: Task, key: jax.Array, prior: ArrayLike = 0.5, beta: float = 1.0, *,
               num_samples: int = 4096, proposal: ArrayLike | Posterior | None = None,
               defensive: float = 0.5, max_se: float = 0.05, smooth: bool = False,
               num_draws: int = 2000, chunk_size: int = 256) -> Posterior:
    """Estimates the AMD from ``num_samples`` independent, weighted masks.

    Args:
      task: the task.
      key: PRNG key (the proposal's draws, then the resampled ``samples``).
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      num_samples: masks drawn from the proposal and evaluated.
      proposal: None (draw from the prior), keep-probabilities ``[d]``, or a
        :class:`Posterior` whose marginals are used (e.g. an SVI fit); it is mixed with the
        prior, which keeps a share ``defensive`` of the draws.
      defensive: the prior's share of the proposal mixture, in (0, 1] (ignored without a
        proposal).
      max_se: a run whose largest marginal standard error exceeds this is flagged.
      smooth: use the rule's smooth surrogate instead of the hard count.
      num_draws: masks resampled by weight (systematic resampling) into ``samples``.
      chunk_size: masks per compiled evaluation.

    Returns:
      A :class:`Posterior` (method "importance") with the weighted marginals, H(q) in
      ``entropy_bits`` and in ``diagnostics``: ``ess``, ``ess_fraction``, ``marginal_se``
      (per unit), ``marginal_se_max``, ``entropy_error`` (the standard error of H(q) in bits,
      which :func:`bablate.metrics.summarize` reports), ``log_normaliser`` and
      ``max_weight_share``. A run with ESS below ``MIN_ESS`` or a standard error above
      ``max_se`` warns (:class:`ConvergenceWarning`) and says so in ``diagnostics["warnings"]``.
    """
    if num_samples < 2 or num_draws < 1 or chunk_size < 1:
        raise ValueError(f"need num_samples >= 2, num_draws >= 1 and chunk_size >= 1; got "
                         f"{num_samples}, {num_draws}, {chunk_size}.")
    if max_se <= 0:
        raise ValueError(f"max_se must be > 0; got {max_se}.")
    key = check_key(key, f"importance sampling for task {task.name!r}")
    beta = check_beta(beta)
    d = task.num_units
    p = prior_probs(prior, d)
    r, alpha = _proposal(proposal, defensive, d, p)
    k_component, k_masks, k_resample = jax.random.split(key, 3)
    from_prior = np.asarray(jax.random.bernoulli(k_component, alpha, (num_samples,)))
    keep = np.where(from_prior[:, None], p[None, :], r[None, :])
    masks = np.asarray(jax.random.uniform(k_masks, (num_samples, d)) < keep, np.float32)

    start = time.perf_counter()
    log_odds = np.empty(num_samples, np.float64)
    with progress.bar(total=num_samples, desc=f"importance {task.name}", unit="mask") as bar:
        for lo in range(0, num_samples, chunk_size):
            block = masks[lo:lo + chunk_size]
            log_odds[lo:lo + len(block)] = task.log_odds(block, smooth=smooth,
                                                         chunk_size=chunk_size)
            bar.update(len(block))
    if not np.all(np.isfinite(log_odds)):
        raise nonfinite_error(task.name, f"{int((~np.isfinite(log_odds)).sum())} of "
                              f"{num_samples} importance-sampled masks")

    log_prior = _log_bernoulli(masks, p)
    log_target = log_prior + beta * log_odds  # log q̃(m), the unnormalised AMD
    log_r = log_prior if alpha == 1.0 else np.logaddexp(
        np.log(alpha) + log_prior, np.log1p(-alpha) + _log_bernoulli(masks, r))
    log_w = log_target - log_r
    shift = log_w.max()
    w = np.exp(log_w - shift)
    w_hat = w / w.sum()
    ess = float(1.0 / np.sum(w_hat ** 2))
    marginals = w_hat @ masks
    # Delta method for the self-normalised estimate: Var q_i ≈ Σ_j ŵ_j² (m_ji − q_i)².
    se = np.sqrt(np.sum(w_hat[:, None] ** 2 * (masks - marginals[None, :]) ** 2, axis=0))
    # H(q) = log Z − E_q log q̃, with Z = E_r[w] and E_q from the same weights.
    log_z = float(shift + np.log(w.mean()))
    mean_log_target = float(w_hat @ log_target)
    entropy = (log_z - mean_log_target) / LN2
    se_mean_log = np.sqrt(np.sum(w_hat ** 2 * (log_target - mean_log_target) ** 2))
    se_log_z = np.std(w) / (np.sqrt(num_samples) * w.mean())
    entropy_se = float(np.hypot(se_mean_log, se_log_z) / LN2)

    positions = (np.asarray(jax.random.uniform(k_resample, ())) + np.arange(num_draws)) / num_draws
    picks = np.minimum(np.searchsorted(np.cumsum(w_hat), positions), num_samples - 1)
    diagnostics = {
        "seconds": time.perf_counter() - start, "num_samples": int(num_samples),
        "proposal": ("prior" if alpha == 1.0 else
                     f"prior mixed with a proposal, prior share {alpha:g}"),
        "ess": ess, "ess_fraction": ess / num_samples,
        "marginal_se": [float(x) for x in se], "marginal_se_max": float(se.max()),
        "log_normaliser": log_z,
        "max_weight_share": float(w_hat.max()), "entropy_estimate": "importance sampling",
        "entropy_error": entropy_se, "warnings": []}
    if ess < MIN_ESS or se.max() > max_se:
        diagnostics["warnings"].append(
            f"effective sample size {ess:.0f} of {num_samples} draws (at least {MIN_ESS:g} "
            f"wanted) and largest marginal standard error {se.max():.3f} (limit {max_se:g}): "
            "too few draws for these weights; raise num_samples (the error falls as "
            "1/sqrt(ESS)) or pass a proposal closer to the AMD (e.g. an SVI fit)")
    for message in diagnostics["warnings"]:
        warnings.warn(f"importance sampling for task {task.name!r}: {message}",
                      ConvergenceWarning, stacklevel=2)
    return Posterior(task=task.name, method="importance", marginals=marginals,
                     prior=np.asarray(p), beta=beta, samples=masks[picks].astype(np.uint8),
                     entropy_bits=float(entropy), diagnostics=diagnostics,
                     site=task.site.identity)


def _proposal(proposal, defensive: float, d: int, p: np.ndarray) -> tuple[np.ndarray, float]:
    """The proposal's keep-probabilities ``[d]`` and the prior's share of the mixture."""
    if proposal is None:
        return p, 1.0
    if not 0 < defensive <= 1:
        raise ValueError(f"defensive must be in (0, 1] (the prior's share of the proposal, "
                         f"which bounds the weights); got {defensive}.")
    r = np.asarray(proposal.marginals if isinstance(proposal, Posterior) else proposal,
                   np.float64)
    if r.shape != (d,) or not np.all((r >= 0) & (r <= 1)):
        raise ValueError(f"proposal must hold {d} keep-probabilities in [0, 1] (one per unit "
                         f"of the site); got shape {r.shape}.")
    return r, float(defensive)


def _log_bernoulli(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """log Π_i Bernoulli(m_i; probs_i) per mask, ``[M]`` (0 · log 0 = 0)."""
    with np.errstate(divide="ignore"):
        log_p, log_q = np.log(probs), np.log1p(-probs)
    return (np.where(masks > 0, log_p, 0.0) + np.where(masks > 0, 0.0, log_q)).sum(-1)
