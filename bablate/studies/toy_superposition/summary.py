"""Step 5: the scalar headline numbers of results.json (replicate means at the densest and
sparsest densities)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import StudyConfig


def summary_numbers(records: list[dict[str, Any]], cfg: StudyConfig) -> dict[str, Any]:
    """Scalar headline numbers (replicate means at the densest and sparsest settings)."""
    dense, sparse = max(cfg.densities), min(cfg.densities)
    out = {}
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
    return out
