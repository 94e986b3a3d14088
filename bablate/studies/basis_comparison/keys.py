"""Every random key of the study, derived from one root key in one place.

``run`` makes the root ``jax.random.key(seed)`` and asks this module for the named keys of each
network; nothing else calls ``fold_in`` on the root or on a network key. The fold-in numbers are
those the study has always used, so results do not move with the layout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# fold_in(root, ·): one stream per network.
TOY, RNN, LLM = 1, 2, 3
# fold_in(network key, ·) for the RNN and the LLM layer (the layer is not trained: 0 unused).
TRAIN, DICTIONARY, ROTATION, INFERENCE, STABILITY = 0, 1, 2, 3, 4
# Toy instance k (one per density) draws its keys at fold_in(toy key, INSTANCE_STRIDE·(k+1) + j)
# for j = 0..4 (fit, tasks, dictionary, rotation, inference), clear of the training keys
# fold_in(toy key, k) as long as there are fewer than INSTANCE_STRIDE densities.
INSTANCE_STRIDE = 100
# SVI reruns of basis b with seed s: fold_in(stability key, RERUN_STRIDE·(b+1) + s).
RERUN_STRIDE = 1000


@dataclasses.dataclass(frozen=True)
class NetworkKeys:
    """The keys of one network read in every basis (RNN, LLM layer)."""

    train: jax.Array
    dictionary: jax.Array
    rotation: jax.Array
    inference: jax.Array
    stability: jax.Array

    @classmethod
    def from_key(cls, key: jax.Array) -> NetworkKeys:
        f = jax.random.fold_in
        return cls(train=f(key, TRAIN), dictionary=f(key, DICTIONARY),
                   rotation=f(key, ROTATION), inference=f(key, INFERENCE),
                   stability=f(key, STABILITY))


@dataclasses.dataclass(frozen=True)
class InstanceKeys:
    """The keys of one toy instance (one density)."""

    fit: jax.Array
    tasks: jax.Array
    dictionary: jax.Array
    rotation: jax.Array
    inference: jax.Array


@dataclasses.dataclass(frozen=True)
class ToyKeys:
    """The toy models' training keys (stacked, one per density) and each instance's keys."""

    train: jax.Array
    instances: tuple[InstanceKeys, ...]

    @classmethod
    def from_key(cls, key: jax.Array, num_densities: int) -> ToyKeys:
        f = jax.random.fold_in
        train = jnp.stack([f(key, k) for k in range(num_densities)])
        names = [fld.name for fld in dataclasses.fields(InstanceKeys)]
        instances = tuple(
            InstanceKeys(**{n: f(key, INSTANCE_STRIDE * (k + 1) + j) for j, n in enumerate(names)})
            for k in range(num_densities))
        return cls(train=train, instances=instances)


@dataclasses.dataclass(frozen=True)
class StudyKeys:
    """The named keys of the whole study."""

    toy: ToyKeys
    rnn: NetworkKeys
    llm: NetworkKeys

    @classmethod
    def from_root(cls, root: jax.Array, num_densities: int) -> StudyKeys:
        f = jax.random.fold_in
        return cls(toy=ToyKeys.from_key(f(root, TOY), num_densities),
                   rnn=NetworkKeys.from_key(f(root, RNN)),
                   llm=NetworkKeys.from_key(f(root, LLM)))


def rerun_key(stability: jax.Array, basis_index: int, seed_index: int) -> jax.Array:
    """The key of the ``seed_index``-th SVI rerun in the ``basis_index``-th basis."""
    return jax.random.fold_in(stability, RERUN_STRIDE * (basis_index + 1) + seed_index)
