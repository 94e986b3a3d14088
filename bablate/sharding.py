"""Spreading the mask axis over devices.

One code path for one CPU, many fake CPU devices (``--xla_force_host_platform_device_count``)
and GPUs/TPUs: a 1-D mesh over ``jax.devices()`` named ``"masks"``; batches of masks are padded
to a multiple of the device count and placed with a ``NamedSharding`` so that jit splits the
vmapped evaluation across devices. With one device nothing is moved.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@functools.cache
def mesh() -> Mesh:
    """A 1-D mesh over all devices, axis ``"masks"``."""
    return Mesh(np.asarray(jax.devices()), ("masks",))


def num_devices() -> int:
    return jax.device_count()


def round_up(n: int) -> int:
    """``n`` rounded up to a multiple of the device count."""
    k = num_devices()
    return -(-n // k) * k


def shard_masks(masks) -> jax.Array:
    """Places ``[M, d]`` masks with the mask axis split over devices (M divisible by devices)."""
    if num_devices() == 1:
        return jax.numpy.asarray(masks)
    if masks.shape[0] % num_devices():
        raise ValueError(f"{masks.shape[0]} masks cannot be split evenly over {num_devices()} "
                         "devices; pad with sharding.round_up first.")
    return jax.device_put(masks, NamedSharding(mesh(), PartitionSpec("masks", None)))


def constrain(masks: jax.Array) -> jax.Array:
    """Inside jit: asks for the mask axis of ``[M, d]`` to be split over devices."""
    if num_devices() == 1:
        return masks
    return jax.lax.with_sharding_constraint(
        masks, NamedSharding(mesh(), PartitionSpec("masks", None)))
