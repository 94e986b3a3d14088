"""Step 6: the scalar headline numbers of results.json (replicate means at the densest and
sparsest densities, and the basis control's rotated means there)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import StudyConfig


def summary_numbers(records: list[dict[str, Any]], cfg: StudyConfig,
                    rotation_control: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scalar headline numbers (replicate means at the densest and sparsest settings; with the
    basis control, ``<metric>_rotated_<end>``: the mean over rotations, beside the neuron
    basis's ``<metric>_<end>``)."""
    dense, sparse = max(cfg.densities), min(cfg.densities)
    out: dict[str, Any] = {}
    for name, d in (("dense", dense), ("sparsest", sparse)):
        rs = [r for r in records if r["density"] == d]
        out[f"features_represented_{name}"] = float(np.mean([r["features_represented"]
                                                             for r in rs]))
        out[f"features_represented_at_{name}"] = {
            t: float(np.mean([r["features_represented_at"][t] for r in rs]))
            for t in rs[0]["features_represented_at"]}
        out[f"dims_per_feature_{name}"] = float(np.mean([r["dims_per_feature"] for r in rs]))
        for key in ("polysemanticity_mean", "tasks_served_mean"):
            vals = [r[key] for r in rs if r[key] is not None and np.isfinite(r[key])]
            if vals:
                out[f"{key.removesuffix('_mean')}_{name}"] = float(np.nanmean(vals))
        rec = (rotation_control or {}).get("by_density", {}).get(f"{d:g}")
        for metric in ("polysemanticity", "distributedness"):
            if rec:
                out[f"{metric}_rotated_{name}"] = rec[metric]["rotated_mean"]
    return out
