"""Representation-geometry kernels against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bablate import geometry


@pytest.mark.parametrize("a", [0.5, 1.0, 1.7, 3.0])
def test_power_law_recovers_exponent(a):
    eigs = jnp.arange(1, 101, dtype=jnp.float32) ** (-a)
    fit = jax.jit(geometry.fit_power_law, static_argnums=(1, 2))(eigs, 1, 100)
    np.testing.assert_allclose(fit.alpha, a, rtol=1e-4)
    np.testing.assert_allclose(fit.log_c, 0.0, atol=1e-3)
    assert int(fit.num_points) == 100


def test_power_law_fit_range_ignores_outside_ranks():
    # Two regimes: exponent 1 on ranks 1..10, exponent 4 afterwards.
    n = jnp.arange(1, 51, dtype=jnp.float32)
    eigs = jnp.where(n <= 10, n**-1.0, 10.0**3 * n**-4.0)
    np.testing.assert_allclose(geometry.fit_power_law(eigs, 1, 10).alpha, 1.0, rtol=1e-4)
    np.testing.assert_allclose(geometry.fit_power_law(eigs, 11, 50).alpha, 4.0, rtol=1e-4)


def test_power_law_skips_zero_eigenvalues_and_rejects_bad_range():
    eigs = jnp.array([1.0, 0.25, 1.0 / 9.0, 0.0, 0.0])
    fit = geometry.fit_power_law(eigs)
    np.testing.assert_allclose(fit.alpha, 2.0, rtol=1e-4)
    assert int(fit.num_points) == 3
    assert np.isnan(geometry.fit_power_law(jnp.array([1.0, 0.0, 0.0])).alpha)
    with pytest.raises(ValueError, match="fit range"):
        geometry.fit_power_law(eigs, 3, 2)


def test_smooth_code_threshold():
    assert geometry.smooth_code_threshold(1) == 3.0
    assert geometry.smooth_code_threshold(4) == 1.5
    assert bool(geometry.is_smooth_code(jnp.array(1.6), 4))
    assert not bool(geometry.is_smooth_code(jnp.array(1.4), 4))
    with pytest.raises(ValueError):
        geometry.smooth_code_threshold(0)


def test_participation_ratio_closed_forms():
    np.testing.assert_allclose(geometry.participation_ratio(jnp.full((7,), 0.3)), 7.0, rtol=1e-6)
    np.testing.assert_allclose(
        geometry.participation_ratio(jnp.array([2.0, 0.0, 0.0, 0.0])), 1.0, rtol=1e-6)
    # Two equal modes out of four → 2; invariant to scale.
    np.testing.assert_allclose(
        geometry.participation_ratio(5.0 * jnp.array([1.0, 1.0, 0.0, 0.0])), 2.0, rtol=1e-6)


def test_covariance_spectrum_of_known_covariance():
    key = jax.random.key(0)
    scales = jnp.array([3.0, 2.0, 1.0, 0.5])
    rot, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (4, 4)))
    acts = (jax.random.normal(key, (200_000, 4)) * scales[None, :]) @ rot.T + 7.0
    eigs = geometry.covariance_spectrum(acts)
    np.testing.assert_allclose(eigs, scales**2, rtol=0.03)
    assert np.all(np.diff(np.asarray(eigs)) <= 0)


def test_energy_of_straight_line_closed_form():
    key_a, key_v, key_r = jax.random.split(jax.random.key(2), 3)
    a0 = jax.random.normal(key_a, (6,))
    v = jax.random.normal(key_v, (6,))
    r = geometry.random_projection(key_r, 6)
    assert r.shape == (3, 6)
    for t in (5, 50, 500):
        line = a0[None, :] + jnp.linspace(0.0, 1.0, t)[:, None] * v[None, :]
        energy = jax.jit(geometry.trajectory_energy)(line, r)
        np.testing.assert_allclose(energy, jnp.sum((r @ v) ** 2) / (t - 1), rtol=1e-4)
        # Walking the same line backwards gives the same energy.
        np.testing.assert_allclose(geometry.trajectory_energy(line[::-1], r), energy, rtol=1e-5)


def test_uniform_sampling_minimises_energy_of_a_line():
    # Cauchy-Schwarz: for a fixed path and number of steps, equal steps give the least energy.
    v = jnp.array([1.0, -2.0, 0.5])
    r = geometry.random_projection(jax.random.key(3), 3)
    ts_uniform = jnp.linspace(0.0, 1.0, 41)
    ts_warped = ts_uniform**2
    e_uniform = geometry.trajectory_energy(ts_uniform[:, None] * v[None, :], r)
    e_warped = geometry.trajectory_energy(ts_warped[:, None] * v[None, :], r)
    assert float(e_warped) > float(e_uniform)


def test_jump_keeps_energy_under_refinement_and_projection_mean():
    # A step in the code contributes its full size however finely it is sampled.
    jump = jnp.array([0.0, 1.0, 0.0, 0.0])
    key = jax.random.key(4)
    energies = []
    for t in (20, 200, 2000):
        ts = jnp.linspace(0.0, 1.0, t)
        acts = (ts[:, None] > 0.5) * jump[None, :]
        energies.append(float(geometry.projected_energy(key, acts, num_projections=4000)))
    # E‖r a‖² = 3‖a‖²/m with m = 4 units.
    np.testing.assert_allclose(energies, 0.75, rtol=0.06)
