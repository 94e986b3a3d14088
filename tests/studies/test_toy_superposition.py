"""The toy-superposition study: its steps on hand-built codes, its typed config, and a smoke run
of every config variant."""

import dataclasses
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb
from bablate import errors
from bablate.models import toy
from bablate.runner import runs
from bablate.studies import toy_superposition
from bablate.studies.toy_superposition import ablation, geometry, intervals, rotation
from bablate.studies.toy_superposition import config as study_config
from bablate.testbeds import toy as toy_testbed
from bablate.testbeds import toy_geometry

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "toy_superposition.py"


def _config_module():
    spec = importlib.util.spec_from_file_location("toy_superposition_config", CONFIG_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_of_a_hand_built_code():
    # Features 0 and 1 share hidden dim 0 as an antipodal pair, feature 2 owns dim 1, feature 3
    # is not represented. Each represented task needs exactly its own dim; dim 0 serves two
    # tasks and dim 1 one.
    spec = toy.ToySpec(4, 2, "relu_out", (1.0, 1.0, 1.0, 1.0))
    params = {"W": jnp.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]),
              "b": jnp.zeros((4,))}
    abl = ablation.ablate_instance(spec, params, 0.05, _exact_ablation(), jax.random.key(5))
    out = abl.values
    ui = out["unit_importance"]
    assert ui[0, 0] > 0.9 and ui[1, 0] > 0.9 and ui[2, 1] > 0.9
    # Units a task's readout does not touch are exactly at the prior.
    np.testing.assert_allclose([ui[0, 1], ui[1, 1], ui[2, 0]], 0.5, atol=1e-6)
    np.testing.assert_allclose(ui[3], 0.5, atol=1e-6)
    np.testing.assert_allclose(out["effective_tasks"], [2.0, 1.0], atol=0.05)
    assert list(out["tasks_served"]) == [2, 1]
    assert out["informative_tasks"] == 3
    # One unit per task: the local end of distributedness (1/m).
    np.testing.assert_allclose(out["distributedness_mean"], 0.5, atol=1e-6)
    # The tasks and posteriors come back beside the values, never inside them.
    assert len(abl.tasks) == len(abl.posts) == 4
    assert all(isinstance(v, (int, float, list, np.ndarray)) for v in out.values())


def _exact_ablation(epsilon: float = 0.1, num: int = 200) -> study_config.Ablation:
    return study_config.Ablation(
        enabled=True, epsilon=epsilon, num_positive=num, num_negative=num, method="exact",
        feature_stride=1, num_densities=0,
        mcmc_check=study_config.McmcCheck(enabled=False, num_samples=0, num_warmup=0,
                                          num_chains=0, num_tasks=0))


@pytest.mark.slow
def test_rotation_control_of_a_model_whose_rotations_keep_the_loss():
    # Features 0-2 each own one hidden dimension of a tied ReLU-output model, features 3-5 are
    # not represented. Any rotation q of the hidden space (W → qᵀW) keeps WᵀW and so the loss;
    # the neuron basis is the one aligned with the features.
    spec = toy.ToySpec(6, 3, "relu_out", (1.0,) * 6)
    params = {"W": jnp.eye(3, 6), "b": jnp.zeros((6,))}
    cfg = study_config.from_config(_config_module().get_config("quick"))
    cfg = dataclasses.replace(cfg, n_features=6, m_hidden=3,
                              importance=study_config.Importance("geometric", 1.0),
                              ablation=_exact_ablation())
    assert cfg.spec == spec
    density, key = 0.05, jax.random.key(5)
    neuron = ablation.ablate_instance(spec, params, density, cfg.ablation, key)
    rotations = rotation.random_rotations(jax.random.key(6), 3, 3)
    rec = rotation.instance_control(cfg, params, density, neuron, rotations, jax.random.key(7))
    # The loss is unchanged to float precision under every rotation.
    assert rec["loss"]["max_relative_change"] < 1e-5
    np.testing.assert_allclose(rec["loss"]["rotated"], rec["loss"]["neuron"], rtol=1e-5)
    # The neuron values are the metrics of the tasks' posteriors, computed here directly.
    tasks = [toy_testbed.feature_task(spec, params, density, i, jax.random.fold_in(key, i),
                                      epsilon=0.1, num_positive=200, num_negative=200)[0]
             for i in range(6)]
    direct = bb.metrics.summarize_tasks([bb.infer(t, method="exact") for t in tasks])
    for name, want in (("polysemanticity", direct.polysemanticity_mean),
                       ("tasks_served", direct.tasks_served_mean),
                       ("distributedness", direct.distributedness_mean),
                       ("total_correlation", direct.total_correlation_mean),
                       ("task_information", direct.task_information.mean())):
        np.testing.assert_allclose(rec[name]["neuron"], want, rtol=1e-6, err_msg=name)
    # The aligned code is the local end: one task per unit, one unit per task ...
    np.testing.assert_allclose(rec["polysemanticity"]["neuron"], 1.0, atol=1e-3)
    np.testing.assert_allclose(rec["distributedness"]["neuron"], 1 / 3, atol=1e-3)
    # ... which random rotations are not: each rotated unit carries several features.
    assert min(rec["polysemanticity"]["rotated"]) > 1.5
    assert min(rec["distributedness"]["rotated"]) > 0.5
    # A rotated value is the neuron value of the rotated model (its units are the codes).
    for r, q in enumerate(rotations):
        moved = ablation.ablate_instance(spec, toy.rotate_hidden(spec, params, q), density,
                                         cfg.ablation, key)
        for name, value in rotation.metric_values(moved.values).items():
            np.testing.assert_allclose(rec[name]["rotated"][r], value, rtol=1e-4, atol=1e-5,
                                       err_msg=name)
    values = np.array(rec["polysemanticity"]["rotated"])
    assert rec["polysemanticity"]["rotated_mean"] == pytest.approx(values.mean())
    assert rec["polysemanticity"]["rotated_sd"] == pytest.approx(values.std(ddof=1))


