"""Bayesian ablation per concept: AMDs over attention heads and over one layer's MLP neurons.

Each concept's task: its training prompts the intact model completes correctly (at most
``max_prompts``), scored by top-1 on the target token. Every site gets one *certified
estimate*: exact enumeration when it has at most ``exact_max_units`` units, else adaptive
importance sampling (:func:`bablate.inference.importance`) until every marginal's standard
error is at most ``importance.target_se``; its verdict (converged or not), standard errors,
ESS, log Z ± s.e. and forward passes travel with it, and only a converged estimate stands in
the headline. SVI and MCMC on the first concepts are cross-checks, compared with the certified
estimate in units of its standard errors. Across concepts: polysemanticity and the concept ×
concept JS overlap, over the concepts whose estimates converged.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import jax
import numpy as np

import bablate as bb
from bablate import llm
from bablate.models.llama import LlamaConfig
from bablate.testbeds import llama as llama_testbed
from bablate.testbeds.llama import ConceptData

from .config import Ablation

KINDS = ("heads", "neurons")
# Sub-keys of each concept's key (fold_in(k_ablation, concept index)), so that adding one
# check leaves the other draws as they were.
SVI_KEY, MCMC_KEY, HEAD_MCMC_KEY, ESTIMATE_KEY = 0, 1, 2, 3
# The checks compare the TOP_K most important units of the certified estimate and the check.
TOP_K = 10
# A check agrees with the certified estimate when every marginal is within AGREE_MAX of it,
# beyond the estimate's own Monte Carlo error (NOISE_SE of its standard errors), and the
# estimate is precise enough to have seen a difference of RESOLVED_MAX (AGREE_MAX + NOISE_SE ×
# its largest standard error ≤ RESOLVED_MAX); with a coarser estimate larger errors pass, and
# the verdict is "unresolved", not "agree".
AGREE_MAX, NOISE_SE, RESOLVED_MAX = 0.05, 3.0, 0.1
# What results.json keeps of each certified estimate's diagnostics.
ESTIMATE_KEYS = ("converged", "max_se", "ess", "log_z", "log_z_se", "forward_passes",
                 "seconds", "unseen_mass_bound", "weight_bound", "rounds", "target_se")


def certified(ac: Ablation, task: bb.Task, key: jax.Array) -> bb.Posterior:
    """The site's certified estimate: exact enumeration when it has at most
    ``ac.exact_max_units`` units, else adaptive importance sampling to ``target_se``."""
    if task.num_units <= ac.exact_max_units:
        return bb.infer(task, "exact", chunk_size=64)
    im = ac.importance
    return bb.infer(task, "importance", key=key, target_se=im.target_se,
                    max_masks=im.max_masks, min_masks=im.min_masks,
                    round_masks=im.round_masks, num_draws=500)


def estimate_summary(post: bb.Posterior, seconds: float) -> dict:
    """The certified estimate's method, verdict and numbers, as plain values."""
    d = post.diagnostics
    out: dict[str, Any] = {"method": post.method, "seconds": seconds,
           **{k: num(d[k]) for k in ESTIMATE_KEYS if k in d and k != "seconds"}}
    out["converged"] = bool(d["converged"])
    out["marginal_se"] = [float(x) for x in d.get("marginal_se", np.zeros(post.num_units))]
    out["warnings"] = [str(w) for w in d.get("warnings", [])]
    return out


