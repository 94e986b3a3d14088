"""MCMC over masks: :class:`FlipKernel` in a cached, jitted sampling loop
(:mod:`bablate.inference.mcmc_loop`), numpyro's stock ``DiscreteGibbs`` through numpyro's
``MCMC`` driver, R-hat and ESS from ``numpyro.diagnostics``.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from jax.typing import ArrayLike
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, DiscreteGibbs

from bablate import amd, progress
from bablate.amd import MASK_SITE, check_beta, make_model, nonfinite_error, prior_probs
from bablate.callsite import warn_caller
from bablate.inference.kernels import GRADIENT_PASSES
from bablate.inference.mcmc_loop import Run, legacy_key, sample_flip_kernel
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.tasks import Task, check_key

SAMPLERS = ("auto", "informed", "gradient", "stock")
CHAIN_METHODS = ("auto", "parallel", "vectorized", "sequential")


def chain_diagnostics(samples_CxSxD: np.ndarray) -> dict:
    """Split R-hat and ESS per unit (units that never move are left out of the summary), and
    each marginal's Monte Carlo standard error √(q_i (1 − q_i) / ESS_i) (0 for a unit that
    never moved: its draws say nothing about their own error, which R-hat and ESS flag)."""
    x = samples_CxSxD.astype(np.float64)
    flat = x.reshape(-1, x.shape[-1])
    moving = flat.std(axis=0) > 0
    out: dict[str, float | list[float]] = {"num_moving_units": int(moving.sum())}
    if moving.any() and x.shape[1] >= 4:
        xm = x[..., moving]
        # numpyro's estimate can come out negative for a handful of draws; one draw is the
        # least a chain can hold.
        ess = np.maximum(np.asarray(effective_sample_size(xm)), 1.0)
        out["ess_min"] = float(np.nanmin(ess))
        out["ess_mean"] = float(np.nanmean(ess))
        q = flat[:, moving].mean(axis=0)
        se = np.zeros(x.shape[-1])
        se[moving] = np.sqrt(q * (1 - q) / np.maximum(ess, 1.0))
        out["marginal_se"] = [float(v) for v in se]
        out["max_se"] = float(se.max())
        if x.shape[0] >= 2:
            out["r_hat_max"] = float(np.nanmax(np.asarray(split_gelman_rubin(xm))))
    return out


def mcmc(task: Task, key: jax.Array, prior: ArrayLike = 0.5, beta: float = 1.0, *,
         sampler: str = "auto", num_samples: int = 2000, num_warmup: int = 500, num_chains: int = 4,
         thinning: int = 1, smooth: bool = False, chain_method: str = "auto",
         init_mask: np.ndarray | None = None, flips: str = "multi",
         step_size: float = 1.0) -> Posterior:
    """Samples the AMD with :class:`FlipKernel` (or numpyro's stock Gibbs sampler).

    Args:
      task: the task.
      key: PRNG key.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      sampler: "informed" (all single flips scored with vmap), "gradient" (Gibbs with gradients
        from the smooth likelihood; targets the hard one unless ``smooth``), "stock"
        (numpyro's ``DiscreteGibbs`` in numpyro's ``MCMC``, one coordinate per step; the
        baseline), or "auto": "gradient" when the rule has a smooth surrogate (a step costs a
        few evaluations whatever d is), else "informed" (a step scores all d flips: worth it
        on accelerators).
      num_samples: draws per chain after warm-up; every ``thinning``-th is kept
        (``num_samples // thinning`` per chain).
      num_warmup: draws discarded per chain (the step size adapts during them).
      num_chains: chains (for R-hat).
      thinning: keep every k-th draw.
      smooth: target the smooth-likelihood AMD instead of the hard-count one.
      chain_method: "auto" splits the chains over devices ("parallel") when there are several
        devices and the chains divide evenly among as many of them as possible, else runs
        them as one batch ("vectorized"); "sequential" runs one chain after another (all
        three give the same draws). The stock sampler cannot be vectorised and runs
        "sequential" instead.
      init_mask: starting mask ``[d]``; default all ones (the intact network).
      flips: "single" (one bit per step) or "multi" (every bit may flip; see FlipKernel).
      step_size: initial step size α of the multi-flip proposal (adapted during warm-up).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}.")
    key = check_key(key, f"mcmc for task {task.name!r}")
    beta = check_beta(beta)
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"unknown chain_method {chain_method!r}; choose one of "
                         f"{CHAIN_METHODS}.")
    if num_chains < 1 or thinning < 1 or num_warmup < 0 or num_samples // thinning < 1:
        raise ValueError(f"need num_chains >= 1, thinning >= 1, num_warmup >= 0 and at least "
                         f"one kept draw (num_samples // thinning >= 1); got num_chains="
                         f"{num_chains}, thinning={thinning}, num_warmup={num_warmup}, "
                         f"num_samples={num_samples}.")
    if sampler == "auto":
        sampler = "gradient" if task.rule.soft is not None else "informed"
    if sampler == "gradient" and task.rule.soft is None:
        raise ValueError(f"the gradient sampler needs a smooth surrogate for rule "
                         f"{task.rule.name!r}; use sampler='informed'.")
    x0 = np.ones((task.num_units,), np.float32)
    if init_mask is not None:
        x0 = np.asarray(init_mask, np.float32)
        if x0.shape != (task.num_units,):
            raise ValueError(f"init_mask must have shape ({task.num_units},), got {x0.shape}.")
    p = prior_probs(prior, task.num_units)
    start = time.perf_counter()
    if sampler == "stock":
        samples, diagnostics = _stock(task, key, p, beta, smooth, num_samples, num_warmup,
                                      num_chains, thinning, chain_method, x0)
    else:
        run = Run(proposal=sampler, flips=flips, smooth=smooth, num_warmup=num_warmup,
                  num_samples=num_samples, thinning=thinning, num_chains=num_chains,
                  chain_method=chain_method)
        samples, diagnostics = sample_flip_kernel(task, key, p, beta, run, x0, step_size)
    passes = forward_passes(sampler, flips, task.num_units, num_chains,
                            num_warmup + num_samples)
    if sampler != "stock" and flips == "multi":
        sampler = f"{sampler}-multi"
    seconds = time.perf_counter() - start  # the sampler alone; stock draws are scored after
    if sampler == "stock":
        diagnostics["log_density"] = _score_stock_draws(task, samples, p, beta, smooth)
    flat = samples.reshape(-1, task.num_units)
    log_density = diagnostics.pop("log_density").reshape(-1).astype(np.float64)
    # Per-draw numbers (arviz's sample stats), chain-major like the draws; the stock Gibbs
    # sampler keeps none (every Gibbs update is accepted).
    sample_stats = {name: np.asarray(diagnostics.pop(f"{name}_per_draw")).reshape(-1)
                    for name in ("accept_prob", "step_size")
                    if f"{name}_per_draw" in diagnostics}
    if not np.all(np.isfinite(log_density)):
        raise nonfinite_error(task.name, "at masks drawn by MCMC")
    diagnostics = {"seconds": seconds, "num_chains": num_chains,
                   "num_draws": int(flat.shape[0]), **diagnostics,
                   **chain_diagnostics(samples), "forward_passes": passes,
                   "flat_likelihood": flat_likelihood(flat, log_density, p, beta)}
    diagnostics["warnings"] = convergence_warnings(diagnostics)
    diagnostics["converged"] = not diagnostics["warnings"]
    diagnostics.setdefault("max_se", None)  # too few draws, or no unit moved (a warning)
    diagnostics["ess"] = diagnostics.get("ess_min")
    for message in diagnostics["warnings"]:
        warn_caller(f"MCMC for task {task.name!r}: {message}", ConvergenceWarning)
    return Posterior(task=task.name, method=f"mcmc-{sampler}", marginals=flat.mean(axis=0),
                     prior=p, beta=beta, samples=flat, diagnostics=diagnostics,
                     site=task.site.identity, log_density=log_density, num_chains=num_chains,
                     sample_stats=sample_stats)


