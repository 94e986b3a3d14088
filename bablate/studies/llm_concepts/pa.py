"""Population-averaging (PA) templates per concept and layer (Wu et al., arXiv 2502.01803).

Two recipes. From the concept prompts (`prompt_templates`): the residual state at the concept
word (the answer slot, prompt + " " + target) of the training prompts, scored on the held-out
prompts against every other token. From natural prose, as the authors build them
(`prose_templates`): K random occurrences in a training paragraph, the tolerance swept and
chosen by training accuracy, scored on a test paragraph.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class PromptStates:
    """What the later steps reuse of the prompt pass: templates and states.

    ``templates[(concept, layer)]`` at every PA and intervention layer; ``states`` [L, N, T, D]
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


def prompt_templates(pc: Pa, extra_layers: tuple[int, ...], params: dict, cfg: LlamaConfig,
                     tok: Any, data: list[ConceptData]) -> tuple[dict, PromptStates]:
    """PA templates per concept and layer; AUC/TPR/FPR on the held-out split.

    Templates are also built at ``extra_layers`` (the intervention layers; reported only where
    they are PA layers).

    Returns:
      (results, reuse): plain values for results.json, and the templates and states the
      interventions and UCD reuse.
    """
    texts, targets, owner, test = [], [], [], []
    for i, d in enumerate(data):
        texts += d.texts
        targets += d.targets
        owner += [i] * len(d.texts)
        test += list(d.test)
    owner, test = np.array(owner), np.array(test)
    # The residual stream *entering* layer l+1 is the output of layer l; collect the stream at
    # the requested layers (entering them).
    all_layers = sorted(set(pc.layers) | set(extra_layers))
    states, prompts = completed_states(params, cfg, tok, texts, targets, all_layers)
    valid = prompts.valid
    n, t = valid.shape
    last = np.zeros((n, t), bool)
    last[:, -1] = True  # the concept word is the last token (left-padded rows)
    # Statistics (the tolerance unit) use training prompts only and no sink token; held-out
    # scoring leaves the sink out too (a 100×-norm token is no test of a template).
    fit, held = statistic_positions(valid, test)
    sink = sink_positions(valid)
    out = {d.name: {"auc": [], "tpr": [], "fpr": [], "num_neurons": [], "tolerance": []}
           for d in data}
    identity = {d.name: token_identity_auc(
        prompts.tokens[held], (last & (owner == i)[:, None])[held], set(d.target_ids.tolist()))
        for i, d in enumerate(data)}
    sink_ratio = []
    templates = {}
    for li, layer in enumerate(all_layers):
        s = states[li]
        reported = layer in pc.layers
        norms = np.linalg.norm(s, axis=-1)
        if reported:
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
            if not reported:
                continue
            out[d.name]["tolerance"].append(tol / scale)
            labels = (last & (owner == i)[:, None])[held]
            scores = pa.pa_scores(tpl, s[held])
            roc = pa.tpr_fpr_auc(scores, labels)
            tpr, fpr = pa.detection_rates(scores <= tpl.threshold, labels)
            out[d.name]["auc"].append(roc.auc)
            out[d.name]["tpr"].append(tpr)
            out[d.name]["fpr"].append(fpr)
            out[d.name]["num_neurons"].append(tpl.num_neurons)
    results = {"layers": list(pc.layers), "by_concept": out, "token_identity_auc": identity,
               "sink_norm_ratio": sink_ratio, "width": int(states.shape[-1])}
    reuse = PromptStates(
        templates=templates,
        states=states[np.asarray([all_layers.index(l) for l in pc.layers])],
        valid=valid, owner=owner, test=test)
    return results, reuse


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
                    data: list[ConceptData]) -> dict:
    """PA templates built as the authors build them, from natural prose.

    Per concept with paragraphs in ``pa_prose.json``: K = ``prose_k`` random occurrences
    in the training paragraph, tolerance swept (``pa.AUTHORS_TOLERANCES``) and chosen by
    training accuracy, threshold = largest training MSE. Reported per layer: the authors' AUC
    (over the tolerance sweep, on the training paragraph), ours (Mann–Whitney on the test
    paragraph at the chosen tolerance), TPR/FPR at the template's own threshold on the test
    paragraph, and the token-identity AUC on the test paragraph.
    """
    prose = load_prose()
    out = {}
    for i, d in enumerate(data):
        if d.name not in prose:
            continue
        ids = set(d.target_ids.tolist())
        (s_tr, t_tr), (s_te, t_te) = (
            prose_states(params, cfg, tok, prose[d.name][split], pc.layers)
            for split in ("train", "test"))
        y_tr, y_te = np.isin(t_tr, list(ids)), np.isin(t_te, list(ids))
        rec = {"num_train_occurrences": int(y_tr.sum()), "num_test_occurrences": int(y_te.sum()),
               "token_identity_auc": token_identity_auc(t_te, y_te, ids),
               "authors_auc": [], "test_auc": [], "test_tpr": [], "test_fpr": [],
               "tolerance": [], "num_neurons": [], "train_accuracy": []}
        for li in range(len(pc.layers)):
            # The same K occurrences at every layer (one NumPy draw per seed and concept).
            rng = np.random.default_rng([seed, i])
            sw = pa.sweep_template(s_tr[li], y_tr, pc.prose_k, rng)
            best = int(np.argmax(sw.accuracy))
            rec["authors_auc"].append(sw.auc)
            rec["tolerance"].append(sw.tolerance)
            rec["num_neurons"].append(int(sw.num_neurons[best]))
            rec["train_accuracy"].append(float(sw.accuracy[best]))
            if sw.template is None:
                for k in ("test_auc", "test_tpr", "test_fpr"):
                    rec[k].append(None)
                continue
            scores = pa.pa_scores(sw.template, s_te[li])
            tpr, fpr = pa.detection_rates(scores <= sw.template.threshold, y_te)
            rec["test_auc"].append(pa.tpr_fpr_auc(scores, y_te).auc)
            rec["test_tpr"].append(tpr)
            rec["test_fpr"].append(fpr)
        out[d.name] = rec
    return out


def summary(prompt_results: dict, prose: dict, names: list[str]) -> dict:
    """The results.json entries of the PA step."""
    by = prompt_results["by_concept"]
    return {
        "pa_auc_by_layer": {n: by[n]["auc"] for n in names},
        "token_identity_auc": prompt_results["token_identity_auc"],
        "pa_auc_authors_by_layer": {n: v["authors_auc"] for n, v in prose.items()},
        "pa_prose": prose,
        "pa_sink_norm_ratio": prompt_results["sink_norm_ratio"],
        "pa_template_fraction": {n: [k / prompt_results["width"] for k in by[n]["num_neurons"]]
                                 for n in names},
        "pa_layers": prompt_results["layers"],
        "pa_width": prompt_results["width"],
        "pa_detail": by,
    }
