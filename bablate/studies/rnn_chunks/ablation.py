"""Step 5: Bayesian ablation of the hidden units, one task per chunk, and its agreement with
DSC (mutual information of unit cluster ids with the chunk's steps) and with PA templates
(Spearman ρ over units, averaged over chunks, with a bootstrap interval over units); the rule
whose AMD carries information fills the headline keys."""

from __future__ import annotations

import jax
import numpy as np

import bablate as bb
from bablate import chunks
from bablate.studies.rnn_chunks import intervals
from bablate.studies.rnn_chunks.config import StudyConfig
from bablate.testbeds import rnn as rnn_testbed
from bablate.testbeds import sequences
from bablate.testbeds.rnn import Windows

# The ablation's windows come from a third sequence, neither the fitting nor the held-out one.
ABLATION_SEED_OFFSET = 2 * rnn_testbed.TEST_SEED_OFFSET
EXACT_MAX_UNITS = bb.inference.MAX_EXACT  # method "auto": exact up to this many hidden units
INFORMATIVE_BITS = bb.metrics.INFORMATIVE_BITS  # an AMD with less task information is flat


def infer(cfg: StudyConfig, tasks: bb.TaskSet, method: str,
          key: jax.Array) -> list[bb.Posterior]:
    """The AMD of every task: one enumeration for all (exact), or MCMC per task with key
    ``fold_in(key, i)`` for task i."""
    m = cfg.ablation.mcmc
    options = None if method == "exact" else bb.McmcOptions(
        sampler=m.sampler, num_samples=m.num_samples, num_warmup=m.num_warmup,
        num_chains=m.num_chains)
    return bb.infer_many(tasks, method=method, key=key, options=options)