# Vehtari et al. (2021): R-hat below 1.01-1.05 and a bulk ESS of at least 100 per chain (400
# for four chains) before estimates are reported.
R_HAT_MAX = 1.05
ESS_MIN = 400
# The multi-flip step size is not a health check: on a posterior that is flat in most units
# the adaptation grows it without bound (flipping an irrelevant bit is always accepted), which
# is right. It warned on every one of 20 converged runs of a 14-unit network (R-hat ≤ 1.003),
# so a flat likelihood is now recognised from the draws themselves (convergence_warnings).
FLAT_TOLERANCE = 1e-6


def convergence_warnings(diagnostics: dict) -> list[str]:
    """What the chain diagnostics say is wrong, in words (empty when nothing is)."""
    out = []
    r_hat, ess = diagnostics.get("r_hat_max"), diagnostics.get("ess_min")
    if r_hat is not None and not r_hat <= R_HAT_MAX:
        out.append(f"R-hat {r_hat:.3g} > {R_HAT_MAX}: the chains disagree; run longer "
                   "(num_samples, num_warmup) or check for separated modes")
    if ess is not None and not ess >= ESS_MIN:
        out.append(f"effective sample size {ess:.3g} < {ESS_MIN} for some unit: marginals and "
                   "metrics carry large Monte Carlo error; raise num_samples")
    if diagnostics.get("num_moving_units") == 0 and diagnostics.get("num_draws", 0) > 1:
        out.append("no unit changed in any draw: the chains never left their starting mask, "
                   "so nothing is known about the AMD; check the acceptance rate, raise "
                   "num_warmup, or use method='importance'")
    if diagnostics.get("flat_likelihood"):
        out.append("the likelihood took one value at every drawn mask: the task does not "
                   "depend on these units (or the rule's correctness never changes), so the "
                   "AMD is the prior; check the site and the rule")
    return out


