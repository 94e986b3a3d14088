"""Figures of the LLM concepts study: each draws values of the results dict it is given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def head_maps(results: dict, names: list[str]) -> Figure:
    """Head importance q(m_i = 1) per concept, layer × head (one colour scale, [0, 1])."""
    layers = results["head_layers"]
    # A row per layer: 30 layers need a taller panel than one.
    height = 3.2 if len(layers) <= 10 else 1.6 + 0.16 * len(layers)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 0.8, height),
                             squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], names, strict=True):
        m = np.asarray(results["head_importance"][n])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="RdBu_r", aspect="auto")
        ax.set_title(n)
        ax.set_xlabel("head")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(layers if len(layers) <= 10 else
                           [str(l) if i % 5 == 0 else "" for i, l in enumerate(layers)])
    axes[0][0].set_ylabel("layer")  # one label: the panels share their layers
    fig.colorbar(im, ax=axes[0].tolist(), label="q(m_i = 1)")
    return fig


def _svi_panels(results: dict, kind: str, method: str, label: str) -> tuple[Figure, list]:
    """A figure with one panel per concept whose ``method`` run was compared with SVI, the axes
    labelled; returns it and, per panel, (axes, concept, the method's marginals, SVI's, the
    concept's details)."""
    done = [n for n in results["concepts"]
            if f"{method}_vs_svi" in results["ablation_details"][kind][n]]
    fig, axes = plt.subplots(1, max(len(done), 1), figsize=(3.6 * max(len(done), 1), 3.6),
                             squeeze=False, layout="constrained")
    panels = []
    for ax, n in zip(axes[0], done, strict=False):
        ax.set_xlabel(f"{label} q(m_i = 1)")
        ax.set_ylabel("SVI q(m_i = 1)")
        panels.append((ax, n, np.asarray(results[f"{kind}_{method}"][n]["marginals"]),
                       np.asarray(results[f"{kind}_svi"][n]["marginals"]),
                       results["ablation_details"][kind][n]))
    return fig, panels


def mcmc_check(results: dict, kind: str = "heads") -> Figure:
    """SVI against MCMC marginals per unit, for each concept MCMC ran on (the identity line:
    agreement); the title of each panel gives the correlation and whether MCMC converged."""
    fig, panels = _svi_panels(results, kind, "mcmc", "MCMC")
    for ax, n, q_mc, q_svi, det in panels:
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.scatter(q_mc, q_svi, s=8, alpha=0.6)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        corr = det["mcmc_vs_svi"]["corr"]
        conv = "converged" if det["mcmc_diagnostics"]["converged"] else "NOT converged"
        ax.set_title(f"{n} {kind}: r = {'n/a' if corr is None else f'{corr:.2f}'}\n"
                     f"(MCMC {conv})", fontsize=9)
    return fig


def reference_check(results: dict, kind: str = "heads") -> Figure:
    """SVI against the importance-sampling reference per unit, with the reference's ±2
    standard errors, for each concept the reference ran on (the identity line: agreement)."""
    fig, panels = _svi_panels(results, kind, "importance", "importance sampling")
    for ax, n, q_ref, q_svi, det in panels:
        se = np.asarray(det["importance_marginal_se"])
        # One range for both axes around the points and their error bars (the marginals of
        # a weakly informative task sit near the prior; [0, 1] would hide their scatter).
        lo = min((q_ref - 2 * se).min(), q_svi.min()) - 0.02
        hi = max((q_ref + 2 * se).max(), q_svi.max()) + 0.02
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.errorbar(q_ref, q_svi, xerr=2 * se, fmt="o", ms=2.5, lw=0.5, alpha=0.5)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        cmp = det["importance_vs_svi"]
        verdict = cmp["verdict"].upper() if cmp["verdict"] == "disagree" else cmp["verdict"]
        ax.set_title(f"{n} {kind}: {verdict}, max |diff| {cmp['max_abs_diff']:.2f}\n"
                     f"(ESS {det['importance_diagnostics']['ess']:.0f}, "
                     f"s.e. ≤ {cmp['reference_se_max']:.3f})", fontsize=9)
    return fig


def overlap(results: dict, names: list[str]) -> Figure:
    """Concept × concept JS overlap of the AMDs, heads and neurons."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
    kinds = ("heads", "neurons")
    # One colour scale from 0 for both panels, so that a small overlap looks small.
    every = np.concatenate([np.asarray(results["concept_overlap"][k], float).ravel()
                            for k in kinds])
    every = every[np.isfinite(every)]
    norm = matplotlib.colors.Normalize(0.0, max(every.max(initial=0.0), 1e-3))
    for ax, kind in zip(axes, kinds, strict=True):
        m = np.asarray(results["concept_overlap"][kind], float)
        im = ax.imshow(m, cmap="viridis", norm=norm)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        ax.set_title(f"JS overlap, {kind}")
    fig.colorbar(im, ax=axes.tolist(), label="JS divergence (bits)")
    return fig


def pa_auc(results: dict, names: list[str]) -> Figure:
    """Held-out PA AUC per layer and concept."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for n in names:
        ax.plot(results["pa_layers"], results["pa_auc_by_layer"][n], marker="o", label=n)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("layer (residual stream entering it)")
    ax.set_ylabel("held-out AUC")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    return fig


ARMS = ("baseline", "activation", "token_control", "inhibition_baseline", "inhibition")


def rates(results: dict, names: list[str]) -> Figure:
    """Intervention rates per arm and concept, with their intervals."""
    fig, ax = plt.subplots(figsize=(2.2 * len(names) + 2, 3.4))
    r = results["intervention_rates"]
    width = 0.8 / len(ARMS)
    for j, arm in enumerate(ARMS):
        x = np.arange(len(names)) + (j - (len(ARMS) - 1) / 2) * width
        rate = np.array([r[n][arm]["rate"] for n in names], float)
        err = np.array([[r[n][arm]["rate"] - r[n][arm]["lo"], r[n][arm]["hi"] - r[n][arm]["rate"]]
                        for n in names], float).T
        ax.bar(x, rate, width, yerr=err, capsize=2, label=arm.replace("_", " "))
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylim(0, 1.05)  # room for the upper interval of a rate of 1
    ax.set_ylabel("fraction of samples naming the concept")
    # right of the axes: bars reach 1, a legend inside would cover them
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def neurons(results: dict, names: list[str]) -> Figure:
    """Sorted MLP-neuron importance per concept."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for n in names:
        q = np.sort(np.asarray(results["neuron_importance"][n]))[::-1]
        ax.plot(q, label=n)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("neuron (sorted)")
    ax.set_ylabel("q(m_i = 1)")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    return fig
