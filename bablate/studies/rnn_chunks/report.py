"""report.md text of the RNN-chunks study, written from results.json's values: DSC trained vs
untrained per training recipe and protocol with intervals over seeds, PA, perturbation,
grafting, the Bayesian ablation per rule with its agreement intervals, and what reproduced and
what did not."""

from __future__ import annotations

import numpy as np

from bablate import markdown as md
from bablate.studies.rnn_chunks.ablation import INFORMATIVE_BITS
from bablate.studies.rnn_chunks.config import StudyConfig
from bablate.studies.rnn_chunks.plots import REFERENCE, REFERENCE_FAMILY


def _num(x) -> str:
    """Two decimals; 'n/a' for a missing or non-finite value (e.g. no informative unit)."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def _finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))


def _interval(d: dict, fmt: str = "{:+.1f}") -> str:
    """'m [lo, hi]' of an interval dict ({"mean"|"rho", "lo", "hi"}); no bracket without one."""
    m = d["mean"] if "mean" in d else d["rho"]
    if not _finite(m):
        return "n/a"
    if not (_finite(d["lo"]) and _finite(d["hi"])):
        return fmt.format(m) + " (no interval)"
    return f"{fmt.format(m)} [{fmt.format(d['lo'])}, {fmt.format(d['hi'])}]"


def _verdict(d: dict) -> str:
    """Where a 95% interval lies against 0: "above", "below", "spans" or "none"."""
    if not (_finite(d["lo"]) and _finite(d["hi"])):
        return "none"
    return "above" if d["lo"] > 0 else "below" if d["hi"] < 0 else "spans"


RECIPE_TEXT = {
    "bablate": "ours: {steps} Adam steps, each on a batch of {batch} random {window}-token "
               "windows",
    "authors": "the authors': {authors_steps} Adam steps, each on one random "
               "{authors_window}-token window (their notebook's train_rnn call)",
}
PROTOCOL_TEXT = {
    "long": "long (ours: k-means, lookup and chunks on many windows, decoding tested on "
            "another sequence, cumulative vocabulary)",
    "authors": "authors' (one trajectory of the first {n} tokens; lookup fitted on its first "
               "{fit} steps and tested on the rest; vocabulary rebuilt from each round's parse)",
}


def _spread(d: dict, key: str) -> str:
    lo, hi = d["range"][key]
    return f"{d[key]:.1f} ({lo:.0f}–{hi:.0f})"


def dsc_table(cfg: StudyConfig, r: dict) -> list[str]:
    """DSC trained vs untrained: one row per training recipe and protocol (means, per-seed
    ranges, paired differences with 95% t-intervals over seeds), the paper's row beside the
    context family."""
    lines = md.header(["training", "DSC", "seeds", "unique states: trained", "untrained",
                       "trained − untrained [95% CI]", "vocabulary: trained", "untrained",
                       "trained − untrained [95% CI]", "decoding acc. trained",
                       "next-symbol acc. trained"])
    for recipe, by_p in r["dsc"].items():
        for protocol, d in by_p.items():
            t, u, diff = d["trained"], d["untrained"], d["trained_minus_untrained"]
            lines.append(md.row([recipe, protocol, len(t["per_seed"]["n_unique_states"]),
                                 _spread(t, "n_unique_states"), _spread(u, "n_unique_states"),
                                 _interval(diff["n_unique_states"]), _spread(t, "vocab_size"),
                                 _spread(u, "vocab_size"), _interval(diff["vocab_size"]),
                                 f"{t['decoding_accuracy']:.3f}", f"{t['accuracy']:.3f}"]))
    if cfg.family == REFERENCE_FAMILY:
        (sm, slo, shi), (um, ulo, uhi) = REFERENCE["n_unique_states"]
        (vm, vlo, vhi), (wm, wlo, whi) = REFERENCE["vocab_size"]
        lines.append(md.row(["paper (their code)", "authors", 10, f"{sm:.1f} ({slo}–{shi})",
                             f"{um:.1f} ({ulo}–{uhi})", "—", f"{vm:.1f} ({vlo}–{vhi})",
                             f"{wm:.1f} ({wlo}–{whi})", "—", "≈ 0.9–1.0", "≈ 0.9"]))
    t = cfg.train
    lines += ["", "Training recipes: " + "; ".join(
        f"{rc} = " + RECIPE_TEXT[rc].format(**{f: getattr(t, f) for f in (
            "steps", "batch", "window", "authors_steps", "authors_window")})
        for rc in r["dsc"]) + ". DSC protocols: " + "; ".join(
        f"{p} = " + PROTOCOL_TEXT[p].format(n=cfg.dsc.authors_length,
                                            fit=cfg.dsc.authors_fit_steps)
        for p in next(iter(r["dsc"].values()))) + ". The untrained network is each seed's own "
        "initialisation, the start of every recipe, so its row is the same under each recipe; "
        "ranges are over seeds, intervals are 95% t-intervals of the mean paired difference."]
    return lines


def _dsc_claims(cfg: StudyConfig, r: dict) -> tuple[list[str], list[str]]:
    """(reproduced, not reproduced) bullets of the paper's DSC claims."""
    good, bad = [], []
    for recipe, by_p in r["dsc"].items():
        for protocol, d in by_p.items():
            diff = d["trained_minus_untrained"]
            v = {k: _verdict(diff[k]) for k in diff}
            text = (f"trained − untrained ({recipe} training, {protocol} DSC, "
                    f"{diff['n_unique_states']['n']} seeds): unique states "
                    f"{_interval(diff['n_unique_states'])}, vocabulary "
                    f"{_interval(diff['vocab_size'])}")
            if all(x == "above" for x in v.values()):
                good.append(f"Trained networks have more DSC states and chunks than untrained: "
                            f"{text}.")
            elif any(x == "below" for x in v.values()):
                bad.append(f"Trained > untrained is reversed: {text}.")
            elif any(x == "none" for x in v.values()):
                bad.append(f"Trained > untrained is not tested (one seed, no interval): "
                           f"{text}.")
            else:
                bad.append(f"Trained > untrained is not resolved (an interval spans 0): "
                           f"{text}.")
    if cfg.family != REFERENCE_FAMILY:
        return good, bad
    (sm, slo, shi), (um, ulo, uhi) = REFERENCE["n_unique_states"]
    for i, (recipe, by_p) in enumerate(r["dsc"].items()):
        d = by_p.get("authors")
        if d is None:
            continue
        # The untrained network is every recipe's start: compared once.
        for name, paper, lo_hi in (("trained", sm, (slo, shi)),
                                   *((("untrained", um, (ulo, uhi)),) if i == 0 else ())):
            iv = d[name]["interval"]["n_unique_states"]
            where = {"spans": "inside", "above": "below", "below": "above",
                     "none": "(one seed: no interval)"}[
                _verdict({"lo": iv["lo"] - paper, "hi": iv["hi"] - paper})]
            whose = f"{recipe} training, " if name == "trained" else ""
            text = (f"{name.capitalize()} unique states ({whose}authors' DSC): "
                    f"mean {_interval(iv, '{:.1f}')} vs the paper's {paper:.1f} (its seeds "
                    f"{lo_hi[0]}–{lo_hi[1]}): the paper's mean lies {where} our 95% interval")
            (good if where == "inside" else bad).append(text + ".")
    return good, bad


