"""Importance sampling of the AMD: independent weighted masks whose error bars hold, adapted
over rounds until every marginal is known to a target standard error.

Why it is the estimator for large sites. The likelihood is the odds of a smoothed count, so the
log-odds of every mask lie in a known range [lo, hi] (±log(n + 1) for n examples of a pooled
rule; :meth:`bablate.Task.log_odds_bounds`). Against a proposal that keeps a share α of the
prior, no importance weight exceeds e^{β·hi}/α, and the normaliser Z = E_prior[odds^β] is at
least e^{β·lo}: no draw can carry more than B = e^{β(hi − lo)}/α times the average weight (the
*weight bound*). The weights' variance is finite, the central limit theorem holds, and the
standard errors the run computes from its own draws are honest. Nothing has to mix.

Rounds. Round 0 draws from the prior (or from a given proposal mixed with it). After each round
the proposal is refitted (:func:`bablate.inference.proposals.fit`: product-Bernoulli
components, shrunk towards the prior unit by unit) to all draws so far, weighted for a tempered
target prior · odds^{β_t}: β_t is the largest inverse temperature ≤ β at which the weighted
draws keep an effective sample size of half a round, so every fit rests on many effective draws
and the proposal walks from the prior towards the AMD over the rounds (the tempering path of
sequential Monte Carlo, with fresh independent draws in place of its MCMC moves). Each new
proposal keeps the prior's share ``defensive``. The run stops when every marginal's standard
error is at most ``target_se``, with an ESS of at least ``MIN_ESS`` and at least ``min_masks``
masks evaluated (the verdict ``converged``), or when ``max_masks`` masks are spent
(``converged`` False, and a :class:`ConvergenceWarning`).

Combining rounds. Every draw is weighted against the mixture of all round proposals in
proportion to their draws, w(m) = q̃(m) / Σ_t (M_t/M) r_t(m) with q̃ = prior · odds^β (the
deterministic mixture, or balance heuristic, of multiple importance sampling: a heavy draw of
an early round is weighed again against the proposals that later cover its region, and the
weight bound holds with the average prior share ᾱ = Σ_t (M_t/M) α_t). Estimates are
self-normalised, Σ_j w_j f(m_j) / Σ_j w_j, with standard errors by the delta method,
Var ≈ Σ_j ŵ_j² (f_j − estimate)², conservative for a deterministic mixture (a fixed number of
draws per proposal varies less than draws from the mixture); the variance of Z is the sum of
the rounds'. A later round's proposal depends on earlier draws, so the mixture weights are
consistent with a bias of order 1/M (adaptive multiple importance sampling, Cornuet et al.
2012), below the standard error of order 1/√M as long as no proposal copies particular draws:
the shrinkage of :func:`bablate.inference.proposals.shrink` sees to that. Without it, on the
bimodal count site a component fitted to a few heavy draws copied their irrelevant units and
the run reported a converged log Z 50 standard errors off. tests/test_importance.py measures
the coverage against exact enumeration (d ≤ 16) and against count sites whose answer is known
at d = 270 (:mod:`bablate.testbeds.counts`).

Unseen mass. A set of masks A that no draw reached holds posterior mass at most
e^{β·hi} prior(A) / Z. The prior's share of the draws misses A with probability
(1 − ᾱ prior(A))^M, so with 95% confidence ᾱ prior(A) ≤ 3/M and q(A) ≤ 3 e^{β·hi} / (ᾱ M Z)
≤ 3 B / M (``unseen_mass_bound``, with Z from the run where that is tighter). ``converged``
speaks of the standard errors; this bound says what no finite run can rule out: posterior mass
in a region the prior reaches less often than once in M draws.

Why not a library: blackjax's adaptive tempered SMC moves particles with MCMC kernels at every
temperature. Its draws are then correlated and its error bars come from repeated runs, and on
these sites the MCMC moves are what fails to mix; independent draws from a fitted proposal keep
the bounded weights that make the error bars honest, and need ~200 lines.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from jax.typing import ArrayLike

from bablate import progress
from bablate.amd import check_beta, nonfinite_error, prior_probs
from bablate.callsite import warn_caller
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.inference.proposals import Proposal, fit, log_bernoulli
from bablate.tasks import Task, check_key

LN2 = float(np.log(2.0))
# Kish's ESS is itself noisy below about a hundred; a run under it is not converged whatever
# its standard errors say.
MIN_ESS = 100.0
TARGET_SE = 0.02
# Tempering: β_t keeps the weighted draws' ESS at this fraction of a round's draws (a fraction
# of all draws would stall the path: the early rounds' draws weigh little at higher β).
ESS_KEEP = 0.5
# Confidence multiplier of the unseen-mass bound: (1 − x)^M ≤ e^{−xM} ≤ 5% for x ≥ 3/M.
_RULE_OF_THREE = 3.0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Self-normalised estimates from weighted draws, with their standard errors."""

    marginals: np.ndarray
    marginal_se: np.ndarray
    ess: float
    log_z: float
    log_z_se: float
    entropy_bits: float
    entropy_se: float
    w_hat: np.ndarray

    @property
    def max_se(self) -> float:
        return float(self.marginal_se.max()) if self.marginal_se.size else 0.0


