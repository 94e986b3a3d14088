"""Synthetic count sites: AMDs whose exact answer is known at any number of units.

A count site has d units, of which a few disjoint *groups* matter. Its "network" answers n
examples and gets k(c) of them right, where c_g is how many units of group g the mask keeps;
every other unit is irrelevant. The AMD then depends on a mask only through the counts, and
under a prior that keeps each unit with probability p the counts are independent binomials,
c_g ~ Binomial(s_g, p). The normaliser, every marginal and the entropy are sums over the
Π_g (s_g + 1) count vectors with binomial weights (:func:`exact_answer`): exact at d = 270 or
d = 1536, where enumeration of 2^d masks is out of reach. Samplers are calibrated on them at
the scale of the LLM sites.

The network is a mask-aware site: the example scores are κ · (k(c) − j − ½) for example j, so
that exactly k(c) examples are right at integer counts; k is interpolated multilinearly between
counts so that the smooth surrogate (top-1's softmax probability) has gradients, which the
gradient-informed sampler needs.

    spec = near_prior()                     # d = 270, three groups
    task = count_task(spec)
    answer = exact_answer(spec, task)       # marginals, log Z, H(q) in bits
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax.numpy as jnp
import numpy as np

import bablate as bb

# Score scale: the gap between the right and the wrong class per unit of k − j − ½.
_KAPPA = 4.0


@dataclasses.dataclass(frozen=True)
class CountSpec:
    """A count site.

    Attributes:
      name: for task names and reports.
      num_units: d.
      groups: the units of each group (disjoint), ``[G]`` tuples of unit indices.
      num_examples: n.
      correct: ``[s_1 + 1, ..., s_G + 1]`` integers in [0, n]: k(c), the examples right at
        group counts c.
    """

    name: str
    num_units: int
    groups: tuple[tuple[int, ...], ...]
    num_examples: int
    correct: np.ndarray

    def __post_init__(self):
        sizes = tuple(len(g) for g in self.groups)
        units = [u for g in self.groups for u in g]
        if len(set(units)) != len(units) or min(units) < 0 or max(units) >= self.num_units:
            raise ValueError(f"count site {self.name!r}: groups must be disjoint units in "
                             f"[0, {self.num_units}).")
        if self.correct.shape != tuple(s + 1 for s in sizes):
            raise ValueError(f"count site {self.name!r}: correct must have shape "
                             f"{tuple(s + 1 for s in sizes)} (group sizes + 1); got "
                             f"{self.correct.shape}.")
        if self.correct.min() < 0 or self.correct.max() > self.num_examples:
            raise ValueError(f"count site {self.name!r}: correct counts must lie in "
                             f"[0, {self.num_examples}].")

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(g) for g in self.groups)


def _membership(spec: CountSpec) -> np.ndarray:
    """``[d, G]`` one-hot group membership."""
    out = np.zeros((spec.num_units, len(spec.groups)), np.float32)
    for g, units in enumerate(spec.groups):
        out[list(units), g] = 1.0
    return out


def count_task(spec: CountSpec, name: str | None = None) -> bb.Task:
    """The top-1 task of a count site (its n examples all have target class 0)."""
    member = jnp.asarray(_membership(spec))
    table = jnp.asarray(spec.correct, jnp.float32)
    sizes = np.asarray(spec.sizes)
    corners = [np.asarray(c) for c in itertools.product((0, 1), repeat=len(sizes))]

    def apply_mask(mask, inputs):
        counts = mask @ member  # [G]
        base = jnp.clip(jnp.floor(counts), 0, jnp.asarray(np.maximum(sizes - 1, 0)))
        frac = counts - base
        k = 0.0
        for corner in corners:  # multilinear interpolation of k between integer counts
            weight = jnp.prod(jnp.where(corner == 1, frac, 1.0 - frac))
            idx = tuple((base + corner).astype(jnp.int32))
            k = k + weight * table[idx]
        margin = _KAPPA * (k - inputs - 0.5)  # [n]: example j is right iff j < k
        return jnp.stack([margin, -margin], axis=-1)

    site = bb.Site.mask_aware(f"{spec.name} units", spec.num_units, apply_mask)
    inputs = jnp.arange(spec.num_examples, dtype=jnp.float32)
    rule = bb.rules.top1(np.zeros(spec.num_examples, np.int32))
    return bb.Task.build(site, inputs, rule, name=name or spec.name, check_intact=False)


@dataclasses.dataclass(frozen=True)
class ExactAnswer:
    """The exact AMD of a count site: ``marginals`` ``[d]``, ``log_z`` (of prior · odds^β)
    and ``entropy_bits`` H(q)."""

    marginals: np.ndarray
    log_z: float
    entropy_bits: float


def exact_answer(spec: CountSpec, task: bb.Task, prior: float = 0.5, beta: float = 1.0
                 ) -> ExactAnswer:
    """The exact AMD of ``task`` (:func:`count_task` of ``spec``) under a scalar prior.

    The log-odds of each count vector are read from the task itself, at one mask per count
    vector (each group's first c_g units kept, every irrelevant unit kept), so the answer is
    that of the likelihood the samplers see, float32 rounding included.
    """
    sizes = spec.sizes
    counts = np.indices(tuple(s + 1 for s in sizes)).reshape(len(sizes), -1).T  # [V, G]
    masks = np.ones((counts.shape[0], spec.num_units), np.float32)
    for g, units in enumerate(spec.groups):
        idx = np.asarray(units)
        masks[:, idx] = (np.arange(len(idx))[None, :] < counts[:, g:g + 1])
    log_odds = np.asarray(task.log_odds(masks), np.float64)
    s = np.asarray(sizes)[None, :]
    lgamma = np.vectorize(math.lgamma)
    log_binom = lgamma(s + 1) - lgamma(counts + 1) - lgamma(s - counts + 1)
    log_weight = (log_binom + counts * np.log(prior) + (s - counts) * np.log1p(-prior)).sum(1)
    log_q = log_weight + beta * log_odds
    log_z = float(np.logaddexp.reduce(log_q))
    q = np.exp(log_q - log_z)
    marginals = np.full(spec.num_units, prior, np.float64)
    for g, units in enumerate(spec.groups):
        marginals[list(units)] = q @ counts[:, g] / len(units)
    # H(q) = log Z − E_q[log prior(m)] − β E_q[log-odds]; log prior is linear in the mask.
    mean_log_prior = float(np.sum(marginals * np.log(prior) + (1 - marginals) * np.log1p(-prior)))
    entropy = (log_z - mean_log_prior - beta * float(q @ log_odds)) / np.log(2.0)
    return ExactAnswer(marginals=marginals, log_z=log_z, entropy_bits=float(entropy))


def _groups(sizes: tuple[int, ...], start: int = 0) -> tuple[tuple[int, ...], ...]:
    out, u = [], start
    for s in sizes:
        out.append(tuple(range(u, u + s)))
        u += s
    return tuple(out)


def near_prior(num_units: int = 270, sizes: tuple[int, ...] = (12, 12, 12),
               num_examples: int = 24, threshold: float = 0.64, slope: float = 60.0
               ) -> CountSpec:
    """A task most masks of the prior fail, performed by masks that keep more than
    ``threshold`` of the group units: k = n · σ(slope · (mean kept share − threshold)),
    rounded. Like SmolLM2's head sites: the AMD moves each group unit's marginal by a
    moderate amount, and most of the prior's draws carry the least weight."""
    grids = np.meshgrid(*[np.arange(s + 1) / s for s in sizes], indexing="ij")
    share = np.mean(grids, axis=0)
    correct = np.rint(num_examples / (1 + np.exp(-slope * (share - threshold))))
    return CountSpec("near prior", num_units, _groups(sizes), num_examples,
                     correct.astype(np.int64))


def bimodal(num_units: int = 270, size: int = 5, num_examples: int = 100,
            second: float = 0.9) -> CountSpec:
    """Two separated modes far from the prior: the network is right on every example when
    group A is all kept and group B all ablated, on ``second`` of them in the mirror image,
    and on none otherwise. Each mode has prior mass 4^−size; the AMD puts most of its mass on
    them, with A's units kept in one mode and ablated in the other."""
    correct = np.zeros((size + 1, size + 1), np.int64)
    correct[size, 0] = num_examples
    correct[0, size] = int(round(second * num_examples))
    return CountSpec("bimodal", num_units, _groups((size, size)), num_examples, correct)
