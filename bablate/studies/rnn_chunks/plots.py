"""Figures of the RNN-chunks study: each draws the values it is given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bablate import plot as bplot  # noqa: E402

# The paper's trained-vs-untrained DSC numbers come from the authors' context-dependent
# notebook (RNN_3_context_dependent_chunks.ipynb; its saved
# experiment_data/comparison_on_educated_vs_uneducated_network.json): 10 seeds, one 2,000-step
# trajectory each. Per key: (trained, untrained), each (mean, min, max) over the 10 seeds. They
# are context-family numbers and are shown for that family only.
REFERENCE_FAMILY = "context"
REFERENCE = {"n_unique_states": ((364.5, 13, 1005), (41.0, 26, 87)),
             "vocab_size": ((383.3, 16, 1020), (48.0, 29, 109))}


def training_curves(ctx, histories: dict[str, list[dict]]) -> None:
    """Loss and held-out accuracy of every seed's network, one colour per training recipe."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for c, (recipe, hists) in enumerate(histories.items()):
        for i, h in enumerate(hists):
            steps = np.asarray(h["step"])
            label = f"{recipe} recipe" if i == 0 else None
            axes[0].plot(steps[1:], np.asarray(h["loss"])[1:], color=f"C{c}", alpha=0.5,
                         label=label)
            axes[1].plot(steps, h["accuracy"], color=f"C{c}", alpha=0.5, label=label)
    axes[0].set(xlabel="step", ylabel="training loss (mean CE)")
    axes[1].set(xlabel="step", ylabel="held-out next-symbol accuracy", ylim=(0, 1))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "training_curves", "Training loss and held-out next-symbol accuracy of "
               "every seed's network, per training recipe (bablate: batches of windows; "
               "authors: one long window per step).")


def dsc_comparison(ctx, rows_by: dict, family: str) -> None:
    """Box plots of DSC numbers, trained vs untrained, one row per (training recipe, DSC
    protocol); ``rows_by[recipe][protocol][network]`` lists one row of numbers per seed."""
    titles = {"n_unique_states": "unique hidden states", "vocab_size": "chunk vocabulary size",
              "vocab_size_count_gt5": "chunks seen > 5 times",
              "parse_length": "parse length in chunks", "decoding_accuracy": "decoding accuracy"}
    keys = list(titles)
    pairs = [(r, p) for r, by_p in rows_by.items() for p in by_p]
    fig, axes = plt.subplots(len(pairs), len(keys), figsize=(3 * len(keys), 3 * len(pairs)),
                             squeeze=False)
    show_ref = family == REFERENCE_FAMILY
    for row, (recipe, protocol) in zip(axes, pairs, strict=True):
        rows = rows_by[recipe][protocol]
        for ax, k in zip(row, keys, strict=True):
            vals = [[r[k] for r in rows[n]] for n in ("trained", "untrained")]
            ax.boxplot(vals, tick_labels=["trained", "untrained"])
            for j, v in enumerate(vals):
                ax.scatter(np.full(len(v), j + 1.0), v, s=10, color="k", alpha=0.6)
            if show_ref and protocol == "authors" and k in REFERENCE:
                for j, (mean, lo, hi) in enumerate(REFERENCE[k]):
                    ax.errorbar([j + 1.25], [mean], yerr=[[mean - lo], [hi - mean]], fmt="*",
                                color="C3", ms=8, label="paper" if j == 0 else None)
                ax.legend(fontsize=7)
            ax.set_title(f"{titles[k]}\n({recipe} training, {protocol} DSC)", fontsize=9)
    fig.tight_layout()
    ctx.figure(fig, "dsc_trained_vs_untrained", "DSC on trained vs untrained networks over "
               "seeds, one row per training recipe (bablate: batches of short windows; "
               "authors: one long window per step) and DSC protocol (long: many windows, "
               "held-out sequence, cumulative vocabulary; authors: one 2,000-step trajectory, "
               "lookup fitted on its first 100 steps, vocabulary rebuilt from each parse): "
               "unique states, chunk vocabulary, vocabulary with count > 5, parse length and "
               "decoding accuracy"
               + (" (red: the paper's 10-seed mean and range, context family, authors' "
                  "protocol)." if show_ref else "."))


def chunk_dictionary(ctx, top: list[dict]) -> None:
    """Bar chart of the most frequent decoded chunks (``dsc.top_chunks``)."""
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(top), 3) + 1))
    ax.barh(range(len(top)), [t["count"] for t in top], color="C2")
    ax.set_yticks(range(len(top)), [f"{t['symbols']} ({t['num_states']} states)" for t in top],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="count in the final parse")
    fig.tight_layout()
    ctx.figure(fig, "chunk_dictionary", "Most frequent merged chunks of the DSC dictionary "
               "(trained network, first seed), each decoded to symbols through the state→symbol "
               "lookup, with its count in the final parse (chunks of filler 'E' only are not "
               "shown).")


def perturbation(ctx, pert: list[dict]) -> None:
    labels = [f"{p['inject']}-state, feed {p['feed']} → {p['expect']}?" for p in pert]
    y = np.arange(len(pert))
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(pert) + 1.2))
    ax.barh(y - 0.2, [p["p_expect_injected"] for p in pert], 0.4, label="injected chunk state")
    ax.barh(y + 0.2, [p["p_expect_control"] for p in pert], 0.4, label="control: filler state")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="P(expected continuation)", xlim=(0, 1))
    # below the axes: bars reaching 1 would run under a legend inside them
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    ctx.figure(fig, "perturbation", "Perturbation: the hidden state is set to the DSC state "
               "decoded as the first symbol, the second symbol is fed, and the probability of "
               "the third is read; control injects the state decoded as the filler 'E'.")


def grafting(ctx, graft: dict) -> None:
    steps = np.asarray(graft["step"])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    names = {"none": "no grafting", "graft": "grafted training (evaluated without graft)",
             "graft_eval_grafted": "grafted training (evaluated with graft)"}
    for i, (k, label) in enumerate(names.items()):
        s = graft["summary"][k]
        m, h = np.asarray(s["mean"]), np.asarray(s["ci95"])
        ax.plot(steps, m, color=f"C{i}", label=label)
        ax.fill_between(steps, m - h, m + h, color=f"C{i}", alpha=0.2)
    ax.set(xlabel="transfer training step", ylabel="accuracy of L after ABCD",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, "grafting", "Transfer training on 'ABCDLMN' from the compositional network, "
               "with and without grafting the DSC state decoded as 'J' after 'C' (mean ± 95% "
               "t-interval over seeds); accuracy of the new transition (L after ABCD) on "
               "held-out transfer sequences.")


def unit_importance(ctx, abl: dict, name: str = "unit_importance") -> None:
    """Tasks × hidden units importance map, drawn by :func:`bablate.plot.importance_heatmap`
    (diverging around the uniform prior 0.5, so the units a task needs stand out)."""
    fig = bplot.importance_heatmap(np.asarray(abl["unit_importance"]), tasks=abl["tasks"],
                                   cmap="RdBu_r", xlabel="hidden unit", title="")
    fig.axes[0].set_ylabel("chunk task")
    fig.tight_layout()
    ctx.figure(fig, name, f"Bayesian ablation ({abl['method']}, rule {abl['rule']}): importance "
               "of each hidden unit (masked at every step) for predicting the continuation "
               "inside each chunk; 0.5 = irrelevant under the uniform prior.")
