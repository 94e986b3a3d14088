"""Figures of the LLM concepts study: each draws values of the results dict it is given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .interventions import ARMS  # noqa: E402


def _verdict(results: dict, kind: str, n: str) -> str:
    """A panel's verdict line: the certified estimate's method and whether it converged."""
    e = results["estimates"][kind][n]
    if e["method"] == "exact":
        return "exact"
    ok = "converged" if e["converged"] else "NOT CONVERGED"
    return f"{e['method']}, {ok}, s.e. ≤ {e['max_se']:.3f}"


def head_maps(results: dict, names: list[str]) -> Figure:
    """Head importance q(m_i = 1) per concept, layer × head (one colour scale, [0, 1]), each
    panel titled with its estimate's verdict; a panel whose estimate did not converge is
    hatched over."""
    layers = results["head_layers"]
    # A row per layer: 30 layers need a taller panel than one.
    height = 3.4 if len(layers) <= 10 else 1.8 + 0.16 * len(layers)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 0.8, height),
                             squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], names, strict=True):
        m = np.asarray(results["head_importance"][n])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="RdBu_r", aspect="auto")
        ax.set_title(f"{n}\n({_verdict(results, 'heads', n)})", fontsize=9)
        if not results["estimates"]["heads"][n]["converged"]:
            ax.add_patch(matplotlib.patches.Rectangle(
                (-0.5, -0.5), m.shape[1], m.shape[0], fill=False, hatch="//", color="k",
                alpha=0.5))
        ax.set_xlabel("head")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(layers if len(layers) <= 10 else
                           [str(l) if i % 5 == 0 else "" for i, l in enumerate(layers)])
    axes[0][0].set_ylabel("layer")  # one label: the panels share their layers
    fig.colorbar(im, ax=axes[0].tolist(), label="q(m_i = 1)")
    return fig


def check(results: dict, kind: str, method: str) -> Figure:
    """A cross-check (``method``: "svi" or "mcmc") against the certified estimate per unit,
    with the estimate's ±2 standard errors, for each concept the check ran on (dashed: the
    identity, agreement)."""
    done = [n for n in results["concepts"]
            if f"{method}_vs_estimate" in results["ablation_details"][kind][n]]
    fig, axes = plt.subplots(1, max(len(done), 1), figsize=(3.6 * max(len(done), 1), 3.8),
                             squeeze=False, layout="constrained")
    label = {"svi": "SVI", "mcmc": "MCMC"}[method]
    for ax, n in zip(axes[0], done, strict=False):
        q_ref = np.asarray(results[f"{kind}_estimate"][n]["marginals"])
        q = np.asarray(results[f"{kind}_{method}"][n]["marginals"])
        se = np.asarray(results[f"{'head' if kind == 'heads' else 'neuron'}_importance_se"][n],
                        float).ravel()
        # One range for both axes around the points and their error bars (the marginals of
        # a weakly informative task sit near the prior; [0, 1] would hide their scatter).
        lo = min((q_ref - 2 * se).min(), q.min()) - 0.02
        hi = max((q_ref + 2 * se).max(), q.max()) + 0.02
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.errorbar(q_ref, q, xerr=2 * se, fmt="o", ms=2.5, lw=0.5, alpha=0.5)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("certified estimate q(m_i = 1) ± 2 s.e.")
        ax.set_ylabel(f"{label} q(m_i = 1)")
        cmp = results["ablation_details"][kind][n][f"{method}_vs_estimate"]
        verdict = cmp["verdict"].upper() if cmp["verdict"] == "disagree" else cmp["verdict"]
        ax.set_title(f"{n} {kind}: {label} {verdict}, max |diff| {cmp['max_abs_diff']:.2f}\n"
                     f"({_verdict(results, kind, n)})", fontsize=9)
    return fig


def overlap(results: dict) -> Figure:
    """Concept × concept JS overlap of the AMDs, heads and neurons (over the concepts whose
    estimates converged)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
    kinds = ("heads", "neurons")
    co = results["concept_overlap"]
    # One colour scale from 0 for both panels, so that a small overlap looks small.
    every = np.concatenate([np.asarray(co[k] or [], float).ravel() for k in kinds])
    every = every[np.isfinite(every)]
    norm = matplotlib.colors.Normalize(0.0, max(every.max(initial=0.0), 1e-3))
    im = None
    for ax, kind in zip(axes, kinds, strict=True):
        names = co["concepts"][kind]
        if co[kind] is None:
            ax.text(0.5, 0.5, "fewer than two concepts converged", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        im = ax.imshow(np.asarray(co[kind], float), cmap="viridis", norm=norm)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        ax.set_title(f"JS overlap, {kind}")
    if im is not None:
        fig.colorbar(im, ax=axes.tolist(), label="JS divergence (bits)")
    return fig


def pa_auc(results: dict, names: list[str]) -> Figure:
    """Held-out PA AUC per layer and concept with its 95% bootstrap band (solid), and the
    trivial token-identity detector's AUC on the same tokens (dashed, same colour)."""
    fig, ax = plt.subplots(figsize=(6.6, 3.6))
    layers = results["pa_layers"]
    for n in names:
        v = results["pa_vs_token_identity"][n]
        (line,) = ax.plot(layers, results["pa_auc_by_layer"][n], marker="o", label=f"{n}: PA")
        ax.fill_between(layers, v["pa_lo"], v["pa_hi"], color=line.get_color(), alpha=0.2, lw=0)
        ax.axhline(v["token_identity_auc"], color=line.get_color(), lw=1.2, ls="--",
                   label=f"{n}: token identity")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("layer (residual stream entering it)")
    ax.set_ylabel("held-out AUC (95% bootstrap band)")
    ax.set_ylim(0, 1.02)
    # right of the axes: the lines run near 1, a legend inside would cover them
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def rates(results: dict, names: list[str]) -> Figure:
    """Intervention rates per arm and concept with their 95% Wilson intervals, one panel per
    prompt format; an arm that did not run (no template worth grafting) is marked."""
    formats = list(results["intervention_rates"])
    fig, axes = plt.subplots(1, len(formats), figsize=((2.2 * len(names) + 1) * len(formats)
                                                      + 1.6, 3.6),
                             squeeze=False, sharey=True)
    width = 0.8 / len(ARMS)
    for ax, fmt in zip(axes[0], formats, strict=True):
        r = results["intervention_rates"][fmt]
        for j, arm in enumerate(ARMS):
            x = np.arange(len(names)) + (j - (len(ARMS) - 1) / 2) * width
            cells = [r[n][arm] for n in names]
            ran = np.array([c["n"] > 0 for c in cells])
            rate = np.array([c["rate"] if c["n"] else 0.0 for c in cells], float)
            err = np.array([[c["rate"] - c["lo"], c["hi"] - c["rate"]] if c["n"] else [0, 0]
                            for c in cells], float).T
            ax.bar(x[ran], rate[ran], width, yerr=err[:, ran], capsize=2, color=f"C{j}",
                   label=arm.replace("_", " "))
            for xi in x[~ran]:
                ax.text(xi, 0.02, "not run", rotation=90, fontsize=6, ha="center",
                        va="bottom")
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names)
        ax.set_ylim(0, 1.05)  # room for the upper interval of a rate of 1
        ax.set_title(f"{fmt} format", fontsize=9)
    axes[0][0].set_ylabel("fraction of samples naming the concept")
    # right of the last panel: bars reach 1, a legend inside would cover them
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def neurons(results: dict, names: list[str]) -> Figure:
    """Sorted MLP-neuron importance per concept with each neuron's ±2 standard errors (a
    band); a concept whose estimate did not converge is drawn dashed and says so."""
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    for n in names:
        q = np.asarray(results["neuron_importance"][n])
        se = np.asarray(results["neuron_importance_se"][n], float)
        order = np.argsort(-q)
        ok = results["estimates"]["neurons"][n]["converged"]
        (line,) = ax.plot(q[order], ls="-" if ok else "--",
                          label=n if ok else f"{n} (NOT converged)")
        ax.fill_between(np.arange(q.size), (q - 2 * se)[order], (q + 2 * se)[order],
                        color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("neuron (sorted)")
    ax.set_ylabel("q(m_i = 1) ± 2 s.e.")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
