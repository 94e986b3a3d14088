"""Toy models of superposition (bablate.models.toy, bablate.testbeds.toy_geometry): training,
sampling and weight geometry against closed forms. The study's tests are in tests/studies/."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bablate.models import toy
from bablate.testbeds import toy_geometry


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


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="importance"):
        toy.ToySpec(3, 2, "relu_out", (1.0, 0.5))
    with pytest.raises(ValueError, match="kind"):
        toy.ToySpec(2, 1, "tanh", (1.0, 0.5))


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


def test_rotating_the_hidden_space_keeps_tied_models_and_changes_relu_hidden():
    # Tied models: W → qᵀW leaves WᵀW, so every output, unchanged; the hidden code becomes h q.
    # relu_hidden: the ReLU between W1 and W2 does not commute with q, so the outputs change.
    q = jax.random.orthogonal(jax.random.key(0), 3)
    x = toy.sample_features(jax.random.key(1), 256, 6, jnp.float32(0.5))
    for kind in ("relu_out", "linear"):
        spec = toy.ToySpec(6, 3, kind, toy.importance_geometric(6, 0.8))
        params = jax.tree.map(lambda a: a + 0.05, toy.init_params(spec, jax.random.key(2)))
        rotated = toy.rotate_hidden(spec, params, q)
        model = spec.model()
        np.testing.assert_allclose(model.apply({"params": rotated}, x),
                                   model.apply({"params": params}, x), atol=1e-6)
        np.testing.assert_allclose(model.apply({"params": rotated}, x, method="encode"),
                                   model.apply({"params": params}, x, method="encode") @ q,
                                   atol=1e-6)
    spec = toy.ToySpec(6, 3, "relu_hidden", toy.importance_geometric(6, 0.8))
    params = toy.init_params(spec, jax.random.key(3))
    signed = toy.sample_features(jax.random.key(4), 256, 6, jnp.float32(0.5), signed=True)
    model = spec.model()
    moved = np.abs(model.apply({"params": toy.rotate_hidden(spec, params, q)}, signed)
                   - model.apply({"params": params}, signed)).max()
    assert moved > 0.05
    with pytest.raises(AssertionError):  # chex: q must be [m, m]
        toy.rotate_hidden(spec, params, jnp.eye(4))
