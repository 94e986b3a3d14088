"""The toy |x| model in superposition (Elhage et al. 2022, §8): one task per feature, read in
neurons, a rotation and dictionaries whose recovery of the true feature directions is checked."""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate import dictionary as dl
from bablate.models import toy as toy_model
from bablate.runner.runs import RunContext

from .bases import NEURON, ROTATION, fit_dictionaries, random_rotation
from .config import InferenceConfig, ToyConfig
from .keys import ToyKeys
from .reading import compare_bases


def toy_spec(tc: ToyConfig) -> toy_model.ToySpec:
    """The ReLU-hidden |x| model of the config (geometric feature importance)."""
    return toy_model.ToySpec(tc.n_features, tc.m_hidden, "relu_hidden",
                             toy_model.importance_geometric(tc.n_features, tc.importance))


def true_directions(params, min_norm_fraction: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """The hidden-layer directions of the toy features: ReLU(+W1_i) and ReLU(−W1_i).

    A single active feature x_i = v > 0 gives h = v·ReLU(W1_i), and v < 0 gives |v|·ReLU(−W1_i),
    so these 2n directions are what a dictionary should find. Directions with a norm below
    ``min_norm_fraction`` of the largest are dropped (the feature is not represented).
    """
    w1 = np.asarray(params["W1"])  # [m, n]
    dirs = np.concatenate([np.maximum(w1, 0).T, np.maximum(-w1, 0).T])
    names = [f"+x{i}" for i in range(w1.shape[1])] + [f"-x{i}" for i in range(w1.shape[1])]
    norms = np.linalg.norm(dirs, axis=1)
    keep = norms >= min_norm_fraction * norms.max()
    return dirs[keep], [n for n, k in zip(names, keep, strict=True) if k]


def toy_tasks(spec: toy_model.ToySpec, params, density: float, tc: ToyConfig,
              key: jax.Array) -> bb.TaskSet:
    """One task per feature, '|x_i| computed', all on one shared probe set and one site.

    The probe set concatenates, for every feature j, ``num_positive`` draws of the data
    conditioned on x_j ≠ 0 and ``num_negative`` conditioned on x_j = 0. For task i the positives
    are the probes with x_i ≠ 0 and the negatives those with x_i = 0 (balanced estimate); a probe
    is correct when |y_i − |x_i|| < ε. Sharing the probes lets one enumeration score every task.
    """
    model, variables = spec.model(), {"params": params}
    n = spec.n_features
    blocks = []
    for j in range(n):
        k_pos, k_neg = jax.random.split(jax.random.fold_in(key, j))
        blocks.append(toy_model.sample_conditioned(k_pos, tc.num_positive, n, density, j, True,
                                                   True))
        blocks.append(toy_model.sample_conditioned(k_neg, tc.num_negative, n, density, j, False,
                                                   True))
    x = jnp.concatenate(blocks)
    def encode(inputs: jax.Array) -> jax.Array:
        # Flax types apply() as possibly returning (output, state); without mutable, it is
        # the output.
        return cast(jax.Array, model.apply(variables, inputs, method="encode"))

    site = bb.Site.from_functions(
        "hidden", spec.m_hidden, prefix=encode,
        suffix=lambda h, inputs: model.apply(variables, h, method="decode"))
    act = jax.jit(encode)(x)
    eps = tc.epsilon
    rules = {f"|x{i}|": bb.rules.custom(
        lambda out, t, i=i: (jnp.abs(out[:, i] - t) < eps).astype(jnp.float32),
        positive=np.asarray(x[:, i] != 0), data=jnp.abs(x[:, i]), name=f"|y-|x||<{eps}")
        for i in range(n)}
    return bb.TaskSet.build(site, x, rules, activation=act, check_intact=False)


def train_models(tc: ToyConfig, ctx: RunContext, keys: ToyKeys) -> tuple[dict, bool]:
    """The trained |x| models, one per density (stacked), and whether they were reloaded.

    Returns:
      ``{"params": stacked params, "loss": final loss per density}`` (numpy) and ``reuse``.
    """
    params_like, loss_like = toy_model.instances_like(toy_spec(tc), len(tc.densities))
    state = ctx.load_state("toy_params", like={"params": params_like, "loss": loss_like})
    if state is not None:
        return state, True
    ctx.log(f"toy: training {len(tc.densities)} |x| models {tc.n_features}->{tc.m_hidden} for "
            f"{tc.train.steps} steps")
    dens = jnp.asarray(np.asarray(tc.densities, np.float32))
    params, loss = toy_model.train_instances(toy_spec(tc), dens, keys.train, tc.train,
                                             desc="train toy |x|")
    state = {"params": jax.tree.map(np.asarray, params), "loss": np.asarray(loss)}
    ctx.save_state("toy_params", state)
    return state, False


def run(tc: ToyConfig, inference: InferenceConfig, top_k: tuple[int, ...], ctx: RunContext,
        keys: ToyKeys) -> dict:
    """Trains the |x| model at each density, fits dictionaries, compares the bases."""
    spec = toy_spec(tc)
    state, reuse = train_models(tc, ctx, keys)
    out = []
    for k, density in enumerate(np.asarray(tc.densities, np.float32)):
        ik = keys.instances[k]
        p = jax.tree.map(jnp.asarray, toy_model.unstack(state["params"], k))
        x = toy_model.sample_features(ik.fit, tc.fit_samples, tc.n_features, float(density),
                                      True)
        hidden = spec.model().apply({"params": p}, x, method="encode")
        # Dictionaries are fitted on examples with some feature active (an all-zero input gives
        # an all-zero hidden state, which every dictionary reconstructs).
        active = np.asarray(jnp.any(x != 0, axis=1))
        acts = np.asarray(hidden)[active]
        bases, reports = fit_dictionaries(acts, tc.dictionaries, ik.dictionary, ctx,
                                          f"toy_d{float(density):.3g}", reuse)
        truth, names = true_directions(p)
        recovery = {name: dl.max_cosine(b.decoder, truth).tolist() for name, b in bases.items()}
        tasks = toy_tasks(spec, p, float(density), tc, ik.tasks)
        all_bases = {NEURON: None, ROTATION: random_rotation(ik.rotation, tc.m_hidden), **bases}
        metrics = compare_bases(tasks, all_bases, inference, ik.inference, top_k,
                                f"toy 1-S={float(density):.3g}")
        out.append({"density": float(density), "final_loss": float(state["loss"][k]),
                    "true_directions": names, "recovery": recovery,
                    "recovery_mean": {n: float(np.mean(v)) for n, v in recovery.items()},
                    "recovery_min": {n: float(np.min(v)) for n, v in recovery.items()},
                    "dictionaries": reports, "bases": metrics})
    return {"network": f"toy |x| {tc.n_features}->{tc.m_hidden} (ReLU hidden)",
            "instances": out}
