"""MCMC over masks: :class:`FlipKernel` in a cached, jitted sampling loop, numpyro's stock
``DiscreteGibbs`` through numpyro's ``MCMC`` driver, R-hat and ESS from ``numpyro.diagnostics``.

numpyro's ``MCMC.run`` compiles its sampling loop on every call (several seconds on CPU, more
than the sampling itself for most sites). Our kernel runs in a loop of its own instead: warm-up
with step-size adaptation, then thinned draws, jitted with ``task.data``, the prior and β as
arguments and cached on what the program depends on (the site, the rule's code, the sampler and
the sizes), so every task on one site with data of one shape reuses one compilation. Chains
are split over devices (``shard_map``) when the devices allow, else vectorised on one.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, DiscreteGibbs

from bablate import amd, programs, progress, sharding
from bablate.amd import MASK_SITE, check_beta, make_model, nonfinite_error, prior_probs
from bablate.callsite import warn_caller
from bablate.inference.kernels import GRADIENT_PASSES, FlipKernel
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.tasks import Task, check_key

SAMPLERS = ("auto", "informed", "gradient", "stock")
CHAIN_METHODS = ("auto", "parallel", "vectorized", "sequential")
# Calls per run of the jitted loop (progress-bar updates); the host only enqueues between them.
_CHUNKS = 10


def legacy_key(key: jax.Array) -> jax.Array:
    """numpyro's drivers take raw uint32 keys; accept both kinds."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


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


