"""Figures of the basis-comparison study: they draw the results and rows they are given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bablate import dictionary as dl  # noqa: E402
from bablate import plot as bplot  # noqa: E402
from bablate.runner.context import RunContext  # noqa: E402

from .bases import NEURON, ROTATION  # noqa: E402
from .reading import INFORMATIVE_BITS  # noqa: E402
from .summary import networks  # noqa: E402

PLOTTED = (("effective_units_mean", "effective units / task"),
           ("distributedness_mean", "distributedness"),
           ("total_correlation_mean", "total correlation (bits)"),
           ("polysemanticity_mean", "effective tasks / unit"),
           ("top1_share", "share of task info in top-1 unit"))

BASES = (NEURON, ROTATION, *dl.METHODS)  # the order of the study's colours


def basis_color(name: str):
    """The colour of basis ``name``, the same in every panel and figure of the study."""
    i = BASES.index(name) if name in BASES else len(BASES) + sum(map(ord, name)) % 5
    return plt.cm.tab10(i % 10)


def fig_metrics(rows: list[dict]) -> Figure:
    """Grouped bars: each compared metric (columns) per network (rows), one bar per basis."""
    nets = list(dict.fromkeys(r["network_key"] for r in rows))
    labels = {r["network_key"]: r["network"] for r in rows}
    fig, axes = plt.subplots(len(nets), len(PLOTTED), figsize=(3.0 * len(PLOTTED),
                                                                2.4 * len(nets)), squeeze=False)
    for i, net in enumerate(nets):
        rs = [r for r in rows if r["network_key"] == net]
        colors = [basis_color(r["basis"]) for r in rs]
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


def fig_information(rec: dict, title: str, max_units: int = 48) -> Figure:
    """Heatmaps of unit information I_i(t) (tasks × units), one panel per basis, on one colour
    scale from 0 with one colourbar in bits (:func:`bablate.plot.information_panels`).

    Sites with more than ``max_units`` units show their ``max_units`` most informative units
    (by total information over tasks), in that order.
    """
    panels = {name: np.asarray(m["unit_information"], float) for name, m in rec["bases"].items()}
    tasks = {tuple(m["tasks"]) for m in rec["bases"].values()}
    if len(tasks) != 1:
        raise ValueError(f"{title}: the bases were ablated on different tasks {sorted(tasks)}; "
                         "one information figure needs one task list.")
    return bplot.information_panels(panels, tasks=list(next(iter(tasks))), max_units=max_units,
                                    title=title)


def share_curve(unit_information_TxD, task_information, max_k: int) -> np.ndarray:
    """Mean over informative tasks of the share of Σ_i I_i in the top-k units, k = 1..max_k."""
    info = np.sort(np.asarray(unit_information_TxD, np.float64), axis=1)[:, ::-1]
    keep = (np.asarray(task_information) >= INFORMATIVE_BITS) & (info.sum(1) > 0)
    if not keep.any():
        return np.full(max_k, np.nan)
    cum = np.cumsum(info[keep], axis=1) / info[keep].sum(1, keepdims=True)
    cum = np.concatenate([cum, np.ones((cum.shape[0], max(max_k - cum.shape[1], 0)))], axis=1)
    return cum[:, :max_k].mean(0)


def fig_share_curves(results: dict) -> Figure:
    """Share of task information in the top-k units against k, per network and basis."""
    nets = networks(results)
    fig, axes = plt.subplots(1, len(nets), figsize=(3.4 * len(nets), 2.8), squeeze=False)
    for ax, (_, label, rec) in zip(axes[0], nets, strict=True):
        for name, m in rec["bases"].items():
            info = np.asarray(m["unit_information"], float)
            ks = np.arange(1, info.shape[1] + 1)
            ax.plot(ks, share_curve(info, m["task_information"], info.shape[1]), label=name,
                    color=basis_color(name))
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k (most informative units)")
        ax.set_title(label, fontsize=7)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("share of task information")
    fig.tight_layout()
    return fig


def fig_recovery(instances: list[dict]) -> Figure:
    """Max cosine of each true feature direction to the dictionary, per density."""
    fig, axes = plt.subplots(1, len(instances), figsize=(4.0 * len(instances), 2.8),
                             squeeze=False)
    for ax, inst in zip(axes[0], instances, strict=True):
        names = inst["true_directions"]
        width = 0.8 / max(len(inst["recovery"]), 1)
        for j, (dname, cos) in enumerate(inst["recovery"].items()):
            # bars of one direction side by side, centred on its tick
            ax.bar(np.arange(len(names)) + (j - (len(inst["recovery"]) - 1) / 2) * width, cos,
                   width, label=dname, color=basis_color(dname))
        ax.axhline(0.9, color="0.5", ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"1−S = {inst['density']:.3g}", fontsize=8)
        ax.set_ylabel("max cosine to dictionary")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def make_figures(ctx: RunContext, results: dict, rows: list[dict]) -> None:
    """Writes every figure of the study (``rows``: :func:`summary.table_rows` of ``results``)."""
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
