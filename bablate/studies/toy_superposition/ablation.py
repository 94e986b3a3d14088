"""Step 3: Bayesian ablation of the hidden units, one "feature i reconstructed" task per feature,
and the check of exact marginals against MCMC."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

import bablate as bb
from bablate.models import toy
from bablate.testbeds import toy as toy_testbed

from .config import Ablation

INFORMATIVE_BITS = 0.1  # tasks carrying less information are left out of per-task means


@dataclasses.dataclass(frozen=True)
class InstanceAblation:
    """The ablation of one instance: its results values, and the tasks and posteriors behind
    them (kept for the MCMC check, never written to results)."""

    values: dict[str, Any]
    tasks: list[bb.Task]
    posts: list[bb.Posterior]


def ablated_density_indices(num_densities: int, ab: Ablation) -> set[int]:
    """Indices of the densities whose instances are ablated: all, or ``ab.num_densities``
    spread evenly from the densest to the sparsest."""
    n_abl = num_densities if ab.num_densities <= 0 else min(ab.num_densities, num_densities)
    return set(np.linspace(0, num_densities - 1, n_abl).round().astype(int).tolist())


def ablate_instance(spec: toy.ToySpec, params: toy.Params, density: float, ab: Ablation,
                    key: jax.Array) -> InstanceAblation:
    """AMDs of every ablated feature task on one instance, and their metrics."""
    features = list(range(0, spec.n_features, ab.feature_stride))
    posts, metrics, tasks, intact = [], [], [], []
    for i in features:
        task, p_intact = toy_testbed.feature_task(
            spec, params, density, i, jax.random.fold_in(key, i), epsilon=ab.epsilon,
            num_positive=ab.num_positive, num_negative=ab.num_negative)
        intact.append(p_intact)
        post = bb.infer(task, method=ab.method)
        posts.append(post)
        tasks.append(task)
        metrics.append(bb.metrics.summarize(post))
    poly = bb.metrics.polysemanticity(posts)
    info = np.array([m.task_information for m in metrics])
    keep = info >= INFORMATIVE_BITS
    mean_of = lambda vals: float(np.nanmean(np.asarray(vals)[keep])) if keep.any() else float("nan")
    values = {
        "features": features,
        "unit_importance": np.stack([p.marginals for p in posts]),
        "task_information": info,
        "distributedness": np.array([m.distributedness for m in metrics]),
        "total_correlation": np.array([m.total_correlation for m in metrics]),
        "effective_tasks": poly.effective_tasks,
        "unit_task_mi": poly.mutual_information,
        "polysemanticity_mean": poly.mean,
        # How many feature tasks each unit carries ≥ INFORMATIVE_BITS for (a count, beside
        # the information-weighted effective number above).
        "tasks_served": (poly.information >= INFORMATIVE_BITS).sum(axis=0),
        "tasks_served_mean": float((poly.information >= INFORMATIVE_BITS).sum(axis=0).mean()),
        "distributedness_mean": mean_of([m.distributedness for m in metrics]),
        "total_correlation_mean": mean_of([m.total_correlation for m in metrics]),
        "informative_tasks": int(keep.sum()),
        "intact_p_correct": np.array(intact),
        "intact_fails": int(np.sum(np.array(intact) < 0.5)),
    }
    return InstanceAblation(values, tasks, posts)


def record_values(abl: InstanceAblation) -> dict[str, Any]:
    """The ablation entries of an instance's results record (lists, ``ablated_features``)."""
    out = {key: (v.tolist() if isinstance(v, np.ndarray) else v)
           for key, v in abl.values.items()}
    out["ablated_features"] = out.pop("features")
    return out


def mcmc_check(ab: Ablation, abl: InstanceAblation, key: jax.Array) -> dict[str, Any]:
    """MCMC marginals against exact ones on the first few (informative first) tasks."""
    mc = ab.mcmc_check
    order = np.argsort(-abl.values["task_information"])[:mc.num_tasks]
    diffs, r_hats = [], []
    for j in order:
        task, exact_post = abl.tasks[j], abl.posts[j]
        post = bb.infer(task, method="mcmc", key=jax.random.fold_in(key, int(j)),
                        num_samples=mc.num_samples, num_warmup=mc.num_warmup,
                        num_chains=mc.num_chains)
        diffs.append(float(np.max(np.abs(post.marginals - exact_post.marginals))))
        r_hats.append(float(post.diagnostics.get("r_hat_max", float("nan"))))
    return {"tasks": [abl.tasks[j].name for j in order], "max_marginal_diff": max(diffs),
            "per_task_max_diff": diffs, "r_hat_max": r_hats}
