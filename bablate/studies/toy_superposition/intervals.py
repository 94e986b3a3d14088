"""The intervals and the test behind the toy report's comparisons: a mean over seeds, a
difference of two means (over seeds or over rotations), and where a value ranks among random
rotations."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval over ``n`` values (``lo = hi = value`` when n < 2)."""

    value: float
    lo: float
    hi: float
    n: int

    def text(self, digits: int = 3) -> str:
        """``value [lo, hi]``, or the value alone when there is no interval."""
        if not np.isfinite(self.lo) or self.lo == self.hi:
            return f"{self.value:.{digits}g}"
        return f"{self.value:.{digits}g} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"

    def clip(self, low: float, high: float) -> Interval:
        """The interval cut to the values the quantity can take (a count of features, say)."""
        return dataclasses.replace(self, lo=min(max(self.lo, low), high),
                                   hi=max(min(self.hi, high), low))

    @property
    def sign(self) -> int:
        """+1 or −1 when the interval excludes 0 on that side, else 0."""
        return 1 if self.lo > 0 else -1 if self.hi < 0 else 0


def mean_interval(values) -> Interval:
    """The mean and its t-interval."""
    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, mean, mean, int(x.size))
    half = stats.t.ppf(0.5 + LEVEL / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size))


def difference_interval(a, b) -> Interval:
    """mean(a) − mean(b) and its Welch t-interval (unequal variances)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(diff, diff, diff, int(min(a.size, b.size)))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = np.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, int(min(a.size, b.size)))
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    return Interval(diff, diff - half, diff + half, int(min(a.size, b.size)))


def extreme_rank_p(above: int, below: int, num_sets: int, num_rotations: int) -> float:
    """Two-sided p-value that a value is outside all ``num_rotations`` rotated values this often.

    If the neuron basis were one more random basis, its value would be the largest of
    ``num_rotations`` + 1 exchangeable values with chance 1/(k + 1), and the smallest with the
    same chance, independently for each of ``num_sets`` instances; ``above`` and ``below`` count
    the instances where it was.
    """
    chance = 1.0 / (num_rotations + 1)
    tail = stats.binom.sf(max(above, below) - 1, num_sets, chance)
    return float(min(1.0, 2 * tail))
