"""The 1536 MLP neurons of one SmolLM2-135M layer: concept tasks read in neurons, a random
rotation and sparse-autoencoder codes (with the SAE's center as one more unit), by SVI."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable

import jax
import numpy as np

import bablate as bb
from bablate import dictionary as dl
from bablate import llm as llm_lib
from bablate.runner import statefile
from bablate.runner.runs import RunContext

from .bases import NEURON, ROTATION, CenterUnitBasis, fit_dictionaries, random_rotation, rebase
from .config import LLMConfig, SVIConfig
from .keys import NetworkKeys, rerun_key
from .reading import compare_bases, svi


def unique_rows(x_NxD: np.ndarray, decimals: int = 3) -> np.ndarray:
    """Rows of ``x`` without (near-)duplicates, in first-seen order.

    Concept prompts share a few-shot prefix, so most positions repeat the same activation; a
    dictionary fitted on the raw rows would mostly learn the prefix.
    """
    _, idx = np.unique(np.round(x_NxD, decimals), axis=0, return_index=True)
    return x_NxD[np.sort(idx)]


def llm_tasks(lc: LLMConfig, params, mcfg, tok, specs: dict, ctx: RunContext
              ) -> tuple[list[bb.Task], np.ndarray, dict]:
    """Concept tasks on the layer's MLP site, and the activations to fit dictionaries on.

    Per concept (``bablate/data/concepts.json``): one forward pass over all its prompts gives
    the layer's MLP activations at every position and the intact next token; the task keeps the
    first ``max_prompts`` prompts the intact model completes correctly (top-1 target). Fit
    activations: every position of every prompt of ``fit_concepts``, duplicates removed.
    """
    tasks, fit, info = [], [], {}
    for name in dict.fromkeys(lc.concepts + lc.fit_concepts):
        spec = specs[name]
        texts = [spec["prefix"] + p["text"] for p in spec["prompts"]]
        ids = np.array([llm_lib.word_token(tok, p["target"]) for p in spec["prompts"]])
        prompts = llm_lib.encode(tok, texts)
        act, logits = llm_lib.mlp_activations(params, mcfg, prompts, lc.layer, with_logits=True)
        if name in lc.fit_concepts:
            fit.append(np.asarray(act)[prompts.valid])
        if name not in lc.concepts:
            continue
        logits = np.asarray(logits)
        correct = logits[np.arange(len(ids)), ids] >= logits.max(-1)
        keep = np.nonzero(correct)[0][:lc.max_prompts]
        info[name] = {"prompts": len(texts), "intact_accuracy": float(correct.mean()),
                      "task_prompts": int(len(keep))}
        ctx.log(f"llm: {name}: intact top-1 {correct.mean():.2f} on {len(texts)} prompts, "
                f"{len(keep)} kept")
        if len(keep) < 2:
            raise ValueError(f"concept {name!r}: the model completes only {len(keep)} of its "
                             "prompts correctly; choose another concept.")
        sub = llm_lib.encode(tok, [texts[j] for j in keep])
        site, inputs = llm_lib.build_mlp_site(params, mcfg, lc.layer, sub, positions=lc.positions,
                                              targets=ids[keep])
        tasks.append(bb.Task.build(site, inputs, llm_lib.target_rule(), name=name))
    return tasks, unique_rows(np.concatenate(fit)), info


def svi_stability(tasks: list[bb.Task], bases: dict, lc: LLMConfig, key: jax.Array,
                  metrics: dict) -> dict:
    """Re-runs SVI of the first task in every basis with other seeds: how reproducible are the
    unit information (Pearson r), the effective units and the task information?"""
    out = {}
    for b, (name, basis) in enumerate(bases.items()):
        task = rebase(tasks[:1], basis)[0]
        ref = np.asarray(metrics[name]["unit_information"][0])
        runs = []
        for s in range(lc.stability_seeds):
            post = svi(task, lc.svi, rerun_key(key, b, s))
            m = bb.metrics.summarize(post)
            runs.append({"unit_information_r": float(np.corrcoef(ref, m.unit_information)[0, 1]),
                         "effective_units": m.effective_units,
                         "task_information": m.task_information})
        out[name] = {"task": task.name, "effective_units": metrics[name]["effective_units"][0],
                     "task_information": metrics[name]["task_information"][0], "reruns": runs}
    return out


def center_unit_report(tasks: Iterable[bb.Task], metrics: dict) -> dict:
    """For a :class:`CenterUnitBasis`: the center unit's share of each task's information, the
    effective number of codes without the center, and P(correct) with every code ablated but
    the center kept (the plain dictionary's baseline)."""
    info = np.asarray(metrics["unit_information"])
    total = info.sum(1)
    share = np.where(total > 0, info[:, -1] / np.maximum(total, 1e-30), np.nan)
    codes_only = [bb.metrics.distributedness(row[:-1])[1] for row in info]
    kept = []
    for t in tasks:
        mask = np.zeros((1, t.num_units), np.float32)
        mask[0, -1] = 1.0
        kept.append(float(t.p_correct(mask)[0]))
    return {"center_share": share.tolist(), "p_correct_codes_ablated": kept,
            "effective_codes": codes_only}


def svi_record(sc: SVIConfig) -> dict:
    """The SVI settings as results.json has always recorded them (exact / MCMC fields unused)."""
    return {"max_exact": 0, "mcmc_samples": 0, "mcmc_warmup": 0, "mcmc_chains": 0,
            "method": "svi", "svi_estimator": sc.estimator, "svi_steps": sc.num_steps,
            "svi_particles": sc.num_particles, "svi_lr": sc.learning_rate,
            "svi_temperature": sc.temperature}


def task_coverage(bases: dict, tasks: list[bb.Task], width: int, reports: dict) -> None:
    """Adds to each dictionary's report its FVU at the task positions and how many codes are
    non-zero there (the only ones a mask can act through)."""
    for name, basis in bases.items():
        codes = np.concatenate([np.asarray(basis.encode(t.data["act"])).reshape(
            -1, basis.num_units) for t in tasks])
        reports[name]["task_active_codes"] = int((np.abs(codes) > 0).any(0).sum())
        reports[name]["task_fvu"] = dl.evaluate(
            basis, np.concatenate([np.asarray(t.data["act"]).reshape(-1, width)
                                   for t in tasks])).fvu


def same_setup(ctx: RunContext, setup: dict) -> bool:
    """Whether the run's state holds this dictionary setup (a resume with the same layer and
    concepts, whose saved dictionaries can be reused); anything else, garbled too, is not."""
    saved = ctx.load_state("llm_setup")
    return saved is not None and statefile.mismatch(saved, setup) is None


def run(lc: LLMConfig, ctx: RunContext, keys: NetworkKeys) -> dict:
    """One SmolLM2 MLP layer: concept tasks read in neurons, a rotation and SAE codes (SVI)."""
    network = f"SmolLM2-135M MLP layer {lc.layer}"
    from bablate.testbeds.llama import smollm2_unavailable

    reason = smollm2_unavailable()
    if reason is not None:
        ctx.log(f"llm: skipped: {reason}")
        return {"network": network, "skipped": reason}
    from bablate.models.gguf import load_smollm2
    from bablate.testbeds.llama import load_concepts

    timings = {}
    t0 = time.perf_counter()
    mcfg, params, tok = load_smollm2()
    if not 0 <= lc.layer < mcfg.num_layers:
        raise ValueError(f"llm.layer {lc.layer} outside [0, {mcfg.num_layers}).")
    specs = load_concepts()
    unknown = [n for n in lc.concepts + lc.fit_concepts if n not in specs]
    if unknown:
        raise ValueError(f"unknown concepts {unknown}; available: {sorted(specs)}.")
    tasks, acts, prompts = llm_tasks(lc, params, mcfg, tok, specs, ctx)
    timings["load_and_tasks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The dictionary depends only on the (fixed) model and the fit prompts: reuse a saved one
    # when the run resumes with the same layer and concepts.
    setup = {"layer": lc.layer, "fit_concepts": list(lc.fit_concepts),
             "dictionaries": [dataclasses.asdict(d) for d in lc.dictionaries]}
    reuse = same_setup(ctx, setup)
    fitted, reports = fit_dictionaries(acts, lc.dictionaries, keys.dictionary, ctx,
                                       f"llm_L{lc.layer}", reuse)
    ctx.save_state("llm_setup", setup)
    task_coverage(fitted, tasks, mcfg.mlp_width, reports)
    bases: dict[str, bb.Basis] = (
        {name: CenterUnitBasis.wrap(b) for name, b in fitted.items()} if lc.center_unit
        else dict(fitted))
    timings["dictionaries"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    all_bases = {NEURON: None, ROTATION: random_rotation(keys.rotation, mcfg.mlp_width), **bases}
    metrics = compare_bases(tasks, all_bases, lc.svi, keys.inference, lc.top_k, "llm")
    if lc.center_unit:
        for name, basis in bases.items():
            metrics[name].update(center_unit_report(rebase(tasks, basis), metrics[name]))
    timings["inference"] = time.perf_counter() - t0
    stability = {}
    if lc.stability_seeds:
        t0 = time.perf_counter()
        stability = svi_stability(tasks, all_bases, lc, keys.stability, metrics)
        timings["stability"] = time.perf_counter() - t0
    return {"network": network, "layer": lc.layer, "positions": lc.positions,
            "concepts": prompts, "fit_activations": int(acts.shape[0]),
            "svi": svi_record(lc.svi), "dictionaries": reports, "bases": metrics,
            "svi_stability": stability, "timings_seconds": timings}
