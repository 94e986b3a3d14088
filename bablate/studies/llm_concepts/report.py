"""The report text of the LLM concepts study (report.md): tables and verdicts drawn from the
results dict, with the figures of `plots`."""

from __future__ import annotations

from typing import Any

from bablate import markdown as md
from bablate import plot as bbplot
from bablate.chain_plots import rank_caption

from . import ablation, findings, plots
from .config import Config


def unit_name(results: dict, kind: str, u: int) -> str:
    """A unit's name: ``L<layer>H<head>`` for heads, ``n<index>`` for neurons."""
    if kind != "heads":
        return f"n{u}"
    per = len(next(iter(results["head_importance"].values()))[0])
    return f"L{results['head_layers'][u // per]}H{u % per}"


def estimate_cell(e: dict) -> str:
    """A certified estimate's verdict and numbers, in one table cell."""
    if e["method"] == "exact":
        return f"exact ({_i(e.get('forward_passes'))} masks)"
    ok = "converged" if e["converged"] else "**NOT converged**"
    return (f"{ok}: s.e. ≤ {_f(e.get('max_se'))} (target {_f(e.get('target_se'))}), ESS "
            f"{_i(e.get('ess'))}, log Z {_f(e.get('log_z'))} ± {_f(e.get('log_z_se'))}, "
            f"unseen mass ≤ {_f(e.get('unseen_mass_bound'))}")


def convergence_text(results: dict, names: list[str]) -> str:
    """Every certified estimate with its verdict, forward passes and wall time, then every
    cross-check run, and in words each one that did not converge."""
    rows = md.header(["site", "concept", "certified estimate", "forward passes", "seconds"])
    failed = []
    for kind in ("heads", "neurons"):
        for n in names:
            e = results["estimates"][kind][n]
            rows.append(md.row([kind, n, estimate_cell(e), _i(e.get("forward_passes")),
                                f"{e['seconds']:.0f}"]))
            if not e["converged"]:
                failed.append(f"**The {kind} of {n} did not converge** ("
                              + "; ".join(e["warnings"]) + ")")
    checks = md.header(["site", "concept", "check", "converged", "diagnostics"])
    any_check = False
    for kind in ("heads", "neurons"):
        for n in names:
            det = results["ablation_details"][kind][n]
            for m in ("svi", "mcmc"):
                diag = det.get(f"{m}_diagnostics")
                if diag is None:
                    continue
                any_check = True
                if m == "mcmc":
                    what = (f"R-hat max {_f(diag.get('r_hat_max'))}, ESS min "
                            f"{_f(diag.get('ess_min'))} of {_i(diag.get('num_draws'))} draws "
                            f"({_i(diag.get('num_chains'))} chains)")
                else:
                    what = (f"marginal drift {_f(diag.get('marginal_drift'))}, gradient "
                            f"z {_f(diag.get('gradient_z'))} ({_i(diag.get('num_steps'))} steps)")
                what += f", {_i(diag.get('forward_passes'))} forward passes"
                checks.append(md.row([kind, n, m.upper(), "yes" if diag["converged"] else "no",
                                      what]))
    verdict = ("Every certified estimate converged." if not failed else
               " ".join(f"{f}." for f in failed) + " Their numbers stay out of the headline "
               "table; the figures mark them.")
    return ("Each site's AMD is estimated once, with a verdict: exact enumeration where the "
            "site is small, else adaptive importance sampling (`bb.infer(task, "
            "\"importance\")`: independent masks from a proposal refitted over rounds, mixed "
            "with the prior, so every weight is bounded and the standard errors come from the "
            "run itself) until every marginal's standard error is at most the target. A "
            "forward pass is one mask evaluated over the concept's prompts. The unseen-mass "
            "bound is the most AMD mass (95% confidence) a region no draw reached could hold.\n\n"
            + "\n".join(rows) + "\n\n" + verdict
            + ("" if not any_check else "\n\nCross-checks (their own diagnostics):\n\n"
               + "\n".join(checks)))


def _compared(results: dict, names: list[str], kind: str, key: str):
    """(concept, its details, the comparison under ``key``) for each concept that has one."""
    for n in names:
        det = results["ablation_details"][kind][n]
        if det.get(key) is not None:
            yield n, det, det[key]


