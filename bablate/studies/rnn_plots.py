"""Figures and report text of the RNN-chunks study (bablate.studies.rnn_chunks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bablate import chunks  # noqa: E402

REFERENCE = {"n_unique_states": (365, 41), "vocab_size": (383, 48)}  # DESIGN.md §3, 10 seeds


def training_curves(ctx, histories: list[dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, h in enumerate(histories):
        steps = np.asarray(h["step"])
        axes[0].plot(steps[1:], np.asarray(h["loss"])[1:], color="C0", alpha=0.5,
                     label="seeds" if i == 0 else None)
        axes[1].plot(steps, h["accuracy"], color="C1", alpha=0.5)
    axes[0].set(xlabel="step", ylabel="training loss (mean CE)")
    axes[1].set(xlabel="step", ylabel="held-out next-symbol accuracy", ylim=(0, 1))
    fig.tight_layout()
    ctx.figure(fig, "training_curves", "Training loss and held-out next-symbol accuracy of "
               "every seed's network.")


def dsc_comparison(ctx, rows: dict) -> None:
    keys = ["n_unique_states", "vocab_size", "vocab_size_count_gt5", "parse_length",
            "decoding_accuracy"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 3))
    for ax, k in zip(axes, keys, strict=True):
        vals = [[r[k] for r in rows[n]] for n in ("trained", "untrained")]
        ax.boxplot(vals, tick_labels=["trained", "untrained"])
        for j, v in enumerate(vals):
            ax.scatter(np.full(len(v), j + 1.0), v, s=10, color="k", alpha=0.6)
        if k in REFERENCE:
            for j, ref in enumerate(REFERENCE[k]):
                ax.scatter([j + 1.25], [ref], marker="*", color="C3", s=60,
                           label="paper" if j == 0 else None)
            ax.legend(fontsize=7)
        ax.set_title(k.replace("_", " "), fontsize=9)
    fig.tight_layout()
    ctx.figure(fig, "dsc_trained_vs_untrained", "DSC on trained vs untrained networks over "
               "seeds: unique states, chunk vocabulary, vocabulary with count > 5, parse length "
               "and held-out decoding accuracy of the state→symbol lookup (red stars: the "
               "paper's 10-seed means).")


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


def chunk_dictionary(ctx, res: chunks.DSCResult, alphabet: str) -> None:
    top = top_chunks(res, alphabet, 20)
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(top), 3) + 1))
    ax.barh(range(len(top)), [t["count"] for t in top], color="C2")
    ax.set_yticks(range(len(top)), [f"{t['symbols']} ({t['num_states']} states)" for t in top],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="count in the final parse")
    fig.tight_layout()
    ctx.figure(fig, "chunk_dictionary", "Most frequent merged chunks of the DSC dictionary "
               "(trained network, first seed), each decoded to symbols through the state→symbol "
               "lookup, with its count in the final parse (chunks of filler 'E' only are not "
               "shown).")


def perturbation(ctx, pert: list[dict]) -> None:
    labels = [f"{p['inject']}-state, feed {p['feed']} → {p['expect']}?" for p in pert]
    y = np.arange(len(pert))
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(pert) + 1.2))
    ax.barh(y - 0.2, [p["p_expect_injected"] for p in pert], 0.4, label="injected chunk state")
    ax.barh(y + 0.2, [p["p_expect_control"] for p in pert], 0.4, label="control: filler state")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="P(expected continuation)", xlim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    ctx.figure(fig, "perturbation", "Perturbation: the hidden state is set to the DSC state "
               "decoded as the first symbol, the second symbol is fed, and the probability of "
               "the third is read; control injects the state decoded as the filler 'E'.")


def grafting(ctx, graft: dict) -> None:
    steps = np.asarray(graft["step"])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    names = {"none": "no grafting", "graft": "grafted training (evaluated without graft)",
             "graft_eval_grafted": "grafted training (evaluated with graft)"}
    for i, (k, label) in enumerate(names.items()):
        s = graft["summary"][k]
        m, h = np.asarray(s["mean"]), np.asarray(s["ci95"])
        ax.plot(steps, m, color=f"C{i}", label=label)
        ax.fill_between(steps, m - h, m + h, color=f"C{i}", alpha=0.2)
    ax.set(xlabel="transfer training step", ylabel="accuracy of L after ABCD",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "grafting", "Transfer training on 'ABCDLMN' from the compositional network, "
               "with and without grafting the DSC state decoded as 'J' after 'C' (mean ± 95% "
               "t-interval over seeds); accuracy of the new transition (L after ABCD) on "
               "held-out transfer sequences.")


def unit_importance(ctx, abl: dict, name: str = "unit_importance") -> None:
    imp = np.asarray(abl["unit_importance"])
    fig, ax = plt.subplots(figsize=(min(0.35 * imp.shape[1] + 2, 12), 0.4 * imp.shape[0] + 1.2))
    im = ax.imshow(imp, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(abl["tasks"])), abl["tasks"], fontsize=8)
    ax.set(xlabel="hidden unit", ylabel="chunk task")
    fig.colorbar(im, ax=ax, label="importance q(m_i = 1)")
    fig.tight_layout()
    ctx.figure(fig, name, f"Bayesian ablation ({abl['method']}, rule {abl['rule']}): importance "
               "of each hidden unit (masked at every step) for predicting the continuation "
               "inside each chunk; 0.5 = irrelevant under the uniform prior.")


def _num(x) -> str:
    """Two decimals; 'n/a' for a missing or non-finite value (e.g. no informative unit)."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def _ablation_text(a: dict, cell: str) -> list[str]:
    """Report lines of one ablation result."""
    lines = []
    poly = a.get("polysemanticity_mean", 1.0)
    agree = float(np.nanmean(np.asarray(a["agreement_per_chunk"], float))) if any(
        x is not None and np.isfinite(x) for x in a["agreement_per_chunk"]) else None
    lines.append(
        f"Bayesian ablation ({a['method']}, rule {a['rule']}, {len(a['tasks'])} chunk tasks "
        f"{', '.join(a['tasks'])}): distributedness "
        + ", ".join(_num(x) for x in a["distributedness"])
        + "; total correlation " + ", ".join(_num(x) for x in a["total_correlation"])
        + f" bits; mean polysemanticity {_num(poly)} tasks per unit; "
        f"DSC–AMD agreement (mean Spearman ρ) {_num(agree)}, top-"
        f"quarter overlap {np.mean(a['top_quarter_overlap']):.2f}.")
    if a["method"] != "exact":
        n = a["diagnostics"][0].get("num_draws", 0)
        lines.append(
            f"Total correlation here is the plug-in estimate from {n} MCMC draws: the joint "
            f"entropy cannot exceed log2 {n} = {np.log2(max(n, 1)):.1f} bits, so with "
            f"{len(a['unit_importance'][0])} units the estimate is dominated by that bias "
            "(an upper bound, not a measurement).")
    info = max(a["task_information"])
    if info < 0.1:
        lines.append(
            f"The AMD is nearly flat (task information at most {info:.3f} bits): no set of "
            "hidden units is needed to get these predictions right under this rule. "
            + ("In the paper's architecture the readout also sees the one-hot input: a "
               "continuation that the current symbol determines stays the top-1 prediction with "
               "the hidden state removed, and one that it does not determine is mostly missed "
               "with or without the hidden units"
               if cell == "linear" else
               "The wide network's units are redundant: masks that keep about half of them "
               "still predict correctly")
            + "; the agreement numbers are then not meaningful.")
    if "mcmc_vs_exact_max_abs_diff" in a:
        lines.append(f"MCMC vs exact marginals on the first task: max |Δ| = "
                     f"{a['mcmc_vs_exact_max_abs_diff']:.3f}.")
    return lines


