"""Forward passes to a right answer: adaptive importance sampling against plain importance
sampling from the prior, gradient MCMC and SVI, on sites whose exact AMD is known at d = 270
(bablate.testbeds.counts), and two certified runs on SmolLM2's 270 heads that must agree.

A forward pass is one mask evaluated over the task's examples; a gradient of the smooth log
density counts as its measured cost in passes (the "gradient_cost" lines measure it on each
site: ``GRADIENT_PASSES`` in bablate/inference/kernels.py is what the diagnostics use).

For each count site (near the prior; bimodal and far from it) and method, over ``--seeds``
seeds: the forward passes (and CPU seconds) after which the largest error over all 270
marginals is at most 0.05 and at most 0.02 (the median over seeds; "not reached" within the
budget), and for importance sampling the passes until its own verdict says converged at
target_se 0.02 and 0.008, with the true largest error at that point. Importance sampling's
estimate after M masks is that of a run given the budget M (its rounds do not depend on the
budget), so a grid of budgets traces one run.

    python benchmarks/certified_inference.py                 # count sites, 3 seeds (~15 min)
    python benchmarks/certified_inference.py --llm           # + SmolLM2 heads (~25 min more)
    python benchmarks/certified_inference.py --quick         # smoke run

Prints one JSON line per case.
"""

from __future__ import annotations

import time
import warnings

import jax
import numpy as np
from common import (
    LLM_QUICK,
    base_parser,
    emit,
    llm_concept_task,
    log,
    parse_args,
    random_masks,
    time_fn,
)

import bablate as bb
from bablate import amd
from bablate.inference import ConvergenceWarning
from bablate.inference.kernels import GRADIENT_PASSES
from bablate.testbeds import counts

ERRORS = (0.05, 0.02)
CERTIFY = (0.02, 0.008)


def gradient_cost(task: bb.Task, name: str, chains: int = 4, repeat: int = 20) -> dict:
    """Wall and CPU time of one gradient of the smooth log density of ``chains`` masks over one
    evaluation of their log density: the gradient's cost in forward passes."""
    args = amd.amd_args(task, np.full(task.num_units, 0.5, np.float32), 1.0)
    density = jax.jit(lambda x, a: amd.log_density(x, a, task=task))
    grad = jax.jit(jax.grad(lambda x, a: amd.log_density(x, a, task=task, smooth=True).sum()))
    x = jax.numpy.asarray(random_masks(chains, task.num_units))
    f = time_fn(lambda: density(x, args), repeat=repeat)
    g = time_fn(lambda: grad(x, args), repeat=repeat)
    return {"bench": "certified_inference", "case": f"gradient_cost_{name}",
            "sizes": {"units": task.num_units, "chains": chains},
            "throughput": chains / f["median_s"],  # masks scored per second
            "ratio": {"gradient_over_forward": g["median_s"] / f["median_s"],
                      "gradient_over_forward_cpu": g["cpu_median_s"] / f["cpu_median_s"]},
            "gradient_passes_used": GRADIENT_PASSES, "forward": f, "gradient": g}


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn()


