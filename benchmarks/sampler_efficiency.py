"""Sampler efficiency: effective samples per second of bablate's MCMC kernel (``FlipKernel``,
"informed" and "gradient" proposals) vs numpyro's stock ``DiscreteGibbs`` on the same AMD
posteriors, and SVI time-to-marginals against a long MCMC reference.

The posteriors: the hidden layer (d = 64, 256, 1536 units) of a ReLU MLP trained briefly on a
synthetic 4-class task, top-1 rule, uniform prior, β = 1. Timings per sampler:

* steady state (the headline), compilation excluded. Ours: bablate's cached sampling loop
  (what ``bb.infer(task, "mcmc")`` runs, diagnostics aside), second call timed. Stock: the
  kernel's transitions (``kernel.sample``, what numpyro's driver loops over) in one compiled
  ``lax.scan``, second call timed, which spares it numpyro's recompilation on every run. ESS
  = the minimum over moving units of numpyro's ``effective_sample_size`` (all chains), divided
  by that wall time (warm-up included);
* end to end: ``bb.infer(task, "mcmc", sampler=...)`` as a user calls it, whole call: first on
  one task with nothing compiled, then on a second task of the same shape (same network,
  held-out inputs). Ours reuses its compiled loop for the second task; numpyro's ``MCMC.run``
  compiles its loop again on every call.

One step of the stock sampler is a full sweep (d single-mask evaluations one after another);
one step of ours proposes flips of every unit at once ("multi", the default: discrete-Langevin
proposals from all d single-flip Δs scored in one batched call for "informed", from one
gradient for "gradient") or of one unit ("-single"; then d steps make a sweep-equivalent).
``--cpu-devices N`` splits the CPU into N JAX devices (our chains then run in parallel over
them; the JSON's ``machine.device_count`` records it).

    python benchmarks/sampler_efficiency.py                  # d = 64, 256, 1536 + SVI at 64
    python benchmarks/sampler_efficiency.py --units 64 --chains 4,32
    python benchmarks/sampler_efficiency.py --quick
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import base_parser, emit, log, parse_args
from numpyro.infer import DiscreteGibbs

import bablate as bb
from bablate import programs
from bablate.inference.mcmc import chain_diagnostics
from bablate.inference.mcmc_loop import Run, legacy_key, sample_flip_kernel


def trained_mlp_tasks(hidden: int, examples: int, seed: int, steps: int = 300,
                      n_in: int = 16, classes: int = 4) -> tuple[bb.Task, bb.Task]:
    """A ReLU MLP n_in -> hidden -> classes trained on a random linear teacher (full batch).

    Returns two tasks on the same site with data of the same shape: the training set, and
    ``examples`` held-out inputs labelled by the same teacher (another posterior).
    """
    kx, kt, k1, k2, kh = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(kx, (examples, n_in))
    teacher = jax.random.normal(kt, (n_in, classes))
    y = jnp.argmax(x @ teacher, -1)
    x_held = jax.random.normal(kh, (examples, n_in))
    y_held = jnp.argmax(x_held @ teacher, -1)
    params = {"w1": jax.random.normal(k1, (n_in, hidden)) * np.sqrt(2.0 / n_in),
              "b1": jnp.zeros((hidden,)),
              "w2": jax.random.normal(k2, (hidden, classes)) / np.sqrt(hidden),
              "b2": jnp.zeros((classes,))}

    def forward_from_hidden(p, h):
        return h @ p["w2"] + p["b2"][None, :]

    def hidden_of(p, x):
        return jax.nn.relu(x @ p["w1"] + p["b1"][None, :])

    opt = optax.adam(1e-2)

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(
                forward_from_hidden(q, hidden_of(q, x)), y).mean()
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p

    params = train(params)
    site = bb.Site.from_functions("hidden", hidden, lambda x: hidden_of(params, x),
                                  lambda h, x: forward_from_hidden(params, h))
    return (bb.Task.build(site, x, bb.rules.top1(y), name=f"mlp{hidden}", check_intact=False),
            bb.Task.build(site, x_held, bb.rules.top1(y_held), name=f"mlp{hidden}_heldout",
                          check_intact=False))


def split_sampler(name: str) -> tuple[str, str]:
    """"informed" / "gradient" (multi-flip, the default) or "informed-single" etc."""
    proposal, _, flips = name.partition("-")
    return proposal, flips or "multi"


def stock_steady_state(task, num_samples, num_warmup, num_chains, seed) -> dict:
    """numpyro's ``DiscreteGibbs`` transitions (``kernel.sample``, what numpyro's driver loops
    over) in one compiled ``lax.scan``, called twice: the second call is timed, so numpyro's
    per-run recompilation is excluded. The chains run one after another (numpyro's
    "sequential", the only method the Gibbs family supports), reusing the compiled program.
    """
    kernel = DiscreteGibbs(bb.make_model(task, 0.5, 1.0, False))

    @jax.jit
    def run(state, data):
        def step(s, _):
            return kernel.sample(s, (data,), {}), None

        def keep(s, _):
            s, _ = step(s, None)
            return s, s.z["mask"]

        state, _ = jax.lax.scan(step, state, None, length=num_warmup)
        return jax.lax.scan(keep, state, None, length=num_samples)[1]

    def go(key):
        states = [kernel.init(k, num_warmup, None, (task.data,), {})
                  for k in jax.random.split(key, num_chains)]
        return np.stack([np.asarray(run(s, task.data)) for s in states])  # [C, S, d]

    key = legacy_key(jax.random.key(seed))
    t0 = time.perf_counter()
    go(key)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = go(jax.random.fold_in(key, 1))
    return {"samples": samples, "seconds": time.perf_counter() - t0, "first_run_s": first}


def ours_steady_state(task, sampler, num_samples, num_warmup, num_chains, thinning, seed,
                      chain_method) -> dict:
    """bablate's sampling loop (what ``bb.infer(task, "mcmc")`` runs, diagnostics aside),
    called twice with different keys: the second call is timed (the loop is compiled once and
    cached)."""
    proposal, flips = split_sampler(sampler)
    run = Run(proposal=proposal, flips=flips, smooth=False, num_warmup=num_warmup,
                    num_samples=num_samples, thinning=thinning, num_chains=num_chains,
                    chain_method=chain_method)
    p = np.full((task.num_units,), 0.5, np.float32)
    x0 = np.ones((task.num_units,), np.float32)
    go = lambda k: sample_flip_kernel(task, jax.random.key(k), p, 1.0, run, x0)
    t0 = time.perf_counter()
    go(seed)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples, diag = go(seed + 1)
    return {"samples": samples, "seconds": time.perf_counter() - t0, "first_run_s": first,
            "chain_method": diag["chain_method"], "chain_devices": diag["devices"]}


def end_to_end(tasks, sampler, num_samples, num_warmup, num_chains, thinning, seed,
               chain_method) -> dict:
    """``bb.infer(task, "mcmc", ...)`` as a user calls it, wall time of the whole call: first
    on one task with nothing compiled (compilation included), then on another task of the same
    shape (same site, other targets), which reuses our compiled loop (numpyro's ``MCMC``
    compiles its loop again on every run)."""
    programs.clear_cache()
    proposal, flips = split_sampler(sampler) if sampler != "stock" else ("stock", "multi")
    out = {}
    for label, task in zip(("end_to_end", "end_to_end_second_task"), tasks, strict=True):
        t0 = time.perf_counter()
        post = bb.infer(task, "mcmc", key=jax.random.key(seed), sampler=proposal, flips=flips,
                        num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains,
                        thinning=thinning, chain_method=chain_method)
        seconds = time.perf_counter() - t0
        ess = post.diagnostics.get("ess_min", 0.0)
        out.update({f"{label}_s": seconds, f"{label}_ess_min": ess,
                    f"{label}_ess_per_s": ess / seconds,
                    f"{label}_r_hat_max": post.diagnostics.get("r_hat_max")})
    return out


def time_sampler(tasks, sampler, num_samples, num_warmup, num_chains, thinning, seed,
                 with_end_to_end: bool = True, chain_method: str = "auto") -> dict:
    task = tasks[0]
    if sampler == "stock":
        r = stock_steady_state(task, num_samples, num_warmup, num_chains, seed)
    else:
        r = ours_steady_state(task, sampler, num_samples, num_warmup, num_chains, thinning,
                              seed, chain_method)
    samples, seconds = r["samples"], r["seconds"]
    diag = chain_diagnostics(samples)
    d = task.num_units
    out = {"sampler": sampler, "chains": num_chains, "samples_per_chain": num_samples // thinning,
           "warmup": num_warmup, "thinning": thinning, "seconds": seconds,
           "first_run_s": r["first_run_s"], **diag,
           **{k: r[k] for k in ("chain_method", "chain_devices") if k in r},
           "marginals": samples.reshape(-1, d).mean(0)}
    out["ess_per_s"] = diag.get("ess_min", 0.0) / seconds
    per_chain_steps = num_samples + num_warmup
    if sampler == "stock":
        out["seconds_per_sweep"] = seconds / (num_chains * per_chain_steps)
    else:
        # One vectorised step advances every chain; a single-flip step moves one unit, so d of
        # them make a sweep-equivalent; a multi-flip step proposes new values for all units.
        out["seconds_per_step"] = seconds / per_chain_steps
        single = split_sampler(sampler)[1] == "single"
        out["seconds_per_sweep_equiv"] = out["seconds_per_step"] * (d if single else 1)
    if with_end_to_end:
        out.update(end_to_end(tasks, sampler, num_samples, num_warmup, num_chains, thinning,
                              seed, chain_method))
    return out


def run_units(d: int, args, settings: dict, first: bool) -> dict:
    log(f"training MLP with {d} hidden units")
    tasks = trained_mlp_tasks(d, args.examples, args.seed)
    task = tasks[0]
    results, stock = {}, None
    counts = [int(c) for c in args.chains.split(",")]
    # The stock sampler first, so every line of ours can carry its ratio to it.
    samplers = sorted(args.samplers.split(","), key=lambda s: s != "stock")
    for sampler in samplers:
        if sampler.startswith("informed") and d > args.informed_max_units:
            log(f"d={d}: {sampler} skipped (2 x (d + 1) masks per step; --informed-max-units)")
            continue
        # More (vectorised) chains only where they are cheap: the first d of the run.
        for chains in (counts if sampler != "stock" and first else counts[:1]):
            s = settings[sampler]
            log(f"d={d} {sampler} chains={chains} samples={s['samples']}")
            r = time_sampler(tasks, sampler, s["samples"], s["warmup"], chains, s["thin"],
                             args.seed, with_end_to_end=s.get("e2e", True) and not args.no_e2e,
                             chain_method=args.chain_method)
            results[f"{sampler}_c{chains}"] = r
            stock = r if sampler == "stock" else stock
            rec = {"bench": "sampler_efficiency", "case": f"d{d}_{sampler}_c{chains}",
                   "sizes": {"units": d, "examples": args.examples, "chains": r["chains"],
                             "samples_per_chain": r["samples_per_chain"], "warmup": r["warmup"],
                             "thinning": r["thinning"]},
                   **{k: v for k, v in r.items() if k != "marginals"},
                   "throughput": r["ess_per_s"], "ratio": {}}
            if stock is not None and r is not stock:
                if stock.get("ess_min") and r.get("ess_min"):
                    rec["ratio"]["ess_per_s_vs_stock"] = r["ess_per_s"] / stock["ess_per_s"]
                    if "end_to_end_ess_per_s" in r and stock.get("end_to_end_ess_per_s"):
                        rec["ratio"]["end_to_end_ess_per_s_vs_stock"] = (
                            r["end_to_end_ess_per_s"] / stock["end_to_end_ess_per_s"])
                        rec["ratio"]["end_to_end_second_task_ess_per_s_vs_stock"] = (
                            r["end_to_end_second_task_ess_per_s"]
                            / stock["end_to_end_second_task_ess_per_s"])
                rec["ratio"]["sweep_time_stock_over_ours"] = (stock["seconds_per_sweep"]
                                                              / r["seconds_per_sweep_equiv"])
                rec["max_marginal_diff_vs_stock"] = float(np.abs(r["marginals"]
                                                                 - stock["marginals"]).max())
            emit(rec)
    return {"task": task, "results": results}


def svi_time_to_marginals(task, reference: np.ndarray, args) -> None:
    """SVI wall time (compile included) against a long-MCMC reference, for growing step counts."""
    hit = None
    for steps in [int(s) for s in args.svi_steps.split(",")]:
        for estimator in args.svi_estimators.split(","):
            t0 = time.perf_counter()
            post = bb.infer(task, "svi", key=jax.random.key(args.seed), estimator=estimator,
                            num_steps=steps, num_particles=args.svi_particles,
                            steps_per_call=min(50, steps))
            wall = time.perf_counter() - t0
            err = np.abs(post.marginals - reference)
            ok = bool(err.max() <= args.svi_tolerance)
            if ok and hit is None:
                hit = (estimator, steps, wall)
            emit({"bench": "sampler_efficiency", "case": f"svi_d{task.num_units}_{estimator}",
                  "sizes": {"units": task.num_units, "steps": steps,
                            "particles": args.svi_particles},
                  "seconds": wall, "throughput": steps / wall,
                  "max_abs_err_vs_mcmc": float(err.max()),
                  "mean_abs_err_vs_mcmc": float(err.mean()),
                  "within_tolerance": ok, "tolerance": args.svi_tolerance, "ratio": {}})
    log(f"SVI first within {args.svi_tolerance}: {hit}")


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--units", default="64,256,1536")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--samplers", default="stock,informed,gradient,gradient-single",
                   help="informed / gradient = multi-flip FlipKernel (the default); "
                        "add -single for one flip per step; stock = numpyro DiscreteGibbs")
    p.add_argument("--chains", default="4,16",
                   help="chain counts for our kernel (vectorised); stock uses the first")
    p.add_argument("--informed-max-units", type=int, default=64,
                   help="run the informed proposal only up to this d (it is slow on CPU)")
    p.add_argument("--stock-sweeps", type=int, default=None,
                   help="override sweeps per chain of the stock sampler")
    p.add_argument("--svi-steps", default="250,500,1000,2000")
    p.add_argument("--svi-particles", type=int, default=32)
    p.add_argument("--svi-tolerance", type=float, default=0.05)
    p.add_argument("--svi-estimators", default="score,concrete")
    p.add_argument("--chain-method", default="auto",
                   choices=["auto", "parallel", "vectorized", "sequential"],
                   help="how our kernel's chains run (auto: split over devices when they "
                        "allow); the stock sampler always runs its chains one after another")
    p.add_argument("--no-svi", action="store_true")
    p.add_argument("--no-e2e", action="store_true",
                   help="skip the end-to-end bb.infer timings (compile included)")
    args = parse_args(p)
    units = [int(u) for u in args.units.split(",")]
    if args.quick:
        units, args.examples, args.chains, args.svi_steps = [8], 32, "2", "50"
        args.svi_particles, args.samplers = 8, "stock,gradient"
        args.svi_estimators = "score"

    def settings(d: int) -> dict:
        if args.quick:
            return {name: ({"samples": 20, "warmup": 5, "thin": 1} if name == "stock" else
                           {"samples": 200, "warmup": 20, "thin": 1})
                    for name in args.samplers.split(",")}
        # (samples, warm-up, thinning) per d; sizes keep each run to about a minute on 2
        # busy cores. Warm-up also adapts the multi-flip step size. At d = 1536 the informed
        # proposal (2 × 1537 masks per step) and the stock sweep (1536 sequential evaluations)
        # run a bounded number of steps: their time per step/sweep is the number to read there.
        multi = {64: (1000, 200, 1), 256: (1000, 200, 1), 1536: (1000, 200, 1)}
        single = {64: (2000, 250, 2), 256: (3000, 500, 4), 1536: (3000, 500, 8)}
        stock = {64: (200, 40), 256: (20, 4), 1536: (2, 1)}
        out = {}
        for name in args.samplers.split(","):
            if name == "stock":
                n, w = stock.get(d, (20, 4))
                out[name] = {"samples": args.stock_sweeps or n, "warmup": w, "thin": 1,
                             "e2e": d <= 256}
                continue
            proposal, flips = split_sampler(name)
            n, w, t = (multi if flips == "multi" else single).get(d, (1000, 200, 1))
            if proposal == "informed" and d > 256:
                n, w, t = 30, 10, 1
            out[name] = {"samples": n, "warmup": w, "thin": t, "e2e": d <= 256}
        return out

    for d in units:
        out = run_units(d, args, settings(d), first=d == units[0])
        if d == units[0] and not args.no_svi:
            # Reference: the longest MCMC run of our kernel at this d.
            ref = max(out["results"].values(),
                      key=lambda r: r["chains"] * r["samples_per_chain"]
                      if r["sampler"] != "stock" else 0)
            svi_time_to_marginals(out["task"], ref["marginals"], args)


if __name__ == "__main__":
    main()
