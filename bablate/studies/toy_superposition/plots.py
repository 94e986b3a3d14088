"""Figures of the toy-superposition study: each draws the values it is given (the results
records and the trained parameters) and computes no results.json value."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bablate import plot as bplot  # noqa: E402
from bablate.models import toy  # noqa: E402
from bablate.runner.context import RunContext  # noqa: E402

from .config import StudyConfig  # noqa: E402

Records = list[dict[str, Any]]

REFERENCE_DIMS = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8)
REFERENCE_LABELS = ("1", "3/4", "2/3", "1/2", "2/5", "3/8")


def by_density(records: Records, key: str,
               replicate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Densities (descending) and the replicate-mean (or one replicate's) value of ``key``."""
    dens = sorted({r["density"] for r in records}, reverse=True)
    vals = []
    for d in dens:
        rs = [r[key] for r in records if r["density"] == d and r.get(key) is not None
              and (replicate is None or r["replicate"] == replicate)]
        finite = [v for v in rs if np.isfinite(v)]
        vals.append(float(np.mean(finite)) if finite else np.nan)
    return np.array(dens), np.array(vals)


def _fraction_labels(ax, min_gap: float = 0.045) -> list:
    """The reference fractions as dotted lines, labelled just right of the axes; labels of
    close fractions (2/5, 3/8) are pushed apart by ``min_gap`` (data units) so none overlap."""
    trans = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
    texts, last = [], np.inf
    for v, lab in sorted(zip(REFERENCE_DIMS, REFERENCE_LABELS, strict=True), reverse=True):
        ax.axhline(v, color="0.7", lw=0.7, ls=":")
        last = min(v, last - min_gap)
        texts.append(ax.text(1.01, last, lab, transform=trans, va="center", fontsize=7,
                             color="0.4", clip_on=False))
    return texts


def _replicates_label(records) -> str:
    n = len({r["replicate"] for r in records})
    return "one replicate" if n == 1 else f"mean over {n} replicates"


def _first_replicate(records):
    return [r for r in records if r["replicate"] == 0]


def _pick(records, num):
    """Up to ``num`` ablated replicate-0 records spread from dense to sparse."""
    rs = sorted([r for r in _first_replicate(records) if r["unit_importance"] is not None],
                key=lambda r: -r["density"])
    if len(rs) <= num:
        return rs
    return [rs[i] for i in np.unique(np.linspace(0, len(rs) - 1, num).round().astype(int))]


def fig_pentagon(cfg: StudyConfig, params: toy.Params, dens_k: np.ndarray,
                 rep_k: np.ndarray) -> Figure:
    """W columns in 2-D for every density (replicate 0)."""
    ks = [k for k in range(len(dens_k)) if rep_k[k] == 0]
    ncols = min(5, len(ks))
    nrows = -(-len(ks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.5 * nrows), squeeze=False)
    for ax in axes.ravel()[len(ks):]:
        ax.axis("off")
    colors = plt.cm.viridis(np.linspace(0, 0.9, cfg.spec.n_features))
    for ax, k in zip(axes.ravel(), ks, strict=False):
        W = np.asarray(cfg.spec.encoder_weights(toy.unstack(params, k)))
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.8", lw=0.8))
        for i in range(W.shape[1]):
            ax.plot([0, W[0, i]], [0, W[1, i]], color=colors[i], lw=2)
            ax.plot(W[0, i], W[1, i], "o", color=colors[i], ms=4)
        ax.set_xlim(-1.4, 1.4)
        ax.set_ylim(-1.4, 1.4)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"1−S = {dens_k[k]:.3g}", fontsize=9)
        ax.set_xlabel("hidden dim 1", fontsize=8)
        ax.set_ylabel("hidden dim 2", fontsize=8)
    return fig


