"""Toy models of superposition read with Bayesian ablation (Elhage et al. 2022; DESIGN.md §3).

Config: ``variants.py``, run with ``python -m bablate --config=toy_superposition:<variant>`` (its
docstring names the paper figures each variant reproduces, the commands and the expected
numbers).

``run(config, ctx)`` trains every (density × replicate) instance of one setting at once, measures
its weight geometry (‖W_i‖, features represented, D_i, dimensions per feature) and code geometry
(eigenspectrum α, participation ratio, projection energy), infers the ablation mask distribution
of each "feature i reconstructed" task over the hidden units, and writes the figures and report.

Task definition (``bablate.testbeds.toy.feature_task``): positives are draws of the data
distribution conditioned on x_i ≠ 0, negatives conditioned on x_i = 0 (equal numbers, so the
balanced sensitivity/specificity estimate weighs both); the network is correct on an example when
|x'_i − target_i| < ε.

Steps: `train` → `geometry` → `ablation` (with its MCMC check) → `control` → `rotation` (the
basis control: the ablation metrics in random rotations of the hidden space) → `summary` →
`plots` and `report`.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections

from bablate import progress
from bablate.models import toy
from bablate.runner.context import RunContext

from . import ablation, control, geometry, plots, report, rotation, summary, train
from .config import from_config, validate

__all__ = ["run", "validate"]

# Named key streams folded into the root key. The instances' training keys fold their replicate
# r < config.MAX_REPLICATES into the root itself (train.instance_keys), so these sit above.
GEOMETRY_STREAM = 10_000
ABLATION_STREAM = 10_001
MCMC_STREAM = 10_002
CONTROL_STREAM = 20_000
ROTATION_STREAM = 20_001


def run(config: ml_collections.ConfigDict, ctx: RunContext) -> dict[str, Any]:
    """Trains, measures, ablates and reports one toy-superposition setting."""
    cfg = from_config(config)
    spec, ab = cfg.spec, cfg.ablation
    root = jax.random.key(cfg.seed)
    k_train = root  # instance keys: fold_in(fold_in(root, replicate), density index)
    k_geo = jax.random.fold_in(root, GEOMETRY_STREAM)
    k_abl = jax.random.fold_in(root, ABLATION_STREAM)
    k_mcmc = jax.random.fold_in(root, MCMC_STREAM)
    k_control = jax.random.fold_in(root, CONTROL_STREAM)
    k_rotation = jax.random.fold_in(root, ROTATION_STREAM)

    inst = train.layout(cfg)
    ablated = ablation.ablated_density_indices(inst.num_densities, ab)

    t0 = time.perf_counter()
    params_all, loss_all = train.train(cfg, ctx, inst, k_train)
    ctx.log(f"training done ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    records, ablations = [], {}
    num = inst.density.size
    for k in progress.track(range(num), total=num, desc="geometry + ablation", unit="instance"):
        p, density = toy.unstack(params_all, k), float(inst.density[k])
        rec = geometry.instance_record(cfg, p, density, int(inst.replicate[k]),
                                       float(loss_all[k]), jax.random.fold_in(k_geo, k))
        if ab.enabled and int(inst.density_index[k]) in ablated:
            abl = ablation.ablate_instance(spec, p, density, ab, jax.random.fold_in(k_abl, k))
            ablations[k] = abl
            rec.update(ablation.record_values(abl))
        records.append(rec)
    ctx.log(f"geometry and ablation done ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    results = {"config": config.to_dict(), "instances": records}
    if ablations and ab.mcmc_check.enabled:
        k_check = max(ablations)  # the sparsest ablated instance of the last replicate
        check = ablation.mcmc_check(ab, ablations[k_check], k_mcmc)
        check["density"] = float(inst.density[k_check])
        results["mcmc_check"] = check
        results["mcmc_max_marginal_diff"] = check["max_marginal_diff"]
    ctx.log(f"MCMC check done ({time.perf_counter() - t0:.1f} s)")

    if cfg.control.num_seeds > 0 and spec.kind != "relu_hidden":
        t0 = time.perf_counter()
        results["initialisation_control"] = control.initialisation_control(cfg, ctx, k_control)
        ctx.log(f"initialisation control done ({time.perf_counter() - t0:.1f} s)")

    if ablations and cfg.rotation_control.num_rotations > 0:
        t0 = time.perf_counter()
        results["rotation_control"] = rotation.rotation_control(cfg, params_all, inst,
                                                                ablations, k_rotation)
        ctx.log(f"rotation control done ({time.perf_counter() - t0:.1f} s)")

    rc = results.get("rotation_control", {}).get(spec.kind)
    results.update(summary.summary_numbers(records, cfg, rc))

    t0 = time.perf_counter()
    plots.make_figures(ctx, cfg, records, params_all, inst.density, inst.replicate, rc)
    ctx.text(report.report_text(cfg, records, results))
    ctx.log(f"figures and report done ({time.perf_counter() - t0:.1f} s)")
    return results
