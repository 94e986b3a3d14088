"""Figures and report text of the RNN-chunks study (bablate.studies.rnn_chunks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bablate import chunks  # noqa: E402

# The paper's trained-vs-untrained DSC numbers come from the authors' context-dependent
# notebook (RNN_3_context_dependent_chunks.ipynb; its saved
# experiment_data/comparison_on_educated_vs_uneducated_network.json): 10 seeds, one 2,000-step
# trajectory each. Per key: (trained, untrained), each (mean, min, max) over the 10 seeds. They
# are context-family numbers and are shown for that family only.
REFERENCE_FAMILY = "context"
REFERENCE = {"n_unique_states": ((364.5, 13, 1005), (41.0, 26, 87)),
             "vocab_size": ((383.3, 16, 1020), (48.0, 29, 109))}


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


def dsc_comparison(ctx, rows_by: dict, family: str) -> None:
    """Box plots of DSC numbers, trained vs untrained, one row per protocol."""
    keys = ["n_unique_states", "vocab_size", "vocab_size_count_gt5", "parse_length",
            "decoding_accuracy"]
    protocols = list(rows_by)
    fig, axes = plt.subplots(len(protocols), len(keys), figsize=(3 * len(keys),
                                                                 3 * len(protocols)),
                             squeeze=False)
    show_ref = family == REFERENCE_FAMILY
    for row, protocol in zip(axes, protocols, strict=True):
        rows = rows_by[protocol]
        for ax, k in zip(row, keys, strict=True):
            vals = [[r[k] for r in rows[n]] for n in ("trained", "untrained")]
            ax.boxplot(vals, tick_labels=["trained", "untrained"])
            for j, v in enumerate(vals):
                ax.scatter(np.full(len(v), j + 1.0), v, s=10, color="k", alpha=0.6)
            if show_ref and protocol == "authors" and k in REFERENCE:
                for j, (mean, lo, hi) in enumerate(REFERENCE[k]):
                    ax.errorbar([j + 1.25], [mean], yerr=[[mean - lo], [hi - mean]], fmt="*",
                                color="C3", ms=8, label="paper" if j == 0 else None)
                ax.legend(fontsize=7)
            ax.set_title(f"{k.replace('_', ' ')} ({protocol})", fontsize=9)
    fig.tight_layout()
    ctx.figure(fig, "dsc_trained_vs_untrained", "DSC on trained vs untrained networks over "
               "seeds, one row per protocol (long: many windows, held-out sequence, cumulative "
               "vocabulary; authors: one 2,000-step trajectory, lookup fitted on its first 100 "
               "steps, vocabulary rebuilt from each parse): unique states, chunk vocabulary, "
               "vocabulary with count > 5, parse length and decoding accuracy"
               + (" (red: the paper's 10-seed mean and range, context family, authors' "
                  "protocol)." if show_ref else "."))


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
        how = sorted(set(a.get("entropy_estimate", [])))
        lines.append(
            f"Total correlation here is estimated from {n} MCMC draws ({', '.join(how)}): the "
            "normaliser ratio reweights draws by their known densities where chains revisit "
            "masks; the Chow–Liu value is a lower bound where they rarely do.")
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


PROTOCOL_TEXT = {
    "long": "long protocol (ours: k-means, lookup and chunks on many windows, decoding tested "
            "on another sequence, cumulative vocabulary)",
    "authors": "authors' protocol (one trajectory of the first {n} tokens; lookup fitted on "
               "its first {fit} steps and tested on the rest; vocabulary rebuilt from each "
               "round's parse)",
}


def _range(vals) -> str:
    return f"{min(vals):.0f}–{max(vals):.0f}"


def dsc_text(cfg, r: dict) -> list[str]:
    """One paragraph per DSC protocol, with the paper's numbers beside the authors' protocol
    on the context family (the only family they come from)."""
    t, u = "trained", "untrained"
    lines = []
    for protocol, d in r["dsc"].items():
        dt, du = d[t], d[u]
        what = PROTOCOL_TEXT[protocol].format(n=cfg.dsc_authors_length,
                                              fit=cfg.dsc_authors_fit_steps)
        line = (f"DSC, {what}, trained vs untrained (means over "
                f"{len(dt['per_seed']['n_unique_states'])} seeds, untrained = each network's "
                f"own initialisation): unique states {dt['n_unique_states']:.1f} vs "
                f"{du['n_unique_states']:.1f} (seeds {_range(dt['per_seed']['n_unique_states'])}"
                f" vs {_range(du['per_seed']['n_unique_states'])}); vocabulary "
                f"{dt['vocab_size']:.1f} vs {du['vocab_size']:.1f}; count > 5: "
                f"{dt['vocab_size_count_gt5']:.1f} vs {du['vocab_size_count_gt5']:.1f}; parse "
                f"length {dt['parse_length']:.0f} vs {du['parse_length']:.0f}; decoding "
                f"accuracy {dt['decoding_accuracy']:.3f} vs {du['decoding_accuracy']:.3f}.")
        if cfg.family == REFERENCE_FAMILY and protocol == "authors":
            (sm, slo, shi), (um, ulo, uhi) = REFERENCE["n_unique_states"]
            (vm, vlo, vhi), (wm, wlo, whi) = REFERENCE["vocab_size"]
            in_range = (slo <= dt["n_unique_states"] <= shi
                        and ulo <= du["n_unique_states"] <= uhi)
            line += (f" Paper (authors' notebook, 10 seeds): unique states {sm:.1f} vs {um:.1f}"
                     f" (seeds {slo}–{shi} vs {ulo}–{uhi}), vocabulary {vm:.1f} vs {wm:.1f} "
                     f"(seeds {vlo}–{vhi} vs {wlo}–{whi}). Trained > untrained on both: "
                     + ("reproduced" if dt["n_unique_states"] > du["n_unique_states"]
                        and dt["vocab_size"] > du["vocab_size"] else "NOT reproduced")
                     + "; our means lie "
                     + ("inside" if in_range else "outside")
                     + " the paper's per-seed ranges. Their networks were trained by their own "
                     "(unpublished) training function, whose seeds spread far wider; ours by "
                     "this study's.")
        lines.append(line)
    if cfg.family != REFERENCE_FAMILY:
        lines.append("The paper's trained-vs-untrained DSC numbers (365 vs 41 unique states, "
                     "383 vs 48 vocabulary) come from its context-dependent family; run the "
                     "`context` variant to compare with them.")
    return lines


def report_text(ctx, cfg, r: dict) -> None:
    t = "trained"
    lines = [
        f"**{cfg.family}** ({cfg.model.cell} cell, hidden {cfg.model.hidden}, "
        f"{cfg.compare_seeds} seeds). Held-out next-symbol accuracy {r['accuracy']:.3f} "
        f"(untrained {r['accuracy_untrained']:.3f}); ground-truth parse of the fitting "
        f"sequence {r['ground_truth_parse_length']} tokens.",
        *dsc_text(cfg, r),
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
