"""Steps 1-2: DSC on trained vs untrained networks over seeds (long and/or authors' protocol),
PA templates of the ground-truth chunks, and the most frequent DSC chunks."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bablate import chunks
from bablate.models import rnn
from bablate.studies.rnn_chunks import intervals, training
from bablate.studies.rnn_chunks.config import StudyConfig
from bablate.testbeds import rnn as rnn_testbed
from bablate.testbeds import sequences
from bablate.testbeds.rnn import Windows

# The per-seed numbers of each DSC run; their means are the headline keys.
KEYS = ("n_unique_states", "vocab_size", "vocab_size_count_gt5", "parse_length",
        "decoding_accuracy", "decoding_unseen_fraction", "accuracy")

_unroll_windows = jax.jit(rnn.unroll_windows, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class FirstSeed:
    """What the later steps read: the first seed's data, trained network and its long-protocol
    DSC (``h_*``: hidden states [W*L, H] of the fitting / held-out windows)."""

    seq: sequences.ChunkedSequence
    fit: Windows
    test: Windows
    variables: dict
    res: chunks.DSCResult
    h_fit: np.ndarray
    h_test: np.ndarray


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Per training recipe, per protocol, per network ("trained" / "untrained"), one row of
    DSC numbers per seed; the training histories per recipe; the first seed's objects (of the
    first recipe)."""

    rows_by: dict
    histories: dict
    first: FirstSeed


def hidden_states(model: rnn.RNNConfig, variables: dict, w: Windows) -> np.ndarray:
    """Hidden states [W*L, H] of every window, each run from h_0 = 0."""
    _, h = _unroll_windows(model, variables, w.tokens)
    return np.asarray(h).reshape(-1, model.hidden)


def _numbers(res) -> dict:
    return {"n_unique_states": res.n_unique_states, "vocab_size": res.chunks.vocab_size,
            "vocab_size_count_gt5": res.chunks.vocab_size_count_gt(5),
            "parse_length": res.chunks.parse_length,
            "decoding_accuracy": res.decoding_accuracy,
            "decoding_unseen_fraction": res.unseen_fraction}


def dsc_summary(cfg: StudyConfig, variables: dict, fit: Windows, test: Windows):
    """DSC by the long protocol → (result, numbers, h_fit, h_test)."""
    h_fit = hidden_states(cfg.model, variables, fit)
    h_test = hidden_states(cfg.model, variables, test)
    d = cfg.dsc
    res = chunks.run_dsc(h_fit, fit.tokens.ravel(), h_test, test.tokens.ravel(), k=d.k,
                         rounds=d.rounds, top=d.top, min_count=d.min_count)
    return res, _numbers(res), h_fit, h_test


def dsc_authors_summary(cfg: StudyConfig, variables: dict, seq: sequences.ChunkedSequence):
    """DSC by the authors' protocol on one continuous trajectory of the sequence's first
    ``dsc.authors_length`` tokens (their notebooks: 2,000), from h_0 = 0 → (result, numbers, h)."""
    d = cfg.dsc
    n = min(d.authors_length, len(seq.tokens))
    tokens = np.asarray(seq.tokens[:n])
    _, h = _unroll_windows(cfg.model, variables, jnp.asarray(tokens[None, :], jnp.int32))
    h = np.asarray(h).reshape(-1, cfg.model.hidden)
    res = chunks.run_dsc_authors(h, tokens, k=d.k, rounds=d.rounds, top=d.top,
                                 min_count=d.min_count,
                                 fit_steps=min(d.authors_fit_steps, n - 1))
    return res, {**_numbers(res), "trajectory_length": n}, h


def _read(cfg: StudyConfig, v: dict, seq, fit: Windows, test: Windows
          ) -> tuple[dict[str, dict], tuple | None]:
    """One network read by every DSC protocol → ({protocol: numbers}, the long protocol's
    (result, h_fit, h_test) or None)."""
    acc = rnn.accuracy(cfg.model, v, jnp.asarray(test.tokens))
    numbers: dict[str, dict] = {}
    long = None
    for protocol in cfg.dsc.protocols:
        if protocol == "long":
            res, numbers[protocol], h_fit, h_test = dsc_summary(cfg, v, fit, test)
            long = (res, h_fit, h_test)
        else:
            _, numbers[protocol], _ = dsc_authors_summary(cfg, v, seq)
        numbers[protocol]["accuracy"] = acc
    return numbers, long


