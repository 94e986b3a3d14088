"""Step 2: weight geometry (‖W_i‖, features represented, D_i, dimensions per feature) and code
geometry (eigenspectrum α, participation ratio, projection energy) of one trained instance."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bablate.models import toy
from bablate.testbeds import toy_geometry

from .config import StudyConfig

# ‖W_i‖ thresholds for "feature i represented". The paper's bars show no cut-off; 0.5 is the
# geometry module's default, and at the sparse end the count depends on it (quick, 1−S = 0.001:
# 16–19 of 20 features above 0.1–0.25, ~13 above 0.5), so all three are reported.
REPRESENTED_THRESHOLDS = (0.1, 0.25, 0.5)


def features_represented_at(norms: np.ndarray) -> dict[str, int]:
    """Number of features with ‖W_i‖ above each threshold, keyed by the threshold as text."""
    norms = np.asarray(norms)
    return {f"{t:g}": int((norms > t).sum()) for t in REPRESENTED_THRESHOLDS}


def instance_record(cfg: StudyConfig, params: toy.Params, density: float, replicate: int,
                    final_loss: float, key: jax.Array) -> dict[str, Any]:
    """The results record of one instance: its setting, weight and code geometry.

    The ablation entries are None here; `ablation.ablate_instance` fills them for the
    instances it ablates.
    """
    spec, geo = cfg.spec, cfg.geometry
    wg = toy_geometry.weight_geometry(np.asarray(spec.encoder_weights(params)))
    cg = toy_geometry.code_geometry(spec, params, key, density, geo.num_samples,
                                    geo.num_points, geo.num_projections)
    return {
        "setting": cfg.setting, "model": spec.kind, "density": density,
        "seed": cfg.seed, "replicate": replicate, "n_features": spec.n_features,
        "m_hidden": spec.m_hidden, "final_loss": final_loss,
        "features_represented": wg.features_represented,
        "features_represented_at": features_represented_at(wg.norms),
        "dims_per_feature": wg.dims_per_feature,
        "coding_theory_dims_per_feature": toy_geometry.coding_theory_dims_per_feature(density),
        "feature_norms": wg.norms.tolist(),
        "feature_dimensionality": wg.feature_dimensionality.tolist(),
        "superposition": wg.superposition.tolist(),
        "alpha": cg.alpha, "alpha_fit_range": list(cg.fit_range),
        "smooth_code_threshold": cg.smooth_threshold,
        "smooth_code": bool(cg.alpha > cg.smooth_threshold),
        "participation_ratio": cg.participation_ratio,
        "eigenvalues": cg.eigenvalues.tolist(),
        "energy_ramp_hidden": cg.energy_ramp, "energy_circle_hidden": cg.energy_circle,
        "energy_ramp_output": cg.energy_ramp_output,
        "energy_circle_output": cg.energy_circle_output,
        "polysemanticity_mean": None, "distributedness_mean": None,
        "total_correlation_mean": None, "unit_importance": None, "tasks_served_mean": None,
    }
