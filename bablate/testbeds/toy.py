"""Toy models of superposition as a testbed: the hidden site and "feature i reconstructed" tasks.

Everything takes plain arguments (a `toy.ToySpec`, a trained instance's params, ints and floats),
so any study of toy models can build the same tasks:

    task, p_intact = feature_task(spec, params, density=0.01, feature=3, key=key,
                                  epsilon=0.25, num_positive=128, num_negative=128)
    post = bb.infer(task, method="exact")

:func:`abs_task_set` makes every feature's task of the |x| model on one shared probe set.

Task definition: positives are draws of the data distribution conditioned on x_i ≠ 0, negatives
conditioned on x_i = 0 (a balanced sensitivity/specificity estimate weighs both equally); the
network is correct on an example when |x'_i − target_i| < ε (target = x, or |x| for the
``relu_hidden`` model).
"""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate.models import toy

Params = toy.Params  # one instance's parameters (a dict of arrays)


def hidden_site(spec: toy.ToySpec, params: Params, basis: bb.Basis | None = None) -> bb.Site:
    """The m hidden units of one trained instance (the hidden dimensions, or the hidden ReLU
    neurons of ``relu_hidden``), read out at every feature's output x' ``[N, n]``.

    Every feature task of the instance can share this one site (a task's rule reads its own
    feature's column), so their exact enumerations share one compiled program.

    Args:
      spec: the toy setting.
      params: one trained instance.
      basis: ablate the codes of this basis of the hidden space instead of its units (e.g.
        ``bb.Basis.orthogonal(q)`` for a rotation); None = the neuron basis.
    """
    model, variables = spec.model(), {"params": params}
    # flax's apply without mutable= returns the method's output alone (its type allows a pair).
    encode = lambda inputs: cast(jax.Array, model.apply(variables, inputs, method="encode"))
    decode = lambda h, inputs: cast(jax.Array, model.apply(variables, h, method="decode"))
    return bb.Site.from_functions("hidden", spec.m_hidden, prefix=encode, suffix=decode,
                                  basis=basis)


