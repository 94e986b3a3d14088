"""Step 5: the basis control -- each instance's ablation metrics in the neuron basis beside the
same metrics in random rotations of its hidden space.

Why: the tied models' hidden layer (h = W x, x' = act(WᵀW x + b)) has no privileged basis: W → qᵀW
leaves WᵀW and so the loss unchanged, so a metric that moves under q describes the basis the
hidden space is read in, not the network. The ReLU-hidden model's neurons are privileged
(rotating its weights changes what it computes); there the question is whether the neuron basis
is also special for the ablation, i.e. whether its value lies outside the rotated values.

How: on replicate 0's ablated instances each of k Haar-random orthogonal q (one set per instance)
ablates the codes of ``bb.Basis.orthogonal(q)`` of the hidden activation: the same network and
the same examples (the neuron ablation's key), only the directions masked differ. For the tied
models that is exactly ablating the units of the rotated model (``toy.rotate_hidden``); for
``relu_hidden`` it keeps the trained network, whose rotated weights would compute something else.
The held-out loss of the rotated weights is measured for both: unchanged to float precision for
the tied models, the cost of leaving the neuron basis for ``relu_hidden``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

import bablate as bb
from bablate import progress
from bablate.models import toy
from bablate.testbeds import toy as toy_testbed

from . import ablation
from .config import StudyConfig
from .train import Instances

# Control metric -> how it is read off an instance's ablation values (means over its tasks:
# informative tasks for distributedness and total correlation, every ablated task for task
# information, every unit for the per-unit counts).
METRICS = {
    "distributedness": lambda v: v["distributedness_mean"],
    "polysemanticity": lambda v: v["polysemanticity_mean"],
    "tasks_served": lambda v: v["tasks_served_mean"],
    "task_information": lambda v: float(np.mean(v["task_information"])),
    "total_correlation": lambda v: v["total_correlation_mean"],
}
# The loss is compared on one shared sample, so the difference is the rotation's alone and a
# quarter of heldout_loss's default sample is plenty.
LOSS_BLOCKS = 4
LOSS_STREAM = 1_000_000  # past any instance index


def metric_values(values: dict[str, Any]) -> dict[str, float]:
    """The control's metrics of one ablation (an `ablation.InstanceAblation`'s values)."""
    return {name: float(read(values)) for name, read in METRICS.items()}


def random_rotations(key: jax.Array, num: int, m: int) -> jax.Array:
    """``[num, m, m]`` Haar-random orthogonal matrices (columns = the rotated units)."""
    return jax.random.orthogonal(key, m, shape=(num,))


def spread(neuron: float, rotated: ArrayLike) -> dict[str, Any]:
    """A metric's neuron value beside its rotated values: their mean, sd (ddof 1) and list."""
    values = np.asarray(rotated, np.float64)
    finite = values[np.isfinite(values)]
    sd = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return {"neuron": float(neuron),
            "rotated_mean": float(finite.mean()) if finite.size else float("nan"),
            "rotated_sd": sd, "rotated": values.tolist()}


def instance_control(cfg: StudyConfig, params: toy.Params, density: float,
                     neuron: ablation.InstanceAblation, rotations: jax.Array,
                     loss_key: jax.Array) -> dict[str, Any]:
    """One instance's control: every metric's neuron value, rotated mean, sd and values, and
    the held-out loss of the network and of its rotated weights.

    Args:
      cfg: the study config (model and feature tasks).
      params: the instance.
      density: its 1 − S.
      neuron: its neuron-basis ablation (its values and the key of its examples).
      rotations: ``[k, m, m]`` orthogonal matrices.
      loss_key: draws the held-out sample every loss is computed on.
    """
    spec = cfg.spec
    rows = [metric_values(ablation.ablate_instance(
        spec, params, density, cfg.ablation, neuron.key,
        basis=bb.Basis.orthogonal(q, name=f"rotation {r}")).values)
        for r, q in enumerate(rotations)]
    neuron_values = metric_values(neuron.values)
    out: dict[str, Any] = {"density": density}
    for name in METRICS:
        out[name] = spread(neuron_values[name], [row[name] for row in rows])

    def loss(p):
        return float(toy_testbed.heldout_loss(spec, p, loss_key, jnp.float32(density),
                                              num_blocks=LOSS_BLOCKS))

    base = loss(params)
    rotated = np.array([loss(toy.rotate_hidden(spec, params, q)) for q in rotations])
    out["loss"] = {**spread(base, rotated),
                   "max_relative_change": float(np.max(np.abs(rotated - base)) / base)}
    return out


def rotation_control(cfg: StudyConfig, params_all: toy.Params, inst: Instances,
                     ablations: dict[int, ablation.InstanceAblation],
                     key: jax.Array) -> dict[str, Any]:
    """The basis control of every ablated density (replicate 0), keyed by the model kind.

    Returns:
      ``{kind: {"num_rotations", "replicate", "by_density": {"<1−S>": instance record}}}``
      with the instance records of `instance_control`.
    """
    spec, num = cfg.spec, cfg.rotation_control.num_rotations
    ks = [k for k in sorted(ablations) if inst.replicate[k] == 0]
    loss_key = jax.random.fold_in(key, LOSS_STREAM)
    by_density = {}
    for k in progress.track(ks, total=len(ks), desc="rotation control", unit="instance"):
        density = float(inst.density[k])
        rotations = random_rotations(jax.random.fold_in(key, k), num, spec.m_hidden)
        by_density[f"{density:g}"] = instance_control(
            cfg, toy.unstack(params_all, k), density, ablations[k], rotations, loss_key)
    return {spec.kind: {"num_rotations": num, "replicate": 0, "by_density": by_density}}
