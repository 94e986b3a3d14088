"""Toy models of superposition read with Bayesian ablation (Elhage et al. 2022; DESIGN.md §3).

``run(config, ctx)`` trains every (density × replicate) instance of one setting at once, measures
its weight geometry (‖W_i‖, features represented, D_i, dimensions per feature) and code geometry
(eigenspectrum α, participation ratio, projection energy), infers the ablation mask distribution
of each "feature i reconstructed" task over the hidden units, and writes the figures and report.

Task definition (ours): positives are draws of the data distribution conditioned on x_i ≠ 0,
negatives conditioned on x_i = 0 (equal numbers, so the balanced sensitivity/specificity estimate
weighs both); the network is correct on an example when |x'_i − target_i| < ε.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import bablate as bb
from bablate import config_checks as cc
from bablate import progress, toy_geometry
from bablate.models import toy
from bablate.studies import toy_plots

INFORMATIVE_BITS = 0.1  # tasks carrying less information are left out of per-task means
# ‖W_i‖ thresholds for "feature i represented". The paper's bars show no cut-off; 0.5 is the
# geometry module's default, and at the sparse end the count depends on it (quick, 1−S = 0.001:
# 16–19 of 20 features above 0.1–0.25, ~13 above 0.5), so all three are reported.
REPRESENTED_THRESHOLDS = (0.1, 0.25, 0.5)


def features_represented_at(norms: np.ndarray) -> dict[str, int]:
    """Number of features with ‖W_i‖ above each threshold, keyed by the threshold as text."""
    norms = np.asarray(norms)
    return {f"{t:g}": int((norms > t).sum()) for t in REPRESENTED_THRESHOLDS}


# Every field of experiments/toy_superposition.py's config, checked before any work.
CONFIG_RULES = {
    "seed": cc.integer(0), "setting": cc.text(),
    "model": cc.one_of("relu_out", "linear", "relu_hidden"),
    "n_features": cc.integer(1), "m_hidden": cc.integer(1),
    "importance.kind": cc.one_of("geometric", "loglinear"),
    "importance.value": cc.number(0, low_open=True),
    "densities": cc.sequence(cc.number(0, 1, low_open=True)),
    "density_grid.num": cc.integer(0), "density_grid.ratio": cc.number(1, low_open=True),
    "num_replicates": cc.integer(1), "control.num_seeds": cc.optional(cc.integer(0)),
    "train.steps": cc.integer(1), "train.batch_size": cc.integer(1),
    "train.learning_rate": cc.number(0, low_open=True), "train.weight_decay": cc.number(0),
    "train.chunk_steps": cc.integer(1),
    "geometry.num_samples": cc.integer(1), "geometry.num_points": cc.integer(2),
    "geometry.num_projections": cc.integer(1),
    "ablation.enabled": cc.boolean(), "ablation.epsilon": cc.number(0, low_open=True),
    "ablation.num_positive": cc.integer(1), "ablation.num_negative": cc.integer(1),
    "ablation.method": cc.one_of("exact", "mcmc"), "ablation.feature_stride": cc.integer(1),
    "ablation.num_densities": cc.optional(cc.integer(0)),
    "ablation.mcmc_check.enabled": cc.boolean(), "ablation.mcmc_check.num_samples": cc.integer(1),
    "ablation.mcmc_check.num_warmup": cc.integer(0),
    "ablation.mcmc_check.num_chains": cc.integer(1),
    "ablation.mcmc_check.num_tasks": cc.integer(0),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    cc.require(config.densities or config.density_grid.num > 0,
               "config.densities is empty and config.density_grid.num is 0; give densities "
               "(e.g. --config.densities=1,0.1) or a grid size")
    cc.require(not (config.ablation.enabled and config.ablation.method == "exact"
                    and config.m_hidden > 20),
               f"exact ablation needs m_hidden <= 20 (got {config.m_hidden}); set "
               "--config.ablation.method=mcmc")
    cc.parses(StudyConfig.from_config, config)


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    enabled: bool
    epsilon: float
    num_positive: int
    num_negative: int
    method: str
    feature_stride: int
    num_densities: int
    mcmc_check: bool
    mcmc_samples: int
    mcmc_warmup: int
    mcmc_chains: int
    mcmc_tasks: int


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    seed: int
    variant: str
    setting: str
    spec: toy.ToySpec
    densities: tuple[float, ...]
    num_replicates: int
    train: toy.TrainConfig
    geo_samples: int
    geo_points: int
    geo_projections: int
    ablation: AblationConfig
    control_seeds: int = 0

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> StudyConfig:
        n = int(c.n_features)
        if c.importance.kind == "geometric":
            importance = toy.importance_geometric(n, float(c.importance.value))
        elif c.importance.kind == "loglinear":
            importance = toy.importance_loglinear(n, float(c.importance.value))
        else:
            raise ValueError(f"importance.kind must be 'geometric' or 'loglinear'; got "
                             f"{c.importance.kind!r}.")
        if c.density_grid.num > 0:
            grid = c.density_grid
            densities = toy.densities_loglinear(float(grid.ratio), int(grid.num))
        else:
            densities = tuple(float(d) for d in c.densities)
        if not densities or not all(0 < d <= 1 for d in densities):
            raise ValueError(f"densities must be a non-empty list in (0, 1]; got {densities}. "
                             "Set config.densities or config.density_grid.num.")
        a, mc = c.ablation, c.ablation.mcmc_check
        return cls(
            seed=int(c.seed), variant=str(c.variant), setting=str(c.setting),
            spec=toy.ToySpec(n, int(c.m_hidden), str(c.model), importance),
            densities=densities, num_replicates=int(c.num_replicates),
            train=toy.TrainConfig(int(c.train.steps), int(c.train.batch_size),
                                  float(c.train.learning_rate), float(c.train.weight_decay),
                                  int(c.train.chunk_steps), str(c.train.get("init", "xavier")),
                                  int(c.train.get("init_instances", 0)),
                                  str(c.train.get("loss", "sum"))),
            geo_samples=int(c.geometry.num_samples), geo_points=int(c.geometry.num_points),
            geo_projections=int(c.geometry.num_projections),
            ablation=AblationConfig(
                bool(a.enabled), float(a.epsilon), int(a.num_positive), int(a.num_negative),
                str(a.method), int(a.feature_stride), int(a.num_densities), bool(mc.enabled),
                int(mc.num_samples), int(mc.num_warmup), int(mc.num_chains),
                int(mc.num_tasks)),
            control_seeds=int(c.get("control", {}).get("num_seeds", 0)))


def readout(spec: toy.ToySpec, params, feature: int):
    """hidden [N, m] -> output x'_i [N] of one feature (the suffix after the hidden site)."""
    if spec.kind == "relu_hidden":
        w, b = params["W2"][feature, :], params["b"][feature]
    else:
        w, b = params["W"][:, feature], params["b"][feature]
    relu = spec.kind != "linear"
    return lambda h: jax.nn.relu(h @ w + b) if relu else h @ w + b


