"""MCMC over masks through numpyro's ``MCMC`` driver, with R-hat and ESS diagnostics."""

from __future__ import annotations

import time

import jax
import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, DiscreteGibbs

from bablate import progress
from bablate.amd import MASK_SITE, make_model, prior_probs
from bablate.inference.kernels import FlipKernel
from bablate.inference.posterior import Posterior
from bablate.tasks import Task

SAMPLERS = ("auto", "informed", "gradient", "stock")


def legacy_key(key: jax.Array) -> jax.Array:
    """numpyro's drivers take raw uint32 keys; accept both kinds."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def chain_diagnostics(samples_CxSxD: np.ndarray) -> dict:
    """Split R-hat and ESS per unit (units that never move are left out of the summary)."""
    x = samples_CxSxD.astype(np.float64)
    moving = x.reshape(-1, x.shape[-1]).std(axis=0) > 0
    out = {"num_moving_units": int(moving.sum())}
    if moving.any() and x.shape[1] >= 4:
        xm = x[..., moving]
        ess = np.asarray(effective_sample_size(xm))
        out["ess_min"] = float(np.nanmin(ess))
        out["ess_mean"] = float(np.nanmean(ess))
        if x.shape[0] >= 2:
            out["r_hat_max"] = float(np.nanmax(np.asarray(split_gelman_rubin(xm))))
    return out


def mcmc(task: Task, key: jax.Array, prior=0.5, beta: float = 1.0, *, sampler: str = "auto",
         num_samples: int = 2000, num_warmup: int = 500, num_chains: int = 4,
         thinning: int = 1, smooth: bool = False, chain_method: str = "auto",
         init_mask: np.ndarray | None = None, flips: str = "multi",
         step_size: float = 1.0) -> Posterior:
    """Samples the AMD with numpyro's ``MCMC`` driver.

    Args:
      task: the task.
      key: PRNG key.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      sampler: "informed" (all single flips scored with vmap), "gradient" (Gibbs with gradients
        from the smooth likelihood; targets the hard one unless ``smooth``), "stock"
        (numpyro's ``DiscreteGibbs``, one coordinate per step; the baseline), or "auto":
        "gradient" when the rule has a smooth surrogate (a step costs a few evaluations
        whatever d is), else "informed" (a step scores all d flips: worth it on accelerators).
      num_samples: draws kept per chain (after thinning: num_samples // thinning).
      num_warmup: draws discarded per chain.
      num_chains: chains (for R-hat).
      thinning: keep every k-th draw.
      smooth: target the smooth-likelihood AMD instead of the hard-count one.
      chain_method: numpyro chain method. "auto" spreads chains over devices ("parallel") when
        there are at least as many devices as chains, else vectorises them ("vectorized"; the
        stock Gibbs sampler cannot be vectorised and runs "sequential").
      init_mask: starting mask ``[d]``; default all ones (the intact network).
      flips: "single" (one bit per step) or "multi" (every bit may flip; see FlipKernel).
      step_size: initial step size α of the multi-flip proposal (adapted during warm-up).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}.")
    if sampler == "auto":
        sampler = "gradient" if task.rule.soft is not None else "informed"
    model = make_model(task, prior, beta, smooth)
    if chain_method == "auto":
        chain_method = "vectorized"
        if 1 < num_chains <= jax.local_device_count():
            chain_method = "parallel"
    if sampler == "stock":
        kernel = DiscreteGibbs(model)
        if chain_method == "vectorized":
            chain_method = "sequential"  # the Gibbs family does not vectorise across chains
    else:
        gradient_model = None
        if sampler == "gradient":
            gradient_model = make_model(task, prior, beta, smooth=True)
        if sampler == "gradient" and task.rule.soft is None:
            raise ValueError(f"the gradient sampler needs a smooth surrogate for rule "
                             f"{task.rule.name!r}; use sampler='informed'.")
        kernel = FlipKernel(model, proposal=sampler, gradient_model=gradient_model, flips=flips,
                            step_size=step_size)
    driver = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                  thinning=thinning, chain_method=chain_method, jit_model_args=True,
                  progress_bar=progress.enabled())
    init = None
    if init_mask is not None:
        x0 = np.asarray(init_mask, np.float32)
        if x0.shape != (task.num_units,):
            raise ValueError(f"init_mask must have shape ({task.num_units},), got {x0.shape}.")
        init = {MASK_SITE: np.broadcast_to(x0, (num_chains, x0.size)) if num_chains > 1 else x0}
    start = time.perf_counter()
    driver.run(legacy_key(key), task.data, init_params=init)
    samples = np.asarray(driver.get_samples(group_by_chain=True)[MASK_SITE]).astype(np.uint8)
    seconds = time.perf_counter() - start
    flat = samples.reshape(-1, task.num_units)
    diagnostics = {"seconds": seconds, "num_chains": num_chains,
                   "num_draws": int(flat.shape[0]), **chain_diagnostics(samples)}
    if sampler != "stock":
        state = driver.last_state
        diagnostics["accept_prob"] = float(np.mean(np.asarray(state.mean_accept_prob)))
    if sampler != "stock" and flips == "multi":
        diagnostics["step_size"] = float(np.mean(np.exp(np.asarray(state.log_step_size))))
        sampler = f"{sampler}-multi"
    return Posterior(task=task.name, method=f"mcmc-{sampler}", marginals=flat.mean(axis=0),
                     prior=np.asarray(prior_probs(prior, task.num_units)), beta=beta,
                     samples=flat, diagnostics=diagnostics)