def estimate(masks: np.ndarray, log_target: np.ndarray, log_mix: np.ndarray,
             log_own: np.ndarray, rounds: np.ndarray) -> Estimate:
    """The AMD's marginals, log Z and H(q) from the draws of all rounds.

    Args:
      masks: ``[M, d]`` the draws.
      log_target: ``[M]`` log q̃ (the unnormalised AMD) of each draw.
      log_mix: ``[M]`` log of the mixture of all round proposals at each draw, Σ_t M_t r_t(m)
        (the deterministic mixture's denominator, up to a constant).
      log_own: ``[M]`` log r_t(m) of the proposal each draw came from.
      rounds: ``[M]`` the round of each draw.

    The marginals and H(q) are self-normalised over the mixture weights q̃ / Σ_t M_t r_t. The
    normaliser is the mean of the weights against each draw's own proposal, q̃ / r_t: every
    round's mean is unbiased given the rounds before it (its proposal was fixed before it
    drew), so their sum is a martingale and its variance the sum of the rounds', where the
    mixture weights' Z is biased low by the later proposals fitted to the same draws (measured
    on a 14-unit count site: log Z 0.7 standard errors low on average).
    """
    log_v = log_target - log_mix
    shift = float(log_v.max())
    v = np.exp(log_v - shift)
    w_hat = v / v.sum()
    marginals = w_hat @ masks
    # Delta method for the self-normalised estimate: Var q_i ≈ Σ_j ŵ_j² (m_ji − q_i)².
    se = np.sqrt(np.sum(w_hat[:, None] ** 2 * (masks - marginals[None, :]) ** 2, axis=0))
    log_w = log_target - log_own
    top = float(log_w.max())
    w = np.exp(log_w - top)
    # Var Ẑ = Σ_t Var_t(w) / M² (a sum over rounds of the spread around each round's mean).
    round_mean = np.bincount(rounds, w) / np.bincount(rounds)
    log_z = top + float(np.log(w.mean()))
    log_z_se = float(np.sqrt(np.sum((w - round_mean[rounds]) ** 2)) / w.sum())
    # H(q) = log Z − E_q log q̃, E_q from the mixture weights.
    mean_log_target = float(w_hat @ log_target)
    se_mean = float(np.sqrt(np.sum(w_hat ** 2 * (log_target - mean_log_target) ** 2)))
    return Estimate(marginals=marginals, marginal_se=se, ess=float(1.0 / np.sum(w_hat ** 2)),
                    log_z=log_z, log_z_se=log_z_se,
                    entropy_bits=(log_z - mean_log_target) / LN2,
                    entropy_se=float(np.hypot(se_mean, log_z_se) / LN2), w_hat=w_hat)