@functools.partial(jax.jit, static_argnames=("spec", "num_positive", "num_negative"))
def task_inputs(spec: toy.ToySpec, params: Params, key: jax.Array, density: jax.Array,
                feature: jax.Array, num_positive: int, num_negative: int
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Inputs of a feature task (positives first), their hidden code, targets and outputs.

    One compiled program serves every feature and instance of a setting (``feature`` and
    ``density`` are traced).

    Returns:
      ``x [N, n]``, ``hidden [N, m]``, ``target_i [N]`` and the intact output ``x'_i [N]``,
      N = num_positive + num_negative.
    """
    k_pos, k_neg = jax.random.split(key)
    n = spec.n_features
    x = jnp.concatenate([
        toy.sample_conditioned(k_pos, num_positive, n, density, feature, True, spec.signed),
        toy.sample_conditioned(k_neg, num_negative, n, density, feature, False, spec.signed)])
    model, variables = spec.model(), {"params": params}
    hidden = cast(jax.Array, model.apply(variables, x, method="encode"))
    # as the hidden site reads it out
    out = cast(jax.Array, model.apply(variables, hidden, method="decode"))
    return x, hidden, spec.target(x)[:, feature], out[:, feature]


def feature_task(spec: toy.ToySpec, params: Params, density: float, feature: int,
                 key: jax.Array, *, epsilon: float, num_positive: int, num_negative: int,
                 site: bb.Site | None = None) -> tuple[bb.Task, float]:
    """The task "feature i reconstructed" on the hidden site of one instance.

    Args:
      spec: the toy setting.
      params: one trained instance (e.g. ``toy.unstack(params_K, k)``).
      density: the feature density 1 − S the examples are drawn at.
      feature: i, the feature whose reconstruction is scored.
      key: draws the examples.
      epsilon: an output is correct when |x'_i − target_i| < epsilon.
      num_positive: examples with x_i ≠ 0 (first in the dataset).
      num_negative: examples with x_i = 0.
      site: the instance's :func:`hidden_site` (default: a new one). Pass one site to every
        feature of an instance: their tasks then share one compiled enumeration.

    Returns:
      The task and P(correct) of the intact network (Beta(1,1)-smoothed, balanced).
    """
    if not 0 <= feature < spec.n_features:
        raise ValueError(f"feature {feature} is out of range for a model with "
                         f"{spec.n_features} features; pick one in 0..{spec.n_features - 1}.")
    x, hidden, target, intact_out = task_inputs(spec, params, key, jnp.float32(density),
                                                jnp.int32(feature), num_positive, num_negative)
    positive = np.arange(x.shape[0]) < num_positive
    site = hidden_site(spec, params) if site is None else site

    # The feature is rule data, not captured, so every feature's rule is one program.
    def correct(out, data):
        return (jnp.abs(out[:, data["feature"]] - data["target"]) < epsilon).astype(jnp.float32)

    data = {"target": target, "feature": jnp.int32(feature)}
    rule = bb.rules.custom(correct, positive=positive, data=data, name=f"|x'-x|<{epsilon}")
    # The intact check is done here so that each task compiles only its enumeration.
    hit = (jnp.abs(intact_out - target) < epsilon).astype(jnp.float32)
    intact = float(bb.rules.p_correct_from(hit, jnp.asarray(positive)))
    task = bb.Task.build(site, x, rule, name=f"feature {feature}", activation=hidden,
                         check_intact=False)
    return task, intact


def abs_task_set(spec: toy.ToySpec, params: Params, density: float, key: jax.Array, *,
                 epsilon: float, num_positive: int, num_negative: int) -> bb.TaskSet:
    """One task per feature of the |x| model (``relu_hidden``), '|x_i| computed', all on one
    shared probe set and the instance's :func:`hidden_site`.

    The probe set concatenates, for every feature j, ``num_positive`` signed draws of the data
    conditioned on x_j ≠ 0 and ``num_negative`` conditioned on x_j = 0. For task i the positives
    are the probes with x_i ≠ 0 and the negatives those with x_i = 0 (balanced estimate); a probe
    is correct when |y_i − |x_i|| < ``epsilon``. Sharing the probes lets one enumeration score
    every task (the intact network is not checked).
    """
    n = spec.n_features
    dens = cast(jax.Array, density)  # a Python float, traced as the sampler's density
    blocks = []
    for j in range(n):
        k_pos, k_neg = jax.random.split(jax.random.fold_in(key, j))
        blocks.append(toy.sample_conditioned(k_pos, num_positive, n, dens, j, True, True))
        blocks.append(toy.sample_conditioned(k_neg, num_negative, n, dens, j, False, True))
    x = jnp.concatenate(blocks)
    site = hidden_site(spec, params)
    assert site.prefix is not None  # a cached site
    act = jax.jit(site.prefix)(x)
    rules = {f"|x{i}|": bb.rules.custom(
        lambda out, t, i=i: (jnp.abs(out[:, i] - t) < epsilon).astype(jnp.float32),
        positive=np.asarray(x[:, i] != 0), data=jnp.abs(x[:, i]), name=f"|y-|x||<{epsilon}")
        for i in range(n)}
    return bb.TaskSet.build(site, x, rules, activation=act, check_intact=False)


@functools.partial(jax.jit, static_argnames=("spec", "num_blocks", "block"))
def heldout_loss(spec: toy.ToySpec, params: Params, key: jax.Array, density: jax.Array,
                 num_blocks: int = 16, block: int = 65_536) -> jax.Array:
    """The training objective of one instance on num_blocks × block fresh samples (the
    last-chunk training loss is too noisy at high sparsity to compare instances)."""
    def one(i):
        x = toy.sample_features(jax.random.fold_in(key, i), block, spec.n_features, density,
                                spec.signed)
        return toy.weighted_mse(spec, params, x)
    return jnp.mean(jax.lax.map(one, jnp.arange(num_blocks)))