def ablation(cfg: StudyConfig, variables: dict, seq: sequences.ChunkedSequence,
             res: chunks.DSCResult, h_fit: np.ndarray, fit: Windows, word_ids: list[int],
             rule: str, key: jax.Array) -> dict:
    """AMD per chunk task (correctness ``rule``), metrics, and agreement with DSC."""
    a = cfg.ablation
    test_seq = rnn_testbed.make_sequence(cfg.family, cfg.seed + ABLATION_SEED_OFFSET, cfg.n_h,
                                         cfg.n_draws)
    w = rnn_testbed.to_windows(test_seq, a.window, a.windows * a.window)
    site = rnn_testbed.hidden_site(cfg.model, variables)
    task_list = rnn_testbed.chunk_tasks(site, w, seq.words, word_ids=word_ids,
                                        min_examples=a.min_examples, rule=rule,
                                        max_tasks=a.max_tasks)
    if not task_list:
        return {}
    tasks = bb.TaskSet.of(task_list)  # one site, one dataset: the builder shares them
    # Above EXACT_MAX_UNITS "auto" means this study's MCMC (its settings are ablation.mcmc),
    # not the library's default large-site method.
    method = bb.inference.choose_method(cfg.model.hidden, a.method, max_exact=EXACT_MAX_UNITS,
                                        large="mcmc")
    posts = infer(cfg, tasks, method, key)
    m = bb.metrics.summarize_tasks(posts)
    codes = res.discretizer.codes(h_fit)
    info = np.stack([chunks.unit_chunk_information(
        codes, rnn_testbed.task_steps(fit, seq.words.index(t.name))) for t in tasks])
    top = max(1, cfg.model.hidden // 4)
    overlap = [len(set(np.argsort(-i)[:top]) & set(np.argsort(-imp)[:top])) / top
               for i, imp in zip(info, m.unit_importance, strict=True)]
    out = {"method": method, "rule": rule, "tasks": [t.name for t in tasks],
           "num_examples": [rnn_testbed.num_examples(t) for t in tasks],
           "intact_p_correct": [float(t.p_correct(np.ones((1, t.num_units)))[0])
                                for t in tasks],
           "unit_importance": m.unit_importance.tolist(),
           "unit_information": m.unit_information.tolist(),
           "distributedness": m.distributedness.tolist(),
           "effective_units": m.effective_units.tolist(),
           "total_correlation": m.total_correlation.tolist(),
           "entropy_estimate": list(m.entropy_estimate),
           "task_information": m.task_information.tolist(),
           "dsc_information": info.tolist(), "top_quarter_overlap": overlap,
           "diagnostics": [{k: v for k, v in p.diagnostics.items()
                            if isinstance(v, int | float)} for p in posts]}
    if len(posts) > 1:
        # TaskSetMetrics has these for two tasks or more.
        assert m.effective_tasks is not None and m.unit_task_mi is not None
        out["polysemanticity"] = m.effective_tasks.tolist()
        out["polysemanticity_mean"] = m.polysemanticity_mean
        out["mutual_information"] = m.unit_task_mi.tolist()
    if method == "mcmc" and a.mcmc.check_exact and cfg.model.hidden <= EXACT_MAX_UNITS:
        exact = bb.infer(tasks[0], method="exact")
        out["mcmc_vs_exact_max_abs_diff"] = float(np.max(np.abs(exact.marginals
                                                                - posts[0].marginals)))
    return out


def pa_membership(abl: dict, pa: dict) -> np.ndarray:
    """float [tasks, units]: 1 where the unit is in the chunk's PA template, 0 where not; NaN
    rows for chunks without a template."""
    d = len(abl["unit_importance"][0])
    rows = []
    for name in abl["tasks"]:
        mask = pa.get(name, {}).get("neuron_mask")
        rows.append(np.asarray(mask, np.float64) if mask else np.full(d, np.nan))
    return np.stack(rows)


def agreement(abl: dict, pa: dict, rng: np.random.Generator) -> dict:
    """How the AMD importances relate to the DSC chunks and the PA templates.

    Our reconstruction: per chunk, the Spearman ρ over hidden units between the importance π_i
    and (dsc) the mutual information of unit i's DSC cluster id with the chunk's task steps,
    (pa) membership of unit i in the chunk's PA template; averaged over chunks, with a 95%
    percentile bootstrap interval over units (:func:`intervals.rank_agreement`). Chunks
    without a PA template, or with every unit in it, carry no PA ρ.
    """
    imp = np.asarray(abl["unit_importance"], np.float64)
    member = pa_membership(abl, pa)
    keep = np.isfinite(member).all(1)
    dsc_rho = intervals.rank_agreement(imp, np.asarray(abl["dsc_information"]), rng)
    pa_rho = (intervals.rank_agreement(imp[keep], member[keep], rng) if keep.any() else
              {"rho": float("nan"), "lo": float("nan"), "hi": float("nan"),
               "per_chunk": [], "resamples": 0})
    pa_rho["chunks"] = [n for n, k in zip(abl["tasks"], keep, strict=True) if k]
    return {"dsc": dsc_rho, "pa": pa_rho}


def informative(abl: dict) -> bool:
    """The AMD of some chunk task carries at least INFORMATIVE_BITS of task information."""
    return max(abl["task_information"]) >= INFORMATIVE_BITS


def headline_rule(abls: dict[str, dict]) -> str | None:
    """The rule whose AMD fills the headline keys, read from the measured task information:
    the first rule (config order) whose AMD is informative, else the one with the most task
    information (None when no rule gave an AMD). A flat AMD ranks units by noise, so its
    metrics and agreements say nothing about the network."""
    done = {r: a for r, a in abls.items() if a}
    if not done:
        return None
    return next((r for r, a in done.items() if informative(a)),
                max(done, key=lambda r: max(done[r]["task_information"])))


def headline(abl: dict, sfx: str) -> dict:
    """results.json's headline keys of one ablation result (key suffix ``sfx``); its
    ``agreement`` (see :func:`agreement`) gives the two ρ."""
    agree = abl["agreement"]
    return {"unit_importance" + sfx: abl["unit_importance"],
            "distributedness_mean" + sfx: intervals.nanmean(abl["distributedness"]),
            "total_correlation_mean" + sfx: float(np.mean(abl["total_correlation"])),
            "polysemanticity_mean" + sfx: abl.get("polysemanticity_mean", 1.0),
            "ablation_chunk_agreement" + sfx: agree["dsc"]["rho"],
            "ablation_informative" + sfx: informative(abl),
            "ablation_chunk_agreement_pa" + sfx: agree["pa"]["rho"]}
