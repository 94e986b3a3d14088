"""Spreading the mask axis over devices.

One code path for one CPU, several CPU devices and GPUs/TPUs: a 1-D mesh over
``jax.devices()`` named ``"masks"``; batches of masks are padded to a multiple of the device
count and placed with a ``NamedSharding`` so that jit splits the evaluation across devices.
With one device nothing is moved.

On CPU, JAX shows one device by default and XLA:CPU runs most non-matmul work of a program on
one thread, so a multi-core machine idles. :func:`use_cpu_devices` (``launch.py`` calls it;
``--cpu_devices``) splits the CPU into one device per core, so masks and MCMC chains spread
over the cores; results are the same as on one device.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def cpu_cores() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def use_cpu_devices(n: int | None = None) -> int:
    """Asks JAX for ``n`` CPU devices (default: one per core); call before any JAX computation.

    Only the CPU backend is affected (a GPU/TPU process keeps its accelerators as the default
    devices). Returns ``n``.

    Raises:
      ValueError: ``n`` < 1.
      RuntimeError: JAX has already started its backends (set it at the top of the program,
        before the first array is created, or use ``XLA_FLAGS=
        --xla_force_host_platform_device_count=n``).
    """
    n = cpu_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"the number of CPU devices must be at least 1, got {n}.")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        raise RuntimeError(f"cannot switch to {n} CPU devices: JAX has already initialised its "
                           "backends in this process. Call bablate.sharding.use_cpu_devices "
                           "before the first JAX computation.") from e
    return n


def setup_cpu_devices(n: int | None) -> int | None:
    """The command line's ``--cpu_devices``: splits the CPU into ``n`` JAX devices (None: one
    per core, unless XLA_FLAGS forces a count); must run before JAX starts. Returns the count
    set, or None when left as it was."""
    if n is None:
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            return None
        n = cpu_cores()
    return use_cpu_devices(n)


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


_SPLIT = contextvars.ContextVar("bablate_split_masks", default=True)


@contextlib.contextmanager
def unsplit():
    """Code traced inside evaluates its masks on one device (:func:`map_masks` does not split
    them): for programs whose every step handles a few masks, where a split per step costs
    more in synchronisation than it saves (SVI, vectorised MCMC chains)."""
    token = _SPLIT.set(False)
    try:
        yield
    finally:
        _SPLIT.reset(token)


def in_shard_map() -> bool:
    """Whether the caller is traced inside ``shard_map`` (arrays are already per device)."""
    return bool(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))


def map_masks(fn, data, masks: jax.Array) -> jax.Array:
    """``fn(data, masks) -> [M]`` with each device evaluating its share of the mask axis.

    Each device runs ``fn`` on its own masks (``shard_map``), so per-device code such as
    cache-sized blocks of masks stays as on one device. Runs ``fn`` unsplit with one device,
    when M does not divide evenly, inside an enclosing ``shard_map`` or under
    :func:`unsplit`.
    """
    n = num_devices()
    if n == 1 or masks.shape[0] % n or in_shard_map() or not _SPLIT.get():
        return fn(data, masks)
    return jax.shard_map(fn, mesh=mesh(), in_specs=(PartitionSpec(), PartitionSpec("masks")),
                         out_specs=PartitionSpec("masks"), check_vma=False)(data, masks)


def replicate(tree):
    """Places every array of ``tree`` on all devices once (so jitted calls that split masks
    over the devices do not copy it again on every call)."""
    if num_devices() == 1:
        return tree
    spec = NamedSharding(mesh(), PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, spec) if isinstance(x, (jax.Array, np.ndarray))
                        else x, tree)