def ablation(ac: Ablation, params: dict, cfg: LlamaConfig, tok: Any, data: list[ConceptData],
             key: jax.Array, ctx: Any) -> tuple[dict, dict]:
    """The certified AMD of heads and of one layer's neurons per concept, the cross-checks,
    and cross-concept metrics.

    Returns:
      (results, posteriors): per-kind results as plain values, and the posteriors per kind
      (``heads``, ``neurons``: the certified estimates; ``heads_mcmc``, ``neurons_mcmc``: the
      MCMC checks).
    """
    out: dict[str, Any] = {"heads": {}, "neurons": {}}
    posts: dict[str, list[bb.Posterior]] = {
        "heads": [], "neurons": [], "heads_mcmc": [], "neurons_mcmc": []}
    speedup = llm.bf16_speedup_here(cfg.replace(matmul_dtype=ac.matmuls))
    if speedup is not None:  # llm's site builders also warn when it is below 1
        ctx.log(f"masks scored with bf16 projections: on this CPU they run {speedup:.2f}x as "
                "fast as float32 (llama.bf16_speedup)")
    for i, d in enumerate(data):
        k_concept = jax.random.fold_in(key, i)
        for kind in KINDS:
            task, num_prompts = concept_task(ac, params, cfg, tok, d, kind)
            res: dict[str, Any] = {"num_prompts": num_prompts,
                   "task_information_bound": information_bound(num_prompts)}
            t0 = time.perf_counter()
            est = certified(ac, task, jax.random.fold_in(jax.random.fold_in(
                k_concept, ESTIMATE_KEY), KINDS.index(kind)))
            res["estimate"] = estimate_summary(est, time.perf_counter() - t0)
            res["main"] = metrics(est)
            posts[kind].append(est)
            se = res["estimate"]["marginal_se"]
            if i < ac.svi.concepts:
                t0 = time.perf_counter()
                with _checked_elsewhere():
                    post = bb.infer(task, "svi", key=jax.random.fold_in(k_concept, SVI_KEY),
                                    num_steps=ac.svi.steps, num_particles=ac.svi.particles,
                                    learning_rate=ac.svi.lr, num_draws=500,
                                    steps_per_call=steps_per_call(ac.svi.steps))
                res["svi"] = metrics(post)
                res["svi_seconds"] = time.perf_counter() - t0
                res["svi_diagnostics"] = diagnostics(post)
                res["svi_vs_estimate"] = compare(est.marginals, post.marginals, se=se)
            mc_cfg = ac.mcmc if kind == "neurons" else ac.head_mcmc
            if i < mc_cfg.concepts:
                t0 = time.perf_counter()
                sub = MCMC_KEY if kind == "neurons" else HEAD_MCMC_KEY
                with _checked_elsewhere():
                    mc = bb.infer(task, "mcmc", key=jax.random.fold_in(k_concept, sub),
                                  sampler=mc_cfg.sampler, num_samples=mc_cfg.samples,
                                  num_warmup=mc_cfg.warmup, num_chains=mc_cfg.chains)
                res["mcmc"] = metrics(mc)
                res["mcmc_seconds"] = time.perf_counter() - t0
                res["mcmc_diagnostics"] = diagnostics(mc)
                res["mcmc_vs_estimate"] = compare(est.marginals, mc.marginals, se=se)
                posts[f"{kind}_mcmc"].append(mc)
            out[kind][d.name] = res
            e = res["estimate"]
            info = res["main"]
            ctx.log(f"{d.name}/{kind}: {num_prompts} prompts, {e['method']} "
                    f"{'converged' if e['converged'] else 'NOT converged'} (largest s.e. "
                    f"{_g(e.get('max_se'))}, {_g(e.get('forward_passes'))} forward passes, "
                    f"{e['seconds']:.0f} s), task information {_g(info['task_information'])}"
                    f" ± {_g(info['task_information_error'])} bits")
    for kind in KINDS:
        ok = [p for p in posts[kind] if p.diagnostics.get("converged")]
        out[f"{kind}_cross_concept_of"] = [p.task.split("/")[0] for p in ok]
        if len(ok) < 2:  # polysemanticity and overlap need two converged concepts
            out[f"{kind}_polysemanticity_mean"], out[f"{kind}_js"] = None, None
            out[f"{kind}_js_kind"] = None
            continue
        out[f"{kind}_polysemanticity_mean"] = num(bb.metrics.polysemanticity(ok).mean)
        # The joint JS needs exact tables; sampled posteriors get the mean JS between
        # marginals, a different quantity, and the results say which one it is.
        joint = all(p.log_probs is not None for p in ok)
        js = bb.metrics.js_matrix if joint else bb.metrics.marginal_js_matrix
        out[f"{kind}_js"] = js(ok).tolist()
        out[f"{kind}_js_kind"] = "joint" if joint else "marginal"
    return out, posts


