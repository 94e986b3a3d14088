"""report.md text of the RNN-chunks study, written from results.json's values."""

from __future__ import annotations

import numpy as np

from bablate.studies.rnn_chunks.ablation import INFORMATIVE_BITS
from bablate.studies.rnn_chunks.config import StudyConfig
from bablate.studies.rnn_chunks.plots import REFERENCE, REFERENCE_FAMILY


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
    if info < INFORMATIVE_BITS:
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


def dsc_text(cfg: StudyConfig, r: dict) -> list[str]:
    """One paragraph per DSC protocol, with the paper's numbers beside the authors' protocol
    on the context family (the only family they come from)."""
    t, u = "trained", "untrained"
    lines = []
    for protocol, d in r["dsc"].items():
        dt, du = d[t], d[u]
        what = PROTOCOL_TEXT[protocol].format(n=cfg.dsc.authors_length,
                                              fit=cfg.dsc.authors_fit_steps)
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


def report_text(ctx, cfg: StudyConfig, r: dict) -> None:
    """Writes report.md's text from the results."""
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
