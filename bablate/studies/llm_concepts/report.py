"""The report text of the LLM concepts study (report.md): tables and verdicts drawn from the
results dict, with the figures of `plots`."""

from __future__ import annotations

from typing import Any

from bablate import markdown as md
from bablate import plot as bbplot
from bablate.chain_plots import rank_caption

from . import ablation, plots
from .config import Config

ARMS = plots.ARMS
# SVI "agrees" with MCMC when every marginal is within this (the core's mean-field tolerance).
AGREE_MAX = 0.1


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


def unit_name(results: dict, kind: str, u: int) -> str:
    """A unit's name: ``L<layer>H<head>`` for heads, ``n<index>`` for neurons."""
    if kind != "heads":
        return f"n{u}"
    per = len(next(iter(results["head_importance"].values()))[0])
    return f"L{results['head_layers'][u // per]}H{u % per}"


def convergence_text(results: dict, names: list[str]) -> str:
    """Every SVI, MCMC and importance-sampling run with its diagnostics, and in words each one
    that did not converge (its marginals carry unknown error)."""
    rows = md.header(["site", "concept", "method", "converged", "diagnostics"])
    failed = []
    for kind in ("heads", "neurons"):
        for n in names:
            det = results["ablation_details"][kind][n]
            for m in ("svi", "mcmc", "importance"):
                diag = det.get(f"{m}_diagnostics")
                if diag is None:
                    continue
                if m == "importance":
                    what = (f"ESS {diag.get('ess', 0):.0f} of {_i(diag.get('num_samples'))} "
                            f"draws, largest marginal standard error "
                            f"{_f(diag.get('marginal_se_max'))}")
                elif m == "mcmc":
                    what = (f"R-hat max {_f(diag.get('r_hat_max'))}, ESS min "
                            f"{_f(diag.get('ess_min'))} of {_i(diag.get('num_draws'))} draws "
                            f"({_i(diag.get('num_chains'))} chains)")
                else:
                    what = (f"marginal drift {_f(diag.get('marginal_drift'))}, gradient "
                            f"z {_f(diag.get('gradient_z'))} ({_i(diag.get('num_steps'))} steps)")
                ok = diag["converged"]
                rows.append(md.row([kind, n, m.upper(), "yes" if ok else "**NO**", what]))
                if not ok:
                    failed.append(f"**{m.upper()} on the {kind} of {n} did not converge** ("
                                  + "; ".join(diag["warnings"]) + ")")
    verdict = ("Every run passed its convergence check." if not failed else
               " ".join(f"{f}." for f in failed) + " The marginals and metrics of a run that "
               "did not converge carry an error its diagnostics cannot bound; read them as "
               "indicative only.")
    return ("Convergence checks: MCMC passes when split R-hat ≤ 1.05 and the smallest bulk "
            "ESS ≥ 400 (Vehtari et al. 2021); SVI when its averaged marginals stopped moving "
            "and its mean gradient is within noise of 0; importance sampling when its "
            "effective sample size is ≥ 100 and every marginal's standard error ≤ 0.05.\n\n"
            + "\n".join(rows) + "\n\n" + verdict)


def _compared(results: dict, names: list[str], kind: str, key: str):
    """(concept, its details, the comparison under ``key``) for each concept that has one."""
    for n in names:
        det = results["ablation_details"][kind][n]
        if det.get(key) is not None:
            yield n, det, det[key]


def _top_table(results: dict, kind: str, cmp: dict, reference: str, cell) -> str:
    """The reference's top units beside SVI's marginals (``cell(unit, q)``: the reference's
    column)."""
    rows = md.header(["unit", reference, "SVI q"])
    for u, a, b in zip(cmp["top_units"], cmp["top_reference"], cmp["top_other"], strict=True):
        rows.append(md.row([unit_name(results, kind, u), cell(u, a), f"{b:.2f}"]))
    return "\n".join(rows)


def mcmc_check_text(results: dict, names: list[str], kind: str = "heads") -> str:
    """SVI against MCMC on the site: correlation, largest difference, top-k overlap, and the
    top units side by side."""
    out = []
    for n, det, cmp in _compared(results, names, kind, "mcmc_vs_svi"):
        diag = det["mcmc_diagnostics"]
        rows = _top_table(results, kind, cmp, "MCMC q", lambda u, a: f"{a:.2f}")
        agree = cmp["max_abs_diff"] <= AGREE_MAX
        conv = ("MCMC converged" if diag["converged"] else
                "MCMC did NOT converge, so this comparison is itself uncertain")
        out.append(
            f"**{n}** ({kind}, {det['num_prompts']} prompts; MCMC {_i(diag.get('num_draws'))} "
            f"draws in {det['mcmc_seconds']:.0f} s, SVI {det['svi_seconds']:.0f} s): "
            f"correlation {_f(cmp['corr'])}, largest |difference| {cmp['max_abs_diff']:.3f}, "
            f"{cmp['top_k_overlap']} of MCMC's top {cmp['top_k']} units in SVI's top "
            f"{cmp['top_k']}; {conv}. SVI and MCMC "
            + ("agree" if agree else "**disagree**")
            + f" (agreement: every marginal within {AGREE_MAX}"
            + ("" if agree else "; mean-field SVI cannot represent correlated units, which "
               "is one reason they may differ") + ").\n\nMCMC's top units:\n\n" + rows)
    return "\n\n".join(out)


