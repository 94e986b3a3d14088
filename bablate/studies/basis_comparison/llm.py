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
from bablate import statefile
from bablate.runner.context import RunContext
from bablate.testbeds import llama as llama_testbed

from .bases import NEURON, ROTATION, CenterUnitBasis, fit_dictionaries, random_rotation, rebase
from .config import LLMConfig, SVIConfig
from .keys import NetworkKeys, rerun_key
from .reading import compare_bases, svi


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
    reason = llama_testbed.smollm2_unavailable()
    if reason is not None:
        ctx.log(f"llm: skipped: {reason}")
        return {"network": network, "skipped": reason}
    timings = {}
    t0 = time.perf_counter()
    mcfg, params, tok = llama_testbed.load_smollm2()
    if not 0 <= lc.layer < mcfg.num_layers:
        raise ValueError(f"llm.layer {lc.layer} outside [0, {mcfg.num_layers}).")
    specs = llama_testbed.load_concepts()
    unknown = [n for n in lc.concepts + lc.fit_concepts if n not in specs]
    if unknown:
        raise ValueError(f"unknown concepts {unknown}; available: {sorted(specs)}.")
    tasks, acts, prompts = llama_testbed.mlp_concept_tasks(
        params, mcfg, tok, specs, lc.concepts, lc.fit_concepts, lc.layer,
        max_prompts=lc.max_prompts, positions=lc.positions, log=ctx.log)
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