def check_text(results: dict, names: list[str], kind: str, method: str) -> str:
    """A cross-check (SVI or MCMC) against the certified estimate on the site: agreement beyond
    the estimate's noise, correlation, top-k overlap, and the estimate's top units with their
    standard errors beside the check's."""
    label = method.upper()
    out = []
    for n, det, cmp in _compared(results, names, kind, f"{method}_vs_estimate"):
        e = results["estimates"][kind][n]
        se = results[f"{'head' if kind == 'heads' else 'neuron'}_importance_se"][n]
        se = [x for row in se for x in row] if kind == "heads" else se
        rows = md.header(["unit", "certified q ± s.e.", f"{label} q"])
        for u, a, b in zip(cmp["top_units"], cmp["top_reference"], cmp["top_other"],
                           strict=True):
            rows.append(md.row([unit_name(results, kind, u), f"{a:.2f} ± {se[u]:.2f}",
                                f"{b:.2f}"]))
        verdict = {"agree": f"{label} **agrees** with the certified estimate",
                   "disagree": f"{label} **disagrees** with the certified estimate",
                   "unresolved": f"{label} lies within the estimate's noise, but the estimate "
                                 "is **too coarse to show agreement**"}[cmp["verdict"]]
        own = det[f"{method}_diagnostics"]
        conv = "" if own["converged"] else (
            f"; {label} did not pass its own convergence check: {own['warnings'][0]}")
        out.append(
            f"**{n}** ({kind}, {det['num_prompts']} prompts; {label} "
            f"{det[f'{method}_seconds']:.0f} s{conv}; estimate: {estimate_cell(e)}): {verdict}"
            f" (agreement: every marginal within {ablation.AGREE_MAX} + {ablation.NOISE_SE:g} "
            f"of the estimate's standard errors, here at most {cmp['resolution']:.2f}, which "
            f"must not exceed {ablation.RESOLVED_MAX}). Largest |difference| "
            f"{cmp['max_abs_diff']:.3f} ({cmp['max_abs_diff_in_se']:.1f} standard errors); "
            f"{cmp['within_2se_fraction']:.0%} of units within 2 standard errors (≈ 95% if "
            f"{label} were exact); correlation {_f(cmp['corr'])} (low when the marginals "
            f"barely move from the prior: then it measures noise); {cmp['top_k_overlap']} of "
            f"the estimate's top {cmp['top_k']} in {label}'s top {cmp['top_k']}.\n\n"
            "The certified estimate's top units:\n\n" + "\n".join(rows))
    return "\n\n".join(out)


def _headline(results: dict, n: str, kind: str, value: str) -> str:
    """A headline cell: ``value`` where the site's estimate converged, else a mark."""
    return value if results["estimates"][kind][n]["converged"] else "not converged"