def flat_likelihood(draws: np.ndarray, log_density: np.ndarray, p: np.ndarray,
                    beta: float) -> bool:
    """Whether β · log-odds (the log density less the log prior) is one value at every draw of
    chains that moved: a flat likelihood, or a site the task does not read."""
    if beta == 0 or draws.shape[0] < 2 or np.all(draws == draws[:1]):
        return False
    log_prior = amd.log_prior_of(draws.astype(np.float64), np.stack([np.log(p), np.log1p(-p)]))
    part = np.asarray(log_density, np.float64) - log_prior
    return bool(np.ptp(part) <= FLAT_TOLERANCE * max(1.0, float(np.abs(part).max())))


def forward_passes(sampler: str, flips: str, d: int, num_chains: int, steps: int) -> int:
    """Forward passes (masks evaluated over the task's examples) of a run: per chain and step,
    the informed proposal scores the d single flips of the proposed mask and the mask itself,
    the gradient one scores the mask and takes one gradient (``GRADIENT_PASSES`` passes), the
    stock Gibbs sampler scores one mask; the initial state costs one step more."""
    del flips  # single and multi flips cost the same evaluations
    per_step = {"informed": d + 1, "gradient": 1 + GRADIENT_PASSES, "stock": 1}[sampler]
    return int(num_chains * (steps + 1) * per_step)


def _stock(task, key, p, beta, smooth, num_samples, num_warmup, num_chains, thinning,
           chain_method, x0):
    """numpyro's ``DiscreteGibbs`` in numpyro's ``MCMC`` (the baseline, as numpyro ships it)."""
    if chain_method == "auto":
        chain_method = "parallel" if 1 < num_chains <= jax.local_device_count() else "sequential"
    if chain_method == "vectorized":
        chain_method = "sequential"  # the Gibbs family does not vectorise across chains
    driver = MCMC(DiscreteGibbs(make_model(task, p, beta, smooth)), num_warmup=num_warmup,
                  num_samples=num_samples, num_chains=num_chains, thinning=thinning,
                  chain_method=chain_method, jit_model_args=True,
                  progress_bar=progress.enabled() and progress.on_terminal())
    init = {MASK_SITE: np.broadcast_to(x0, (num_chains, x0.size)) if num_chains > 1 else x0}
    driver.run(legacy_key(key), task.data, init_params=init)
    samples = np.asarray(driver.get_samples(group_by_chain=True)[MASK_SITE]).astype(np.uint8)
    return samples, {"chain_method": chain_method}


# Single-flip neighbours of the stock sampler's draws scored to look for a broken likelihood.
_MAX_NEIGHBOURS = 1 << 16


def _score_stock_draws(task: Task, samples: np.ndarray, p: np.ndarray, beta: float,
                       smooth: bool) -> np.ndarray:
    """The log density ``[C, S]`` of the stock sampler's draws (its driver keeps none).

    Gibbs rejects a proposal whose density is NaN without a trace, so the single-flip
    neighbours of the distinct draws (the masks it proposed; up to ``_MAX_NEIGHBOURS``) are
    scored too, and a non-finite one raises like every other method.
    """
    flat = samples.reshape(-1, samples.shape[-1]).astype(np.float32)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    d = unique.shape[1]
    keep = max(1, _MAX_NEIGHBOURS // d)
    flips = np.abs(unique[:keep, None, :] - np.eye(d, dtype=np.float32)[None]).reshape(-1, d)
    masks = np.concatenate([unique, flips])
    # The one density (bablate.amd), on the host: the network part chunked by Task.log_odds.
    log_prior = amd.log_prior_of(masks, np.stack([np.log(p), np.log1p(-p)]))
    lp = log_prior + beta * task.log_odds(masks, smooth)
    if not np.all(np.isfinite(lp)):
        raise nonfinite_error(task.name, f"at {int((~np.isfinite(lp)).sum())} masks proposed "
                              "by the stock sampler")
    return lp[:len(unique)][inverse.reshape(-1)].reshape(samples.shape[:2])