def reference_check_text(results: dict, names: list[str], kind: str) -> str:
    """SVI against the importance-sampling reference on the site: agreement beyond the
    reference's noise, correlation, top-k overlap, and the reference's top units with their
    standard errors beside SVI's."""
    out = []
    for n, det, cmp in _compared(results, names, kind, "importance_vs_svi"):
        diag, se = det["importance_diagnostics"], det["importance_marginal_se"]
        rows = _top_table(results, kind, cmp, "reference q ± s.e.",
                          lambda u, a, se=se: f"{a:.2f} ± {se[u]:.2f}")
        verdict = {"agree": "SVI **agrees** with the reference",
                   "disagree": "SVI **disagrees** with the reference",
                   "unresolved": "SVI lies within the reference's noise, but the reference is "
                                 "**too coarse to show agreement** (raise reference_samples)"}[
            cmp["verdict"]]
        out.append(
            f"**{n}** ({kind}, {det['num_prompts']} prompts; {_i(diag.get('num_samples'))} "
            f"independent draws ({diag.get('proposal')}) in {det['importance_seconds']:.0f} s, "
            f"ESS {diag.get('ess', 0):.0f}, largest standard error "
            f"{cmp['reference_se_max']:.3f}"
            + ("" if diag["converged"] else ", **too few effective draws: the reference "
               "itself is uncertain**")
            + f"; SVI {det['svi_seconds']:.0f} s): {verdict} (agreement: every marginal "
            f"within {ablation.AGREE_MAX} + {ablation.NOISE_SE:g} of the reference's standard "
            "errors"
            + f", here at most {cmp['resolution']:.2f}, which must not exceed "
            f"{ablation.RESOLVED_MAX}"
            + ("" if cmp["verdict"] != "disagree" else "; the SVI importances of this site, in "
               "the figures above, are off by as much as the largest difference: more SVI steps "
               "or particles would bring them closer")
            + "). Largest "
            f"|difference| {cmp['max_abs_diff']:.3f} ({cmp['max_abs_diff_in_se']:.1f} standard "
            f"errors); {cmp['within_2se_fraction']:.0%} of units within 2 standard errors "
            f"(≈ 95% if SVI were exact); correlation {_f(cmp['corr'])} (low when the "
            f"marginals barely move from the prior: then it measures noise); "
            f"{cmp['top_k_overlap']} of the reference's top {cmp['top_k']} in SVI's top "
            f"{cmp['top_k']}.\n\nThe reference's top units:\n\n" + rows)
    return "\n\n".join(out)