def report_text(ctx, cfg, r: dict) -> None:
    t, u = "trained", "untrained"
    lines = [
        f"**{cfg.family}** ({cfg.model.cell} cell, hidden {cfg.model.hidden}, "
        f"{cfg.compare_seeds} seeds). Held-out next-symbol accuracy {r['accuracy']:.3f} "
        f"(untrained {r['accuracy_untrained']:.3f}).",
        f"DSC, trained vs untrained (means): unique states {r['n_unique_states'][t]:.1f} vs "
        f"{r['n_unique_states'][u]:.1f} (paper 365 vs 41); vocabulary "
        f"{r['vocab_size'][t]:.1f} vs {r['vocab_size'][u]:.1f} (paper 383 vs 48); "
        f"count > 5: {r['vocab_size_count_gt5'][t]:.1f} vs {r['vocab_size_count_gt5'][u]:.1f}; "
        f"parse length {r['parse_length'][t]:.0f} vs {r['parse_length'][u]:.0f} (ground-truth "
        f"parse {r['ground_truth_parse_length']}); held-out decoding accuracy "
        f"{r['decoding_accuracy'][t]:.3f} vs {r['decoding_accuracy'][u]:.3f}.",
    ]
    unseen = r["decoding_unseen_fraction"][t]
    if unseen > 0.05:
        lines.append(f"{unseen:.0%} of held-out steps of the trained networks land in DSC states "
                     "never seen in fitting (they count as decoding errors): per-neuron k-means "
                     "turns many steps into new state strings (many neurons, or a long and varied "
                     "history), so the DSC dictionary stops being reusable — the regime where the "
                     "paper turns to population averaging.")
    pa = {k: v for k, v in r.get("pa", {}).items() if "auc" in v}
    if pa:
        lines.append("PA templates (state at the chunk's last symbol): " + "; ".join(
            f"{k}: TPR {v['tpr']:.2f}, FPR {v['fpr']:.3f}, AUC {v['auc']:.3f}"
            for k, v in pa.items()) + ".")
    if "perturbation_success" in r:
        lines.append(f"Perturbation: injecting the state decoded as a and feeding b gives the "
                     f"expected c in {r['perturbation_success']:.0%} of {len(r['perturbation'])} "
                     f"cases (control with the filler state: "
                     f"{r['perturbation_control_success']:.0%}).")
    g = r.get("grafting")
    if g:
        def reach(k):  # first step at which the mean curve reaches 0.9
            m = np.asarray(g["summary"][k]["mean"])
            hit = np.nonzero(m >= 0.9)[0]
            return g["step"][hit[0]] if hit.size else "never"

        fin = {k: v["mean"][-1] for k, v in g["summary"].items()}
        lines.append(
            f"Grafting (accuracy of the new transition, L after ABCD; first step with mean ≥ 0.9 "
            f"/ final at step {g['step'][-1]}): no grafting {reach('none')} / "
            f"{fin['none']:.2f}; grafted training evaluated with the graft "
            f"{reach('graft_eval_grafted')} / {fin['graft_eval_grafted']:.2f}; the same "
            f"networks evaluated without the graft {reach('graft')} / {fin['graft']:.2f} (the "
            "graft supplies the transition, so the weights never learn it themselves).")
    for key in [k for k in r if k.startswith("ablation") and isinstance(r[k], dict) and r[k]]:
        lines.extend(_ablation_text(r[key], cfg.model.cell))
        pa_key = "ablation_chunk_agreement_pa" + key[len("ablation"):]
        if pa_key in r:
            lines.append(f"PA–AMD agreement ({r[key]['rule']}): mean importance on the PA "
                         f"template's neurons minus the rest = {_num(r[pa_key])}.")
    ctx.text("\n\n".join(lines))