def next_beta(log_base: np.ndarray, log_odds: np.ndarray, beta_now: float, beta: float,
              min_ess: float) -> float:
    """The largest β' in [``beta_now``, ``beta``] at which weights exp(log_base + β'·log_odds)
    keep an ESS of ``min_ess`` (``beta`` if they do there, ``beta_now`` if they do not even at
    ``beta_now``)."""

    def ess(b: float) -> float:
        lw = log_base + b * log_odds
        w = np.exp(lw - lw.max())
        return float(w.sum() ** 2 / np.sum(w ** 2))

    if ess(beta) >= min_ess:
        return beta
    if ess(beta_now) < min_ess:
        return beta_now
    lo, hi = beta_now, beta
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(mid) >= min_ess else (lo, mid)
    return lo


@dataclasses.dataclass
class _Draws:
    """The draws of all rounds so far, with every round proposal's density at each."""

    masks: np.ndarray
    log_odds: np.ndarray
    log_r: np.ndarray  # [M, T]: log r_t(m_j) for every draw j and round proposal t
    counts: list[int]

    def add(self, new: np.ndarray, new_log_odds: np.ndarray, proposals: list[Proposal],
            prior: np.ndarray) -> None:
        """Appends a round's draws (from the last of ``proposals``)."""
        cols = np.stack([r.log_prob(new, prior) for r in proposals], axis=1)
        self.log_r = np.vstack([self.log_r, cols]) if self.counts else cols
        self.masks = np.vstack([self.masks, new])
        self.log_odds = np.concatenate([self.log_odds, new_log_odds])
        self.counts.append(new.shape[0])

    def add_proposal(self, proposal: Proposal, prior: np.ndarray) -> None:
        """Scores every draw so far under a new round's proposal (before it draws)."""
        self.log_r = np.hstack([self.log_r, proposal.log_prob(self.masks, prior)[:, None]])

    def log_mix(self) -> np.ndarray:
        """log Σ_t M_t r_t(m_j) per draw: the deterministic mixture's denominator."""
        counts = np.log(np.asarray(self.counts, np.float64))
        return np.logaddexp.reduce(self.log_r[:, :len(self.counts)] + counts[None, :], axis=1)

    def log_own(self) -> np.ndarray:
        """log r_t(m_j) per draw, under the proposal of its own round t."""
        rounds = self.rounds()
        return self.log_r[np.arange(rounds.size), rounds]

    def rounds(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.counts)), self.counts)


