"""The report.md text of the basis-comparison study: the table, verdicts and the LLM layer's
reading, from the results and rows it is given."""

from __future__ import annotations

import math

import numpy as np

from bablate import markdown as md

from .config import StudyConfig
from .reading import INFORMATIVE_BITS
from .summary import COLUMNS


def paired(row: dict, ref: dict, min_bits: float = INFORMATIVE_BITS) -> dict:
    """Locality of ``row``'s basis and of ``ref``'s on the tasks informative in both.

    Per-basis means run over the tasks that carry ≥ ``min_bits`` in that basis, which can be
    different sets; a comparison between two bases uses the tasks they share.
    """
    a, b = row["per_task"], ref["per_task"]
    common = ((np.asarray(a["task_information"]) >= min_bits)
              & (np.asarray(b["task_information"]) >= min_bits))
    out: dict[str, float] = {"num_tasks": int(common.sum())}
    for name, m in (("x", a), ("ref", b)):
        info = np.asarray(m["unit_information"], np.float64)[common]
        srt = np.sort(info, axis=1)[:, ::-1]
        total = np.maximum(srt.sum(1), 1e-30)
        mean = (lambda v: float(np.mean(v)) if v.size else float("nan"))
        out[f"eu_{name}"] = mean(np.asarray(m["effective_units"], np.float64)[common])
        out[f"top1_{name}"] = mean(srt[:, 0] / total) if srt.size else float("nan")
        out[f"top16_{name}"] = (mean(srt[:, :16].sum(1) / total)
                                if srt.shape[-1] > 16 else float("nan"))
    return out