def trace(task, exact, method: str, seed: int, budgets: list[int]) -> list[dict]:
    """(passes, CPU seconds, largest error) of ``method`` at each budget."""
    key = jax.random.key(seed)
    out = []
    for b in budgets:
        c0 = time.process_time()
        if method in ("adaptive", "plain"):
            post = _quiet(lambda b=b: bb.infer(task, "importance", key=key, target_se=1e-9,
                                               max_masks=b, min_masks=b,
                                               adapt=method == "adaptive"))
        elif method == "mcmc":
            post = _quiet(lambda b=b: bb.infer(task, "mcmc", key=key, sampler="gradient",
                                               num_samples=b, num_warmup=b // 4, num_chains=4))
        else:
            post = _quiet(lambda b=b: bb.infer(task, "svi", key=key, num_steps=b,
                                               num_particles=32))
        out.append({"passes": post.diagnostics["forward_passes"],
                    "cpu_s": time.process_time() - c0,
                    "max_error": float(np.abs(post.marginals - exact.marginals).max())})
    return out


def first(path: list[dict], eps: float) -> dict | None:
    """The first point of a trace whose largest error is at most ``eps``."""
    return next((p for p in path if p["max_error"] <= eps), None)


def certify(task, exact, seed: int, target_se: float, max_masks: int) -> dict:
    """Passes until importance sampling's own verdict says converged at ``target_se``."""
    c0 = time.process_time()
    post = _quiet(lambda: bb.infer(task, "importance", key=jax.random.key(seed),
                                   target_se=target_se, max_masks=max_masks))
    d = post.diagnostics
    err = np.abs(post.marginals - exact.marginals)
    return {"converged": d["converged"], "passes": d["forward_passes"],
            "cpu_s": time.process_time() - c0, "max_se": d["max_se"],
            "max_error": float(err.max()), "max_error_in_se": float(err.max() / d["max_se"]),
            "log_z_error_in_se": abs(d["log_z"] - exact.log_z) / d["log_z_se"]}


def count_site(name: str, spec, seeds: int, grids: dict, max_masks: int) -> None:
    task = counts.count_task(spec)
    exact = counts.exact_answer(spec, task)
    emit(gradient_cost(task, name))
    records = {}
    for method, budgets in grids.items():
        log(f"{name}: {method}")
        paths = [trace(task, exact, method, seed, budgets) for seed in range(seeds)]
        reached = {}
        for eps in ERRORS:
            hits = [first(p, eps) for p in paths]
            done = [h for h in hits if h is not None]
            reached[str(eps)] = {
                "seeds_reached": len(done),
                "passes_median": (float(np.median([h["passes"] for h in done]))
                                  if len(done) == len(hits) else "not reached"),
                "cpu_s_median": (float(np.median([h["cpu_s"] for h in done]))
                                 if len(done) == len(hits) else None)}
        last = paths[0][-1]
        records[method] = {
            "bench": "certified_inference", "case": f"{name}_{method}",
            "sizes": {"units": spec.num_units, "seeds": seeds, "budgets": budgets},
            "throughput": last["passes"] / last["cpu_s"],  # forward passes per CPU second
            "results": {"to_max_error": reached,
                        "final_max_error": [p[-1]["max_error"] for p in paths],
                        "final_passes": last["passes"]}}
        if method == "adaptive":
            records[method]["results"]["self_certified"] = {
                str(t): [certify(task, exact, seed, t, max_masks) for seed in range(seeds)]
                for t in CERTIFY}
    # Each method's passes to an error against adaptive importance sampling's (None: either
    # did not get there within its budget).
    base = records["adaptive"]["results"]["to_max_error"]
    for record in records.values():
        mine = record["results"]["to_max_error"]
        record["ratio"] = {
            f"passes_to_{eps}_over_adaptive": (
                mine[eps]["passes_median"] / base[eps]["passes_median"]
                if all(isinstance(r[eps]["passes_median"], float) for r in (mine, base))
                else None) for eps in mine}
        emit(record)


def llm_heads(target_se: float, max_masks: int, seed: int, quick: bool) -> None:
    """Two certified runs on cheese's heads (the LLM study's task) from different proposals:
    the prior refitted with two components, and SVI's fit (40 steps × 8 masks) mixed half and
    half with the prior and refitted with one. They must agree within 2 combined standard
    errors for about 95% of heads."""
    import dataclasses

    from bablate.testbeds.llama import concept_data, load_concepts, load_smollm2

    cfg, params, tok = load_smollm2()
    d = concept_data("cheese", load_concepts()["cheese"], tok, params, cfg)
    ac = LLM_QUICK
    if quick:
        ac = dataclasses.replace(ac, head_layers=(28, 29), max_prompts=4)
    task, n = llm_concept_task(ac, params, cfg, tok, d, "heads")
    emit(gradient_cost(task, "llm_heads", repeat=3))
    key = jax.random.key(seed)
    t0 = time.process_time()
    fit = _quiet(lambda: bb.infer(task, "svi", key=key, num_steps=40, num_particles=8,
                                  learning_rate=0.1, steps_per_call=10))
    svi_cpu = time.process_time() - t0
    runs = {}
    for name, options in (("prior_k2", {"components": 2}),
                          ("svi_k1", {"components": 1, "proposal": fit, "defensive": 0.5})):
        log(f"llm heads: {name}")
        c0 = time.process_time()
        post = _quiet(lambda options=options: bb.infer(
            task, "importance", key=jax.random.fold_in(key, len(runs) + 1),
            target_se=target_se, max_masks=max_masks, **options))
        dd = post.diagnostics
        runs[name] = {"post": post, "summary": {
            "converged": dd["converged"], "passes": dd["forward_passes"],
            "cpu_s": time.process_time() - c0, "wall_s": dd["seconds"], "max_se": dd["max_se"],
            "ess": dd["ess"], "log_z": dd["log_z"], "log_z_se": dd["log_z_se"],
            "unseen_mass_bound": dd["unseen_mass_bound"], "rounds": dd["rounds"]}}
    a, b = runs["prior_k2"]["post"], runs["svi_k1"]["post"]
    se = np.hypot(a.diagnostics["marginal_se"], b.diagnostics["marginal_se"])
    diff = np.abs(a.marginals - b.marginals)
    z_logz = abs(a.diagnostics["log_z"] - b.diagnostics["log_z"]) / np.hypot(
        a.diagnostics["log_z_se"], b.diagnostics["log_z_se"])
    passes = sum(r["summary"]["passes"] for r in runs.values())
    emit({"bench": "certified_inference", "case": "llm_heads_two_proposals",
          "sizes": {"heads": task.num_units, "prompts": n, "target_se": target_se},
          "throughput": passes / sum(r["summary"]["wall_s"] for r in runs.values()),
          "ratio": {"passes_svi_k1_over_prior_k2": runs["svi_k1"]["summary"]["passes"]
                    / runs["prior_k2"]["summary"]["passes"]},
          "results": {name: r["summary"] for name, r in runs.items()},
          "svi_proposal_cpu_s": svi_cpu,
          "within_2se_fraction": float(np.mean(diff <= 2 * se)),
          "max_abs_diff": float(diff.max()), "max_abs_diff_in_se": float((diff / se).max()),
          "log_z_diff_in_se": float(z_logz)})


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-masks", type=int, default=65_536)
    p.add_argument("--llm", action="store_true", help="also SmolLM2's 270 heads")
    p.add_argument("--llm-se", type=float, default=0.03)
    args = parse_args(p)
    unit = 512
    grid = [unit * k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)]
    grids = {"adaptive": grid, "plain": grid,
             "mcmc": [100, 200, 400, 800, 1600, 3200, 6400],
             "svi": [50, 100, 200, 400, 800, 1600]}
    sites = {"near_prior": counts.near_prior(), "bimodal": counts.bimodal()}
    if args.quick:
        grids = {"adaptive": [unit, 2 * unit], "plain": [unit], "mcmc": [50], "svi": [50]}
        args.seeds, args.max_masks = 1, 2048
        sites = {"near_prior": sites["near_prior"]}
    for name, spec in sites.items():
        count_site(name, spec, args.seeds, grids, args.max_masks)
    if args.llm:
        llm_heads(args.llm_se, args.max_masks, args.seed, args.quick)


if __name__ == "__main__":
    main()
