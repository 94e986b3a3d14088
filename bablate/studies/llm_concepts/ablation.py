"""Bayesian ablation per concept: AMDs over attention heads and over one layer's MLP neurons.

Each concept's task: its training prompts the intact model completes correctly (at most
``max_prompts``), scored by top-1 on the target token. The head site is enumerated exactly when
small (else mean-field SVI); the neuron site gets SVI and, for the first concepts, gradient
MCMC. Across concepts: polysemanticity and the concept × concept JS overlap.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate import llm
from bablate.models.llama import LlamaConfig
from bablate.testbeds.llama import ConceptData

from .config import Ablation

KINDS = ("heads", "neurons")
# Sub-keys of each concept's key (fold_in(k_ablation, concept index)).
SVI_KEY, MCMC_KEY = 0, 1


def ablation(ac: Ablation, params: dict, cfg: LlamaConfig, tok: Any, data: list[ConceptData],
             key: jax.Array, ctx: Any) -> tuple[dict, dict]:
    """AMDs over heads and over one layer's neurons, per concept, and cross-concept metrics.

    Returns:
      (results, posteriors): per-kind results as plain values, and the posteriors per kind
      (``heads``, ``neurons``: the one each site reports; ``heads_exact``: every exact one).
    """
    out = {"heads": {}, "neurons": {}}
    posts = {"heads": [], "neurons": [], "heads_exact": []}
    for i, d in enumerate(data):
        keep = np.where(d.correct & ~d.test)[0][:ac.max_prompts]
        prompts = llm.encode(tok, [d.texts[j] for j in keep])
        rule = bb.rules.top1(jnp.asarray(d.target_ids[keep]))
        k_concept = jax.random.fold_in(key, i)
        for kind, layers in (("heads", ac.head_layers), ("neurons", (ac.neuron_layer,))):
            spec = llm.SiteSpec(kind, tuple(layers), positions=ac.positions)
            site, inputs = llm.build_site(params, cfg, spec, prompts)
            task = bb.Task.build(site, inputs, rule, name=f"{d.name}/{kind}")
            res = {"num_prompts": int(len(keep))}
            has_exact = site.num_units <= ac.exact_max_units
            post = None
            if has_exact:
                t0 = time.perf_counter()
                ex = bb.infer(task, "exact", chunk_size=64)
                res["exact"] = metrics(ex)
                res["exact_seconds"] = time.perf_counter() - t0
                posts["heads_exact"].append(ex)
            if not has_exact or ac.svi.on_exact_sites:
                t0 = time.perf_counter()
                post = bb.infer(task, "svi", key=jax.random.fold_in(k_concept, SVI_KEY),
                                num_steps=ac.svi.steps, num_particles=ac.svi.particles,
                                learning_rate=ac.svi.lr, num_draws=500)
                res["svi"] = metrics(post)
                res["svi_seconds"] = time.perf_counter() - t0
                if has_exact:
                    res["svi_vs_exact_max_abs"] = float(np.max(np.abs(ex.marginals
                                                                      - post.marginals)))
            # The importance reported for the site: exact where enumerable, else SVI.
            res["main"] = res["exact"] if has_exact else res["svi"]
            posts[kind].append(ex if has_exact else post)
            if kind == "neurons" and i < ac.mcmc.concepts:
                t0 = time.perf_counter()
                mc = bb.infer(task, "mcmc", key=jax.random.fold_in(k_concept, MCMC_KEY),
                              sampler="gradient", num_samples=ac.mcmc.samples,
                              num_warmup=ac.mcmc.warmup, num_chains=ac.mcmc.chains)
                res["mcmc"] = metrics(mc)
                res["mcmc_seconds"] = time.perf_counter() - t0
                res["mcmc_diagnostics"] = {k: num(v) for k, v in mc.diagnostics.items()}
                res["mcmc_vs_svi_corr"] = float(np.corrcoef(mc.marginals, post.marginals)[0, 1])
            out[kind][d.name] = res
            ctx.log(f"{d.name}/{kind}: {len(keep)} prompts, distributedness "
                    f"{res['main']['distributedness']}")
    for kind in KINDS:
        poly = bb.metrics.polysemanticity(posts[kind])
        out[f"{kind}_polysemanticity_mean"] = num(poly.mean)
        # The joint JS needs exact tables; sampled posteriors get the mean JS between
        # marginals, a different quantity, and the results say which one it is.
        joint = all(p.log_probs is not None for p in posts[kind])
        js = bb.metrics.js_matrix if joint else bb.metrics.marginal_js_matrix
        out[f"{kind}_js"] = js(posts[kind]).tolist()
        out[f"{kind}_js_kind"] = "joint" if joint else "marginal"
    return out, posts


def metrics(post: bb.Posterior) -> dict:
    """A posterior's marginals and summary metrics as plain values."""
    m = bb.metrics.summarize(post)
    return {"method": post.method, "marginals": [float(x) for x in post.marginals],
            "distributedness": num(m.distributedness), "effective_units": num(m.effective_units),
            "task_information": num(m.task_information),
            "total_correlation": num(m.total_correlation), "entropy_estimate": m.entropy_estimate}


def num(x: Any) -> float | str | None:
    """``x`` as a float (None when not finite), or its text when it is not a number."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return x if np.isfinite(x) else None


def summary(ac: Ablation, abl: dict, names: list[str], heads_per_layer: int) -> dict:
    """The results.json entries of the ablation step (importance maps, distributedness, TC,
    polysemanticity, concept overlap, details, and each method's metrics)."""
    head_importance = {n: np.asarray(abl["heads"][n]["main"]["marginals"]).reshape(
        len(ac.head_layers), heads_per_layer).tolist() for n in names}
    results = {
        "head_layers": list(ac.head_layers),
        "neuron_layer": ac.neuron_layer,
        "head_importance": head_importance,
        "head_importance_method": {n: abl["heads"][n]["main"]["method"] for n in names},
        "neuron_importance": {n: abl["neurons"][n]["main"]["marginals"] for n in names},
        "distributedness_by_concept": {
            n: {k: abl[k][n]["main"]["distributedness"] for k in KINDS} for n in names},
        # TC only from exact tables: mean-field SVI has TC = 0 by construction, and a few
        # hundred MCMC draws over 1536 units give only the Chow-Liu lower bound (kept, named
        # as such, under neurons_mcmc).
        "total_correlation_by_concept": {
            n: {k: abl[k][n].get("exact", {}).get("total_correlation") for k in KINDS}
            for n in names},
        "polysemanticity_mean": {k: abl[f"{k}_polysemanticity_mean"] for k in KINDS},
        "concept_overlap": {"concepts": names, "heads": abl["heads_js"],
                            "neurons": abl["neurons_js"],
                            "heads_method": abl["heads"][names[0]]["main"]["method"],
                            "heads_js": abl["heads_js_kind"], "neurons_js": abl["neurons_js_kind"]},
        "ablation_details": {k: {n: {kk: vv for kk, vv in abl[k][n].items()
                                     if kk not in ("svi", "exact", "mcmc", "main")}
                                 for n in names} for k in KINDS},
    }
    for kind in KINDS:
        for n in names:
            for method in ("svi", "exact", "mcmc"):
                if method in abl[kind][n]:
                    results.setdefault(f"{kind}_{method}", {})[n] = dict(abl[kind][n][method])
    return results
