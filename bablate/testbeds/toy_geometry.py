"""Geometry of a trained toy model of superposition (Elhage et al. 2022, §§2–4).

Weight geometry, from the m×n embedding W whose column W_i embeds feature i:

- ‖W_i‖, and "represented" features ‖W_i‖ > 0.5;
- feature dimensionality D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)² (1 = a dedicated dimension, 1/2 = an
  antipodal pair, 2/5 = a pentagon, 0 = not represented);
- superposition of feature i: Σ_{j≠i} (Ŵ_i·W_j)²;
- dimensions per feature m / ‖W‖_F², which the paper finds sticking at 1/2 over a range of
  sparsities, and which Marshall & Kirchner predict to approach 1 − S.

Code geometry, from the hidden activations (:mod:`bablate.geometry`): eigenspectrum exponent α,
participation ratio and random-projection energy along 1-D input trajectories.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

from bablate import geometry
from bablate.models import toy

REPRESENTED_NORM = 0.5



@dataclasses.dataclass(frozen=True)
class WeightGeometry:
    """Per-feature and whole-model weight geometry of one instance (numpy, JSON-ready)."""

    norms: np.ndarray
    features_represented: int
    feature_dimensionality: np.ndarray
    superposition: np.ndarray
    dims_per_feature: float
    gram: np.ndarray


def weight_geometry(W_MxN: np.ndarray, eps: float = 1e-12) -> WeightGeometry:
    """Geometry of an embedding W (m×n, column i = feature i)."""
    W = np.asarray(W_MxN, np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D m×n matrix; got shape {W.shape}.")
    m = W.shape[0]
    norms = np.linalg.norm(W, axis=0)
    unit = W / np.maximum(norms, eps)[None, :]
    proj_sq = (unit.T @ W) ** 2  # [i, j] = (Ŵ_i·W_j)²
    denom = proj_sq.sum(axis=1)
    dim = np.where(denom > eps, norms**2 / np.maximum(denom, eps), 0.0)
    superposition = denom - np.diag(proj_sq)
    fro_sq = float((W**2).sum())
    return WeightGeometry(
        norms=norms,
        features_represented=int((norms > REPRESENTED_NORM).sum()),
        feature_dimensionality=dim,
        superposition=superposition,
        dims_per_feature=m / fro_sq if fro_sq > eps else float("inf"),
        gram=W.T @ W)


def coding_theory_dims_per_feature(density: float) -> float:
    """Marshall & Kirchner's large-precision prediction for dimensions per feature: ≈ 1 − S."""
    return float(density)


@dataclasses.dataclass(frozen=True)
class CodeGeometry:
    """Spectrum and smoothness of one instance's hidden code."""

    eigenvalues: np.ndarray
    alpha: float
    fit_range: tuple[int, int]
    smooth_threshold: float
    participation_ratio: float
    energy_ramp: float
    energy_circle: float
    energy_ramp_output: float
    energy_circle_output: float


def ramp_trajectory(n: int, feature: int, num_points: int) -> jax.Array:
    """Feature ``feature`` ramped 0 → 1, all others 0: ``[T, n]``."""
    t = jnp.linspace(0.0, 1.0, num_points)
    return jnp.zeros((num_points, n)).at[:, feature].set(t)


def circle_trajectory(n: int, features: tuple[int, int], num_points: int,
                      signed: bool = False) -> jax.Array:
    """A closed circle in the plane of two features, inside the data's range: ``[T, n]``.

    Centre (0.5, 0.5) and radius 0.5 for features in [0, 1]; centre 0 and radius 1 when
    features are signed ([−1, 1]).
    """
    theta = jnp.linspace(0.0, 2.0 * jnp.pi, num_points)
    c, r = (0.0, 1.0) if signed else (0.5, 0.5)
    x = jnp.zeros((num_points, n))
    x = x.at[:, features[0]].set(c + r * jnp.cos(theta))
    return x.at[:, features[1]].set(c + r * jnp.sin(theta))


@functools.partial(jax.jit, static_argnames=("spec", "num_samples", "num_points",
                                             "num_projections"))
def _code_arrays(spec: toy.ToySpec, params: toy.Params, key: jax.Array, density: jax.Array,
                 num_samples: int, num_points: int, num_projections: int) -> dict:
    """Everything :func:`code_geometry` measures, in one compiled program per setting."""
    model, variables = spec.model(), {"params": params}
    # flax's apply without mutable= returns the method's output alone (its type allows a pair).
    encode = lambda x: cast(jax.Array, model.apply(variables, x, method="encode"))
    decode = lambda h: cast(jax.Array, model.apply(variables, h, method="decode"))
    k_x, k1, k2, k3, k4 = jax.random.split(key, 5)
    x = toy.sample_features(k_x, num_samples, spec.n_features, density, spec.signed)
    eigs = geometry.covariance_spectrum(encode(x))
    ramp = ramp_trajectory(spec.n_features, 0, num_points)
    circle = circle_trajectory(spec.n_features, (0, 1), num_points, spec.signed)
    h_ramp, h_circle = encode(ramp), encode(circle)
    energy = lambda k, a: geometry.projected_energy(k, a, num_projections)
    out = {"eigs": eigs, "pr": geometry.participation_ratio(eigs),
           "ramp": energy(k1, h_ramp), "circle": energy(k2, h_circle),
           "ramp_out": energy(k3, decode(h_ramp)), "circle_out": energy(k4, decode(h_circle))}
    if spec.m_hidden >= 2:
        out["alpha"] = geometry.fit_power_law(eigs, 1, spec.m_hidden).alpha
    return out


def code_geometry(spec: toy.ToySpec, params: toy.Params, key: jax.Array, density: float,
                  num_samples: int = 8192, num_points: int = 101,
                  num_projections: int = 32) -> CodeGeometry:
    """Spectrum, α (fit over ranks 1..m), participation ratio and energies of the hidden code.

    Args:
      spec: the toy setting.
      params: one instance's parameters.
      key: PRNG key for the data sample and the random projections.
      density: feature density 1 − S of the data the spectrum is taken on.
      num_samples: samples of the data distribution for the covariance.
      num_points: T, points per trajectory (ramp of feature 0 from 0 to 1; circle in the plane
        of features 0 and 1).
      num_projections: random 3-D projections averaged per energy.
    """
    out = jax.tree.map(np.asarray, _code_arrays(spec, params, key, jnp.float32(density),
                                                num_samples, num_points, num_projections))
    return CodeGeometry(
        eigenvalues=out["eigs"], alpha=float(out.get("alpha", np.nan)),
        fit_range=(1, spec.m_hidden),
        smooth_threshold=geometry.smooth_code_threshold(spec.n_features),
        participation_ratio=float(out["pr"]), energy_ramp=float(out["ramp"]),
        energy_circle=float(out["circle"]), energy_ramp_output=float(out["ramp_out"]),
        energy_circle_output=float(out["circle_out"]))
