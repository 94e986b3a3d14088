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
    ("unit_task_mi_mean", "I(T;M_i) (bits)", "{:.3f}"),
    ("top1_share", "info in top-1", "{:.2f}"),
    ("top2_share", "info in top-2", "{:.2f}"),
    ("top1_p_correct", "P(c) top-1 kept", "{:.2f}"),
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
            rows.append(row)
    return rows


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
            vals = [r[key] if r[key] is not None else np.nan for r in rs]
            ax.bar(range(len(rs)), vals, color=colors)
            ax.set_xticks(range(len(rs)), [r["basis"] for r in rs], rotation=30, fontsize=7)
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(labels[net], fontsize=7)
    fig.tight_layout()
    return fig


def fig_information(rec: dict, title: str):
    """Heatmaps of unit information I_i(t) (tasks × units), one panel per basis."""
    bases = list(rec["bases"].items())
    fig, axes = plt.subplots(1, len(bases), figsize=(3.2 * len(bases), 3.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], bases, strict=True):
        info = np.asarray(m["unit_information"])
        im = ax.imshow(info, aspect="auto", cmap="magma", vmin=0)
        ax.set_title(f"{name} ({info.shape[1]} units)", fontsize=8)
        ax.set_xlabel("unit")
        ax.set_yticks(range(len(m["tasks"])), m["tasks"], fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
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
            eu, eu0 = r["effective_units_mean"], neuron["effective_units_mean"]
            pm, pm0 = r["polysemanticity_mean"], neuron["polysemanticity_mean"]
            t1, t10 = r.get("top1_share"), neuron.get("top1_share")
            local = _cmp(eu, eu0, "more local", "less local", "about as local")
            poly = _cmp(pm, pm0, "less polysemantic", "more polysemantic",
                        "about as polysemantic")
            parts.append(
                f"**{basis}**: tasks {local} (effective units per task {_fmt(eu, '{:.2f}')} vs "
                f"{_fmt(eu0, '{:.2f}')} for neurons; top-1 unit carries {_fmt(t1, '{:.2f}')} vs "
                f"{_fmt(t10, '{:.2f}')} of the task information), units {poly} (effective "
                f"tasks per unit {_fmt(pm, '{:.2f}')} vs {_fmt(pm0, '{:.2f}')})")
        note = ""
        if not neuron["informative_tasks"]:
            note = (" No task carries ≥ 0.1 bit in the neuron basis (single neurons are not "
                    "needed for these tasks), so the neuron columns are undefined.")
        out.append(f"- *{label}* — " + "; ".join(parts) + "." + note)
    return out


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
             f"{cfg.inference.max_exact} units, MCMC beyond). *Effective units* = exp(H(w)) of "
             "the unit-information weights (absolute locality; *distributedness* divides it by "
             "the basis size, so bases of different sizes are best compared on effective units). "
             "*Tasks per unit* = effective number of tasks a unit serves (polysemanticity), "
             "mean over units serving any task. *Info in top-k* = share of Σ_i I_i in the k "
             "most informative units; *P(c) top-1 kept* = P(correct) when only the most "
             "important unit is kept and all others are zero-ablated. Dictionary codes are "
             "ablated with the reconstruction error kept intact.",
             markdown_table(rows) if rows else "(no network was read)",
             "### Verdicts", *_verdicts(rows)]
    for inst in results.get("toy", {}).get("instances", []):
        rec = ", ".join(f"{n}: mean {inst['recovery_mean'][n]:.3f}, min "
                        f"{inst['recovery_min'][n]:.3f}" for n in inst["recovery"])
        parts.append(f"Ground truth (toy, 1−S = {inst['density']:.3g}): max cosine of the "
                     f"{len(inst['true_directions'])} represented feature directions "
                     f"ReLU(±W1_i) to the dictionary — {rec}.")
    for key in ("rnn", "llm"):
        rec = results.get(key)
        if rec and "skipped" in rec:
            parts.append(f"**{key}**: skipped — {rec['skipped']}")
    return "\n\n".join(parts)