def test_intervals_against_scipy_and_a_closed_form():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 3.0, 9)
    got = intervals.difference_interval(a, b)
    want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    np.testing.assert_allclose([got.lo, got.hi], [want.low, want.high], rtol=1e-10)
    got = intervals.mean_interval(a)
    want = stats.ttest_1samp(a, 0.0).confidence_interval(0.95)
    np.testing.assert_allclose([got.lo, got.hi], [want.low, want.high], rtol=1e-10)
    assert intervals.mean_interval([3.0]).text() == "3"
    # Two seeds' feature counts: the t-interval (t = 12.7) is cut to the counts possible.
    two = intervals.mean_interval([4, 5]).clip(0, 5)
    assert (two.value, two.lo, two.hi) == (4.5, 0.0, 5.0)
    # Above all 8 rotated values at all 7 instances: 2 · (1/9)^7 if the values were exchangeable.
    assert intervals.extreme_rank_p(7, 0, 7, 8) == pytest.approx(2 / 9**7)
    assert intervals.extreme_rank_p(0, 0, 7, 8) == 1.0


def _tiny(config, full: bool):
    """Shrinks a variant to a 2-step smoke run with two densities and one or two tasks each.

    ``full`` keeps the MCMC check and a second task per instance (one variant runs it; the
    others skip it to keep the module short).
    """
    config.train.steps = 2
    config.train.chunk_steps = 2
    config.num_replicates = 1
    if config.density_grid.num > 0:
        config.density_grid.num = 2
    else:
        config.densities = [config.densities[0], config.densities[-1]]
    config.control.num_seeds = 1 if full else 0
    config.rotation_control.num_rotations = 2 if full else 0
    config.geometry.num_samples = 256
    config.geometry.num_points = 11
    config.geometry.num_projections = 2
    a = config.ablation
    a.num_positive = a.num_negative = 8
    a.feature_stride = config.n_features // 2 if full else config.n_features
    a.num_densities = 0 if full else 1
    a.mcmc_check.enabled = full
    a.mcmc_check.num_samples = 20
    a.mcmc_check.num_warmup = 10
    a.mcmc_check.num_chains = 1
    a.mcmc_check.num_tasks = 1
    return config


@pytest.mark.parametrize("variant", [
    pytest.param(v, marks=() if v == "quick" else pytest.mark.slow)
    for v in _config_module().VARIANTS])