def _other_claims(r: dict) -> tuple[list[str], list[str]]:
    """(reproduced, not reproduced) bullets of decoding, PA, perturbation and grafting."""
    good: list[str] = []
    bad: list[str] = []
    for recipe, by_p in r["dsc"].items():
        d = by_p.get("authors")
        if d is not None:
            acc = d["trained"]["decoding_accuracy"]
            text = (f"held-out decoding accuracy of trained states ({recipe} training, "
                    f"authors' DSC) {acc:.3f} (paper ≈ 0.9–1.0; "
                    f"{d['trained']['decoding_unseen_fraction']:.0%} of test steps in states "
                    "never seen in fitting)")
            (good if acc >= 0.9 else bad).append(text[0].upper() + text[1:] + ".")
    pa = {k: v for k, v in r.get("pa", {}).items() if "auc" in v}
    if pa:
        aucs = ", ".join(f"{k} {v['auc']:.3f}" for k, v in pa.items())
        if min(v["auc"] for v in pa.values()) >= 0.9:
            good.append(f"PA templates detect every chunk at AUC ≥ 0.9: {aucs}.")
        else:
            bad.append(f"PA templates detect some chunk at AUC < 0.9: {aucs}.")
    if "perturbation_success" in r:
        s, c = r["perturbation_success"], r["perturbation_control_success"]
        text = (f"Perturbation: the state decoded as a, then b, predicts c in {s:.0%} of "
                f"{len(r['perturbation'])} cases (filler-state control {c:.0%})")
        (good if s > c else bad).append(text + ".")
    g = r.get("grafting")
    if g:
        def reach(k):  # first step at which the mean curve reaches 0.9
            hit = np.nonzero(np.asarray(g["summary"][k]["mean"]) >= 0.9)[0]
            return g["step"][hit[0]] if hit.size else None

        grafted, plain = reach("graft_eval_grafted"), reach("none")
        text = (f"Grafting the 'J' state after 'C': L after ABCD reaches 0.9 at step "
                f"{'never' if grafted is None else grafted} with the graft, "
                f"{'never' if plain is None else plain} without")
        faster = grafted is not None and (plain is None or grafted < plain)
        (good if faster else bad).append(text + ".")
    return good, bad