def fig_gram_bias(cfg: StudyConfig, params: toy.Params, dens_k: np.ndarray,
                  rep_k: np.ndarray) -> Figure:
    """WᵀW (top) and the bias b (bottom) for every density (replicate 0)."""
    ks = [k for k in range(len(dens_k)) if rep_k[k] == 0]
    fig, axes = plt.subplots(2, len(ks), figsize=(1.9 * len(ks), 2.9), squeeze=False,
                             gridspec_kw={"height_ratios": [5, 1], "hspace": 0.08})
    for j, k in enumerate(ks):
        p = toy.unstack(params, k)
        W = np.asarray(cfg.spec.encoder_weights(p))
        im = axes[0][j].imshow(W.T @ W, cmap="RdBu_r", vmin=-1, vmax=1)
        axes[0][j].set_title(f"1−S = {dens_k[k]:.3g}", fontsize=8)
        axes[1][j].imshow(np.asarray(p["b"])[None, :], cmap="RdBu_r", vmin=-1, vmax=1,
                          aspect="auto")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("feature i")
    axes[1][0].set_ylabel("b")
    axes[1][0].set_xlabel("feature j")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="WᵀW / bias")
    return fig


def fig_norms(cfg: StudyConfig, records: Records) -> Figure:
    """Features represented vs density, and ‖W_i‖ per feature and density."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in records:
        a0.plot(r["density"], r["features_represented"], "o", color="C0", alpha=0.5)
    dens, mean = by_density(records, "features_represented")
    a0.plot(dens, mean, "-", color="C0", label=_replicates_label(records))
    a0.axhline(cfg.spec.m_hidden, color="0.5", ls=":", label=f"m = {cfg.spec.m_hidden}")
    a0.set_xscale("log")
    a0.invert_xaxis()
    a0.set_xlabel("feature density 1 − S (sparser →)")
    a0.set_ylabel("features represented (‖W_i‖ > 0.5)")
    a0.legend(fontsize=8)
    rs = sorted(_first_replicate(records), key=lambda r: -r["density"])
    norms = np.array([r["feature_norms"] for r in rs]).T
    im = a1.imshow(norms, aspect="auto", cmap="viridis", vmin=0, vmax=max(1.2, norms.max()))
    a1.set_xticks(range(len(rs)))
    a1.set_xticklabels([f"{r['density']:.2g}" for r in rs], rotation=90, fontsize=7)
    a1.set_xlabel("feature density 1 − S")
    a1.set_ylabel("feature i (importance ↓)")
    a1.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.colorbar(im, ax=a1, label="‖W_i‖")
    return fig


def fig_dims_per_feature(cfg: StudyConfig, records: Records) -> Figure:
    """m/‖W‖_F² vs 1/(1−S) with the paper's reference fractions and the 1 − S prediction."""
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.array([1 / r["density"] for r in records])
    ax.plot(x, [r["dims_per_feature"] for r in records], "o-", color="C0", ms=4,
            label="m / ‖W‖_F² (trained)")
    grid = np.geomspace(1, x.max() * 1.2, 100)
    ax.plot(grid, 1 / grid, "--", color="C3", label="coding theory ≈ 1 − S")
    _fraction_labels(ax)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("1 / (1 − S)")
    ax.set_ylabel("dimensions per feature")
    ax.legend(fontsize=8)
    return fig