def concept_task(ac: Ablation, params: dict, cfg: LlamaConfig, tok: Any, d: ConceptData,
                 kind: str) -> tuple[bb.Task, int]:
    """The task of concept ``d`` on site ``kind`` ("heads": ``ac.head_layers``; "neurons":
    ``ac.neuron_layer``) with the config's prompts, positions, read-out and matmuls
    (:func:`bablate.testbeds.llama.concept_task`). Returns (task, prompts used)."""
    layers = ac.head_layers if kind == "heads" else (ac.neuron_layer,)
    return llama_testbed.concept_task(params, cfg, tok, d, kind, tuple(layers),
                                      max_prompts=ac.max_prompts, positions=ac.positions,
                                      readout=ac.readout, matmuls=ac.matmuls,
                                      length_buckets=ac.length_buckets)


def steps_per_call(num_steps: int) -> int:
    """SVI's chunk length: a quarter of the run at most (≤ 50), so that its convergence check,
    which compares the last two quarters of ≥ 4 chunks, runs on short runs too."""
    return int(min(50, max(1, num_steps // 4)))


def information_bound(num_prompts: int, beta: float = 1.0) -> float:
    """The most task information (bits) a top-1 task on ``num_prompts`` prompts can carry.

    The likelihood is the odds (k + 1) / (n − k + 1) of k correct prompts out of n, so it
    spans [1 / (n + 1), n + 1]; KL(q ‖ prior) ≤ log₂(max L^β / E_prior[L^β]) ≤
    2β·log₂(n + 1). Few prompts cap what any mask distribution can say about the units.
    """
    return float(2.0 * beta * np.log2(num_prompts + 1))


def _g(value: float | None) -> str:
    """A log line's number: 3 significant digits (passes as a whole number), or n/a."""
    return "n/a" if value is None else f"{value:.3g}" if value < 1000 else f"{value:.0f}"


@contextlib.contextmanager
def _checked_elsewhere():
    """Silences the ConvergenceWarnings of a cross-check (SVI or MCMC run short on purpose):
    its own verdict and warning texts go into ``*_diagnostics`` and the report's cross-check
    section, and its real error is measured against the certified estimate, so a warning on
    every run would only teach readers to skip the warnings that matter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bb.inference.ConvergenceWarning)
        yield


def diagnostics(post: bb.Posterior) -> dict:
    """A run's convergence diagnostics as plain values, with ``converged`` (no warning)."""
    diag = dict(post.diagnostics or {})
    warn = [str(w) for w in diag.pop("warnings", [])]
    out = {k: num(v) for k, v in diag.items() if np.ndim(v) == 0}
    return {**out, "converged": not warn, "warnings": warn}


def compare(q_ref: np.ndarray, q: np.ndarray, k: int = TOP_K, se: Any = None) -> dict:
    """Agreement of marginals ``q`` with the reference ``q_ref`` (MCMC or importance
    sampling): correlation, largest |difference|, and how many of the reference's top-k units
    are in ``q``'s top k. With the reference's standard errors ``se``, also ``agree`` (every
    |difference| ≤ AGREE_MAX + NOISE_SE·se), the largest |difference| in standard errors and
    the share of units within 2 standard errors (≈ 0.95 when ``q`` is the truth), and
    ``verdict``: "disagree" (some unit beyond its tolerance), "agree" (none, and the
    reference resolves ``RESOLVED_MAX``) or "unresolved" (none, but ``resolution``, the largest
    tolerance, exceeds ``RESOLVED_MAX``); ``agree`` is ``verdict == "agree"``."""
    q_ref, q = np.asarray(q_ref, np.float64), np.asarray(q, np.float64)
    k = min(k, q.size)
    top_ref, top = np.argsort(-q_ref)[:k], np.argsort(-q)[:k]
    corr = np.corrcoef(q_ref, q)[0, 1] if q_ref.std() > 0 and q.std() > 0 else float("nan")
    diff = np.abs(q_ref - q)
    out = {"corr": num(corr), "max_abs_diff": float(np.max(diff)),
           "top_k": int(k), "top_k_overlap": int(len(set(top_ref) & set(top))),
           "top_units": [int(u) for u in top_ref],
           "top_reference": [float(q_ref[u]) for u in top_ref],
           "top_other": [float(q[u]) for u in top_ref]}
    if se is not None:
        se = np.maximum(np.asarray(se, np.float64), 1e-12)
        resolution = AGREE_MAX + NOISE_SE * float(se.max())
        verdict = ("disagree" if np.any(diff > AGREE_MAX + NOISE_SE * se) else
                   "agree" if resolution <= RESOLVED_MAX else "unresolved")
        out.update({"reference_se_max": float(se.max()), "resolution": resolution,
                    "verdict": verdict, "agree": verdict == "agree",
                    "max_abs_diff_in_se": float(np.max(diff / se)),
                    "within_2se_fraction": float(np.mean(diff <= 2 * se))})
    return out


def metrics(post: bb.Posterior) -> dict:
    """A posterior's marginals and summary metrics as plain values."""
    m = bb.metrics.summarize(post)
    return {"method": post.method, "marginals": [float(x) for x in post.marginals],
            "distributedness": num(m.distributedness), "effective_units": num(m.effective_units),
            "task_information": num(m.task_information),
            "task_information_error": num(m.entropy_error),
            "total_correlation": num(m.total_correlation), "entropy_estimate": m.entropy_estimate}


def num(x: Any) -> float | str | None:
    """``x`` as a float (None when not finite), or its text when it is not a number."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return x if np.isfinite(x) else None


def summary(ac: Ablation, abl: dict, names: list[str], heads_per_layer: int) -> dict:
    """The results.json entries of the ablation step: per concept and site the certified
    estimate (method, verdict, standard errors, ESS, log Z ± s.e., forward passes, seconds),
    importance maps with their standard errors, task information ± its error against its
    bound, distributedness, TC, polysemanticity and overlap over the converged concepts, the
    cross-checks, and each method's metrics."""
    grid = lambda v: np.asarray(v).reshape(len(ac.head_layers), heads_per_layer).tolist()
    est = {k: {n: abl[k][n]["estimate"] for n in names} for k in KINDS}
    results: dict[str, Any] = {
        "head_layers": list(ac.head_layers),
        "neuron_layer": ac.neuron_layer,
        "estimates": {k: {n: {kk: vv for kk, vv in est[k][n].items() if kk != "marginal_se"}
                          for n in names} for k in KINDS},
        "head_importance": {n: grid(abl["heads"][n]["main"]["marginals"]) for n in names},
        "head_importance_se": {n: grid(est["heads"][n]["marginal_se"]) for n in names},
        "neuron_importance": {n: abl["neurons"][n]["main"]["marginals"] for n in names},
        "neuron_importance_se": {n: est["neurons"][n]["marginal_se"] for n in names},
        "task_information": {n: {k: {"bits": abl[k][n]["main"]["task_information"],
                                     "error": abl[k][n]["main"]["task_information_error"],
                                     "bound": abl[k][n]["task_information_bound"],
                                     "num_prompts": abl[k][n]["num_prompts"],
                                     "converged": est[k][n]["converged"]} for k in KINDS}
                             for n in names},
        "distributedness_by_concept": {
            n: {k: abl[k][n]["main"]["distributedness"] for k in KINDS} for n in names},
        # TC only from exact tables: importance sampling estimates H(q), not the marginal
        # entropies' excess over it, to the precision TC needs.
        "total_correlation_by_concept": {
            n: {k: abl[k][n]["main"]["total_correlation"] if est[k][n]["method"] == "exact"
                else None for k in KINDS} for n in names},
        "polysemanticity_mean": {k: abl[f"{k}_polysemanticity_mean"] for k in KINDS},
        "concept_overlap": {"concepts": {k: abl[f"{k}_cross_concept_of"] for k in KINDS},
                            "heads": abl["heads_js"], "neurons": abl["neurons_js"],
                            "heads_js": abl["heads_js_kind"], "neurons_js": abl["neurons_js_kind"]},
        "ablation_details": {k: {n: {kk: vv for kk, vv in abl[k][n].items()
                                     if kk not in ("svi", "mcmc", "main", "estimate")}
                                 for n in names} for k in KINDS},
        # Every estimate and check: true when its diagnostics raised no warning.
        "convergence": {k: {n: {"estimate": est[k][n]["converged"],
                                **{m: abl[k][n][f"{m}_diagnostics"]["converged"]
                                   for m in ("svi", "mcmc") if f"{m}_diagnostics" in abl[k][n]}}
                            for n in names} for k in KINDS},
    }
    for kind in KINDS:
        for n in names:
            results.setdefault(f"{kind}_estimate", {})[n] = dict(abl[kind][n]["main"])
            for method in ("svi", "mcmc"):
                if method in abl[kind][n]:
                    results.setdefault(f"{kind}_{method}", {})[n] = dict(abl[kind][n][method])
    return results