# ---- FlipKernel in a cached, jitted loop -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """The static settings of a :class:`FlipKernel` run (part of the compilation key)."""

    proposal: str
    flips: str
    smooth: bool
    num_warmup: int
    num_samples: int
    thinning: int
    num_chains: int
    chain_method: str = "auto"

    @property
    def num_kept(self) -> int:
        return self.num_samples // self.thinning

    @property
    def chunk(self) -> int:
        """Kept draws per call of the loop."""
        return -(-self.num_kept // _CHUNKS)


def chain_layout(num_chains: int, chain_method: str = "auto") -> tuple[str, int]:
    """(method, devices): how the chains run; "parallel" splits them evenly over ``devices``
    (the most devices that divide ``num_chains``)."""
    if chain_method in ("sequential", "vectorized"):
        return chain_method, 1
    devices = min(num_chains, jax.device_count())
    while num_chains % devices:
        devices -= 1
    if devices > 1:
        return "parallel", devices
    if chain_method == "parallel" and num_chains > 1:
        raise ValueError(f"chain_method='parallel' needs at least 2 devices that split "
                         f"{num_chains} chains evenly; this process has {jax.device_count()} "
                         "device(s). Use 'vectorized' or 'auto'.")
    return "vectorized", 1


def sample_flip_kernel(task: Task, key: jax.Array, p: np.ndarray, beta: float, run: Run,
                       x0: np.ndarray, step_size: float = 1.0) -> tuple[np.ndarray, dict]:
    """Runs ``run.num_chains`` chains of :class:`FlipKernel` on the AMD of ``task``.

    Returns:
      draws ``[C, S, d]`` uint8 (S = ``run.num_kept``) and a diagnostics dict (acceptance,
      adapted step size, chain method, devices).
    """
    method, devices = chain_layout(run.num_chains, run.chain_method)
    keys = jax.random.split(legacy_key(key), run.num_chains)
    args = amd.amd_args(task, p, beta)
    x0_CxD = np.broadcast_to(x0, (run.num_chains, x0.size))
    log_step = np.full((run.num_chains,), np.log(step_size), np.float32)
    if method == "sequential":
        program = compiled_loop(task, dataclasses.replace(run, num_chains=1), devices=1)
        outs = [_drive(program, keys[c:c + 1], x0_CxD[c:c + 1], log_step[c:c + 1], args, run,
                       task.name, c) for c in range(run.num_chains)]
        draws, log_density, accept_prob = (np.concatenate([o[0][i] for o in outs])
                                           for i in range(3))
        state = jax.tree.map(lambda *v: np.concatenate(v), *[o[1] for o in outs])
    else:
        program = compiled_loop(task, run, devices)
        (draws, log_density, accept_prob), state = _drive(program, keys, x0_CxD, log_step,
                                                          args, run, task.name)
    bad = int(np.sum(state.num_nonfinite))
    if bad or not np.all(np.isfinite(log_density)):
        raise nonfinite_error(task.name, f"at {bad} proposed masks during MCMC")
    diagnostics = {"chain_method": method, "devices": devices,
                   "accept_prob": float(np.mean(state.mean_accept_prob)),
                   "log_density": log_density, "accept_prob_per_draw": accept_prob}
    if run.flips == "multi":
        step_C = np.exp(state.log_step_size).astype(np.float32)
        diagnostics["step_size"] = float(np.mean(step_C))
        # Frozen after warm-up: one value per chain, repeated for each of its draws.
        diagnostics["step_size_per_draw"] = np.repeat(step_C[:, None], draws.shape[1], axis=1)
    return draws, diagnostics


def _drive(program, keys, x0, log_step, args, run: Run, name: str, chain: int | None = None):
    """Calls the compiled loop chunk by chunk (warm-up, then draws), updating a progress bar
    between calls; the draws stay on the device until the end."""
    init, advance, place = program
    args = place(args)
    state = init(keys, jnp.asarray(x0), jnp.asarray(log_step), args)
    steps_per_call = run.chunk * run.thinning
    desc = f"mcmc {name}" + ("" if chain is None else f" chain {chain}")
    total = run.num_warmup + run.num_kept * run.thinning
    draws, log_density, accept_prob = [], [], []
    with progress.bar(total=total, desc=desc, unit="step") as bar:
        for start in range(0, run.num_warmup, steps_per_call):
            n = min(steps_per_call, run.num_warmup - start)
            state, _ = advance(state, args, np.int32(n), np.int32(0))
            _progress(bar, state, n)
        for start in range(0, run.num_kept, run.chunk):
            n = min(run.chunk, run.num_kept - start)
            state, (block, lp, ap) = advance(state, args, np.int32(0), np.int32(n))
            draws.append(block[:n])
            log_density.append(lp[:n])
            accept_prob.append(ap[:n])
            _progress(bar, state, n * run.thinning)
    by_chain = tuple(np.swapaxes(np.concatenate([np.asarray(b) for b in blocks]), 0, 1)
                     for blocks in (draws, log_density, accept_prob))
    return by_chain, jax.tree.map(np.asarray, state)


def _progress(bar, state, n: int) -> None:
    if not bar.disable:  # waiting for the device only when someone watches
        jax.block_until_ready(state.i)
    bar.update(n)


def make_kernel(task: Task, proposal: str, flips: str = "multi", smooth: bool = False,
                step_size: float = 1.0) -> FlipKernel:
    """The :class:`FlipKernel` of the AMD of ``task``; its model takes
    :func:`bablate.amd.amd_args`."""
    model = functools.partial(amd.model, task=task, smooth=smooth)
    fn = functools.partial(amd.log_density, task=task, smooth=smooth)
    gradient_model = gradient_fn = None
    if proposal == "gradient":
        gradient_model = functools.partial(amd.model, task=task, smooth=True)
        gradient_fn = functools.partial(amd.log_density, task=task, smooth=True)
    return FlipKernel(model, proposal=proposal, gradient_model=gradient_model, flips=flips,
                      step_size=step_size, log_density_fn=fn, gradient_log_density_fn=gradient_fn)


def compiled_loop(task: Task, run: Run, devices: int) -> tuple[Callable, Callable, Callable]:
    """The jitted ``(init, advance, place)`` of ``task``'s site and rule and ``run``, cached.

    ``init(keys_C, x0_CxD, log_step_C, args)`` builds the chains' states; ``advance(state,
    args, n_warm, n_keep)`` takes ``n_warm`` warm-up steps, then keeps ``n_keep`` draws
    (``run.thinning`` steps each) into a ``[run.chunk, C, d]`` uint8 block; ``place(args)``
    puts the arguments on the loop's devices once. Both counts are arguments, so warm-up and
    draws, and runs of any length with the same chunk, share one program. Tasks with the same
    site object and rule code share the cache entry; the data's shapes are jit's own key.
    """
    key = ("mcmc", *programs.program_key(task), run.proposal, run.flips, run.smooth,
           run.num_warmup, run.thinning, run.num_chains, run.chunk, devices)
    return programs.cached_program(key, lambda: _build_loop(task, run, devices))


def _build_loop(task: Task, run: Run, devices: int):
    kernel = make_kernel(task, run.proposal, run.flips, run.smooth)

    def init(keys, x0, log_step, args):
        with sharding.unsplit():  # a device's chains are one small batch: never split it
            state = kernel.init(keys, run.num_warmup, {MASK_SITE: x0}, (args,), {})
        return state._replace(log_step_size=log_step)

    def advance(state, args, n_warm, n_keep):
        with sharding.unsplit():
            return _advance(state, args, n_warm, n_keep)

    def _advance(state, args, n_warm, n_keep):
        # One loop over warm-up and kept steps, so the program holds one copy of the step.
        # Step t > n_warm that ends a thinning interval writes its mask to row
        # (t - n_warm) / thinning - 1; every other step writes to a spare last row, so the
        # loop has no branch.
        # The kept draw's log density (the target's, which the kernel carries anyway) is
        # stored beside it: the entropy estimate of the metrics needs it, at no extra cost.
        # So is the acceptance probability of the step that produced it (a sample stat).
        def body(t, carry):
            s, buf, lp, ap = carry
            s = kernel.sample(s, (args,), {})
            k = t + 1 - n_warm
            row = jnp.where((k > 0) & (k % run.thinning == 0), k // run.thinning - 1, run.chunk)
            return (s, buf.at[row].set(s.z[MASK_SITE].astype(jnp.uint8)),
                    lp.at[row].set(s.log_density), ap.at[row].set(s.accept_prob))

        buf = jnp.zeros((run.chunk + 1,) + state.z[MASK_SITE].shape, jnp.uint8)
        lp = jnp.zeros((run.chunk + 1,) + state.log_density.shape, jnp.float32)
        ap = jnp.zeros((run.chunk + 1,) + state.accept_prob.shape, jnp.float32)
        state, buf, lp, ap = jax.lax.fori_loop(0, n_warm + n_keep * run.thinning, body,
                                               (state, buf, lp, ap))
        return state, (buf[:run.chunk], lp[:run.chunk], ap[:run.chunk])

    init_guarded, advance_guarded = programs.trace_guard(init), programs.trace_guard(advance)
    if devices == 1:
        return jax.jit(init_guarded), jax.jit(advance_guarded, donate_argnums=0), lambda a: a
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("chains",))
    everywhere = NamedSharding(mesh, PartitionSpec())

    def place(args):  # the task's arrays on every device once, not on every call
        return jax.tree.map(lambda x: jax.device_put(x, everywhere), args)

    chains, rep = PartitionSpec("chains"), PartitionSpec()
    # Each device runs its share of the chains as one batch; nothing crosses devices.
    init_sharded = jax.shard_map(init_guarded, mesh=mesh, in_specs=(chains, chains, chains, rep),
                                 out_specs=chains, check_vma=False)
    by_chain = PartitionSpec(None, "chains")
    advance_sharded = jax.shard_map(advance_guarded, mesh=mesh,
                                    in_specs=(chains, rep, rep, rep),
                                    out_specs=(chains, (by_chain, by_chain, by_chain)),
                                    check_vma=False)
    return jax.jit(init_sharded), jax.jit(advance_sharded, donate_argnums=0), place
