"""Step 3: Bayesian ablation of the hidden units, one "feature i reconstructed" task per feature,
and the check of exact marginals against MCMC."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import numpy as np

import bablate as bb
from bablate.models import toy
from bablate.testbeds import toy as toy_testbed

from .config import Ablation

# Feature i's task samples its inputs from fold_in(key, i); stochastic inference (MCMC or SVI,
# when ablation.method asks for it) draws from fold_in(key, INFERENCE_STREAM), past any feature.
INFERENCE_STREAM = 1_000_000


@dataclasses.dataclass(frozen=True)
class InstanceAblation:
    """The ablation of one instance: its results values, and the tasks and posteriors behind
    them (kept for the MCMC check, never written to results)."""

    values: dict[str, Any]
    tasks: list[bb.Task]
    posts: list[bb.Posterior]
    key: jax.Array  # drew the tasks' examples; the rotation control draws the same ones


def ablated_density_indices(num_densities: int, ab: Ablation) -> set[int]:
    """Indices of the densities whose instances are ablated: all, or ``ab.num_densities``
    spread evenly from the densest to the sparsest."""
    n_abl = num_densities if ab.num_densities <= 0 else min(ab.num_densities, num_densities)
    return set(np.linspace(0, num_densities - 1, n_abl).round().astype(int).tolist())


def ablate_instance(spec: toy.ToySpec, params: toy.Params, density: float, ab: Ablation,
                    key: jax.Array, basis: bb.Basis | None = None) -> InstanceAblation:
    """AMDs of every ablated feature task on one instance, and their metrics.

    Args:
      spec: the toy setting.
      params: one trained instance.
      density: 1 − S of the instance (its tasks' examples are drawn there).
      ab: the feature tasks and how their AMDs are inferred.
      key: draws every task's examples; the same key gives the same examples in any basis.
      basis: ablate the codes of this basis of the hidden space (a rotation, say) instead of
        the units; None = the neuron basis.
    """
    features = list(range(0, spec.n_features, ab.feature_stride))
    site = toy_testbed.hidden_site(spec, params, basis)  # one site: one compiled enumeration
    tasks, intact = [], []
    for i in features:
        task, p_intact = toy_testbed.feature_task(
            spec, params, density, i, jax.random.fold_in(key, i), epsilon=ab.epsilon,
            num_positive=ab.num_positive, num_negative=ab.num_negative, site=site)
        tasks.append(task)
        intact.append(p_intact)
    # Every task samples its own inputs, so exact inference enumerates each task on its own.
    posts = bb.infer_many(tasks, method=ab.method,
                          key=jax.random.fold_in(key, INFERENCE_STREAM))
    m = bb.metrics.summarize_tasks(posts)
    values = {
        "features": features,
        "unit_importance": np.stack([p.marginals for p in posts]),
        "task_information": m.task_information,
        "distributedness": m.distributedness,
        "total_correlation": m.total_correlation,
        "effective_tasks": m.effective_tasks,
        "unit_task_mi": m.unit_task_mi,
        "polysemanticity_mean": m.polysemanticity_mean,
        # How many feature tasks each unit carries >= INFORMATIVE_BITS for (a count, beside
        # the information-weighted effective number above).
        "tasks_served": m.tasks_served,
        "tasks_served_mean": m.tasks_served_mean,
        "distributedness_mean": m.distributedness_mean,
        "total_correlation_mean": m.total_correlation_mean,
        "informative_tasks": m.informative_tasks,
        "intact_p_correct": np.array(intact),
        "intact_fails": int(np.sum(np.array(intact) < 0.5)),
    }
    return InstanceAblation(values, tasks, posts, key)


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
    diffs, r_hats, ess, verdicts = [], [], [], []
    for j in order:
        task, exact_post = abl.tasks[j], abl.posts[j]
        # The check is judged by its real error against the exact marginals, a stronger test
        # than MCMC's own diagnostics; those go into the result and the report's line rather
        # than into a ConvergenceWarning on every run (ESS 350 of its 400 target, say, at an
        # error of 0.017).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bb.inference.ConvergenceWarning)
            post = bb.infer(task, method="mcmc", key=jax.random.fold_in(key, int(j)),
                            num_samples=mc.num_samples, num_warmup=mc.num_warmup,
                            num_chains=mc.num_chains)
        diffs.append(float(np.max(np.abs(post.marginals - exact_post.marginals))))
        r_hats.append(float(post.diagnostics.get("r_hat_max", float("nan"))))
        ess.append(float(post.diagnostics.get("ess_min", float("nan"))))
        verdicts.append(bool(post.diagnostics.get("converged", False)))
    return {"tasks": [abl.tasks[j].name for j in order], "max_marginal_diff": max(diffs),
            "per_task_max_diff": diffs, "r_hat_max": r_hats, "ess_min": ess,
            "mcmc_converged": verdicts}