def importance(task: Task, key: jax.Array, prior: ArrayLike = 0.5, beta: float = 1.0, *,
               target_se: float = TARGET_SE, max_masks: int = 65_536, min_masks: int = 4096,
               round_masks: int = 512, adapt: bool = True, components: int = 2,
               defensive: float = 0.3,
               proposal: ArrayLike | Posterior | None = None, smooth: bool = False,
               num_draws: int = 2000, chunk_size: int = 256) -> Posterior:
    """Estimates the AMD from independent weighted masks, adapting the proposal over rounds
    until every marginal's standard error is at most ``target_se`` (see the module docstring).

    Args:
      task: the task.
      key: PRNG key (each round's draws, the fits' starting points, the resampled ``samples``).
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      target_se: stop once every marginal's standard error is at most this (and the ESS at
        least ``MIN_ESS``): the verdict ``converged``.
      max_masks: the budget: masks evaluated (each one forward pass over the task's examples);
        ``min_masks`` and ``round_masks`` are capped at it.
      min_masks: masks evaluated before the run may stop: a region of prior mass p holding
        most of the AMD is missed by m draws with probability ≈ e^{−α p m}, and a run that
        stopped after a first round that missed it would report the prior with small errors.
      round_masks: masks drawn per round (the proposal is refitted between rounds).
      adapt: refit the proposal between rounds; False keeps the first proposal (plain
        importance sampling, with the same stopping rule).
      components: product-Bernoulli components of the fitted proposal (more than 1 for a
        posterior with several separated modes).
      defensive: the prior's share α of every fitted proposal (and of ``proposal``), in
        (0, 1]: the weight bound grows as 1/α.
      proposal: the first round's proposal: None (the prior), keep-probabilities ``[d]`` or a
        :class:`Posterior` whose marginals are used (e.g. an SVI fit), mixed with the prior.
      smooth: use the rule's smooth surrogate instead of the hard count.
      num_draws: masks resampled by weight (systematic resampling) into ``samples``.
      chunk_size: masks per compiled evaluation.

    Returns:
      A :class:`Posterior` (method "importance") with the weighted marginals, H(q) in
      ``entropy_bits``, and in ``diagnostics``: ``converged``, ``max_se``, ``marginal_se`` (per
      unit), ``ess``, ``forward_passes``, ``log_z``, ``log_z_se``, ``entropy_error`` (the
      standard error of H(q) in bits), ``weight_bound``, ``unseen_mass_bound``, the rounds'
      sizes, weights, temperatures and proposals, and ``warnings``. A run that is not
      converged warns (:class:`ConvergenceWarning`).
    """
    _check_settings(target_se, max_masks, min_masks, round_masks, components, defensive,
                    num_draws, chunk_size)
    key = check_key(key, f"importance sampling for task {task.name!r}")
    # The budget bounds the others: a small max_masks needs no other setting changed.
    round_masks, min_masks = min(round_masks, max_masks), min(min_masks, max_masks)
    beta = check_beta(beta)
    d = task.num_units
    p = prior_probs(prior, d).astype(np.float64)
    proposals = [_first_proposal(proposal, defensive, d)]
    k_rounds, k_fit, k_resample = jax.random.split(key, 3)
    draws = _Draws(np.zeros((0, d), np.float32), np.zeros(0), np.zeros((0, 1)), [])
    betas = [0.0]
    start = time.perf_counter()
    with progress.bar(total=max_masks, desc=f"importance {task.name}", unit="mask") as bar:
        while True:
            t = len(draws.counts)
            num = min(round_masks, max_masks - draws.masks.shape[0])
            new = proposals[t].sample(jax.random.fold_in(k_rounds, t), num, p)
            new_log_odds = _evaluate(task, new, smooth, chunk_size, bar)
            if not np.all(np.isfinite(new_log_odds)):
                raise nonfinite_error(task.name, f"{int((~np.isfinite(new_log_odds)).sum())} "
                                      f"of {num} importance-sampled masks")
            draws.add(new, new_log_odds, proposals, p)
            log_prior = log_bernoulli(draws.masks, p)
            log_mix, log_own, rounds = draws.log_mix(), draws.log_own(), draws.rounds()
            est = estimate(draws.masks, log_prior + beta * draws.log_odds, log_mix, log_own,
                           rounds)
            converged = bool(est.max_se <= target_se and est.ess >= MIN_ESS
                             and draws.masks.shape[0] >= min_masks)
            bar.set_postfix(se=f"{est.max_se:.3f}", ess=f"{est.ess:.0f}")
            if converged or draws.masks.shape[0] >= max_masks:
                break
            next_proposal = proposals[-1]
            if adapt:
                # Fit the next proposal to a tempered target the draws still resolve.
                betas.append(next_beta(log_prior - log_mix, draws.log_odds, betas[-1], beta,
                                       ESS_KEEP * round_masks))
                tempered = estimate(draws.masks, log_prior + betas[-1] * draws.log_odds,
                                    log_mix, log_own, rounds)
                pi, theta = fit(draws.masks, tempered.w_hat, p, components,
                                jax.random.fold_in(k_fit, t))
                next_proposal = Proposal.mixed(theta, defensive, pi)
            else:
                betas.append(betas[-1])
            proposals.append(next_proposal)
            draws.add_proposal(next_proposal, p)

    m = draws.masks.shape[0]
    used = proposals[:len(draws.counts)]
    lo, hi = task.log_odds_bounds(smooth)
    alpha_bar = float(np.dot([r.alpha for r in used], draws.counts) / m)
    weight_bound = float(np.exp(beta * (hi - lo)) / alpha_bar)
    z_low = max(beta * lo, est.log_z - 2.0 * est.log_z_se)
    unseen = min(1.0, _RULE_OF_THREE * float(np.exp(beta * hi - z_low)) / (alpha_bar * m))
    diagnostics = {
        "seconds": time.perf_counter() - start, "converged": converged,
        "max_se": est.max_se, "target_se": float(target_se),
        "marginal_se": [float(x) for x in est.marginal_se], "ess": est.ess,
        "ess_fraction": est.ess / m, "forward_passes": int(m),
        "log_z": est.log_z, "log_z_se": est.log_z_se,
        "entropy_estimate": "importance sampling", "entropy_error": est.entropy_se,
        "max_weight_share": float(est.w_hat.max()), "weight_bound": weight_bound,
        "unseen_mass_bound": unseen, "defensive": alpha_bar, "rounds": len(draws.counts),
        "round_masks": list(draws.counts), "round_betas": betas[:len(draws.counts)],
        "proposal": used[-1].describe(), "warnings": []}
    if not converged:
        diagnostics["warnings"].append(
            f"not converged after {m} masks in {len(draws.counts)} round(s): largest marginal "
            f"standard error {est.max_se:.3f} (target {target_se:g}), effective sample size "
            f"{est.ess:.0f} (at least {MIN_ESS:g} wanted); raise max_masks (the error falls as "
            "1/sqrt(ESS))")
    for message in diagnostics["warnings"]:
        warn_caller(f"importance sampling for task {task.name!r}: {message}", ConvergenceWarning)
    return Posterior(task=task.name, method="importance", marginals=est.marginals,
                     prior=p.astype(np.float32), beta=beta,
                     samples=_resample(k_resample, est.w_hat, draws.masks, num_draws),
                     entropy_bits=float(est.entropy_bits), diagnostics=diagnostics,
                     site=task.site.identity)