def compare(cfg: StudyConfig, network_keys: dict[int, jax.Array], ctx) -> Comparison:
    """Step 1: for each seed s, one network per training recipe (key ``network_keys[s]``) and
    their common untrained start, read by every DSC protocol.

    Every recipe starts from the same initialisation, so the untrained network is read once
    per seed and its row stands under each recipe.
    """
    recipes, protocols = cfg.train.recipes, cfg.dsc.protocols
    rows_by: dict[str, dict[str, dict[str, list[dict]]]] = {
        r: {p: {"trained": [], "untrained": []} for p in protocols} for r in recipes}
    histories: dict[str, list] = {r: [] for r in recipes}
    first: FirstSeed | None = None
    for i, (s, key) in enumerate(network_keys.items()):
        seq = rnn_testbed.make_sequence(cfg.family, s, cfg.n_h, cfg.n_draws)
        test_seq = rnn_testbed.make_sequence(cfg.family, s + rnn_testbed.TEST_SEED_OFFSET,
                                             cfg.n_h, cfg.n_draws)
        fit = rnn_testbed.to_windows(seq, cfg.train.window, cfg.dsc.max_tokens)
        test = rnn_testbed.to_windows(test_seq, cfg.train.window, cfg.dsc.max_tokens)
        untrained, _ = _read(cfg, training.initial_variables(cfg.model, key), seq, fit, test)
        line = []
        for recipe in recipes:
            variables, hist = training.train_or_load(
                cfg.model, cfg.train.of(recipe), training.checkpoint_name(recipe, s),
                seq.tokens, test, key, ctx)
            histories[recipe].append(hist)
            trained, long = _read(cfg, variables, seq, fit, test)
            for protocol in protocols:
                rows_by[recipe][protocol]["trained"].append(trained[protocol])
                rows_by[recipe][protocol]["untrained"].append(untrained[protocol])
            if i == 0 and recipe == recipes[0]:
                # PA, perturbation, grafting and ablation read the long protocol's DSC.
                if long is None:
                    res, _, h_fit, h_test = dsc_summary(cfg, variables, fit, test)
                    long = (res, h_fit, h_test)
                first = FirstSeed(seq, fit, test, variables, *long)
            p = protocols[0]
            line.append(f"{recipe} recipe: accuracy {trained[p]['accuracy']:.3f}, unique "
                        f"states {trained[p]['n_unique_states']} vs "
                        f"{untrained[p]['n_unique_states']} untrained ({p} protocol)")
        ctx.log(f"seed {s}: " + "; ".join(line))
    assert first is not None, "no seeds to compare"
    return Comparison(rows_by, histories, first)


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


# The counts whose trained > untrained is the paper's claim (unique states, vocabulary).
COMPARED = ("n_unique_states", "vocab_size")


def _summary(rows: dict) -> dict:
    """One recipe and protocol: per network the means, per-seed values and ranges of KEYS and
    the t-intervals of the means of COMPARED; the paired trained − untrained differences of
    COMPARED with t-intervals over seeds."""
    out: dict[str, dict] = {n: {**{k: _mean(rs, k) for k in KEYS},
               "per_seed": {k: [r[k] for r in rs] for k in KEYS},
               "range": {k: [min(r[k] for r in rs), max(r[k] for r in rs)] for k in KEYS},
               "interval": {k: intervals.mean_interval([r[k] for r in rs]) for k in COMPARED}}
           for n, rs in rows.items()}
    out["trained_minus_untrained"] = {
        k: intervals.paired_difference(out["trained"]["per_seed"][k],
                                       out["untrained"]["per_seed"][k]) for k in COMPARED}
    return out


def comparison_results(comp: Comparison) -> dict:
    """results.json's DSC keys: headline means (first recipe, first protocol), its per-seed
    rows, and ``dsc[recipe][protocol]`` for every recipe and protocol."""
    recipe = next(iter(comp.rows_by))
    primary = next(iter(comp.rows_by[recipe]))
    rows = comp.rows_by[recipe][primary]
    results: dict[str, Any] = {k: {n: _mean(rows[n], k) for n in rows} for k in KEYS}
    results["per_seed"] = rows
    results["dsc_primary_recipe"] = recipe
    results["dsc_primary_protocol"] = primary
    results["dsc"] = {r: {p: _summary(rs) for p, rs in by_p.items()}
                      for r, by_p in comp.rows_by.items()}
    results["accuracy"] = results["accuracy"]["trained"]
    results["accuracy_untrained"] = _mean(rows["untrained"], "accuracy")
    results["ground_truth_parse_length"] = int((comp.first.fit.chunk_pos.ravel() == 0).sum())
    return results


def pa_chunks(tolerance: float, words, fit: Windows, test: Windows, h_fit: np.ndarray,
              h_test: np.ndarray, word_ids) -> dict:
    """Step 2: PA template per chunk (state at its last symbol) → TPR/FPR at the threshold and
    AUC; ``tolerance`` in units of the std of all hidden values."""
    tol = tolerance * float(np.std(h_fit))
    out: dict[str, dict[str, Any]] = {}
    for k in word_ids:
        pos_fit = rnn_testbed.word_end_mask(fit, words, k)
        pos_test = rnn_testbed.word_end_mask(test, words, k)
        if pos_fit.sum() < 5 or pos_test.sum() < 1:
            continue
        try:
            tpl = chunks.pa_template(h_fit[pos_fit], tol)
        except ValueError:  # no neuron within tolerance: the chunk has no stable template
            out[words[k]] = {"num_neurons": 0}
            continue
        scores = chunks.pa_scores(tpl, h_test)
        tpr, fpr = chunks.detection_rates(scores <= tpl.threshold, pos_test)
        roc = chunks.tpr_fpr_auc(scores, pos_test)
        out[words[k]] = {"num_neurons": tpl.num_neurons, "tpr": tpr, "fpr": fpr,
                         "auc": roc.auc, "neuron_mask": tpl.neuron_mask.tolist()}
    return out


def top_chunks(res: chunks.DSCResult, alphabet: str, n: int, filler: str = "E") -> list[dict]:
    """The n most frequent multi-state chunks, decoded to symbols through the lookup table.

    Chunks that decode to filler symbols only are left out (they dominate the counts).
    """
    d = res.chunks
    out = []
    for e in np.argsort(-d.counts, kind="stable"):
        states = d.entries[e]
        if len(states) < 2 or d.counts[e] == 0:
            continue
        sym = "".join(alphabet[s] if s >= 0 else "?" for s in
                      (res.lookup.table.get(d.states[i], -1) for i in states))
        if set(sym) <= {filler}:
            continue
        out.append({"symbols": sym, "num_states": len(states), "count": int(d.counts[e])})
        if len(out) == n:
            break
    return out