@functools.partial(jax.jit, static_argnames=("spec", "num_positive", "num_negative"))
def task_inputs(spec: toy.ToySpec, params, key: jax.Array, density: jax.Array,
                feature: jax.Array, num_positive: int, num_negative: int):
    """Inputs of a feature task (positives first), their hidden code, targets and outputs.

    One compiled program serves every feature and instance of a setting (``feature`` and
    ``density`` are traced).
    """
    k_pos, k_neg = jax.random.split(key)
    n = spec.n_features
    x = jnp.concatenate([
        toy.sample_conditioned(k_pos, num_positive, n, density, feature, True, spec.signed),
        toy.sample_conditioned(k_neg, num_negative, n, density, feature, False, spec.signed)])
    hidden = spec.model().apply({"params": params}, x, method="encode")
    return x, hidden, spec.target(x)[:, feature], readout(spec, params, feature)(hidden)


def feature_task(spec: toy.ToySpec, params, density: float, feature: int, ab: AblationConfig,
                 key: jax.Array) -> tuple[bb.Task, float]:
    """The task "feature i reconstructed" on the hidden site of one instance.

    Returns:
      The task and P(correct) of the intact network (Beta(1,1)-smoothed, balanced).
    """
    model, variables = spec.model(), {"params": params}
    x, hidden, target, intact_out = task_inputs(spec, params, key, jnp.float32(density),
                                                jnp.int32(feature), ab.num_positive,
                                                ab.num_negative)
    positive = np.arange(x.shape[0]) < ab.num_positive
    out_i = readout(spec, params, feature)
    encode = lambda inputs: model.apply(variables, inputs, method="encode")
    site = bb.Site.from_functions("hidden", spec.m_hidden, prefix=encode,
                                  suffix=lambda h, inputs: out_i(h))
    eps = ab.epsilon
    correct = lambda out, t: (jnp.abs(out - t) < eps).astype(jnp.float32)
    rule = bb.rules.custom(correct, positive=positive, data=target, name=f"|x'-x|<{eps}")
    # The intact check is done here so that each task compiles only its enumeration.
    intact = float(bb.rules.p_correct_from(correct(intact_out, target), jnp.asarray(positive)))
    task = bb.Task.build(site, x, rule, name=f"feature {feature}", activation=hidden,
                         check_intact=False)
    return task, intact


