"""Intervals of the study's comparisons: a t-interval over seeds, and a percentile bootstrap
over hidden units for the rank agreement of two per-unit scores across chunks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

LEVEL = 0.95  # every interval of the study
RESAMPLES = 2000  # bootstrap resamples


def mean_ci(x_SxN: np.ndarray, level: float = LEVEL) -> dict:
    """Mean and t-interval half-width over the first axis (seeds).

    Args:
      x_SxN: values [S, ...], one row per seed.
      level: coverage of the interval.

    Returns:
      {"mean": [...], "ci95": [...]}: the mean and the half-width t_{(1+level)/2, S-1} · sd /
      √S (0 for one seed, where no spread is measured).
    """
    x = np.asarray(x_SxN, np.float64)
    n = x.shape[0]
    mean = x.mean(0)
    half = (stats.t.ppf((1 + level) / 2, n - 1) * x.std(0, ddof=1) / np.sqrt(n) if n > 1
            else np.zeros_like(mean))
    return {"mean": mean.tolist(), "ci95": np.asarray(half).tolist()}


def mean_interval(x_S: ArrayLike) -> dict:
    """Mean of values over seeds with its t-interval → {"mean", "lo", "hi", "n"}; lo and hi
    are NaN for one seed (no spread measured)."""
    x = np.asarray(x_S, np.float64).ravel()
    ci = mean_ci(x)
    m = ci["mean"]
    h = ci["ci95"] if x.size > 1 else float("nan")
    return {"mean": m, "lo": m - h, "hi": m + h, "n": int(x.size)}


def paired_difference(a_S: ArrayLike, b_S: ArrayLike) -> dict:
    """Mean of a − b over paired seeds with its t-interval (:func:`mean_interval`)."""
    return mean_interval(np.asarray(a_S, np.float64) - np.asarray(b_S, np.float64))


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n: int,
                       rng: np.random.Generator, num: int = RESAMPLES,
                       level: float = LEVEL) -> tuple[float, float, int]:
    """Percentile bootstrap interval of ``statistic`` over ``n`` exchangeable items.

    Args:
      statistic: resamples int [num, n] (indices, with repeats) → the statistic of each [num];
        NaN where it is undefined on a resample (such resamples are left out).
      n: number of items.
      rng: numpy generator of the resamples.
      num: number of resamples.
      level: coverage of the interval.

    Returns:
      (lo, hi, resamples used); (NaN, NaN, 0) when no resample gives a finite value.
    """
    vals = np.asarray(statistic(rng.integers(0, n, size=(num, n))), np.float64)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return float("nan"), float("nan"), 0
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi), int(vals.size)


def row_spearman(x_KxD: np.ndarray, y_KxD: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row pair (ties get average ranks) → [K]; NaN for a
    row where x or y is constant."""
    rx = stats.rankdata(np.asarray(x_KxD, np.float64), axis=-1)
    ry = stats.rankdata(np.asarray(y_KxD, np.float64), axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def nanmean(x, axis: int | None = None):
    """Mean over finite values (along ``axis``); NaN (null in results.json) where there are
    none."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    count = ok.sum(axis)
    mean = np.where(ok, x, 0.0).sum(axis) / np.maximum(count, 1)
    mean = np.where(count > 0, mean, np.nan)
    return float(mean) if axis is None else mean


def rank_agreement(x_KxD: np.ndarray, y_KxD: np.ndarray, rng: np.random.Generator,
                   num: int = RESAMPLES) -> dict:
    """Mean over chunks (rows) of the Spearman ρ between two per-unit scores, with a percentile
    bootstrap interval that resamples the D units (the same resample for every chunk, since one
    unit serves them all).

    Args:
      x_KxD, y_KxD: scores of D units for K chunks (e.g. AMD importance and DSC information).
      rng: numpy generator of the resamples.
      num: number of resamples.

    Returns:
      {"rho", "lo", "hi", "per_chunk", "resamples"}; rho is NaN (and so are lo, hi) when every
      chunk has a constant score.
    """
    x = np.asarray(x_KxD, np.float64)
    y = np.asarray(y_KxD, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"rank_agreement needs two [chunks, units] arrays of one shape; got "
                         f"{x.shape} and {y.shape}.")
    per_chunk = row_spearman(x, y)
    rho = nanmean(per_chunk)
    # x[:, idx] is [K, num, D]: every resample's ρ per chunk at once, then the chunk mean.
    lo, hi, used = (bootstrap_interval(
        lambda idx: nanmean(row_spearman(x[:, idx], y[:, idx]), axis=0), x.shape[1], rng, num)
                    if np.isfinite(rho) else (float("nan"), float("nan"), 0))
    return {"rho": rho, "lo": lo, "hi": hi, "per_chunk": per_chunk.tolist(), "resamples": used}