def _ablation_detail(a: dict, cell: str) -> list[str]:
    """Report lines of one ablation result."""
    lines = []
    poly = a.get("polysemanticity_mean", 1.0)
    lines.append(
        f"Rule {a['rule']} ({a['method']}, {len(a['tasks'])} chunk tasks "
        f"{', '.join(a['tasks'])}): task information "
        + ", ".join(f"{x:.3f}" for x in a["task_information"]) + " bits; distributedness "
        + ", ".join(_num(x) for x in a["distributedness"])
        + "; total correlation " + ", ".join(_num(x) for x in a["total_correlation"])
        + f" bits; mean polysemanticity {_num(poly)} tasks per unit; top-quarter overlap "
        f"with DSC {np.mean(a['top_quarter_overlap']):.2f}.")
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
            f"Under {a['rule']} the AMD is nearly flat (task information at most {info:.3f} "
            "bits): no set of hidden units is needed to get these predictions right. "
            + ("In the paper's architecture the readout also sees the one-hot input: a "
               "continuation that the current symbol determines stays the top-1 prediction with "
               "the hidden state removed, and one that it does not determine is mostly missed "
               "with or without the hidden units"
               if cell == "linear" else
               "The wide network's units are redundant: masks that keep about half of them "
               "still predict correctly")
            + "; its importances rank units by noise, so its metrics and agreements say "
            "nothing about the network.")
    if "mcmc_vs_exact_max_abs_diff" in a:
        lines.append(f"MCMC vs exact marginals on the first task: max |Δ| = "
                     f"{a['mcmc_vs_exact_max_abs_diff']:.3f}.")
    return lines


AGREES = {"above": "agree with", "below": "run against", "spans": "show no agreement with",
          "none": "cannot be compared with"}


