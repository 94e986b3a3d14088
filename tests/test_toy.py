"""Toy models of superposition: training, geometry, and a smoke run of every config variant."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bablate import runs, toy_geometry
from bablate.models import toy
from bablate.studies import toy_superposition

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "toy_superposition.py"


def _config_module():
    spec = importlib.util.spec_from_file_location("toy_superposition_config", CONFIG_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["linear", "relu_out"])
def test_dense_model_learns_top_m_features_orthogonally(kind):
    # With every feature present and isotropic feature covariance, the importance-weighted
    # optimum keeps the m most important features on orthonormal directions (PCA-like):
    # WᵀW is the projector onto those coordinates.
    n, m = 6, 3
    spec = toy.ToySpec(n, m, kind, (1.0, 0.9, 0.8, 0.3, 0.2, 0.1))
    cfg = toy.TrainConfig(steps=600, batch_size=256, learning_rate=1e-2, weight_decay=0.0,
                          chunk_steps=200)
    params, _ = toy.train_instances(spec, jnp.ones((1,)), jax.random.key(0)[None], cfg)
    W = np.asarray(params["W"][0])
    projector = np.diag([1.0] * m + [0.0] * (n - m))
    np.testing.assert_allclose(W.T @ W, projector, atol=0.12)
    geo = toy_geometry.weight_geometry(W)
    assert geo.features_represented == m
    np.testing.assert_allclose(geo.feature_dimensionality[:m], 1.0, atol=0.05)
    np.testing.assert_allclose(geo.dims_per_feature, 1.0, atol=0.1)


def test_instances_train_independently_of_their_batch():
    spec = toy.ToySpec(5, 2, "relu_out", toy.importance_geometric(5, 0.9))
    cfg = toy.TrainConfig(steps=30, batch_size=64, chunk_steps=16)  # 30 = 16 + 14: padded chunk
    keys = jax.random.split(jax.random.key(1), 2)
    both, _ = toy.train_instances(spec, jnp.array([0.1, 1.0]), keys, cfg)
    alone, _ = toy.train_instances(spec, jnp.array([1.0]), keys[1:], cfg)
    np.testing.assert_allclose(both["W"][1], alone["W"][0], rtol=1e-5, atol=1e-6)


def test_all_represented_start_is_used_as_given():
    # With a zero learning rate AdamW leaves the start untouched: the control instances really
    # begin with every feature represented (unit-norm W_i) and the negative bias.
    spec = toy.ToySpec(8, 3, "relu_out", toy.importance_geometric(8, 0.7))
    keys = jax.random.split(jax.random.key(3), 2)
    start = jax.vmap(lambda k: toy.init_all_represented(spec, k))(keys)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(start["W"]), axis=1), 1.0, rtol=1e-6)
    assert toy_geometry.weight_geometry(np.asarray(start["W"][0])).features_represented == 8
    cfg = toy.TrainConfig(steps=3, batch_size=16, learning_rate=0.0, chunk_steps=3)
    params, _ = toy.train_instances(spec, jnp.full((2,), 0.1), keys, cfg, init_K=start)
    np.testing.assert_array_equal(params["W"], start["W"])
    np.testing.assert_array_equal(params["b"], np.full((2, 8), -0.2, np.float32))
    with pytest.raises(ValueError, match="tied models"):
        toy.init_all_represented(toy.ToySpec(8, 3, "relu_hidden", (1.0,) * 8), keys[0])


def test_sampler_density_and_range():
    x = toy.sample_features(jax.random.key(2), 20_000, 10, jnp.float32(0.2))
    active = np.asarray(x) != 0
    np.testing.assert_allclose(active.mean(), 0.2, atol=0.01)
    vals = np.asarray(x)[active]
    assert vals.min() >= 0 and vals.max() <= 1
    np.testing.assert_allclose(vals.mean(), 0.5, atol=0.01)
    signed = toy.sample_conditioned(jax.random.key(3), 5000, 4, 0.05, 2, True, signed=True)
    assert np.all(np.asarray(signed)[:, 2] != 0)
    np.testing.assert_allclose(np.asarray(signed)[:, 2].mean(), 0.0, atol=0.05)
    off = toy.sample_conditioned(jax.random.key(3), 100, 4, 0.9, 1, False)
    assert np.all(np.asarray(off)[:, 1] == 0)


def test_weight_geometry_closed_forms():
    angles = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(angles), np.sin(angles)])
    geo = toy_geometry.weight_geometry(pentagon)
    np.testing.assert_allclose(geo.feature_dimensionality, 0.4, atol=1e-9)
    np.testing.assert_allclose(geo.dims_per_feature, 0.4)
    assert geo.features_represented == 5
    # An antipodal pair shares one dimension (D = 1/2); an unused feature has D = 0.
    pair = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    geo = toy_geometry.weight_geometry(pair)
    np.testing.assert_allclose(geo.feature_dimensionality, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(geo.superposition[:2], 1.0)
    assert geo.features_represented == 2
    eye = toy_geometry.weight_geometry(np.eye(3))
    np.testing.assert_allclose(eye.feature_dimensionality, 1.0)
    np.testing.assert_allclose(eye.superposition, 0.0)


def test_ablation_of_a_hand_built_code():
    # Features 0 and 1 share hidden dim 0 as an antipodal pair, feature 2 owns dim 1, feature 3
    # is not represented. Each represented task needs exactly its own dim; dim 0 serves two
    # tasks and dim 1 one.
    spec = toy.ToySpec(4, 2, "relu_out", (1.0, 1.0, 1.0, 1.0))
    params = {"W": jnp.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]),
              "b": jnp.zeros((4,))}
    ab = toy_superposition.AblationConfig(
        enabled=True, epsilon=0.1, num_positive=200, num_negative=200, method="exact",
        feature_stride=1, num_densities=0, mcmc_check=False, mcmc_samples=0, mcmc_warmup=0,
        mcmc_chains=0, mcmc_tasks=0)
    out = toy_superposition.ablate_instance(spec, params, 0.05, ab, jax.random.key(5))
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


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="importance"):
        toy.ToySpec(3, 2, "relu_out", (1.0, 0.5))
    with pytest.raises(ValueError, match="kind"):
        toy.ToySpec(2, 1, "tanh", (1.0, 0.5))
    with pytest.raises(ValueError, match="variant"):
        _config_module().get_config("nope")


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
        control = results["initialisation_control"]
        assert control["density"] == min(r["density"] for r in recs)
        for start in ("xavier", "all_represented"):
            assert len(control[start]["features_represented"]) == 1
            assert np.isfinite(control[start]["heldout_loss"]).all()
    report = (tmp_path / "report.md").read_text()
    assert "What reproduced" in report and "figures/dims_per_feature.png" in report
    assert ("figures/w_columns_2d.png" in report) == (config.m_hidden == 2)
    assert module.get_sweep(variant)[0] == {"seed": 0}


def test_notebook_init_scale_and_mean_loss():
    # torch's xavier-normal on an [I, n, m] tensor: fan_in = n·m, fan_out = I·m.
    spec = toy.ToySpec(20, 5, "relu_out", toy.importance_geometric(20, 0.7))
    std = toy.notebook_std(spec, 8)
    np.testing.assert_allclose(std, np.sqrt(2.0 / (5 * 20 + 8 * 5)))
    keys = jax.random.split(jax.random.key(1), 400)
    w = np.asarray(jax.vmap(lambda k: toy.init_notebook(spec, k, 8)["W"])(keys))
    np.testing.assert_allclose(w.std(), std, rtol=0.02)
    assert abs(w.mean()) < 0.01 * std * 10
    # The trainer starts from exactly that draw: zero steps of AdamW are not allowed, so
    # compare the first loss of a one-step run against the init's loss at lr = 0.
    cfg = toy.TrainConfig(steps=1, batch_size=64, learning_rate=0.0, weight_decay=0.0,
                          chunk_steps=1, init="notebook", init_instances=8, loss="mean")
    params, _ = toy.train_instances(spec, jnp.full((2,), 0.1), keys[:2], cfg)
    init_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys[:2])
    np.testing.assert_allclose(params["W"][1], toy.init_notebook(spec, init_keys[1], 8)["W"],
                               atol=1e-6)
    # The notebook's loss is the importance-weighted error averaged over features too.
    x = toy.sample_features(jax.random.key(2), 32, 20, 0.3)
    p0 = toy.unstack(params, 0)
    np.testing.assert_allclose(toy.weighted_mse(spec, p0, x, "mean") * 20,
                               toy.weighted_mse(spec, p0, x), rtol=1e-6)
    with pytest.raises(ValueError, match="tied models"):
        toy.init_notebook(toy.ToySpec(2, 1, "relu_hidden", (1.0, 0.5)), keys[0], 1)
    with pytest.raises(ValueError, match="train.init"):
        toy.TrainConfig(init="kaiming")
    with pytest.raises(ValueError, match="train.loss"):
        toy.TrainConfig(loss="max")


def test_features_represented_at_thresholds():
    norms = np.array([0.05, 0.1, 0.2, 0.3, 0.6, 1.2])
    # Strictly above each threshold, as the 0.5 count of weight_geometry.
    assert toy_superposition.features_represented_at(norms) == {"0.1": 4, "0.25": 3, "0.5": 2}
    w = np.zeros((2, 6))
    w[0] = norms
    assert (toy_superposition.features_represented_at(np.linalg.norm(w, axis=0))["0.5"]
            == toy_geometry.weight_geometry(w).features_represented)