def test_every_variant_runs(variant, tmp_path, monkeypatch):
    monkeypatch.setenv("BABLATE_PROGRESS", "0")
    module = _config_module()
    full = variant == "quick"
    config = _tiny(module.get_config(variant), full)
    assert config.study == "toy_superposition" and config.variant == variant
    assert runs.run_one(config, tmp_path) == "ran"
    results = json.loads((tmp_path / "results.json").read_text())
    recs = results["instances"]
    assert len(recs) == 2
    for key in ("setting", "density", "seed", "n_features", "m_hidden", "features_represented",
                "dims_per_feature", "feature_dimensionality", "alpha", "participation_ratio",
                "polysemanticity_mean", "distributedness_mean", "total_correlation_mean",
                "unit_importance"):
        assert key in recs[0], key
    assert len(recs[0]["feature_dimensionality"]) == config.n_features
    at = recs[0]["features_represented_at"]
    assert list(at) == ["0.1", "0.25", "0.5"]
    assert at["0.1"] >= at["0.25"] >= at["0.5"] == recs[0]["features_represented"]
    assert (recs[1]["unit_importance"] is not None) == full
    ui = np.array(recs[0]["unit_importance"])
    assert ui.shape == (len(recs[0]["ablated_features"]), config.m_hidden)
    assert np.all((ui >= 0) & (ui <= 1))
    assert ("mcmc_max_marginal_diff" in results) == full
    if full:
        # 20 draws of one chain fail MCMC's own check: its verdict and ESS go into the result
        # and the report's line, not into a warning of the run (the check's real error against
        # exact enumeration is the test).
        check = results["mcmc_check"]
        assert check["mcmc_converged"] == [False] and check["ess_min"][0] < 400
        assert "MCMC for task" not in (tmp_path / "log.txt").read_text()
        assert "1 of 1 runs fail its own convergence check" in (
            tmp_path / "report.md").read_text()
    if full:
        control = results["initialisation_control"]
        assert control["density"] == min(r["density"] for r in recs)
        for start in ("xavier", "all_represented"):
            assert len(control[start]["features_represented"]) == 1
            assert np.isfinite(control[start]["heldout_loss"]).all()
    if full:
        rc = results["rotation_control"][config.model]
        assert rc["num_rotations"] == 2
        ablated = sorted({r["density"] for r in recs if r["unit_importance"] is not None})
        assert sorted(rec["density"] for rec in rc["by_density"].values()) == ablated
        for rec in rc["by_density"].values():
            for name in rotation.METRICS:
                assert set(rec[name]) == {"neuron", "rotated_mean", "rotated_sd", "rotated"}
                assert len(rec[name]["rotated"]) == 2
            assert rec["loss"]["max_relative_change"] < 1e-5  # the tied model keeps its loss
        # The headline numbers carry the rotated means beside the neuron basis's.
        sparsest = rc["by_density"][f"{ablated[0]:g}"]
        assert results["distributedness_rotated_sparsest"] == pytest.approx(
            sparsest["distributedness"]["rotated_mean"])
    else:
        assert "rotation_control" not in results
    report = (tmp_path / "report.md").read_text()
    assert "What reproduced" in report and "figures/dims_per_feature.png" in report
    assert ("## Basis control" in report) == full
    assert ("figures/w_columns_2d.png" in report) == (config.m_hidden == 2)
    # one replicate (num_replicates = 1): nothing is a mean over replicates
    assert "## Per density (one replicate)" in report and "over replicates" not in report
    assert module.get_sweep(variant)[0] == {"seed": 0}


def test_features_represented_at_thresholds():
    norms = np.array([0.05, 0.1, 0.2, 0.3, 0.6, 1.2])
    # Strictly above each threshold, as the 0.5 count of weight_geometry.
    assert geometry.features_represented_at(norms) == {"0.1": 4, "0.25": 3, "0.5": 2}
    w = np.zeros((2, 6))
    w[0] = norms
    assert (geometry.features_represented_at(np.linalg.norm(w, axis=0))["0.5"]
            == toy_geometry.weight_geometry(w).features_represented)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        _config_module().get_config("nope")


