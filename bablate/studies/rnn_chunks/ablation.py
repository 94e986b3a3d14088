"""Step 5: Bayesian ablation of the hidden units, one task per chunk, and its agreement with
DSC (mutual information of unit cluster ids with the chunk's steps) and with PA templates."""

from __future__ import annotations

import jax
import numpy as np
from scipy import stats

import bablate as bb
from bablate import chunks, sequences
from bablate.studies.rnn_chunks.config import StudyConfig
from bablate.testbeds import rnn as rnn_testbed
from bablate.testbeds.rnn import Windows

# The ablation's windows come from a third sequence, neither the fitting nor the held-out one.
ABLATION_SEED_OFFSET = 2 * rnn_testbed.TEST_SEED_OFFSET
EXACT_MAX_UNITS = bb.inference.MAX_EXACT  # method "auto": exact up to this many hidden units
INFORMATIVE_BITS = bb.metrics.INFORMATIVE_BITS  # an AMD with less task information is flat


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either input is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def infer(cfg: StudyConfig, tasks: bb.TaskSet, method: str,
          key: jax.Array) -> list[bb.Posterior]:
    """The AMD of every task: one enumeration for all (exact), or MCMC per task with key
    ``fold_in(key, i)`` for task i."""
    m = cfg.ablation.mcmc
    options = {} if method == "exact" else dict(
        sampler=m.sampler, num_samples=m.num_samples, num_warmup=m.num_warmup,
        num_chains=m.num_chains)
    return bb.infer_many(tasks, method=method, key=key, **options)


def ablation(cfg: StudyConfig, variables: dict, seq: sequences.ChunkedSequence,
             res: chunks.DSCResult, h_fit: np.ndarray, fit: Windows, word_ids: list[int],
             rule: str, key: jax.Array) -> dict:
    """AMD per chunk task (correctness ``rule``), metrics, and agreement with DSC."""
    a = cfg.ablation
    test_seq = rnn_testbed.make_sequence(cfg.family, cfg.seed + ABLATION_SEED_OFFSET, cfg.n_h,
                                         cfg.n_draws)
    w = rnn_testbed.to_windows(test_seq, a.window, a.windows * a.window)
    site = rnn_testbed.hidden_site(cfg.model, variables)
    tasks = rnn_testbed.chunk_tasks(site, w, seq.words, word_ids=word_ids,
                                    min_examples=a.min_examples, rule=rule,
                                    max_tasks=a.max_tasks)
    if not tasks:
        return {}
    tasks = bb.TaskSet.of(tasks)  # one site, one dataset: the builder shares them
    # Above EXACT_MAX_UNITS "auto" means this study's MCMC (its settings are ablation.mcmc),
    # not the library's default large-site method.
    method = bb.inference.choose_method(cfg.model.hidden, a.method, max_exact=EXACT_MAX_UNITS,
                                        large="mcmc")
    posts = infer(cfg, tasks, method, key)
    m = bb.metrics.summarize_tasks(posts)
    codes = res.discretizer.codes(h_fit)
    agreement, overlap = [], []
    top = max(1, cfg.model.hidden // 4)
    for t, importance in zip(tasks, m.unit_importance, strict=True):
        k = seq.words.index(t.name)
        info = chunks.unit_chunk_information(codes, rnn_testbed.task_steps(fit, k))
        agreement.append(spearman(info, importance))
        overlap.append(len(set(np.argsort(-info)[:top]) & set(np.argsort(-importance)
                                                               [:top])) / top)
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
           "agreement_per_chunk": agreement, "top_quarter_overlap": overlap,
           "diagnostics": [{k: v for k, v in p.diagnostics.items()
                            if isinstance(v, int | float)} for p in posts]}
    if len(posts) > 1:
        out["polysemanticity"] = m.effective_tasks.tolist()
        out["polysemanticity_mean"] = m.polysemanticity_mean
        out["mutual_information"] = m.unit_task_mi.tolist()
    if method == "mcmc" and a.mcmc.check_exact and cfg.model.hidden <= EXACT_MAX_UNITS:
        exact = bb.infer(tasks[0], method="exact")
        out["mcmc_vs_exact_max_abs_diff"] = float(np.max(np.abs(exact.marginals
                                                                - posts[0].marginals)))
    return out


def pa_agreement(abl: dict, pa: dict) -> float:
    """Mean over chunks of (mean π on the PA template's neurons − mean π on the other neurons).

    Our reconstruction of "do the units PA ties to a chunk matter for it": > 0 when the
    template's neurons are the more important ones; NaN when no chunk has a usable template.
    """
    diffs = []
    for name, imp in zip(abl["tasks"], abl["unit_importance"], strict=True):
        mask = np.asarray(pa.get(name, {}).get("neuron_mask", []), bool)
        if mask.size and mask.any() and not mask.all():
            imp = np.asarray(imp)
            diffs.append(float(imp[mask].mean() - imp[~mask].mean()))
    return float(np.mean(diffs)) if diffs else float("nan")


def _nanmean(x) -> float:
    """Mean over finite values; NaN (null in results.json) when there are none."""
    x = np.asarray(x, np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")


def headline(abl: dict, pa: dict, sfx: str) -> dict:
    """results.json's headline keys of one ablation result (key suffix ``sfx``)."""
    return {"unit_importance" + sfx: abl["unit_importance"],
            "distributedness_mean" + sfx: _nanmean(abl["distributedness"]),
            "total_correlation_mean" + sfx: float(np.mean(abl["total_correlation"])),
            "polysemanticity_mean" + sfx: abl.get("polysemanticity_mean", 1.0),
            "ablation_chunk_agreement" + sfx: _nanmean(abl["agreement_per_chunk"]),
            "ablation_informative" + sfx: max(abl["task_information"]) >= INFORMATIVE_BITS,
            "ablation_chunk_agreement_pa" + sfx: pa_agreement(abl, pa)}