def _check_settings(target_se, max_masks, min_masks, round_masks, components, defensive,
                    num_draws, chunk_size) -> None:
    if not 0 < target_se < 0.5:
        raise ValueError(f"target_se must be in (0, 0.5) (the largest standard error of a "
                         f"marginal to stop at); got {target_se}.")
    if round_masks < 2 or max_masks < 2 or min_masks < 0:
        raise ValueError(f"need round_masks >= 2, max_masks >= 2 and min_masks >= 0; got "
                         f"round_masks={round_masks}, max_masks={max_masks}, "
                         f"min_masks={min_masks}.")
    if components < 1 or num_draws < 1 or chunk_size < 1:
        raise ValueError(f"need components >= 1, num_draws >= 1 and chunk_size >= 1; got "
                         f"{components}, {num_draws}, {chunk_size}.")
    if not 0 < defensive <= 1:
        raise ValueError(f"defensive must be in (0, 1] (the prior's share of every proposal, "
                         f"which bounds the weights); got {defensive}.")


def _first_proposal(proposal, defensive: float, d: int) -> Proposal:
    """The first round's proposal: the prior, or ``proposal`` mixed with it."""
    if proposal is None:
        return Proposal.prior(d)
    r = np.asarray(proposal.marginals if isinstance(proposal, Posterior) else proposal,
                   np.float64)
    if r.shape != (d,) or not np.all((r >= 0) & (r <= 1)):
        raise ValueError(f"proposal must hold {d} keep-probabilities in [0, 1] (one per unit "
                         f"of the site); got shape {r.shape}.")
    return Proposal.mixed(r, defensive)


def _evaluate(task: Task, masks: np.ndarray, smooth: bool, chunk_size: int, bar) -> np.ndarray:
    """Log-odds ``[M]`` of masks, chunk by chunk (one forward pass per mask)."""
    out = np.empty(masks.shape[0], np.float64)
    for lo in range(0, masks.shape[0], chunk_size):
        block = masks[lo:lo + chunk_size]
        out[lo:lo + len(block)] = task.log_odds(block, smooth=smooth, chunk_size=chunk_size)
        bar.update(len(block))
    return out


def _resample(key: jax.Array, w_hat: np.ndarray, masks: np.ndarray, num: int) -> np.ndarray:
    """``num`` masks resampled by weight (systematic resampling), uint8."""
    positions = (np.asarray(jax.random.uniform(key, ())) + np.arange(num)) / num
    picks = np.minimum(np.searchsorted(np.cumsum(w_hat), positions), masks.shape[0] - 1)
    return masks[picks].astype(np.uint8)