def test_typed_config_mirrors_the_config_dict():
    c = _config_module().get_config("n5_m2")
    cfg = study_config.from_config(c)
    # Nested, by keyword, each level the ConfigDict's sub-dict.
    assert cfg.ablation.mcmc_check.num_warmup == c.ablation.mcmc_check.num_warmup
    assert cfg.train == toy.TrainConfig(**c.train.to_dict())
    assert cfg.geometry.num_points == c.geometry.num_points
    # The density grid is resolved into the densities the study runs.
    assert cfg.densities == toy.densities_loglinear(c.density_grid.ratio, c.density_grid.num)
    assert cfg.spec == toy.ToySpec(5, 2, "relu_out", toy.importance_geometric(5, 0.9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1
    # A config without a control section keeps the default (off).
    del c["control"], c["rotation_control"]
    assert study_config.from_config(c).control.num_seeds == 0
    assert study_config.from_config(c).rotation_control.num_rotations == 0
    # quick carries the basis control with a few rotations; n100_m20 (2^20 masks) leaves it off.
    get = _config_module().get_config
    assert 0 < get("quick").rotation_control.num_rotations <= 4
    assert get("relu_hidden").rotation_control.num_rotations > 0
    assert get("n100_m20").rotation_control.num_rotations == 0


def test_misspelled_config_key_is_one_config_error_line():
    c = _config_module().get_config("quick")
    c.ablation.mcmc_check.num_taks = 2
    with pytest.raises(errors.ConfigError,
                       match=r"config\.ablation\.mcmc_check\.num_taks is not a field of McmcCheck"):
        toy_superposition.validate(c)


def test_config_values_that_cannot_work_are_refused():
    c = _config_module().get_config("quick")
    c.num_replicates = 10_000
    with pytest.raises(errors.ConfigError, match="config.num_replicates = 10000 must be at most"):
        toy_superposition.validate(c)
    c = _config_module().get_config("quick")
    c.ablation.mcmc_check.num_tasks = 0
    with pytest.raises(errors.ConfigError, match="mcmc_check.num_tasks = 0 leaves the MCMC check"):
        toy_superposition.validate(c)
    c.ablation.mcmc_check.enabled = False  # no check, nothing to compare: fine
    toy_superposition.validate(c)


def test_replicate_keys_stay_below_the_named_streams():
    # Training keys fold the replicate into the root key; validate caps the replicate count so
    # no replicate reuses a named step's key.
    streams = (toy_superposition.GEOMETRY_STREAM, toy_superposition.ABLATION_STREAM,
               toy_superposition.MCMC_STREAM, toy_superposition.CONTROL_STREAM,
               toy_superposition.ROTATION_STREAM)
    assert len(set(streams)) == len(streams)
    assert study_config.MAX_REPLICATES < min(streams)


def test_ablated_densities_spread_dense_to_sparse():
    ab = study_config.from_config(_config_module().get_config("n100_m20")).ablation
    assert ab.num_densities == 4
    assert ablation.ablated_density_indices(20, ab) == {0, 6, 13, 19}
    assert ablation.ablated_density_indices(3, ab) == {0, 1, 2}


def _records(replicates: int) -> list[dict]:
    """Synthetic results records: 3 densities × ``replicates``, with the fields the norm and
    dimensionality figures read."""
    rng = np.random.default_rng(0)
    return [{"density": d, "replicate": r, "features_represented": int(rng.integers(5, 12)),
             "feature_norms": rng.uniform(0, 1.2, 20).tolist(),
             "feature_dimensionality": rng.uniform(0, 1, 20).tolist(),
             "dims_per_feature": float(rng.uniform(0.3, 1))}
            for d in (1.0, 0.1, 0.01) for r in range(replicates)]


def test_fraction_labels_do_not_overlap():
    from bablate.studies.toy_superposition import plots

    cfg = study_config.from_config(_config_module().get_config("quick"))
    for fig in (plots.fig_dims_per_feature(cfg, _records(1)),
                plots.fig_feature_dimensionality(_records(1))):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        labels = {t.get_text().strip(): t.get_window_extent(renderer)
                  for t in fig.axes[0].texts if t.get_text().strip() in plots.REFERENCE_LABELS}
        assert set(labels) == set(plots.REFERENCE_LABELS)
        boxes = list(labels.items())
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1:]:
                assert not box_a.overlaps(box_b), (a, b)


def test_replicate_wording_follows_the_number_of_replicates():
    from bablate.studies.toy_superposition import plots

    cfg = study_config.from_config(_config_module().get_config("quick"))
    for n, want in ((1, "one replicate"), (3, "mean over 3 replicates")):
        fig = plots.fig_norms(cfg, _records(n))
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert want in legend
        assert n > 1 or not any("replicates" in t for t in legend)


def test_every_unit_importance_panel_has_a_labelled_colourbar():
    from bablate.studies.toy_superposition import plots

    cfg = study_config.from_config(_config_module().get_config("quick"))
    spec = cfg.spec
    records = [{"density": d, "replicate": 0, "ablated_features": [0, 1, 2],
                "unit_importance": np.full((3, spec.m_hidden), 0.5).tolist()}
               for d in (1.0, 0.1)]
    params = jax.vmap(lambda k: toy.init_params(spec, k))(jax.random.split(jax.random.key(0), 2))
    fig = plots.fig_unit_importance(cfg, records, params, np.array([1.0, 0.1]), np.zeros(2))
    panels = [ax for ax in fig.axes if ax.get_images()]
    labels = [ax.get_ylabel() for ax in fig.axes if not ax.get_images()]  # the colourbars
    assert len(panels) == 6 and len(labels) == 6 and all(labels)


def test_unit_importance_panels_hold_the_results_on_the_library_scale():
    from bablate.studies.toy_superposition import plots

    cfg = study_config.from_config(_config_module().get_config("quick"))
    spec = cfg.spec
    imp = np.linspace(0.0, 1.0, 3 * spec.m_hidden).reshape(3, spec.m_hidden)
    records = [{"density": 0.1, "replicate": 0, "ablated_features": [0, 4, 7],
                "unit_importance": imp.tolist()}]
    params = jax.vmap(lambda k: toy.init_params(spec, k))(jax.random.split(jax.random.key(0), 1))
    fig = plots.fig_unit_importance(cfg, records, params, np.array([0.1]), np.zeros(1))
    ax = next(a for a in fig.axes if a.get_title().startswith("unit importance"))
    np.testing.assert_allclose(ax.images[0].get_array(), imp)
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "4", "7"]
    assert ax.get_ylabel() == "feature task i" and ax.get_xlabel() == "hidden unit"
    assert "q(m_u = 1)" in [a.get_ylabel() for a in fig.axes]  # its colourbar


