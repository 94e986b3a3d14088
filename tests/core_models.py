"""Small trained networks shared by the core tests (trained in seconds, deterministic)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class MLP(nn.Module):
    """x -> Dense(hidden) -> relu -> Dense(classes)."""

    hidden: int = 12
    classes: int = 2

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.classes)(h)


@functools.cache
def trained_mlp(hidden: int = 12, steps: int = 300, seed: int = 0):
    """An MLP trained on two labels of 4-d Gaussian inputs; returns (model, variables, x, ys)."""
    key_x, key_init = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(key_x, (256, 4))
    ys = {"sum": (x[:, 0] + x[:, 1] > 0).astype(jnp.int32),
          "diff": (x[:, 2] - x[:, 3] > 0).astype(jnp.int32)}
    model = MLP(hidden=hidden, classes=4)
    variables = model.init(key_init, x)
    opt = optax.adam(3e-2)

    def loss(params):
        logits = model.apply({"params": params}, x)
        return (optax.softmax_cross_entropy_with_integer_labels(logits[:, :2], ys["sum"]).mean()
                + optax.softmax_cross_entropy_with_integer_labels(logits[:, 2:], ys["diff"]).mean())

    @jax.jit
    def step(params, state):
        g = jax.grad(loss)(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    params, state = variables["params"], opt.init(variables["params"])
    for _ in range(steps):
        params, state = step(params, state)
    return model, {"params": params}, x, ys


def head_rule(ys: dict, head: str):
    """Top-1 correctness of one of the MLP's two 2-way heads ("sum": logits 0-1, "diff": 2-3)."""
    import bablate as bb

    cols = slice(0, 2) if head == "sum" else slice(2, 4)

    def hard(out, y):
        return (jnp.argmax(out[:, cols], -1) == y).astype(jnp.float32)

    def soft(out, y):
        p = jax.nn.softmax(out[:, cols], -1)
        return jnp.take_along_axis(p, y[:, None], -1)[:, 0]

    return bb.rules.custom(hard, data=ys[head], soft_fn=soft, name=head)


def dense(p, v):
    """A linen Dense layer by hand: ``v @ kernel + bias``."""
    return v @ p["kernel"] + p["bias"][None]


def masked_outputs(site, inputs, targets, masks):
    """``(task, outputs)``: the task of ``site`` on ``inputs`` (top-1 on ``targets``) and its
    outputs under each mask, one mask at a time, stacked ``[M, ...]``."""
    import numpy as np

    import bablate as bb

    task = bb.Task.build(site, inputs, bb.rules.top1(targets))
    return task, np.stack([np.asarray(task.outputs_fn(task.data, jnp.asarray(m)))
                           for m in masks])
