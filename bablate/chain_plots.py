"""Figures that check MCMC chains: trace plots and rank plots that are right for 0/1 draws.

A rank plot ranks every draw of one unit over all chains and draws, per chain, a histogram of
its draws' ranks: when the chains sample one distribution each chain holds a random share of
the ranks and its histogram is flat. A mask unit's draws are 0 or 1, so nearly all draws tie;
ranking ties by their average rank (arviz's ``plot_rank``, which also smooths integer draws by
a spline) puts every 0 at one rank and every 1 at another, and even identical, perfectly mixed
chains show a spike and an empty bin. :func:`rank` breaks ties at random instead (seeded, so a
figure is reproducible): for exchangeable draws every order of the ties is then equally likely,
a chain's ranks are a uniformly random subset of all ranks, and its count in a bin follows a
hypergeometric law. The figure draws the band in which all bars of agreeing chains of
independent draws lie together with 95 % probability (:func:`uniform_band`).

:func:`trace` is arviz's trace plot (the ``arviz`` extra).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from numpyro.diagnostics import effective_sample_size
from scipy import stats

from bablate.inference.posterior import Posterior, import_arviz

BAND_LEVEL = 0.95


def tie_broken_ranks(draws: np.ndarray, seed: int = 0) -> np.ndarray:
    """Ranks ``0 … N−1`` of the draws ``[chains, draws]`` over all chains, ties in an order
    drawn at random from ``seed`` (every order equally likely)."""
    flat = np.asarray(draws).ravel()
    jitter = np.random.default_rng(seed).random(flat.size)
    order = np.lexsort((jitter, flat))  # by value, then by the random key among ties
    ranks = np.empty(flat.size, np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(np.shape(draws))


def _bin_edges(total: int, bins: int) -> np.ndarray:
    return np.linspace(0, total, bins + 1)


def rank_counts(draws: np.ndarray, bins: int, seed: int = 0) -> np.ndarray:
    """``[chains, bins]``: how many of each chain's draws have a rank (:func:`tie_broken_ranks`)
    in each of ``bins`` equal ranges of ``0 … N−1``."""
    ranks = tie_broken_ranks(draws, seed)
    edges = _bin_edges(ranks.size, bins)
    return np.stack([np.histogram(row, edges)[0] for row in ranks])


def uniform_band(num_chains: int, num_draws: int, bins: int, level: float = BAND_LEVEL
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``, each ``[bins]``: the counts between which all ``num_chains · bins``
    bars of :func:`rank_counts` lie together with probability at least ``level`` when every
    draw is independent and the chains sample one distribution (each bar is hypergeometric;
    Bonferroni over the bars)."""
    total = num_chains * num_draws
    sizes = np.histogram(np.arange(total), _bin_edges(total, bins))[0]  # ranks per bin
    alpha = (1.0 - level) / (num_chains * bins)
    law = stats.hypergeom(total, sizes, num_draws)
    return law.ppf(alpha / 2), law.isf(alpha / 2)


def default_bins(num_draws: int) -> int:
    """arviz's rank-plot default: twice Sturges' rule, 2·⌈log2 S⌉ + 1."""
    return int(2 * math.ceil(math.log2(max(num_draws, 2))) + 1)


def _check_chains(post: Posterior, kind: str) -> None:
    if post.samples is None or not post.method.startswith("mcmc"):
        raise ValueError(f"{kind} plots need MCMC chains; the posterior of {post.task!r} is "
                         f"{post.method}.")


def _diagnostic_units(post: Posterior, units: Sequence[int] | None, k: int) -> list[int]:
    """The units to show: those given, else the ``k`` moving units with the smallest ESS (the
    ones most likely to show a problem)."""
    if units is not None:
        return [int(u) for u in units]
    x = post.chains().astype(np.float64)
    ess = np.asarray(effective_sample_size(x), np.float64)
    ess = np.where(np.isfinite(ess), ess, np.inf)  # units that never move: last
    return sorted(int(u) for u in np.argsort(ess, kind="stable")[:k])