def ablation_section(ctx: Any, results: dict, names: list[str],
                     mcmc_posts: dict | None = None) -> None:
    """The Bayesian-ablation part of the report: task information ± its error against its
    bound (converged estimates only), the head map, every estimate's verdict and cost, the
    cross-checks, trace and rank plots of MCMC draws, concept overlap and neuron importance."""
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
        cells = [_headline(results, n, k, f"{_f(ti[k]['bits'])} ± {_f(ti[k]['error'])} / "
                                          f"{ti[k]['bound']:.2f}") for k in ("heads", "neurons")]
        rows.append(md.row([n, str(ti["heads"]["num_prompts"]), *cells,
                            _headline(results, n, "heads", _f(dd["heads"])),
                            _headline(results, n, "neurons", _f(dd["neurons"])), _f(tc)]))
    pm = results["polysemanticity_mean"]
    of = results["concept_overlap"]["concepts"]
    grid = results["head_importance"][names[0]]
    ctx.text(f"## Bayesian ablation\n\nSites: the {len(grid) * len(grid[0])} "
             f"attention heads of {span} and the MLP neurons of layer "
             f"{results['neuron_layer']}. A task of n prompts can carry at most 2·log₂(n + 1) "
             "bits about the mask (the odds likelihood spans 1/(n+1) to n+1); the bound says "
             "how much room the prompts leave, the task information (± its standard error) "
             "how much of it the network's units use. Only estimates that converged are "
             "shown; TC needs an exact table (n/a otherwise).\n\n" + "\n".join(rows) +
             "\n\nMean polysemanticity (effective concepts per unit, over the concepts whose "
             f"estimates converged): heads {_f(pm['heads'])} ({', '.join(of['heads']) or '–'}), "
             f"neurons {_f(pm['neurons'])} ({', '.join(of['neurons']) or '–'}).")
    ctx.figure(plots.head_maps(results, names), "head_importance",
               "Head importance q(m_i = 1) per concept, each panel titled with its estimate's "
               "verdict (hatched: not converged): red = needed for the concept's completions, "
               "0.5 = irrelevant, blue = harmful.")
    ctx.text("### Convergence and cost\n\n" + convergence_text(results, names))
    for kind in ablation.KINDS:
        for method, what in (("svi", "Mean-field SVI"), ("mcmc", "MCMC")):
            text = check_text(results, names, kind, method)
            if text:
                ctx.text(f"### {what} checked against the certified estimate ({kind})\n\n"
                         + text)
                ctx.figure(plots.check(results, kind, method), f"{kind}_{method}_check",
                           f"{kind.capitalize()}: {what} against the certified estimate, one "
                           "point per unit with the estimate's ±2 standard errors (dashed: "
                           "agreement).")
    for posts in (mcmc_posts or {}).values():
        for post in posts:
            stem = post.task.replace("/", "_")
            ctx.figure(bbplot.trace(post), f"{stem}_mcmc_trace",
                       f"MCMC draws of {post.task}: the four units with the lowest ESS, per "
                       "chain (arviz trace plot).")
            ctx.figure(bbplot.rank(post), f"{stem}_mcmc_rank", rank_caption(post.task))
    overlap = results["concept_overlap"]
    kinds = {"joint": "joint JS of the whole mask distributions",
             "marginal": "mean over units of the JS between marginals", None: "none"}
    ctx.figure(plots.overlap(results), "concept_overlap",
               "Concept × concept Jensen–Shannon divergence between AMDs over the concepts "
               f"whose estimates converged (heads: {kinds[overlap['heads_js']]}; neurons: "
               f"{kinds[overlap['neurons_js']]}).")
    ctx.figure(plots.neurons(results, names), "neuron_importance",
               f"Sorted MLP-neuron importance at layer {results['neuron_layer']} with ±2 "
               "standard errors (dashed: not converged).")


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
    ctx.text("## What reproduced and what did not (PA and interventions)\n\n"
             + findings.reproduction_text(results, names))
    ablation_section(ctx, results, names, mcmc_posts)
    ctx.text("## Population averaging\n\n" + findings.pa_text(results, names))
    if results.get("pa_prose"):
        ctx.text("### PA as the authors build it (natural prose)\n\n"
                 + findings.prose_text(results, names))
    ctx.figure(plots.pa_auc(results, names), "pa_auc",
               "PA template detection AUC per layer on held-out prompts with its 95% bootstrap "
               "band (solid), and the token-identity detector's AUC on the same tokens "
               "(dashed).")
    ctx.text("## Activation and inhibition\n\n"
             + findings.interventions_text(c, results, names))
    ctx.figure(plots.rates(results, names), "interventions",
               "Rate of continuations naming the concept per arm and prompt format (95% Wilson "
               "intervals): neutral questions as they are, with the template grafted, with the "
               "word typed; concept prompts as they are and with the template's neurons "
               "zeroed.")
    u_rows = ["| layer | concept | recall | precision | chance | cos(chunk, template) |",
              "|---|---|---|---|---|---|"]
    for layer, v in results["ucd"].items():
        for n, a in v["concepts"].items():
            u_rows.append(f"| {layer} | {n} | {a['recall']:.2f} | {a['precision']:.2f} | "
                          f"{a['chance_precision']:.3f} | {a['template_cosine']:.2f} |")
    ctx.text("## Unsupervised chunk discovery\n\n" + "\n".join(u_rows))


def _i(x) -> str:
    """A count stored as a number (results keep diagnostics as floats) as an integer."""
    return "n/a" if x is None or isinstance(x, str) else str(int(x))


def _f(x) -> str:
    return "n/a" if x is None or isinstance(x, str) else f"{x:.3f}"