def _control_results(kind: str, neuron: dict, rotated: dict) -> dict:
    """Synthetic records and a rotation control over three densities: per metric, the neuron
    values and the rotated values (4 rotations) at each density."""
    dens = (1.0, 0.1, 0.01)
    keys = {"polysemanticity": "polysemanticity_mean", "tasks_served": "tasks_served_mean",
            "distributedness": "distributedness_mean",
            "total_correlation": "total_correlation_mean"}
    records = [{"density": d, "replicate": 0,
                **{keys[n]: float(neuron[n][j]) for n in keys}} for j, d in enumerate(dens)]
    by_density = {}
    for j, d in enumerate(dens):
        rec = {"density": d, "loss": {"neuron": 1.0, "rotated_mean": 5.0, "rotated_sd": 0.1,
                                      "rotated": [5.0] * 4, "max_relative_change": 4.0}}
        for n in (*keys, "task_information"):
            vals = np.asarray(rotated[n][j], float)
            rec[n] = rotation.spread(neuron[n][j], vals)
        by_density[f"{d:g}"] = rec
    return records, {"rotation_control": {kind: {"num_rotations": 4, "replicate": 0,
                                                 "by_density": by_density}}}


def test_trends_of_a_tied_model_are_judged_in_rotated_bases_not_its_neurons():
    from bablate.studies.toy_superposition import report

    jitter = np.array([-0.03, -0.01, 0.01, 0.03])
    rising, falling = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    # The neurons' polysemanticity rises while the rotated bases' falls, and vice versa for
    # distributedness; every neuron value lies below all the rotated ones.
    neuron = {"polysemanticity": rising, "tasks_served": rising, "distributedness": falling,
              "total_correlation": rising, "task_information": rising}
    rotated = {n: [v + jitter for v in ([3.3, 3.6, 4.0] if n == "distributedness"
                                        else [4.0, 3.6, 3.3])] for n in neuron}
    records, results = _control_results("relu_out", neuron, rotated)
    cfg = study_config.from_config(_config_module().get_config("quick"))
    claims = dict((text.split(":")[0], verdict)
                  for verdict, text in report.trend_claims(cfg, records, results))
    assert claims["Polysemanticity of hidden units (effective number of feature tasks each "
                  "serves)"] is False
    assert claims["Distributedness of task codes"] is True
    # relu_hidden's neurons are privileged: there the verdict reads them.
    hidden = dataclasses.replace(cfg, model="relu_hidden")
    records, results = _control_results("relu_hidden", neuron, rotated)
    claims = dict((text.split(",")[0], verdict)
                  for verdict, text in report.trend_claims(hidden, records, results))
    assert claims["Polysemanticity of hidden units (effective number of feature tasks each "
                  "serves)"] is True
    assert claims["Distributedness of task codes"] is False
    # Below all 4 rotated values at all 3 densities: p = 2 (1/5)^3 = 0.016, special.
    text = "\n".join(report.rotation_text(hidden, results["rotation_control"]["relu_hidden"]))
    assert "privileged" in text and "special for polysemanticity" in text
    assert "raises the held-out loss 5–5-fold" in text