def rank(post: Posterior, units: Sequence[int] | None = None, k: int = 4, *,
         bins: int | None = None, seed: int = 0) -> Figure:
    """Rank plot of ``units`` (default: the ``k`` with the lowest ESS) with ties broken at
    random: per unit, one histogram of ranks per chain, with the 95 % band of chains that agree.

    Args:
      post: an MCMC posterior.
      units: the units to show.
      k: how many units to show when ``units`` is None.
      bins: histogram bins (default: :func:`default_bins` of the draws per chain).
      seed: the seed of the tie-breaking order (the same seed draws the same figure).

    Returns:
      The figure; each chain's bars sit on their own baseline, with the expected count
      (dashed) and the band (grey) in which all bars lie together with 95 % probability when
      the chains agree and their draws are independent (autocorrelated chains that agree
      spread somewhat wider).
    """
    _check_chains(post, "rank")
    x = post.chains()
    chains, draws = x.shape[:2]
    chosen = _diagnostic_units(post, units, k)
    bins = default_bins(draws) if bins is None else int(bins)
    if bins < 1:
        raise ValueError(f"rank: bins must be >= 1, got {bins}.")
    low, high = uniform_band(chains, draws, bins)
    edges = _bin_edges(chains * draws, bins)
    centres, width = (edges[1:] + edges[:-1]) / 2, edges[1] - edges[0]
    cols = min(len(chosen), 2)
    rows = -(-len(chosen) // cols)
    fig = Figure(figsize=(10, 0.5 * chains * rows + 1.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, unit in zip(axes, chosen, strict=False):
        counts = rank_counts(x[:, :, unit], bins, seed=seed + unit)
        step = 1.15 * max(float(high.max()), float(counts.max()))
        for c in range(chains):
            base = c * step
            ax.bar(centres, counts[c], width=width, bottom=base, color=f"C{c % 10}",
                   edgecolor="white", lw=0.5)
            # over the bars, translucent, so a bar's top shows inside or outside it
            ax.fill_between(edges, base + np.append(low, low[-1]),
                            base + np.append(high, high[-1]), step="post", color="0.3",
                            alpha=0.3, lw=0, zorder=3)
            ax.hlines(base + draws / bins, edges[0], edges[-1], colors="k", linestyles="--",
                      lw=0.8)
        ax.set_yticks([c * step for c in range(chains)], [str(c) for c in range(chains)])
        ax.set_ylabel("chain")
        ax.set_xlabel("rank over all chains")
        ax.set_title(f"unit {unit}", fontsize=9)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    fig.suptitle(f"{post.task}: ranks of 0/1 draws, ties broken at random (seed {seed}); "
                 f"flat and inside the grey {BAND_LEVEL:.0%} band when the {chains} chains "
                 "agree", fontsize=9)
    return fig


def rank_caption(task: str) -> str:
    """What a :func:`rank` figure draws, in words, for a report's caption."""
    return (f"Rank plot of {task} (the units with the lowest ESS): the ranks of the 0/1 draws "
            "over all chains, ties broken at random (seed 0), one histogram per chain; flat "
            f"and inside the grey {BAND_LEVEL:.0%} band when the chains agree (the band "
            "assumes independent draws: autocorrelated chains that agree spread wider).")


def trace(post: Posterior, units: Sequence[int] | None = None, k: int = 4) -> Figure:
    """arviz's trace plot of the draws of ``units`` (default: the ``k`` with the lowest ESS)."""
    _check_chains(post, "trace")
    az = import_arviz()
    idata = post.to_arviz()
    chosen = _diagnostic_units(post, units, k)
    import matplotlib.pyplot as plt  # arviz draws on pyplot axes

    n = len(chosen)
    with warnings.catch_warnings():
        # arviz 0.2x calls a matplotlib helper that matplotlib >= 3.11 deprecates (not ours).
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        fig, axes = plt.subplots(n, 2, figsize=(10, 1.9 * n + 0.6), squeeze=False,
                                 layout="constrained")
        az.plot_trace(idata, var_names=["mask"], coords={"unit": chosen}, compact=False,
                      axes=axes)
    fig.suptitle(f"{post.task}: trace of units {chosen} ({post.num_chains or 1} chains)")
    return fig
