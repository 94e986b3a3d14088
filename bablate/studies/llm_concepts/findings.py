"""The report text of the PA and intervention steps (report.md), and the section on what
reproduced: tables drawn from the results dict, every comparison worded by its 95% interval
(a bootstrap over held-out tokens for PA, Wilson and Newcombe intervals for the interventions).
"""

from __future__ import annotations

from bablate import markdown as md

from .config import Config
from .interventions import ARMS, CONTRASTS


def _rate(a: dict) -> str:
    return f"{a['rate']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}] (n={a['n']})" if a["n"] else "–"


def _diff(d: dict | None) -> str:
    return "–" if d is None else f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def _sign(lo: float | None, hi: float | None) -> str:
    """"up" where a 95% interval of a difference lies above 0, "down" below, else "same"
    ("none" without one)."""
    if lo is None or hi is None:
        return "none"
    return "up" if lo > 0 else "down" if hi < 0 else "same"


def _names(found: list[str]) -> str:
    return ", ".join(found) if found else "none"


def _by_sign(items: dict[str, dict | None]) -> dict[str, list[str]]:
    """Concept names grouped by the sign of their difference's interval."""
    out: dict[str, list[str]] = {"up": [], "down": [], "same": [], "none": []}
    for n, d in items.items():
        out[_sign(*(None, None) if d is None else (d["lo"], d["hi"]))].append(n)
    return out


def pa_comparison(v: dict, layers: list[int]) -> dict[str, list[str]]:
    """Layers (``L<l>``) where PA's AUC lies above token identity's beyond the 95% bootstrap
    interval of the difference ("up"), below it ("down"), or cannot be told from it ("same")."""
    out: dict[str, list[str]] = {"up": [], "down": [], "same": [], "none": []}
    for layer, lo, hi in zip(layers, v["lo"], v["hi"], strict=True):
        out[_sign(lo, hi)].append(f"L{layer}")
    return out


def interventions_text(c: Config, results: dict, names: list[str]) -> str:
    """Per prompt format, the intervention table (rates with 95% Wilson intervals, the
    difference activation − typed word with its 95% Newcombe interval) and what it shows;
    then the format effect."""
    det = results["intervention_details"]
    layers, src = det["layers"], det["template_layers"]
    ended = ", ".join(f"{f} {s:.0%}" for f, s in det["ended_share"].items() if s is not None)
    cats = ", ".join(f"{k} {v}" for k, v in det["categories"].items())
    parts = [
        f"As the authors' code runs it: each concept's template from natural prose (the "
        f"authors' recipe, below) of layer l − {layers[0] - src[0]} overwrites, on its neurons, "
        f"the residual stream entering layer l = {layers[0]}–{layers[-1]} at the "
        f"{det['positions']} prompt tokens before the last one, in the prompt pass only; "
        f"{det['tokens']} tokens are sampled (temperature {c.interventions.temperature}, "
        "top-k 50, one sampler and one key per row in every arm; the authors sample 200 minus "
        "the question's length with top-p 0.9 grafted and 0.5 without) and cut at the model's "
        f"end of turn ({det['end_of_turn'] or 'none'}: a bare question is mostly closed at once "
        "as the user's turn and answered in an assistant turn, kept to its own end; what "
        f"follows, new user or system turns, is cut). Rows that ended their turn: {ended}. "
        f"Neutral questions: {det['num_questions']} written for bablate "
        f"(bablate/data/neutral_questions.json; {cats}), {det['samples_per_question']} "
        "sample(s) each. Formats: **authors**, the bare question, so the grafted tokens are "
        "its last words; **wrapped**, \"Q: …\\nA:\", where they are '?', '\\n' and 'A'. Token "
        "control: the concept word typed at the same positions instead. Inhibition: the "
        "template's neurons zeroed in prompts the intact model completes with the concept "
        "(bare in the authors format, the few-shot Q/A prompt in the wrapped one), repeated to "
        f"{det['own_rows']} rows (distinct prompts: "
        + ", ".join(f"{n} {k}" for n, k in det["inhibition_prompts"].items())
        + "; the intervals count rows, not prompts). Rates with 95% Wilson intervals; "
        "differences with 95% Newcombe intervals (conservative for arms that share questions "
        "and keys)."]
    for name, why in det["not_grafted"].items():
        parts.append(f"**{name} has no template worth grafting**: {why}; its activation and "
                     "inhibition arms were not run.")
    head = ["concept", *(a.replace("_", " ") for a in ARMS), "activation − typed"]
    for fmt, by in results["intervention_rates"].items():
        rows = md.header(head)
        verdicts = []
        for n in names:
            r, d = by[n], results["intervention_differences"][fmt][n]
            rows.append(md.row([n, *(_rate(r[a]) for a in ARMS),
                                _diff(d["activation - token_control"])]))
            verdicts.append(f"{n}: " + _verdict(d))
        parts.append(f"**{fmt} format**\n\n" + "\n".join(rows) + "\n\n" + "; ".join(verdicts)
                     + ".")
    fe = results.get("intervention_format_effect")
    if fe:
        a, b = fe["formats"]
        rows = md.header(["concept", *(f"{x.replace('_', ' ')}: {a} − {b}" for x in ARMS)])
        for n in names:
            rows.append(md.row([n, *(_diff(fe["by_concept"][n][x]) for x in ARMS)]))
        parts.append(f"The format's effect on each arm ({a} − {b}, 95% Newcombe intervals):\n\n"
                     + "\n".join(rows))
    return "\n\n".join(parts)


