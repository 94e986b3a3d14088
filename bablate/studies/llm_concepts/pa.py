"""Population-averaging (PA) templates per concept and layer (Wu et al., arXiv 2502.01803).

Two recipes. From the concept prompts (`prompt_templates`): the residual state at the concept
word (the answer slot, prompt + " " + target) of the training prompts, scored on the held-out
prompts against every other token. From natural prose, as the authors build them
(`prose_templates`): K random occurrences in a training paragraph, the tolerance swept and
chosen by training accuracy, scored on a test paragraph; these are the templates the
interventions graft. Each held-out AUC is compared with the trivial token-identity detector's
on the same tokens, with a paired bootstrap interval of the difference (`vs_token_identity`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from bablate import llm
from bablate.chunks import pa
from bablate.models.llama import LlamaConfig
from bablate.testbeds.llama import (
    ConceptData,
    load_prose,
    sink_positions,
    statistic_positions,
    token_identity_auc,
)

from .config import Pa

# Bootstrap resamples of the held-out tokens behind every AUC interval; percentile interval.
RESAMPLES = 2000
LEVEL = 0.95
# The resamples of concept i come from default_rng([seed, i, stream]); [seed, i] draws the
# prose template's occurrences.
PROSE_STREAM, PROMPT_STREAM = 1, 2


@dataclasses.dataclass(frozen=True)
class PromptStates:
    """What the later steps reuse of the prompt pass: templates and states.

    ``templates[(concept, layer)]`` at every PA layer; ``states`` [L, N, T, D]
    at the PA layers (entering them); ``valid`` [N, T]; ``owner`` [N] (concept index of each
    prompt); ``test`` [N] (held-out split).
    """
    templates: dict
    states: np.ndarray
    valid: np.ndarray
    owner: np.ndarray
    test: np.ndarray


def completed_states(params: dict, cfg: LlamaConfig, tok: Any, texts: list[str],
                     targets: list[str], layers: list[int]) -> tuple[np.ndarray, llm.Prompts]:
    """Residual states [L, N, T, D] (entering each layer) of prompt + ' ' + target texts, with
    the prompts (tokens and valid mask)."""
    prompts = llm.encode(tok, [t + " " + w for t, w in zip(texts, targets, strict=True)])
    states = llm.collect_states(params, cfg, prompts, "resid")
    return np.asarray(states[np.asarray(layers)]), prompts


def vs_token_identity(scores: Sequence[np.ndarray | None], identity: np.ndarray, labels: np.ndarray,
                      rng: np.random.Generator) -> dict:
    """PA's AUC against token identity's on the same tokens, per layer, with 95% bootstrap
    intervals (`RESAMPLES` resamples of the tokens, positives and negatives apart, one resample
    scoring both detectors, so the difference's interval is paired).

    Args:
      scores: per layer, PA's score of each token (lower = closer), or None (no template).
      identity: 1 where the token is one of the concept's words, else 0.
      labels: the token is an occurrence of the concept.
      rng: draws the resamples.
    """
    have = [i for i, sc in enumerate(scores) if sc is not None]
    stacked = np.stack([-np.asarray(identity, float)] + [sc for sc in scores if sc is not None])
    aucs = pa.bootstrap_auc(stacked, labels, rng, RESAMPLES)
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(aucs, tail, axis=0), np.percentile(aucs, 100 - tail, axis=0)
    diff = aucs[:, 1:] - aucs[:, :1]
    d_lo, d_hi = np.percentile(diff, tail, axis=0), np.percentile(diff, 100 - tail, axis=0)
    out: dict[str, Any] = {"token_identity_auc": pa.tpr_fpr_auc(stacked[0], labels).auc,
           "token_identity_lo": float(lo[0]), "token_identity_hi": float(hi[0]),
           **{k: [None] * len(scores) for k in ("pa_auc", "pa_lo", "pa_hi", "difference",
                                                 "lo", "hi")},
           "num_positive": int(labels.sum()), "num_negative": int((~labels).sum()),
           "resamples": RESAMPLES}
    for j, i in enumerate(have):
        auc = pa.tpr_fpr_auc(stacked[j + 1], labels).auc
        out["pa_auc"][i], out["pa_lo"][i], out["pa_hi"][i] = auc, float(lo[j + 1]), float(
            hi[j + 1])
        out["difference"][i] = auc - out["token_identity_auc"]
        out["lo"][i], out["hi"][i] = float(d_lo[j]), float(d_hi[j])
    return out


def prompt_templates(pc: Pa, seed: int, params: dict, cfg: LlamaConfig, tok: Any,
                     data: list[ConceptData]) -> tuple[dict, PromptStates]:
    """PA templates per concept and layer; AUC/TPR/FPR on the held-out split, and PA against
    token identity with bootstrap intervals (`vs_token_identity`; resamples drawn from
    ``seed`` and the concept's index).

    Returns:
      (results, reuse): plain values for results.json, and the templates and states the
      interventions and UCD reuse.
    """
    texts: list[str] = []
    targets: list[str] = []
    owners: list[int] = []
    tests: list[bool] = []
    for i, d in enumerate(data):
        texts += d.texts
        targets += d.targets
        owners += [i] * len(d.texts)
        tests += list(d.test)
    owner, test = np.array(owners), np.array(tests)
    # The residual stream *entering* layer l+1 is the output of layer l; collect the stream at
    # the requested layers (entering them).
    states, prompts = completed_states(params, cfg, tok, texts, targets, list(pc.layers))
    valid = prompts.valid
    n, t = valid.shape
    last = np.zeros((n, t), bool)
    last[:, -1] = True  # the concept word is the last token (left-padded rows)
    # Statistics (the tolerance unit) use training prompts only and no sink token; held-out
    # scoring leaves the sink out too (a 100×-norm token is no test of a template).
    fit, held = statistic_positions(valid, test)
    sink = sink_positions(valid)
    out: dict[str, dict[str, list[float]]] = {
        d.name: {"auc": [], "tpr": [], "fpr": [], "num_neurons": [], "tolerance": []}
        for d in data}
    identity = {d.name: token_identity_auc(
        prompts.tokens[held], (last & (owner == i)[:, None])[held], set(d.target_ids.tolist()))
        for i, d in enumerate(data)}
    held_scores: dict[str, list[np.ndarray]] = {d.name: [] for d in data}
    sink_ratio = []
    templates = {}
    for li, layer in enumerate(pc.layers):
        s = states[li]
        norms = np.linalg.norm(s, axis=-1)
        sink_ratio.append(float(np.median(norms[sink]) / np.median(norms[fit | held])))
        # A few residual dimensions are orders of magnitude larger than the rest, so the
        # tolerance unit is the median over neurons of each neuron's std (not the pooled std).
        scale = float(np.median(np.std(s[fit], axis=0)))
        for i, d in enumerate(data):
            train = s[(owner == i) & ~test, -1]
            # Category concepts (capitals, numbers) vary more across occurrences than a single
            # word; the tolerance is raised where needed so that at least min_neurons neurons
            # qualify (the effective tolerance is reported).
            spread = np.sort(np.max(np.abs(train - train.mean(0)), axis=0))
            tol = max(pc.tolerance * scale, float(spread[pc.min_neurons - 1]) * (1 + 1e-6))
            tpl = pa.pa_template(train, tol)
            templates[(d.name, layer)] = tpl
            out[d.name]["tolerance"].append(tol / scale)
            labels = (last & (owner == i)[:, None])[held]
            scores = pa.pa_scores(tpl, s[held])
            held_scores[d.name].append(scores)
            roc = pa.tpr_fpr_auc(scores, labels)
            tpr, fpr = pa.detection_rates(scores <= tpl.threshold, labels)
            out[d.name]["auc"].append(roc.auc)
            out[d.name]["tpr"].append(tpr)
            out[d.name]["fpr"].append(fpr)
            out[d.name]["num_neurons"].append(tpl.num_neurons)
    versus = {d.name: vs_token_identity(
        held_scores[d.name],
        np.isin(prompts.tokens[held], d.target_ids).astype(float),
        (last & (owner == i)[:, None])[held], np.random.default_rng([seed, i, PROMPT_STREAM]))
        for i, d in enumerate(data)}
    results = {"layers": list(pc.layers), "by_concept": out, "token_identity_auc": identity,
               "vs_token_identity": versus, "sink_norm_ratio": sink_ratio,
               "width": int(states.shape[-1])}
    return results, PromptStates(templates=templates, states=states, valid=valid, owner=owner,
                                 test=test)


def prose_states(params: dict, cfg: LlamaConfig, tok: Any, sentences: list[str],
                 layers: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """States [L, M, D] of every non-first token of the sentences (run one by one, as the
    authors do; each sentence's first token is its attention sink and is left out) and the
    token ids [M]."""
    prompts = llm.encode(tok, sentences)
    states = np.asarray(llm.collect_states(params, cfg, prompts, "resid"))[np.asarray(layers)]
    keep = prompts.valid & ~sink_positions(prompts.valid)
    return states[:, keep], np.asarray(prompts.tokens)[keep]


def prose_templates(pc: Pa, seed: int, params: dict, cfg: LlamaConfig, tok: Any,
                    data: list[ConceptData], graft_layers: tuple[int, ...] = ()
                    ) -> tuple[dict, dict]:
    """PA templates built as the authors build them, from natural prose.

    Per concept with paragraphs in ``pa_prose.json``: K = ``prose_k`` random occurrences
    in the training paragraph, tolerance swept (``pa.AUTHORS_TOLERANCES``) and chosen by
    training accuracy, threshold = largest training MSE. Reported per PA layer: the authors' AUC
    (over the tolerance sweep, on the training paragraph), ours (Mann–Whitney on the test
    paragraph at the chosen tolerance) against the token-identity AUC on the test paragraph
    (`vs_token_identity`), and TPR/FPR at the template's own threshold on the test paragraph.

    Returns:
      (results, templates): plain values for results.json, and ``templates[(concept, layer)]``
      (a ``pa.Template``, or None where no tolerance kept a neuron) at the PA layers and
      ``graft_layers`` (the layers whose templates the interventions graft).
    """
    prose = load_prose()
    layers = tuple(sorted(set(pc.layers) | set(graft_layers)))
    out: dict[str, dict[str, Any]] = {}
    templates: dict[tuple[str, int], pa.Template | None] = {}
    for i, d in enumerate(data):
        if d.name not in prose:
            continue
        ids = set(d.target_ids.tolist())
        (s_tr, t_tr), (s_te, t_te) = (
            prose_states(params, cfg, tok, prose[d.name][split], layers)
            for split in ("train", "test"))
        y_tr, y_te = np.isin(t_tr, list(ids)), np.isin(t_te, list(ids))
        rec: dict[str, Any] = {
            "num_train_occurrences": int(y_tr.sum()), "num_test_occurrences": int(y_te.sum()),
            "token_identity_auc": token_identity_auc(t_te, y_te, ids),
            "authors_auc": [], "test_auc": [], "test_tpr": [], "test_fpr": [],
            "tolerance": [], "num_neurons": [], "train_accuracy": []}
        test_scores: list[np.ndarray | None] = []
        for li, layer in enumerate(layers):
            # The same K occurrences at every layer (one NumPy draw per seed and concept).
            rng = np.random.default_rng([seed, i])
            sw = pa.sweep_template(s_tr[li], y_tr, pc.prose_k, rng)
            templates[(d.name, layer)] = sw.template
            if layer not in pc.layers:
                continue
            best = int(np.argmax(sw.accuracy))
            rec["authors_auc"].append(sw.auc)
            rec["tolerance"].append(sw.tolerance)
            rec["num_neurons"].append(int(sw.num_neurons[best]))
            rec["train_accuracy"].append(float(sw.accuracy[best]))
            if sw.template is None:
                for k in ("test_auc", "test_tpr", "test_fpr"):
                    rec[k].append(None)
                test_scores.append(None)
                continue
            scores = pa.pa_scores(sw.template, s_te[li])
            tpr, fpr = pa.detection_rates(scores <= sw.template.threshold, y_te)
            rec["test_auc"].append(pa.tpr_fpr_auc(scores, y_te).auc)
            rec["test_tpr"].append(tpr)
            rec["test_fpr"].append(fpr)
            test_scores.append(scores)
        rec["vs_token_identity"] = vs_token_identity(
            test_scores, np.isin(t_te, list(ids)).astype(float), y_te,
            np.random.default_rng([seed, i, PROSE_STREAM]))
        out[d.name] = rec
    return out, templates


def summary(prompt_results: dict, prose: dict, names: list[str]) -> dict:
    """The results.json entries of the PA step."""
    by = prompt_results["by_concept"]
    return {
        "pa_auc_by_layer": {n: by[n]["auc"] for n in names},
        "token_identity_auc": prompt_results["token_identity_auc"],
        "pa_vs_token_identity": prompt_results["vs_token_identity"],
        "pa_auc_authors_by_layer": {n: v["authors_auc"] for n, v in prose.items()},
        "pa_prose": prose,
        "pa_sink_norm_ratio": prompt_results["sink_norm_ratio"],
        "pa_template_fraction": {n: [k / prompt_results["width"] for k in by[n]["num_neurons"]]
                                 for n in names},
        "pa_layers": prompt_results["layers"],
        "pa_width": prompt_results["width"],
        "pa_detail": by,
    }