def ablate_instance(spec: toy.ToySpec, params, density: float, ab: AblationConfig,
                    key: jax.Array) -> dict:
    """AMDs of every ablated feature task on one instance, and their metrics."""
    features = list(range(0, spec.n_features, ab.feature_stride))
    posts, metrics, tasks, intact = [], [], [], []
    for i in features:
        task, p_intact = feature_task(spec, params, density, i, ab, jax.random.fold_in(key, i))
        intact.append(p_intact)
        post = bb.infer(task, method=ab.method)
        posts.append(post)
        tasks.append(task)
        metrics.append(bb.metrics.summarize(post))
    poly = bb.metrics.polysemanticity(posts)
    info = np.array([m.task_information for m in metrics])
    keep = info >= INFORMATIVE_BITS
    mean_of = lambda vals: float(np.nanmean(np.asarray(vals)[keep])) if keep.any() else float("nan")
    return {
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
        "_posts": posts, "_tasks": tasks,
    }


def mcmc_check(ab: AblationConfig, record: dict, key: jax.Array) -> dict:
    """MCMC marginals against exact ones on the first few (informative first) tasks."""
    order = np.argsort(-record["task_information"])[:ab.mcmc_tasks]
    diffs, r_hats = [], []
    for j in order:
        task, exact_post = record["_tasks"][j], record["_posts"][j]
        post = bb.infer(task, method="mcmc", key=jax.random.fold_in(key, int(j)),
                        num_samples=ab.mcmc_samples, num_warmup=ab.mcmc_warmup,
                        num_chains=ab.mcmc_chains)
        diffs.append(float(np.max(np.abs(post.marginals - exact_post.marginals))))
        r_hats.append(float(post.diagnostics.get("r_hat_max", float("nan"))))
    return {"tasks": [record["_tasks"][j].name for j in order], "max_marginal_diff": max(diffs),
            "per_task_max_diff": diffs, "r_hat_max": r_hats}


@functools.partial(jax.jit, static_argnames=("spec", "num_blocks", "block"))
def heldout_loss(spec: toy.ToySpec, params, key: jax.Array, density: jax.Array,
                 num_blocks: int = 16, block: int = 65_536) -> jax.Array:
    """The training objective on num_blocks × block fresh samples (the last-chunk training
    loss is too noisy at high sparsity to compare instances)."""
    def one(i):
        x = toy.sample_features(jax.random.fold_in(key, i), block, spec.n_features, density,
                                spec.signed)
        return toy.weighted_mse(spec, params, x)
    return jnp.mean(jax.lax.map(one, jnp.arange(num_blocks)))


def initialisation_control(cfg: StudyConfig, ctx, key: jax.Array) -> dict:
    """Features represented at the sparsest density over more seeds and two starts.

    ``control_seeds`` instances start from the paper's xavier-normal init and as many from
    every feature already represented (``toy.init_all_represented``); all train exactly like
    the main instances. If both end with the same number of features, that number is what the
    objective asks for rather than an accident of the start. Tied models only.
    """
    density = min(cfg.densities)
    spec, n = cfg.spec, cfg.control_seeds
    state = ctx.load_state("control")
    if state is None:
        keys = jax.random.split(key, 2 * n)
        # One vmapped run: the first n instances start as the paper's, the next n with every
        # feature represented.
        starts = [jax.vmap(functools.partial(init, spec))(keys[j * n:(j + 1) * n])
                  for j, init in enumerate((toy.init_params, toy.init_all_represented))]
        init_K = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *starts)
        params, _ = toy.train_instances(spec, jnp.full((2 * n,), density), keys, cfg.train,
                                        desc="initialisation control", init_K=init_K)
        norms = np.linalg.norm(np.asarray(params["W"]), axis=1)  # [2n, features]
        counts = (norms > toy_geometry.REPRESENTED_NORM).sum(axis=1)
        counts_at = {f"{t:g}": (norms > t).sum(axis=1) for t in REPRESENTED_THRESHOLDS}
        losses = np.array([float(heldout_loss(spec, toy.unstack(params, i),
                                              jax.random.fold_in(key, 2 * n),
                                              jnp.float32(density)))
                           for i in range(2 * n)])
        state = {name: {"features_represented": counts[j * n:(j + 1) * n],
                        **{f"features_represented_at_{t}": c[j * n:(j + 1) * n]
                           for t, c in counts_at.items()},
                        "feature_norms": norms[j * n:(j + 1) * n],
                        "heldout_loss": losses[j * n:(j + 1) * n]}
                 for j, name in enumerate(("xavier", "all_represented"))}
        ctx.save_state("control", state)
    lists = {name: {k: np.asarray(v).tolist() for k, v in rec.items()}
             for name, rec in state.items()}
    return {"density": density, "seeds": n, **lists}


