"""Masks and bases that do not fit the activation: one line naming both shapes and the fix,
never an error from deep inside a broadcast or a matrix product."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bablate as bb

ACT = jnp.arange(12.0).reshape(4, 3)  # 4 examples, 3 units


def _one_line(info) -> str:
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("mask,axis,message", [
    (jnp.ones(5), -1, "the mask has shape (5,) but the activation of shape (4, 3) has 3 units on "
     "axis -1; pass one mask value per unit, shape (3,)."),
    (jnp.ones((2, 3)), -1, "the mask has shape (2, 3) but the activation of shape (4, 3) has 3 "
     "units on axis -1; pass one mask value per unit, shape (3,)."),
    (jnp.ones(3), 0, "the mask has shape (3,) but the activation of shape (4, 3) has 4 units on "
     "axis 0; pass one mask value per unit, shape (4,)."),
    (jnp.float32(1.0), -1, "the mask has shape () but"),
], ids=["too-long", "batch-of-masks", "other-axis", "scalar"])
def test_mask_of_the_wrong_shape_is_one_line(mask, axis, message):
    with pytest.raises(ValueError) as info:
        bb.mask_activation(ACT, mask, 0.0, unit_axis=axis)
    assert _one_line(info).startswith("mask_activation: " + message)


def test_mask_of_the_wrong_shape_is_refused_when_traced_too():
    with pytest.raises(ValueError, match=r"the mask has shape \(5,\) but"):
        jax.jit(lambda m: bb.mask_activation(ACT, m, 0.0))(jnp.ones(5))


def test_mask_of_the_wrong_length_for_a_basis_is_one_line():
    basis = bb.Basis.orthogonal(jnp.eye(3))
    with pytest.raises(ValueError) as info:
        bb.mask_activation(ACT, jnp.ones(4), 0.0, basis=basis)
    assert _one_line(info) == ("mask_activation: the mask has shape (4,) but basis 'rotation' "
                               "has 3 units; pass one mask value per unit, shape (3,).")


WIDE = bb.Basis(encoder=jnp.eye(5)[:, :2], decoder=jnp.eye(5)[:2], name="wide")
WIDTH = ("basis 'wide' maps activations of width 5 (its decoder is [2, 5]) but the activation "
         "has shape {shape}; use a basis fitted on this site's activations (their last axis).")


def test_basis_of_another_width_in_mask_activation_is_one_line():
    with pytest.raises(ValueError) as info:
        bb.mask_activation(ACT, jnp.ones(2), 0.0, basis=WIDE)
    assert _one_line(info) == "mask_activation: " + WIDTH.format(shape=(4, 3))


def _linear_site(**kwargs):
    w = jnp.ones((3, 2))
    return bb.Site.from_functions("hidden", 2, prefix=lambda x: x, suffix=lambda h, x: h @ w,
                                  **kwargs)


def test_site_with_a_basis_of_another_width_is_refused_when_the_task_is_built():
    site = _linear_site(basis=WIDE)
    targets = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError) as info:
        bb.Task.build(site, ACT, bb.rules.top1(targets))
    assert _one_line(info) == "Site 'hidden': " + WIDTH.format(shape=(4, 3))


def test_in_place_site_with_a_basis_of_another_width_is_one_line():
    """Masked inside the network (traced), where no activation is cached to check first."""

    def apply(x, ablate):
        return ablate(x) @ jnp.ones((3, 2))

    site = bb.Site.in_place("recurrent", 2, apply, basis=WIDE)
    with pytest.raises(ValueError) as info:
        bb.Task.build(site, ACT, bb.rules.top1(np.array([0, 1, 0, 1])))
    assert WIDTH.format(shape=(4, 3)) in _one_line(info)
