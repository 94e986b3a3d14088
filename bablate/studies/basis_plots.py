"""Figures, table and report text of the basis-comparison study."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = (  # (key in a row, header, format)
    ("num_units", "units", "{:d}"),
    ("informative_tasks", "tasks ≥0.1 bit", "{:d}"),
    ("effective_units_mean", "effective units", "{:.2f}"),
    ("distributedness_mean", "distributedness", "{:.3f}"),
    ("total_correlation_mean", "TC (bits)", "{:.2f}"),
    ("polysemanticity_mean", "tasks per unit", "{:.2f}"),
    ("polysemanticity_weighted", "tasks per unit (info-weighted)", "{:.2f}"),
    ("unit_task_mi_mean", "I(T;M_i) (bits)", "{:.3f}"),
    ("top1_share", "info in top-1", "{:.2f}"),
    ("top2_share", "info in top-2", "{:.2f}"),
    ("top16_share", "info in top-16", "{:.2f}"),
    ("top1_p_correct", "P(c) top-1 kept", "{:.2f}"),
    ("p_correct_ablated_mean", "P(c) all ablated", "{:.2f}"),
    ("fvu", "dict. FVU", "{:.3g}"),
    ("l0", "dict. L0", "{:.2f}"),
)
PLOTTED = (("effective_units_mean", "effective units / task"),
           ("distributedness_mean", "distributedness"),
           ("total_correlation_mean", "total correlation (bits)"),
           ("polysemanticity_mean", "effective tasks / unit"),
           ("top1_share", "share of task info in top-1 unit"))


def _networks(results: dict) -> list[tuple[str, str, dict]]:
    """(key, label, record with "bases" and optional "dictionaries") per network read."""
    out = []
    for inst in results.get("toy", {}).get("instances", []):
        out.append((f"toy_d{inst['density']:.3g}",
                    f"{results['toy']['network']}, 1−S = {inst['density']:.3g}", inst))
    for key in ("rnn", "llm"):
        rec = results.get(key)
        if rec and "bases" in rec:
            out.append((key, rec["network"], rec))
    return out


def table_rows(results: dict) -> list[dict]:
    """One row per (network, basis) with the compared means (NaN where undefined)."""
    rows = []
    for key, label, rec in _networks(results):
        for basis, m in rec["bases"].items():
            row = {"network_key": key, "network": label, "basis": basis}
            for col, _, _ in COLUMNS:
                row[col] = m.get(col, float("nan"))
            rep = rec.get("dictionaries", {}).get(basis)
            row["fvu"] = rep["fvu"] if rep else float("nan")
            row["l0"] = rep["l0"] if rep else float("nan")
            row["per_task"] = {k: m[k] for k in ("task_information", "effective_units",
                                                 "unit_information")}
            rows.append(row)
    return rows


def paired(row: dict, ref: dict, min_bits: float = 0.1) -> dict:
    """Locality of ``row``'s basis and of ``ref``'s on the tasks informative in both.

    Per-basis means run over the tasks that carry ≥ ``min_bits`` in that basis, which can be
    different sets; a comparison between two bases uses the tasks they share.
    """
    a, b = row["per_task"], ref["per_task"]
    common = ((np.asarray(a["task_information"]) >= min_bits)
              & (np.asarray(b["task_information"]) >= min_bits))
    out = {"num_tasks": int(common.sum())}
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
    head = "| network | basis | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|---|---|" + "---|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        cells = [_fmt(r[c], f) for c, _, f in COLUMNS]
        lines.append(f"| {r['network']} | {r['basis']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fig_metrics(rows: list[dict]):
    """Grouped bars: each compared metric (columns) per network (rows), one bar per basis."""
    nets = list(dict.fromkeys(r["network_key"] for r in rows))
    labels = {r["network_key"]: r["network"] for r in rows}
    fig, axes = plt.subplots(len(nets), len(PLOTTED), figsize=(3.0 * len(PLOTTED),
                                                                2.4 * len(nets)), squeeze=False)
    for i, net in enumerate(nets):
        rs = [r for r in rows if r["network_key"] == net]
        colors = plt.cm.tab10(np.arange(len(rs)))
        for j, (key, title) in enumerate(PLOTTED):
            ax = axes[i][j]
            vals = np.array([r[key] if r[key] is not None else np.nan for r in rs], float)
            ax.bar(range(len(rs)), vals, color=colors)
            pos = vals[np.isfinite(vals) & (vals > 0)]
            if key == "effective_units_mean" and pos.size and pos.max() > 20 * pos.min():
                ax.set_yscale("log")  # bases of very different sizes
            if not np.isfinite(vals).any():
                ax.text(0.5, 0.5, "not available", ha="center", va="center",
                        transform=ax.transAxes, fontsize=7, color="0.4")
            ax.set_xticks(range(len(rs)), [r["basis"] for r in rs], rotation=30, fontsize=7)
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(labels[net], fontsize=7)
    fig.tight_layout()
    return fig


def fig_information(rec: dict, title: str, max_units: int = 48):
    """Heatmaps of unit information I_i(t) (tasks × units), one panel per basis.

    Sites with more than ``max_units`` units show their ``max_units`` most informative units
    (by total information over tasks), in that order.
    """
    bases = list(rec["bases"].items())
    fig, axes = plt.subplots(1, len(bases), figsize=(3.2 * len(bases), 3.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], bases, strict=True):
        info = np.asarray(m["unit_information"])
        d = info.shape[1]
        if d > max_units:
            info = info[:, np.argsort(-info.sum(0), kind="stable")[:max_units]]
            ax.set_title(f"{name} (top {max_units} of {d} units)", fontsize=8)
            ax.set_xlabel("unit (by total information)")
        else:
            ax.set_title(f"{name} ({d} units)", fontsize=8)
            ax.set_xlabel("unit")
        im = ax.imshow(info, aspect="auto", cmap="magma", vmin=0)
        ax.set_yticks(range(len(m["tasks"])), m["tasks"], fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def share_curve(unit_information_TxD, task_information, max_k: int) -> np.ndarray:
    """Mean over informative tasks of the share of Σ_i I_i in the top-k units, k = 1..max_k."""
    info = np.sort(np.asarray(unit_information_TxD, np.float64), axis=1)[:, ::-1]
    keep = (np.asarray(task_information) >= 0.1) & (info.sum(1) > 0)
    if not keep.any():
        return np.full(max_k, np.nan)
    cum = np.cumsum(info[keep], axis=1) / info[keep].sum(1, keepdims=True)
    cum = np.concatenate([cum, np.ones((cum.shape[0], max(max_k - cum.shape[1], 0)))], axis=1)
    return cum[:, :max_k].mean(0)


def fig_share_curves(results: dict):
    """Share of task information in the top-k units against k, per network and basis."""
    nets = _networks(results)
    fig, axes = plt.subplots(1, len(nets), figsize=(3.4 * len(nets), 2.8), squeeze=False)
    for ax, (_, label, rec) in zip(axes[0], nets, strict=True):
        for name, m in rec["bases"].items():
            info = np.asarray(m["unit_information"])
            ks = np.arange(1, info.shape[1] + 1)
            ax.plot(ks, share_curve(info, m["task_information"], info.shape[1]), label=name)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k (most informative units)")
        ax.set_title(label, fontsize=7)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("share of task information")
    fig.tight_layout()
    return fig


def fig_recovery(instances: list[dict]):
    """Max cosine of each true feature direction to the dictionary, per density."""
    fig, axes = plt.subplots(1, len(instances), figsize=(4.0 * len(instances), 2.8),
                             squeeze=False)
    for ax, inst in zip(axes[0], instances, strict=True):
        names = inst["true_directions"]
        width = 0.8 / max(len(inst["recovery"]), 1)
        for j, (dname, cos) in enumerate(inst["recovery"].items()):
            ax.bar(np.arange(len(names)) + j * width, cos, width, label=dname)
        ax.axhline(0.9, color="0.5", ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"1−S = {inst['density']:.3g}", fontsize=8)
        ax.set_ylabel("max cosine to dictionary")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def make_figures(ctx, results: dict) -> None:
    rows = table_rows(results)
    if rows:
        ctx.figure(fig_metrics(rows), "basis_metrics",
                   "Per network (rows) and basis (bars): effective units per task, "
                   "distributedness, total correlation, effective tasks per unit "
                   "(polysemanticity) and the share of task information in the top unit; "
                   "means over tasks carrying ≥ 0.1 bit.")
        ctx.figure(fig_share_curves(results), "basis_share_curves",
                   "Share of a task's information (Σ_i I_i) carried by its k most informative "
                   "units, against k (mean over tasks carrying ≥ 0.1 bit): a curve that rises "
                   "early is a local code.")
    insts = results.get("toy", {}).get("instances", [])
    if insts:
        ctx.figure(fig_recovery(insts), "toy_recovery",
                   "Toy |x| model: for each true hidden-layer feature direction ReLU(±W1_i), "
                   "the max cosine similarity to a dictionary row (dashed: 0.9).")
        sparsest = min(insts, key=lambda r: r["density"])
        ctx.figure(fig_information(sparsest, f"toy, 1−S = {sparsest['density']:.3g}"),
                   "toy_information",
                   "Toy |x| model at its sparsest density: unit information I_i(t) (bits) of "
                   "each feature task t over the units of each basis.")
    for key in ("rnn", "llm"):
        rec = results.get(key)
        if rec and "bases" in rec:
            ctx.figure(fig_information(rec, rec["network"]), f"{key}_information",
                       f"{rec['network']}: unit information I_i(t) (bits) of each task over "
                       "the units of each basis.")


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


def report_text(cfg, results: dict) -> str:
    rows = table_rows(results)
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
        rec = results.get(key)
        if rec and "skipped" in rec:
            parts.append(f"**{key}**: skipped — {rec['skipped']}")
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