def run(config: ml_collections.ConfigDict, ctx) -> dict:
    """Trains, measures, ablates and reports one toy-superposition setting."""
    cfg = StudyConfig.from_config(config)
    spec, ab = cfg.spec, cfg.ablation
    if ab.enabled and ab.method == "exact" and spec.m_hidden > 20:
        raise ValueError(f"exact ablation needs m_hidden <= 20 (got {spec.m_hidden}); set "
                         "ablation.method='mcmc'.")
    root = jax.random.key(cfg.seed)
    n_d = len(cfg.densities)
    dens_k = np.array([cfg.densities[k % n_d] for k in range(n_d * cfg.num_replicates)])
    rep_k = np.arange(dens_k.size) // n_d
    inst_keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(root, int(r)), k % n_d)
                           for k, r in enumerate(rep_k)])
    k_geo, k_abl, k_mcmc = (jax.random.fold_in(root, 10_000 + i) for i in range(3))
    n_abl = n_d if ab.num_densities <= 0 else min(ab.num_densities, n_d)
    ablated_density_idx = set(np.linspace(0, n_d - 1, n_abl).round().astype(int).tolist())

    t0 = time.perf_counter()
    state = ctx.load_state("params")
    if state is None:
        ctx.log(f"training {dens_k.size} instances of {cfg.setting} ({spec.kind}) for "
                f"{cfg.train.steps} steps")
        params, loss = toy.train_instances(spec, jnp.asarray(dens_k), inst_keys, cfg.train,
                                           desc=f"train {cfg.setting}")
        state = {"params": jax.tree.map(np.asarray, params), "loss": np.asarray(loss)}
        ctx.save_state("params", state)
    params_all, loss_all = state["params"], state["loss"]

    ctx.log(f"training done ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    records, ablations = [], {}
    for k in progress.track(range(dens_k.size), total=dens_k.size, desc="geometry + ablation",
                            unit="instance"):
        p = toy.unstack(params_all, k)
        wg = toy_geometry.weight_geometry(spec.encoder_weights(p))
        cg = toy_geometry.code_geometry(spec, p, jax.random.fold_in(k_geo, k), float(dens_k[k]),
                                        cfg.geo_samples, cfg.geo_points, cfg.geo_projections)
        rec = {
            "setting": cfg.setting, "model": spec.kind, "density": float(dens_k[k]),
            "seed": cfg.seed, "replicate": int(rep_k[k]), "n_features": spec.n_features,
            "m_hidden": spec.m_hidden, "final_loss": float(loss_all[k]),
            "features_represented": wg.features_represented,
            "features_represented_at": features_represented_at(wg.norms),
            "dims_per_feature": wg.dims_per_feature,
            "coding_theory_dims_per_feature": toy_geometry.coding_theory_dims_per_feature(
                float(dens_k[k])),
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
        d_idx = k % n_d
        if ab.enabled and d_idx in ablated_density_idx:
            abl = ablate_instance(spec, p, float(dens_k[k]), ab, jax.random.fold_in(k_abl, k))
            ablations[k] = abl
            rec.update({key: (v.tolist() if isinstance(v, np.ndarray) else v)
                        for key, v in abl.items() if not key.startswith("_")})
            rec["ablated_features"] = rec.pop("features")
        records.append(rec)

    ctx.log(f"geometry and ablation done ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    results = {"config": config.to_dict(), "instances": records}
    if ablations and ab.mcmc_check:
        k_check = max(ablations)  # the sparsest ablated instance of the last replicate
        check = mcmc_check(ab, ablations[k_check], k_mcmc)
        check["density"] = float(dens_k[k_check])
        results["mcmc_check"] = check
        results["mcmc_max_marginal_diff"] = check["max_marginal_diff"]
    ctx.log(f"MCMC check done ({time.perf_counter() - t0:.1f} s)")
    if cfg.control_seeds > 0 and spec.kind != "relu_hidden":
        t0 = time.perf_counter()
        results["initialisation_control"] = initialisation_control(
            cfg, ctx, jax.random.fold_in(root, 20_000))
        ctx.log(f"initialisation control done ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    results.update(summary_numbers(records, cfg))
    toy_plots.make_figures(ctx, cfg, records, params_all, dens_k, rep_k)
    ctx.text(toy_plots.report_text(cfg, records, results))
    ctx.log(f"figures and report done ({time.perf_counter() - t0:.1f} s)")
    return results


def summary_numbers(records: list[dict], cfg: StudyConfig) -> dict:
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