# What each contrast's interval says, by its sign.
VERDICTS = {
    "activation - baseline": {"up": "activation raises the rate", "down": "activation lowers it",
                              "same": "activation does not clearly change it"},
    "activation - token_control": {"up": "beyond typing the word",
                                   "down": "less than typing the word",
                                   "same": "no different from typing the word"},
    "inhibition - inhibition_baseline": {"up": "inhibition raises it",
                                         "down": "inhibition lowers it",
                                         "same": "inhibition does not clearly lower it"}}


def _verdict(d: dict) -> str:
    """One concept's arms in words, each following its difference's interval."""
    out = []
    for contrast, words in VERDICTS.items():
        diff = d[contrast]
        if diff is not None:
            out.append(f"{words[_sign(diff['lo'], diff['hi'])]} ({_diff(diff)})")
    return ", ".join(out) or "not grafted"


def pa_text(results: dict, names: list[str]) -> str:
    """PA AUC per layer beside the token-identity AUC, with 95% bootstrap intervals, and where
    PA beats it."""
    layers = results["pa_layers"]
    rows = md.header(["concept", "token identity", *(f"L{l}" for l in layers)])
    verdicts = []
    for n in names:
        v = results["pa_vs_token_identity"][n]
        rows.append(md.row([n, f"{v['token_identity_auc']:.3f}",
                            *(f"{a:.3f} ({_diff({'diff': d, 'lo': lo, 'hi': hi})})"
                              for a, d, lo, hi in zip(v["pa_auc"], v["difference"], v["lo"],
                                                      v["hi"], strict=True))]))
        cmp = pa_comparison(v, layers)
        verdicts.append(f"{n}: above at {_names(cmp['up'])}, below at {_names(cmp['down'])}")
    frac = results.get("pa_template_fraction", {})
    sizes = "; ".join(f"{n} " + ", ".join(f"{f:.0%}" for f in frac[n]) for n in names
                      if n in frac)
    ratio = ", ".join(f"L{l} {r:.0f}×" for l, r in zip(layers, results["pa_sink_norm_ratio"],
                                                        strict=True))
    v0 = results["pa_vs_token_identity"][names[0]]
    return ("Held-out AUC of each concept's PA template per layer (positives: the concept "
            "word's position in held-out prompts; negatives: every other token of the held-out "
            "prompts except each prompt's first token), beside the AUC of the trivial detector "
            "\"this token is the concept word\" (it needs no network) on the same tokens; in "
            "brackets PA − token identity with its 95% bootstrap interval "
            f"({v0['resamples']} resamples of the held-out tokens, positives and negatives "
            "apart, both detectors scored on each):\n\n" + "\n".join(rows)
            + "\n\nPA against token identity, beyond the interval: " + "; ".join(verdicts)
            + ". Where the interval holds 0 the template detects no more than the word's "
            "token.\n\nEvery statistic a template is built from (the tolerance unit) uses "
            "training prompts only and leaves out each prompt's first token: its residual norm "
            f"is {ratio} the median of the other tokens (the attention sink). Template size "
            f"(share of the {results.get('pa_width', 576)} residual dimensions) per layer: "
            f"{sizes}.")


def prose_text(results: dict, names: list[str]) -> str:
    """Templates from natural prose: the authors' AUC and ours against token identity with
    bootstrap intervals, test TPR/FPR."""
    layers = results["pa_layers"]
    prose = results["pa_prose"]
    f = lambda v: "–" if v is None else f"{v:.2f}"
    rows = md.header(["concept", "measure", *(f"L{l}" for l in layers)])
    notes = []
    for n in names:
        if n not in prose:
            notes.append(f"{n}: no paragraphs in pa_prose.json")
            continue
        p = prose[n]
        v = p["vs_token_identity"]
        diffs = [None if d is None else {"diff": d, "lo": lo, "hi": hi}
                 for d, lo, hi in zip(v["difference"], v["lo"], v["hi"], strict=True)]
        for what, cells in (
                ("AUC, authors (sweep, training text)", [f(x) for x in p["authors_auc"]]),
                ("AUC, ours (test text, chosen tolerance)", [f(x) for x in p["test_auc"]]),
                ("ours − token identity [95%]", [_diff(d) for d in diffs]),
                ("TPR at threshold (test)", [f(x) for x in p["test_tpr"]]),
                ("FPR at threshold (test)", [f(x) for x in p["test_fpr"]]),
                ("template neurons", [str(x) for x in p["num_neurons"]]),
                ("chosen tolerance", [f"{x:.3g}" for x in p["tolerance"]])):
            rows.append(md.row([n, what, *cells]))
        cmp = pa_comparison(v, layers)
        notes.append(f"{n}: {p['num_train_occurrences']} / {p['num_test_occurrences']} "
                     f"occurrences (training / test text); token identity AUC on the test text "
                     f"{p['token_identity_auc']:.3f}; PA (ours) above it beyond the interval "
                     f"at {_names(cmp['up'])}, below at {_names(cmp['down'])}")
    return ("Each concept's training paragraph is run sentence by sentence; K = 5 random "
            "occurrences make the template, the tolerance is swept and chosen by training "
            "accuracy, and the threshold is the largest training MSE, as in the authors' code. "
            "Their AUC is the area under the tolerance sweep's (FPR, TPR) points on the "
            "training text; ours is the Mann–Whitney AUC of the template's score on the "
            "separate test paragraph, compared with token identity's with a 95% bootstrap "
            "interval over the test tokens. Each sentence's first token (the attention sink) "
            "is left out.\n\n" + "\n".join(rows) + "\n\n" + "; ".join(notes) + ".")


