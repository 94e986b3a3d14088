"""The report text of the LLM concepts study (report.md): tables and verdicts drawn from the
results dict, with the figures of `plots`."""

from __future__ import annotations

from typing import Any

from bablate import markdown as md

from . import plots
from .config import Config

ARMS = plots.ARMS


def interventions_text(c: Config, results: dict, names: list[str]) -> str:
    """The intervention table (rates with 95% intervals) and what it shows."""
    r, det = results["intervention_rates"], results["intervention_details"]
    fmt = lambda a: (f"{a['rate']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}] (n={a['n']})"
                     if a["n"] else "–")
    rows = md.header(["concept", *(a.replace("_", " ") for a in ARMS)])
    verdicts = []
    for n in names:
        rows.append(md.row([n, *(fmt(r[n][a]) for a in ARMS)]))
        b, act, typed = r[n]["baseline"], r[n]["activation"], r[n]["token_control"]
        raised = act["lo"] > b["hi"]
        beyond = act["lo"] > typed["hi"]
        verdicts.append(f"{n}: activation {'raises' if raised else 'does not clearly raise'} "
                        f"the rate ({b['rate']:.2f} → {act['rate']:.2f}; typing the word: "
                        f"{typed['rate']:.2f}){', beyond typing the word' if beyond else ''}")
        ib, inh = r[n]["inhibition_baseline"], r[n]["inhibition"]
        if ib["n"]:
            lowered = inh["hi"] < ib["lo"]
            verdicts[-1] += (f"; inhibition {'lowers' if lowered else 'does not clearly lower'}"
                             f" it ({ib['rate']:.2f} → {inh['rate']:.2f})")
    layers = det["layers"]
    return (f"The paper's occurrence protocol: the residual stream entering layers "
            f"{layers[0]}–{layers[-1]} is overwritten on each layer's template neurons at the "
            f"{det['positions']} prompt tokens before the last one, in the prompt pass only; "
            f"{det['tokens']} tokens are sampled (temperature {c.interventions.temperature}, "
            f"top-k 50; the paper generates 200) over {det['num_neutral_prompts']} neutral "
            "questions from 6 categories. Token control: the concept word typed at the same "
            "positions instead (the word's own embedding path). Inhibition: the template "
            "neurons zeroed in held-out prompts the model completes with the concept. Every arm "
            "uses the same sampler and keys. Rates with 95% Wilson intervals:\n\n" + "\n".join(rows)
            + "\n\n" + "; ".join(verdicts) + ". (Clearly = the 95% intervals do not overlap.)")


def report(ctx: Any, c: Config, results: dict) -> None:
    """Writes the study's figures and tables into the run report."""
    names = results["concepts"]
    g = results["greedy_check"]
    ctx.text(f"## Reference check\n\nGreedy continuation of {g['prompt']!r}: "
             f"{g['continuation']!r} — expected prefix {g['expected']!r}: "
             f"**{'passed' if g['passed'] else 'FAILED'}**.")
    acc = ", ".join(f"{n} {results['intact_accuracy'][n]:.2f}" for n in names)
    where = "the last prompt position" if c.ablation.positions == "last" else "every position"
    ctx.text(f"## Concept prompts\n\nIntact top-1 accuracy per concept (all prompts): {acc}. "
             f"Ablation uses up to {c.ablation.max_prompts} correct training prompts per "
             f"concept; masks act at {where}.")
    rows = ["| concept | heads distributedness | neurons distributedness | heads TC (bits) |",
            "|---|---|---|---|"]
    for n in names:
        dd = results["distributedness_by_concept"][n]
        tc = results["total_correlation_by_concept"][n]["heads"]
        rows.append(f"| {n} | {_f(dd['heads'])} | {_f(dd['neurons'])} | {_f(tc)} |")
    pm = results["polysemanticity_mean"]
    ctx.text("## Bayesian ablation\n\n" + "\n".join(rows) +
             f"\n\nMean polysemanticity (effective concepts per unit): heads {_f(pm['heads'])}, "
             f"neurons {_f(pm['neurons'])}.")
    ctx.figure(plots.head_maps(results, names), "head_importance",
               f"Head importance q(m_i = 1) per concept "
               f"({results['concept_overlap']['heads_method']}): red = needed for the "
               "concept's completions, 0.5 = irrelevant, blue = harmful.")
    overlap = results["concept_overlap"]
    kinds = {"joint": "joint JS of the whole mask distributions",
             "marginal": "mean over units of the JS between marginals"}
    ctx.figure(plots.overlap(results, names), "concept_overlap",
               "Concept × concept Jensen–Shannon divergence between AMDs (heads, "
               f"{overlap['heads_method']}: {kinds[overlap['heads_js']]}; neurons: "
               f"{kinds[overlap['neurons_js']]}).")
    ctx.figure(plots.neurons(results, names), "neuron_importance",
               f"Sorted MLP-neuron importance at layer {results['neuron_layer']} (SVI).")
    ctx.text("## Population averaging\n\n" + pa_text(results, names))
    if results.get("pa_prose"):
        ctx.text("### PA as the authors build it (natural prose)\n\n"
                 + prose_text(results, names))
    ctx.figure(plots.pa_auc(results, names), "pa_auc", "PA template detection AUC per layer.")
    ctx.text("## Activation and inhibition\n\n" + interventions_text(c, results, names))
    ctx.figure(plots.rates(results, names), "interventions",
               "Rate of continuations naming the concept per arm (95% Wilson intervals): "
               "neutral prompts as they are, with the template grafted, with the word typed; "
               "concept prompts as they are and with the template's neurons zeroed.")
    u_rows = ["| layer | concept | recall | precision | chance | cos(chunk, template) |",
              "|---|---|---|---|---|---|"]
    for layer, v in results["ucd"].items():
        for n, a in v["concepts"].items():
            u_rows.append(f"| {layer} | {n} | {a['recall']:.2f} | {a['precision']:.2f} | "
                          f"{a['chance_precision']:.3f} | {a['template_cosine']:.2f} |")
    ctx.text("## Unsupervised chunk discovery\n\n" + "\n".join(u_rows))