def _fmt(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table, one column per entry of ``COLUMNS``."""
    lines = md.header(["network", "basis", *(h for _, h, _ in COLUMNS)])
    for r in rows:
        lines.append(md.row([r["network"], r["basis"], *(_fmt(r[c], f) for c, _, f in COLUMNS)]))
    return "\n".join(lines)


def _verdicts(rows: list[dict]) -> list[str]:
    """Per network and basis: are tasks more local and units less polysemantic than in neurons?"""
    out = []
    for net in dict.fromkeys(r["network_key"] for r in rows):
        rs = {r["basis"]: r for r in rows if r["network_key"] == net}
        label = next(iter(rs.values()))["network"]
        if "neuron" not in rs:
            continue
        neuron = rs["neuron"]
        parts = []
        for basis, r in rs.items():
            if basis == "neuron":
                continue
            pair = paired(r, neuron)
            eu, eu0 = pair["eu_x"], pair["eu_ref"]
            pm, pm0 = r["polysemanticity_mean"], neuron["polysemanticity_mean"]
            t1, t10 = pair["top1_x"], pair["top1_ref"]
            local = _cmp(eu, eu0, "more local", "less local", "about as local")
            poly = _cmp(pm, pm0, "less polysemantic", "more polysemantic",
                        "about as polysemantic")
            text = (f"**{basis}**: tasks {local} (over the {pair['num_tasks']} task(s) "
                    "informative in both bases: effective units per task "
                    f"{_fmt(eu, '{:.2f}')} vs {_fmt(eu0, '{:.2f}')} for neurons; top-1 unit "
                    f"carries {_fmt(t1, '{:.2f}')} vs {_fmt(t10, '{:.2f}')} of the task "
                    "information")
            t16, t160 = pair["top16_x"], pair["top16_ref"]
            if _finite(t16) and _finite(t160):
                text += f", the top 16 {_fmt(t16, '{:.2f}')} vs {_fmt(t160, '{:.2f}')}"
            text += (f"), units {poly} (effective tasks per unit {_fmt(pm, '{:.2f}')} vs "
                     f"{_fmt(pm0, '{:.2f}')}")
            pw, pw0 = r.get("polysemanticity_weighted"), neuron.get("polysemanticity_weighted")
            if _finite(pw) and _finite(pw0) and r["num_units"] > 64:
                # On large sites most units carry next to nothing; the information-weighted
                # mean is the one that reflects the units the tasks use.
                wpoly = _cmp(pw, pw0, "less", "more", "about as")
                text += (f"; weighted by unit information {_fmt(pw, '{:.2f}')} vs "
                         f"{_fmt(pw0, '{:.2f}')}: {wpoly} polysemantic")
            parts.append(text + ")")
        note = ""
        if not neuron["informative_tasks"]:
            note = (" No task carries ≥ 0.1 bit in the neuron basis (single neurons are not "
                    "needed for these tasks), so the neuron columns are undefined.")
        out.append(f"- *{label}* — " + "; ".join(parts) + "." + note)
    return out


def _finite(x) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def _cmp(x, ref, lower: str, higher: str, same: str, rtol: float = 0.05) -> str:
    if x is None or ref is None or not (math.isfinite(x) and math.isfinite(ref)):
        return "not comparable (undefined)"
    if abs(x - ref) <= rtol * max(abs(ref), 1e-9):
        return same
    return lower if x < ref else higher


def report_text(cfg: StudyConfig, results: dict, rows: list[dict]) -> str:
    """report.md (``rows``: :func:`summary.table_rows` of ``results``)."""
    parts = ["## Neurons vs a learned dictionary vs a random rotation",
             "Each task's ablation mask distribution is inferred in every basis of the same site "
             "(exact enumeration up to "
             f"{cfg.inference.max_exact} units, MCMC beyond; mean-field SVI for the LLM layer). "
             "*Effective units* = exp(H(w)) of "
             "the unit-information weights (absolute locality; *distributedness* divides it by "
             "the basis size, so bases of different sizes are best compared on effective units). "
             "*Tasks per unit* = effective number of tasks a unit serves (polysemanticity), "
             "mean over units serving any task (≥ 0.001 bit in total); *info-weighted*: the "
             "same, weighted by each unit's total information, so that units carrying next to "
             "nothing count for next to nothing. *Info in top-k* = share of Σ_i I_i in the k "
             "most informative units; *P(c) top-1 kept* = P(correct) when only the most "
             "important unit is kept and all others are zero-ablated; *P(c) all ablated* = "
             "every unit of the basis zero-ablated. Dictionary codes are "
             "ablated with the reconstruction error kept intact.",
             markdown_table(rows) if rows else "(no network was read)",
             "### Verdicts", *_verdicts(rows)]
    for inst in results.get("toy", {}).get("instances", []):
        rec = ", ".join(f"{n}: mean {inst['recovery_mean'][n]:.3f}, min "
                        f"{inst['recovery_min'][n]:.3f}" for n in inst["recovery"])
        parts.append(f"Ground truth (toy, 1−S = {inst['density']:.3g}): max cosine of the "
                     f"{len(inst['true_directions'])} represented feature directions "
                     f"ReLU(±W1_i) to the dictionary — {rec}.")
    llm = results.get("llm")
    if llm and "bases" in llm:
        parts.append(llm_text(llm))
    for key in ("rnn", "llm"):
        network = results.get(key)
        if network and "skipped" in network:
            parts.append(f"**{key}**: skipped — {network['skipped']}")
    return "\n\n".join(parts)


def llm_text(rec: dict) -> str:
    """How the SmolLM2 layer was read: prompts, dictionary, SVI and its reproducibility."""
    concepts = ", ".join(f"{n} ({c['task_prompts']} prompts; intact top-1 "
                         f"{c['intact_accuracy']:.2f} over all {c['prompts']})"
                         for n, c in rec["concepts"].items())
    svi = rec["svi"]
    lines = [f"### {rec['network']}",
             f"Site: the 1536 MLP hidden units silu(gate)·up of layer {rec['layer']} at "
             f"{'the last prompt position' if rec['positions'] == 'last' else 'every position'}"
             f" (zero ablation); tasks: top-1 completion of the concept word — {concepts}. "
             f"AMDs by mean-field SVI ({svi['svi_estimator']} gradients, {svi['svi_steps']} "
             f"steps × {svi['svi_particles']} masks, learning rate {svi['svi_lr']}); mean-field "
             "q has no total correlation, so TC is not reported for this network."]
    for name, rep in rec["dictionaries"].items():
        lines.append(
            f"Dictionary **{name}**: {rep['num_codes']} codes fitted on "
            f"{rec['fit_activations']} distinct activations (every position of the concept "
            f"prompts; FVU {rep['fvu']:.3f}, L0 {rep['l0']:.1f}, {rep['dead_codes']} dead "
            f"codes); at the task positions FVU {rep['task_fvu']:.3f} and "
            f"{rep['task_active_codes']} codes are ever non-zero — the only codes a mask can "
            "act through, so the dictionary basis is sparse by construction.")
    abl = ", ".join(f"{b} {m['p_correct_ablated_mean']:.2f}" for b, m in rec["bases"].items())
    lines.append(f"P(correct) with every unit of the basis zero-ablated: {abl} (a dictionary "
                 "keeps its reconstruction error, so ablating all codes is not quite ablating "
                 "the layer).")
    for name, m in rec["bases"].items():
        if "center_share" not in m:
            continue
        tasks = m["tasks"]
        share = ", ".join(f"{t} {v:.2f}" for t, v in zip(tasks, m["center_share"], strict=True))
        only = ", ".join(f"{t} {v:.2f}" for t, v in
                         zip(tasks, m["p_correct_codes_ablated"], strict=True))
        codes_bits = np.asarray(m["task_information"]) * (1 - np.asarray(m["center_share"]))
        codes = ", ".join(f"{t} {_fmt(v, '{:.1f}')} carrying {i:.3f} bit" for t, v, i in
                          zip(tasks, m["effective_codes"], codes_bits, strict=True))
        lines.append(
            f"**{name}** has {m['num_units']} units: its {m['num_units'] - 1} codes and its "
            "center c (a ≈ c + codes·D; the last unit, a constant 1 with decoder row c). "
            "Without that unit, zero-ablating every code would leave c, most of the "
            "activation, and the dictionary would be read at a different ablation baseline "
            f"than neurons: with every code ablated but c kept, P(correct) is {only} (intact "
            f"{m['p_correct_intact'][0]:.2f}). The codes alone (center left out): {codes} "
            "(effective units, information). Share of each task's information in the center "
            f"unit: {share}" + (
                " — most of the information the tasks read from the dictionary basis sits "
                "in this one shared unit, not in the sparse codes." if
                np.nanmean(m["center_share"]) > 0.5 else "."))
    stab = rec.get("svi_stability") or {}
    if stab:
        cells = []
        for b, s in stab.items():
            rs = ", ".join(f"{r['unit_information_r']:.2f}" for r in s["reruns"])
            eus = ", ".join(f"{r['effective_units']:.1f}" for r in s["reruns"])
            cells.append(f"{b}: r = {rs}, effective units {s['effective_units']:.1f} → {eus}")
        lines.append(f"SVI reproducibility (task {next(iter(stab.values()))['task']!r} rerun "
                     "with other seeds; r = Pearson correlation of the unit information "
                     "between runs): " + "; ".join(cells) + ".")
    return "\n\n".join(lines)