def reproduction_text(results: dict, names: list[str]) -> str:
    """What reproduced of the paper's PA and intervention claims and what did not, each
    sentence following its 95% interval (the ablation has its own section)."""
    layers = results["pa_layers"]
    aucs = [a for n in names for a in results["pa_auc_by_layer"][n]]
    above, below = [], []
    for n in names:
        cmp = pa_comparison(results["pa_vs_token_identity"][n], layers)
        above += [f"{n} {l}" for l in cmp["up"]]
        below += [f"{n} {l}" for l in cmp["down"]]
    ident = ", ".join(f"{n} {results['token_identity_auc'][n]:.3f}" for n in names)
    out = [f"- **PA templates detect the concepts** (held-out AUC {min(aucs):.2f}–"
           f"{max(aucs):.2f} over {len(layers)} layers and {len(names)} concepts), as the paper "
           f"reports. **Beyond the word's own token** only where PA's AUC exceeds token "
           f"identity's beyond the 95% bootstrap interval: {_names(above)}; below it at "
           f"{_names(below)}; elsewhere the two cannot be told apart (token identity alone: "
           f"{ident})."]
    det = results["intervention_details"]
    fmt = det["formats"][0]
    diffs = results["intervention_differences"][fmt]
    rates = results["intervention_rates"][fmt]
    grafted = [n for n in names if n not in det["not_grafted"]]

    def pick(contrast: str) -> dict[str, list[str]]:
        return _by_sign({n: diffs[n][contrast] for n in grafted})

    def shown(found: list[str], a: str, b: str) -> str:
        return _names([f"{n} {rates[n][b]['rate']:.2f} → {rates[n][a]['rate']:.2f}"
                       for n in found])

    act, typed, inh = (pick(f"{a} - {b}") for a, b in CONTRASTS)
    out.append(f"- **Activation** (the paper: grafting a template raises how often its word is "
               f"generated, e.g. cheese 0 → 0.90 of 20 generations of Llama-3-8B), {fmt} "
               f"format: the rate rises beyond its interval for "
               f"{shown(act['up'], 'activation', 'baseline')}; not clearly for "
               f"{shown(act['same'] + act['down'], 'activation', 'baseline')}"
               + (f"; no template worth grafting for {_names(list(det['not_grafted']))}"
                  if det["not_grafted"] else "") + ".")
    out.append(f"- **Grafting against typing the word** (activation − typed word): no "
               f"different within the interval for {_names(typed['same'])}; beyond typing for "
               f"{_names(typed['up'])}; less than typing for {_names(typed['down'])}. Where it "
               "is no different, what the graft adds is the word itself, not a concept beyond "
               "it.")
    out.append(f"- **Inhibition** (the paper: zeroing the template lowers the word's "
               f"occurrence): lowers it beyond its interval for "
               f"{shown(inh['down'], 'inhibition', 'inhibition_baseline')}; not clearly for "
               f"{shown(inh['same'] + inh['up'], 'inhibition', 'inhibition_baseline')} (where the "
               "rate without it is near 0 there is nothing to lower).")
    fe = results.get("intervention_format_effect")
    if fe:
        a, b = fe["formats"]
        by = {n: fe["by_concept"][n]["activation"] for n in grafted}
        eff = {k: [f"{n} {_diff(by[n])}" for n in v] for k, v in _by_sign(by).items()}
        out.append(f"- **Prompt format** (activation, {a} − {b}): higher in the {a} format "
                   f"for {_names(eff['up'])}; lower for {_names(eff['down'])}; no clear "
                   f"difference for {_names(eff['same'])}.")
    return ("Each sentence follows the 95% intervals of the sections below (a bootstrap over "
            "held-out tokens for PA; Wilson and Newcombe intervals for the interventions); the "
            "Bayesian ablation's verdicts are in its own section.\n\n" + "\n".join(out))
