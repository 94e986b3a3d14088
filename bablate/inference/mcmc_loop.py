"""The :class:`FlipKernel` chains of :func:`bablate.mcmc` in a cached, jitted loop.

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
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bablate import amd, programs, progress, sharding
from bablate.amd import MASK_SITE, nonfinite_error
from bablate.inference.kernels import FlipKernel
from bablate.tasks import Task

# Calls per run of the jitted loop (progress-bar updates); the host only enqueues between them.
_CHUNKS = 10


def legacy_key(key: jax.Array) -> jax.Array:
    """numpyro's drivers take raw uint32 keys; accept both kinds."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


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