def ablation_section(ctx: Any, results: dict, names: list[str],
                     mcmc_posts: dict | None = None) -> None:
    """The Bayesian-ablation part of the report: task information against its bound, head
    map, convergence of every run (in words where it failed), SVI against MCMC, trace and
    rank plots of the MCMC draws, concept overlap and neuron importance."""
    layers = results["head_layers"]
    span = (f"layer {layers[0]}" if len(layers) == 1 else
            f"layers {layers[0]}–{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1))
            else f"layers {layers}")
    rows = md.header(["concept", "prompts", "heads: task information / bound (bits)",
                      "neurons: task information / bound (bits)", "heads distributedness",
                      "neurons distributedness", "heads TC (bits)"])
    for n in names:
        dd = results["distributedness_by_concept"][n]
        tc = results["total_correlation_by_concept"][n]["heads"]
        ti = results["task_information"][n]
        rows.append(md.row([n, str(ti["heads"]["num_prompts"]),
                            *(f"{_f(ti[k]['bits'])} / {ti[k]['bound']:.2f}"
                              for k in ("heads", "neurons")),
                            _f(dd["heads"]), _f(dd["neurons"]), _f(tc)]))
    pm = results["polysemanticity_mean"]
    grid = results["head_importance"][names[0]]
    ctx.text(f"## Bayesian ablation\n\nSites: the {len(grid) * len(grid[0])} "
             f"attention heads of {span} ({results['concept_overlap']['heads_method']}) and the "
             f"MLP neurons of layer {results['neuron_layer']}. A task of n prompts can carry at "
             "most 2·log₂(n + 1) bits about the mask (the odds likelihood spans 1/(n+1) to "
             "n+1); the bound says how much room the prompts leave, the task information how "
             "much of it the network's units use.\n\n" + "\n".join(rows) +
             f"\n\nMean polysemanticity (effective concepts per unit): heads {_f(pm['heads'])}, "
             f"neurons {_f(pm['neurons'])}.")
    ctx.figure(plots.head_maps(results, names), "head_importance",
               f"Head importance q(m_i = 1) per concept "
               f"({results['concept_overlap']['heads_method']}): red = needed for the "
               "concept's completions, 0.5 = irrelevant, blue = harmful.")
    ctx.text("### Convergence\n\n" + convergence_text(results, names))
    for kind in ablation.KINDS:
        check = reference_check_text(results, names, kind)
        if check:
            ctx.text(f"### SVI checked against importance sampling ({kind})\n\n"
                     "Importance sampling draws masks independently (from the prior mixed half "
                     "and half with SVI's fit) and weights each by prior × odds of correctness "
                     "over its proposal probability: nothing has to mix, the estimate is "
                     "consistent whatever SVI got wrong, and the standard error of every "
                     "marginal comes from the run itself.\n\n" + check)
            ctx.figure(plots.reference_check(results, kind), f"{kind}_reference_check",
                       f"{kind.capitalize()}: mean-field SVI against the importance-sampling "
                       "reference, one point per unit with the reference's ±2 standard errors "
                       "(dashed: agreement).")
    check = mcmc_check_text(results, names, "heads")
    if check:
        ctx.text("### SVI checked against MCMC (heads)\n\n" + check)
        ctx.figure(plots.mcmc_check(results, "heads"), "heads_mcmc_check",
                   "Head importance from mean-field SVI against MCMC, one point per head "
                   "(dashed: agreement).")
    for posts in (mcmc_posts or {}).values():
        for post in posts:
            stem = post.task.replace("/", "_")
            ctx.figure(bbplot.trace(post), f"{stem}_mcmc_trace",
                       f"MCMC draws of {post.task}: the four units with the lowest ESS, per "
                       "chain (arviz trace plot).")
            ctx.figure(bbplot.rank(post), f"{stem}_mcmc_rank", rank_caption(post.task))
    overlap = results["concept_overlap"]
    kinds = {"joint": "joint JS of the whole mask distributions",
             "marginal": "mean over units of the JS between marginals"}
    ctx.figure(plots.overlap(results, names), "concept_overlap",
               "Concept × concept Jensen–Shannon divergence between AMDs (heads, "
               f"{overlap['heads_method']}: {kinds[overlap['heads_js']]}; neurons: "
               f"{kinds[overlap['neurons_js']]}).")
    ctx.figure(plots.neurons(results, names), "neuron_importance",
               f"Sorted MLP-neuron importance at layer {results['neuron_layer']} (SVI).")


def report(ctx: Any, c: Config, results: dict, mcmc_posts: dict | None = None) -> None:
    """Writes the study's figures and tables into the run report (``mcmc_posts``: the MCMC
    posteriors per site, for their trace and rank plots)."""
    names = results["concepts"]
    g = results["greedy_check"]
    ctx.text(f"## Reference check\n\nGreedy continuation of {g['prompt']!r}: "
             f"{g['continuation']!r} — expected prefix {g['expected']!r}: "
             f"**{'passed' if g['passed'] else 'FAILED'}**.")
    acc = ", ".join(f"{n} {results['intact_accuracy'][n]:.2f}" for n in names)
    where = "the last prompt position" if c.ablation.positions == "last" else "every position"
    ctx.text(f"## Concept prompts\n\nIntact top-1 accuracy per concept (all prompts): {acc}. "
             f"Ablation uses up to {c.ablation.max_prompts} correct training prompts per "
             f"concept; masks act at {where}"
             + ("." if c.ablation.matmuls == "float32" else
                ", scored with bf16 projections (float32 accumulation; "
                "`ablation_matmuls = \"float32\"` for the float32 model: "
                "benchmarks/llm_bf16.py measures the difference)."))
    ablation_section(ctx, results, names, mcmc_posts)
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


def _i(x) -> str:
    """A count stored as a number (results keep diagnostics as floats) as an integer."""
    return "n/a" if x is None or isinstance(x, str) else str(int(x))


def _f(x) -> str:
    return "n/a" if x is None or isinstance(x, str) else f"{x:.3f}"