def ablation_text(cfg: StudyConfig, r: dict) -> list[str]:
    """The ablation section: a table of every rule, the headline rule and why, the agreement
    of its importances with the DSC chunks and the PA templates, each rule's details."""
    abls = [r[k] for k in r if k.startswith("ablation") and isinstance(r[k], dict) and r[k]]
    if not abls:
        return []
    head = r.get("ablation_headline_rule")
    lines = ["## Bayesian ablation", "",
             *md.header(["rule", "method", "max task information (bits)", "informative",
                         "ρ(importance, DSC information) [95% CI]",
                         "ρ(importance, PA template) [95% CI]"])]
    for a in abls:
        g = a["agreement"]
        lines.append(md.row([a["rule"] + (" (headline)" if a["rule"] == head else ""),
                             a["method"], f"{max(a['task_information']):.3f}",
                             "yes" if max(a["task_information"]) >= INFORMATIVE_BITS else "no",
                             _interval(g["dsc"], "{:+.2f}"), _interval(g["pa"], "{:+.2f}")]))
    a = next(x for x in abls if x["rule"] == head)
    g = a["agreement"]
    informative = max(a["task_information"]) >= INFORMATIVE_BITS
    lines += ["", (f"The headline keys (unit_importance, distributedness_mean, "
                   f"ablation_chunk_agreement, …) are rule {head}'s: "
                   + ("the first rule, in config order, whose AMD carries at least "
                      f"{INFORMATIVE_BITS} bits on some chunk task." if informative else
                      "no rule's AMD reaches "
                      f"{INFORMATIVE_BITS} bits on any chunk task; this one carries the most.")
                   + " ρ: Spearman rank correlation over the hidden units between the AMD "
                   "importance q(m_i = 1) and (DSC) the mutual information of unit i's DSC "
                   "cluster id with the chunk's task steps, (PA) membership of unit i in the "
                   "chunk's PA template; averaged over chunks; 95% percentile bootstrap over "
                   f"units ({g['dsc']['resamples']} resamples). Our reconstruction: the paper "
                   "makes no ablation claim."),
              "", f"Under {head}, the importances {AGREES[_verdict(g['dsc'])]} the DSC chunks "
                  f"(ρ = {_interval(g['dsc'], '{:+.2f}')}) and {AGREES[_verdict(g['pa'])]} the "
                  f"PA templates (ρ = {_interval(g['pa'], '{:+.2f}')}, chunks "
                  f"{', '.join(g['pa']['chunks']) or 'none'}). Ablation reads the "
                  f"{r['dsc_primary_recipe']} recipe's first network.", ""]
    for x in abls:
        lines += [" ".join(_ablation_detail(x, cfg.model.cell)), ""]
    return lines


def report_text(ctx, cfg: StudyConfig, r: dict) -> None:
    """Writes report.md's text from the results."""
    t = "trained"
    lines = [
        f"**{cfg.family}** ({cfg.model.cell} cell, hidden {cfg.model.hidden}, "
        f"{cfg.compare_seeds} seeds). Held-out next-symbol accuracy {r['accuracy']:.3f} "
        f"({r['dsc_primary_recipe']} recipe; untrained {r['accuracy_untrained']:.3f}); "
        f"ground-truth parse of the fitting sequence {r['ground_truth_parse_length']} tokens.",
        "", "## DSC: trained vs untrained", "", *dsc_table(cfg, r), ""]
    unseen = r["decoding_unseen_fraction"][t]
    if unseen > 0.05:
        lines += [f"{unseen:.0%} of held-out steps of the trained networks land in DSC states "
                  "never seen in fitting (they count as decoding errors): per-neuron k-means "
                  "turns many steps into new state strings (many neurons, or a long and varied "
                  "history), so the DSC dictionary stops being reusable — the regime where the "
                  "paper turns to population averaging.", ""]
    pa = {k: v for k, v in r.get("pa", {}).items() if "auc" in v}
    if pa:
        lines += ["PA templates (state at the chunk's last symbol): " + "; ".join(
            f"{k}: TPR {v['tpr']:.2f}, FPR {v['fpr']:.3f}, AUC {v['auc']:.3f}"
            for k, v in pa.items()) + ".", ""]
    g = r.get("grafting")
    if g:
        fin = {k: v["mean"][-1] for k, v in g["summary"].items()}
        lines += [f"Grafting (accuracy of the new transition, L after ABCD, final at step "
                  f"{g['step'][-1]}): no grafting {fin['none']:.2f}; grafted training evaluated "
                  f"with the graft {fin['graft_eval_grafted']:.2f}; the same networks evaluated "
                  f"without the graft {fin['graft']:.2f} (the graft supplies the transition, so "
                  "the weights never learn it themselves).", ""]
    lines += ablation_text(cfg, r)
    good, bad = _dsc_claims(cfg, r)
    more_good, more_bad = _other_claims(r)
    lines += ["## What reproduced", "", *(f"- {x}" for x in good + more_good or ["nothing"]),
              "", "## What did not", "", *(f"- {x}" for x in bad + more_bad or ["nothing"])]
    if cfg.family != REFERENCE_FAMILY:
        lines += ["", "Not compared here: the paper's magnitudes (365 vs 41 unique states, 383 "
                  "vs 48 vocabulary) come from its context-dependent family; run the `context` "
                  "variant."]
    ctx.text("\n".join(lines))
