"""Figures and report text of the LLM concepts study."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _head_maps(results, names):
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    layers = results["head_layers"]
    for ax, n in zip(axes[0], names, strict=True):
        m = np.asarray(results["head_importance"][n])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="RdBu_r", aspect="auto")
        ax.set_title(n)
        ax.set_xlabel("head")
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(layers if len(layers) <= 10 else
                           [str(l) if i % 5 == 0 else "" for i, l in enumerate(layers)])
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="q(m_i = 1)")
    return fig


def _overlap(results, names):
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, kind in zip(axes, ("heads", "neurons"), strict=True):
        m = np.asarray(results["concept_overlap"][kind])
        im = ax.imshow(m, cmap="viridis")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        ax.set_title(f"JS overlap, {kind}")
        fig.colorbar(im, ax=ax, label="bits")
    fig.tight_layout()
    return fig


def _pa_auc(results, names):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for n in names:
        ax.plot(results["pa_layers"], results["pa_auc_by_layer"][n], marker="o", label=n)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("layer (residual stream entering it)")
    ax.set_ylabel("held-out AUC")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    return fig


def _rates(results, names):
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    x = np.arange(len(names))
    for ax, kind in zip(axes, ("activation", "inhibition"), strict=True):
        r = results["intervention_rates"]
        ax.bar(x - 0.2, [r[n][kind]["without"] for n in names], 0.4, label="without")
        ax.bar(x + 0.2, [r[n][kind]["with"] for n in names], 0.4, label="with")
        ax.set_xticks(x)
        ax.set_xticklabels(names)
        ax.set_title(kind)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("fraction of samples naming the concept")
    axes[0].legend()
    fig.tight_layout()
    return fig


def _neurons(results, names):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for n in names:
        q = np.sort(np.asarray(results["neuron_importance"][n]))[::-1]
        ax.plot(q, label=n)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("neuron (sorted)")
    ax.set_ylabel("q(m_i = 1)")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def report(ctx, c, results, posts) -> None:
    """Writes the study's figures and tables into the run report."""
    del posts
    names = results["concepts"]
    g = results["greedy_check"]
    ctx.text(f"## Reference check\n\nGreedy continuation of {g['prompt']!r}: "
             f"{g['continuation']!r} — expected prefix {g['expected']!r}: "
             f"**{'passed' if g['passed'] else 'FAILED'}**.")
    acc = ", ".join(f"{n} {results['intact_accuracy'][n]:.2f}" for n in names)
    ctx.text(f"## Concept prompts\n\nIntact top-1 accuracy per concept (all prompts): {acc}. "
             f"Ablation uses up to {c.max_prompts} correct training prompts per concept; masks "
             f"act at {'the last prompt position' if c.positions == 'last' else 'every position'}.")
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
    ctx.figure(_head_maps(results, names), "head_importance",
               f"Head importance q(m_i = 1) per concept "
               f"({results['concept_overlap']['heads_method']}): red = needed for the "
               "concept's completions, 0.5 = irrelevant, blue = harmful.")
    ctx.figure(_overlap(results, names), "concept_overlap",
               "Concept × concept Jensen–Shannon divergence between AMDs (heads: "
               f"{results['concept_overlap']['heads_method']}; neurons: mean over units of the "
               "marginal JS).")
    ctx.figure(_neurons(results, names), "neuron_importance",
               f"Sorted MLP-neuron importance at layer {results['neuron_layer']} (SVI).")
    ctx.text("## Population averaging\n\n" + pa_text(results, names))
    ctx.figure(_pa_auc(results, names), "pa_auc", "PA template detection AUC per layer.")
    r = results["intervention_rates"]
    iv_rows = ["| concept | activation without | with | inhibition without | with |",
               "|---|---|---|---|---|"]
    for n in names:
        iv_rows.append(f"| {n} | {r[n]['activation']['without']:.2f} | "
                       f"{r[n]['activation']['with']:.2f} | {r[n]['inhibition']['without']:.2f} "
                       f"| {r[n]['inhibition']['with']:.2f} |")
    ctx.text(f"## Activation and inhibition (layer {c.intervention_layer})\n\n"
             "Fraction of sampled continuations naming the concept:\n\n" + "\n".join(iv_rows))
    ctx.figure(_rates(results, names), "interventions",
               "Grafting the PA template (activation) or zeroing its neurons (inhibition) at "
               "the last prompt position.")
    u_rows = ["| layer | concept | recall | precision | chance | cos(chunk, template) |",
              "|---|---|---|---|---|---|"]
    for layer, v in results["ucd"].items():
        for n, a in v["concepts"].items():
            u_rows.append(f"| {layer} | {n} | {a['recall']:.2f} | {a['precision']:.2f} | "
                          f"{a['chance_precision']:.3f} | {a['template_cosine']:.2f} |")
    ctx.text("## Unsupervised chunk discovery\n\n" + "\n".join(u_rows))


def pa_text(results: dict, names) -> str:
    """PA AUC per layer beside the token-identity AUC, and where PA beats it."""
    layers = results["pa_layers"]
    rows = ["| concept | token identity | " + " | ".join(f"L{l}" for l in layers) + " |",
            "|---|---|" + "---|" * len(layers)]
    beats = []
    for n in names:
        ident = results["token_identity_auc"][n]
        aucs = results["pa_auc_by_layer"][n]
        rows.append(f"| {n} | {ident:.4f} | " + " | ".join(f"{a:.4f}" for a in aucs) + " |")
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


def _f(x) -> str:
    return "n/a" if x is None or isinstance(x, str) else f"{x:.3f}"