def fig_feature_dimensionality(records: Records) -> Figure:
    """D_i of every feature against 1/(1−S), with the fractions the paper sees clustering."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    for r in records:
        d = np.array(r["feature_dimensionality"])
        shown = np.array(r["feature_norms"]) > 0.5
        xs = (1 / r["density"]) * np.exp(rng.normal(0, 0.04, d.size))
        ax.scatter(xs[shown], d[shown], s=8, alpha=0.5, color="C0")
    _fraction_labels(ax)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("1 / (1 − S)")
    ax.set_ylabel("feature dimensionality D_i (represented features)")
    return fig


def fig_ablation_trends(records: Records) -> Figure:
    """Polysemanticity, distributedness and total correlation of the AMDs vs density."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    rs = [r for r in records if r["polysemanticity_mean"] is not None]
    panels = (("polysemanticity_mean", "polysemanticity: effective\nfeature tasks per unit"),
              ("tasks_served_mean", "feature tasks per unit\n(≥ 0.1 bits each)"),
              ("distributedness_mean", "distributedness of task codes\n(effective units / m)"),
              ("total_correlation_mean", "total correlation of\ntask AMDs (bits)"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for r in rs:
            ax.plot(r["density"], r[key], "o", color="C0", alpha=0.5)
        dens, mean = by_density(rs, key)
        ax.plot(dens, mean, "-", color="C0")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("feature density 1 − S (sparser →)")
        ax.set_ylabel(label, fontsize=9)
    dens, feats = by_density(rs, "features_represented")
    axes[1].plot(dens, feats, "s--", color="C1", ms=3, label="features represented")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_rotation_control(rc: dict[str, Any]) -> Figure:
    """Each control metric against density: the neuron basis beside the rotated bases (points:
    each rotation; band: mean ± sd)."""
    recs = sorted(rc["by_density"].values(), key=lambda r: -r["density"])
    names = ("polysemanticity", "tasks_served", "distributedness", "total_correlation",
             "task_information")
    fig, axes = plt.subplots(1, len(names), figsize=(3.1 * len(names), 3.2))
    dens = np.array([r["density"] for r in recs])
    for ax, name in zip(axes, names, strict=True):
        mean = np.array([r[name]["rotated_mean"] for r in recs])
        sd = np.array([r[name]["rotated_sd"] for r in recs])
        for r in recs:
            ax.plot([r["density"]] * len(r[name]["rotated"]), r[name]["rotated"], ".",
                    color="C1", alpha=0.4, ms=4)
        ax.fill_between(dens, mean - sd, mean + sd, color="C1", alpha=0.25,
                        label=f"{rc['num_rotations']} random rotations (mean ± sd)")
        ax.plot(dens, mean, "-", color="C1")
        ax.plot(dens, [r[name]["neuron"] for r in recs], "o-", color="C0", ms=4,
                label="neuron basis")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("feature density 1 − S (sparser →)")
        ax.set_title(name.replace("_", " ") + (" (bits)" if name in ("total_correlation",
                                                                   "task_information") else ""),
                     fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_unit_importance(cfg: StudyConfig, records: Records, params: toy.Params,
                        dens_k: np.ndarray, rep_k: np.ndarray) -> Figure:
    """WᵀW, Wᵀ and the unit-importance map (feature tasks × hidden units) at a few densities."""
    rs = _pick(records, 4)
    fig, axes = plt.subplots(len(rs), 3, figsize=(10, 2.6 * len(rs)), squeeze=False)
    for row, r in zip(axes, rs, strict=True):
        k = next(k for k in range(len(dens_k)) if rep_k[k] == 0 and dens_k[k] == r["density"])
        W = np.asarray(cfg.spec.encoder_weights(toy.unstack(params, k)))
        feats = r["ablated_features"]
        gram = row[0].imshow(W.T @ W, cmap="RdBu_r", vmin=-1, vmax=1)
        row[0].set_title(f"WᵀW, 1−S = {r['density']:.3g}", fontsize=9)
        row[0].set_xlabel("feature j")
        row[0].set_ylabel("feature i")
        lim = max(1.0, np.abs(W).max())
        emb = row[1].imshow(W.T[feats], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        row[1].set_title("W_i (rows) on hidden units", fontsize=9)
        row[1].set_xlabel("hidden unit")
        row[1].set_ylabel("feature i")
        row[1].set_yticks(range(len(feats)), feats, fontsize=6)
        # the library's map: one [0, 1] scale, diverging around the uniform prior 0.5
        bplot.importance_heatmap(np.array(r["unit_importance"]), tasks=feats, ax=row[2],
                                 cmap="PuOr_r", annotate=False, xlabel="hidden unit",
                                 title="unit importance q(m_u = 1 | task i)",
                                 label="q(m_u = 1)")
        row[2].title.set_fontsize(9)
        row[2].set_ylabel("feature task i")
        fig.colorbar(gram, ax=row[0], label="W_iᵀW_j")
        fig.colorbar(emb, ax=row[1], label="weight")
    fig.tight_layout()
    return fig


def fig_code_geometry(cfg: StudyConfig, records: Records) -> Figure:
    """Spectrum exponent α (with the smooth-code threshold), participation ratio, energies."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    dens, alpha = by_density(records, "alpha")
    axes[0].plot(dens, alpha, "o-")
    axes[0].axhline(records[0]["smooth_code_threshold"], color="C3", ls="--",
                    label=f"1 + 2/d_in, d_in = {cfg.spec.n_features}")
    axes[0].set_ylabel(f"spectrum exponent α (ranks 1..{cfg.spec.m_hidden})")
    axes[0].legend(fontsize=8)
    dens, pr = by_density(records, "participation_ratio")
    axes[1].plot(dens, pr, "o-")
    axes[1].axhline(cfg.spec.m_hidden, color="0.5", ls=":", label=f"m = {cfg.spec.m_hidden}")
    axes[1].set_ylabel("participation ratio of hidden code")
    axes[1].legend(fontsize=8)
    for key, lab, c in (("energy_ramp_hidden", "ramp, hidden", "C0"),
                        ("energy_circle_hidden", "circle, hidden", "C1"),
                        ("energy_ramp_output", "ramp, output", "C2"),
                        ("energy_circle_output", "circle, output", "C3")):
        dens, e = by_density(records, key)
        axes[2].plot(dens, e, "o-", color=c, label=lab, ms=3)
    axes[2].set_yscale("log")
    # 1-2-5 ticks: matplotlib's minor labels on a sub-decade range crowd into each other
    axes[2].yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[2].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[2].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[2].set_ylabel("projection energy Σ‖r Δa‖² (T points)")
    # outside the axes: the four curves span the whole panel
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    for ax in axes:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("feature density 1 − S (sparser →)")
    fig.tight_layout()
    return fig


def make_figures(ctx: RunContext, cfg: StudyConfig, records: Records, params: toy.Params,
                 dens_k: np.ndarray, rep_k: np.ndarray,
                 rotation_control: dict[str, Any] | None = None) -> None:
    """Writes every figure of the run (instance k has density ``dens_k[k]``, replicate
    ``rep_k[k]``; ``rotation_control`` is results.json's entry for this model, if it ran)."""
    spec = cfg.spec
    ctx.figure(fig_norms(cfg, records), "features_represented",
               "Left: features with ‖W_i‖ > 0.5 against density"
               + (" (points: replicates)" if cfg.num_replicates > 1 else "") + ". Right: "
               "‖W_i‖ per feature (rows, most important on top) and density (replicate 0).")
    if spec.m_hidden == 2:
        ctx.figure(fig_pentagon(cfg, params, dens_k, rep_k), "w_columns_2d",
                   "Columns W_i of the 5→2 model in the hidden plane, one panel per density "
                   "(colour: importance, dark = most important). Sparse inputs give a pentagon.")
    if spec.n_features <= 20:
        ctx.figure(fig_gram_bias(cfg, params, dens_k, rep_k), "gram_and_bias",
                   "WᵀW (top; diagonal = ‖W_i‖², off-diagonal = interference) and bias b "
                   "(bottom) at each density, dense on the left.")
    ctx.figure(fig_dims_per_feature(cfg, records), "dims_per_feature",
               "Dimensions per feature m/‖W‖_F² against 1/(1−S), with the fractions 1, 3/4, "
               "2/3, 1/2, 2/5, 3/8 and Marshall & Kirchner's large-precision prediction ≈ 1 − S.")
    ctx.figure(fig_feature_dimensionality(records), "feature_dimensionality",
               "Feature dimensionality D_i of represented features (‖W_i‖ > 0.5) against "
               "1/(1−S); points jittered horizontally.")
    if any(r["polysemanticity_mean"] is not None for r in records):
        ctx.figure(fig_ablation_trends(records), "ablation_vs_density",
                   "Bayesian ablation of the hidden units: mean effective number of feature "
                   "tasks per unit (polysemanticity; orange: features represented), mean "
                   "distributedness and total correlation of informative task AMDs.")
        ctx.figure(fig_unit_importance(cfg, records, params, dens_k, rep_k), "unit_importance",
                   "Per density: WᵀW, the feature embeddings W_i on the hidden units, and the "
                   "unit importance q(m_u = 1) of each feature task (0.5 = unused, 1 = needed).")
    if rotation_control:
        basis = ("its neurons are privileged (rotating the weights changes the loss)"
                 if spec.kind == "relu_hidden" else
                 "its basis is not privileged (rotating the weights keeps the loss)")
        ctx.figure(fig_rotation_control(rotation_control), "rotation_control",
                   "Basis control (replicate 0): each ablation metric in the neuron basis (blue) "
                   "and in random rotations of the hidden space (orange points; band: mean ± "
                   f"sd) of the same network on the same examples; {basis}.")
    ctx.figure(fig_code_geometry(cfg, records), "code_geometry",
               "Hidden-code geometry: power-law exponent α of the activation eigenspectrum "
               "against the smooth-code threshold, participation ratio, and random-projection "
               "energy along a ramp of feature 0 and a circle in the plane of features 0, 1.")