def pa_text(results: dict, names: list[str]) -> str:
    """PA AUC per layer beside the token-identity AUC, and where PA beats it."""
    layers = results["pa_layers"]
    rows = md.header(["concept", "token identity", *(f"L{l}" for l in layers)])
    beats = []
    for n in names:
        ident = results["token_identity_auc"][n]
        aucs = results["pa_auc_by_layer"][n]
        rows.append(md.row([n, f"{ident:.4f}", *(f"{a:.4f}" for a in aucs)]))
        better = [l for l, a in zip(layers, aucs, strict=True) if a > ident]
        beats.append(f"{n}: " + (", ".join(f"L{l}" for l in better) if better else "no layer"))
    frac = results.get("pa_template_fraction", {})
    sizes = "; ".join(f"{n} " + ", ".join(f"{f:.0%}" for f in frac[n]) for n in names
                      if n in frac)
    ratio = ", ".join(f"L{l} {r:.0f}×" for l, r in zip(layers, results["pa_sink_norm_ratio"],
                                                        strict=True))
    return ("Held-out AUC of each concept's PA template per layer (positives: the concept "
            "word's position in held-out prompts; negatives: every other token of the held-out "
            "prompts except each prompt's first token), beside the AUC of the trivial detector "
            "\"this token is the concept word\" (it needs no network):\n\n" + "\n".join(rows)
            + "\n\nLayers where PA beats token identity: " + "; ".join(beats) + ". Where it "
            "does not, the template detects the word's token, not a concept the network "
            "builds.\n\nEvery statistic a template is built from (the tolerance unit) uses "
            "training prompts only and leaves out each prompt's first token: its residual norm "
            f"is {ratio} the median of the other tokens (the attention sink). Template size "
            f"(share of the {results.get('pa_width', 576)} residual dimensions) per layer: "
            f"{sizes}.")


def prose_text(results: dict, names: list[str]) -> str:
    """Templates from natural prose: the authors' AUC and ours, test TPR/FPR, token identity."""
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
        for key, what in (("authors_auc", "AUC, authors (sweep, training text)"),
                          ("test_auc", "AUC, ours (test text, chosen tolerance)"),
                          ("test_tpr", "TPR at threshold (test)"),
                          ("test_fpr", "FPR at threshold (test)"),
                          ("num_neurons", "template neurons"),
                          ("tolerance", "chosen tolerance")):
            vals = p[key]
            cell = (lambda v: str(v)) if key == "num_neurons" else (
                (lambda v: f"{v:.3g}") if key == "tolerance" else f)
            rows.append(md.row([n, what, *(cell(v) for v in vals)]))
        ident = p["token_identity_auc"]
        better = [l for l, a in zip(layers, p["test_auc"], strict=True)
                  if a is not None and a > ident]
        notes.append(f"{n}: {p['num_train_occurrences']} / {p['num_test_occurrences']} "
                     f"occurrences (training / test text); token identity AUC on the test text "
                     f"{ident:.3f}; PA (ours) beats it at "
                     + (", ".join(f"L{l}" for l in better) if better else "no layer"))
    return ("Each concept's training paragraph is run sentence by sentence; K = 5 random "
            "occurrences make the template, the tolerance is swept and chosen by training "
            "accuracy, and the threshold is the largest training MSE, as in the authors' code. "
            "Their AUC is the area under the tolerance sweep's (FPR, TPR) points on the "
            "training text; ours is the Mann–Whitney AUC of the template's score on the "
            "separate test paragraph. Each sentence's first token (the attention sink) is left "
            "out.\n\n" + "\n".join(rows) + "\n\n" + "; ".join(notes) + ".")


def _f(x) -> str:
    return "n/a" if x is None or isinstance(x, str) else f"{x:.3f}"
