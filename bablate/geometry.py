"""Representation geometry of a population code (coding-theory view of polysemanticity).

Marshall & Kirchner, "Understanding polysemanticity in neural networks through coding
theory" (arXiv 2401.17975), read a layer's activations as a code and ask how smooth it is:

- the eigenspectrum λ_1 ≥ λ_2 ≥ … of the activation covariance, with a power law
  λ_n ∝ n^(−α) fitted on the log-log spectrum over a stated range of ranks;
- the smooth-code criterion of Stringer et al. (2019): a code of a d_in-dimensional input
  manifold is differentiable only if α > 1 + 2/d_in;
- the participation ratio (Σλ)² / Σλ², an effective dimensionality;
- random projections r ~ N(0, I/m) of the m-dim code into 3-D along a 1-D input trajectory,
  and the "energy" Σ_t ‖r (a_{t+1} − a_t)‖²: a smooth code gives small steps whose energy
  vanishes as the trajectory is sampled more finely, a jagged code does not.

All functions are pure and jittable; jit them at the call site.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class PowerLawFit(NamedTuple):
    """Least-squares fit log λ_n = log_c − α log n over ranks n_lo..n_hi (1-based, inclusive).

    Attributes:
      alpha: fitted exponent α (positive for a decaying spectrum).
      log_c: fitted intercept (natural log).
      n_lo: first rank used.
      n_hi: last rank used.
      num_points: how many ranks entered the fit (ranks whose eigenvalue is numerically zero,
        below ``rel_floor`` times the largest, are left out).
    """

    alpha: jax.Array
    log_c: jax.Array
    n_lo: int
    n_hi: int
    num_points: jax.Array


def covariance_spectrum(acts_NxD: jax.Array) -> jax.Array:
    """Eigenvalues of the activation covariance, largest first.

    Args:
      acts_NxD: activations of N samples on D units.

    Returns:
      [D] eigenvalues in descending order, clipped at 0 (round-off can make tiny ones negative).
    """
    chex.assert_rank(acts_NxD, 2)
    centred = acts_NxD - jnp.mean(acts_NxD, axis=0, keepdims=True)
    cov = centred.T @ centred / acts_NxD.shape[0]
    eigs = jnp.linalg.eigvalsh(cov)[::-1]
    return jnp.maximum(eigs, 0.0)


def fit_power_law(eigs: jax.Array, n_lo: int = 1, n_hi: int | None = None,
                  rel_floor: float = 1e-8) -> PowerLawFit:
    """Fit λ_n ∝ n^(−α) by least squares on the log-log spectrum.

    Args:
      eigs: [D] eigenvalues in descending order.
      n_lo: first rank (1-based) of the fit range.
      n_hi: last rank (inclusive); defaults to D.
      rel_floor: eigenvalues below ``rel_floor * eigs[0]`` are treated as zero and left out
        (log 0 is undefined and a rank-deficient code has exact zeros).

    Returns:
      The fit; ``alpha`` is NaN when fewer than two ranks are usable.
    """
    chex.assert_rank(eigs, 1)
    d = eigs.shape[0]
    n_hi = d if n_hi is None else n_hi
    if not 1 <= n_lo < n_hi <= d:
        raise ValueError(f"fit range must satisfy 1 <= n_lo < n_hi <= {d}; got n_lo={n_lo}, "
                         f"n_hi={n_hi}. Pass a range of at least two ranks inside the spectrum.")
    ranks = jnp.arange(1, d + 1, dtype=eigs.dtype)
    in_range = (ranks >= n_lo) & (ranks <= n_hi)
    usable = in_range & (eigs > rel_floor * eigs[0]) & (eigs > 0)
    w = usable.astype(eigs.dtype)
    x = jnp.log(ranks)
    y = jnp.log(jnp.where(usable, eigs, 1.0))
    k = jnp.sum(w)
    x_mean = jnp.sum(w * x) / jnp.maximum(k, 1.0)
    y_mean = jnp.sum(w * y) / jnp.maximum(k, 1.0)
    sxx = jnp.sum(w * (x - x_mean) ** 2)
    sxy = jnp.sum(w * (x - x_mean) * (y - y_mean))
    slope = sxy / jnp.where(sxx > 0, sxx, 1.0)
    alpha = jnp.where(k >= 2, -slope, jnp.nan)
    log_c = y_mean - slope * x_mean
    return PowerLawFit(alpha=alpha, log_c=log_c, n_lo=n_lo, n_hi=n_hi, num_points=k)


def smooth_code_threshold(d_in: int) -> float:
    """The exponent a code of a d_in-dimensional input must exceed to be smooth: 1 + 2/d_in."""
    if d_in < 1:
        raise ValueError(f"d_in must be a positive input dimensionality; got {d_in}.")
    return 1.0 + 2.0 / d_in


def is_smooth_code(alpha: jax.Array, d_in: int) -> jax.Array:
    """Stringer et al.'s criterion α > 1 + 2/d_in (False for a NaN α)."""
    return alpha > smooth_code_threshold(d_in)


def participation_ratio(eigs: jax.Array) -> jax.Array:
    """Participation ratio (Σλ)² / Σλ² ∈ [1, D]: D for a flat spectrum, 1 for a single mode."""
    chex.assert_rank(eigs, 1)
    return jnp.sum(eigs) ** 2 / jnp.sum(eigs**2)


def random_projection(key: jax.Array, m: int, out_dim: int = 3) -> jax.Array:
    """A random projection r ~ N(0, I/m) from an m-dim code into ``out_dim`` dimensions.

    Returns:
      [out_dim, m] matrix whose entries are N(0, 1/m), so E‖r a‖² = out_dim ‖a‖² / m.
    """
    return jax.random.normal(key, (out_dim, m)) / jnp.sqrt(m)


def trajectory_energy(acts_TxD: jax.Array, proj_KxD: jax.Array) -> jax.Array:
    """Energy Σ_t ‖r (a_{t+1} − a_t)‖² of a projected trajectory.

    For a straight line a_t = a_0 + t/(T−1) · v sampled at T equal steps the energy is
    ‖r v‖² / (T − 1): it vanishes as the sampling is refined, as for any smooth code, while a
    jump in the code keeps contributing its full squared size however fine the sampling.

    Args:
      acts_TxD: code along the trajectory, T points in order.
      proj_KxD: projection (e.g. from :func:`random_projection`).

    Returns:
      Scalar energy.
    """
    chex.assert_rank(acts_TxD, 2)
    chex.assert_rank(proj_KxD, 2)
    chex.assert_equal(acts_TxD.shape[1], proj_KxD.shape[1])
    steps = jnp.diff(acts_TxD, axis=0) @ proj_KxD.T
    return jnp.sum(steps**2)


def projected_energy(key: jax.Array, acts_TxD: jax.Array, num_projections: int = 16,
                     out_dim: int = 3) -> jax.Array:
    """Mean :func:`trajectory_energy` over ``num_projections`` independent random projections."""
    keys = jax.random.split(key, num_projections)
    projs = jax.vmap(lambda k: random_projection(k, acts_TxD.shape[1], out_dim))(keys)
    return jnp.mean(jax.vmap(lambda p: trajectory_energy(acts_TxD, p))(projs))
