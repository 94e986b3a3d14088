"""The study template's ``run(config, ctx)``: train a tiny flax/linen MLP, build a site on its
hidden layer and a task, infer the ablation mask distribution, write results and the report.

Keys: one root key ``jax.random.key(cfg.seed)``, split once into named keys at the top.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

import bablate as bb
from bablate.runner.runs import RunContext

from . import report
from .config import StudyConfig, from_config, validate

__all__ = ["run", "validate"]  # the runner calls validate(config) before any work


class MLP(nn.Module):
    """x -> Dense(hidden) -> relu -> Dense(2); the site is the output of ``Dense_0``."""

    hidden: int

    @nn.compact
    def __call__(self, x_BxF: jax.Array) -> jax.Array:
        h_BxH = nn.relu(nn.Dense(self.hidden)(x_BxF))  # created first: Dense_0
        return nn.Dense(2)(h_BxH)


def make_data(key: jax.Array, num_examples: int) -> tuple[jax.Array, jax.Array]:
    """Inputs ``[N, 4]`` and labels ``[N]``: is x_0 + x_1 positive."""
    x_NxF = jax.random.normal(key, (num_examples, 4))
    return x_NxF, (x_NxF[:, 0] + x_NxF[:, 1] > 0).astype(jnp.int32)


def train(cfg: StudyConfig, key: jax.Array, x_NxF: jax.Array, y_N: jax.Array):
    """The trained model and its variables (full-batch Adam, ``cfg.model.steps`` steps)."""
    model = MLP(hidden=cfg.model.hidden)
    params = model.init(key, x_NxF)["params"]
    opt = optax.adam(cfg.model.learning_rate)

    def loss(p):
        logits = model.apply({"params": p}, x_NxF)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_N).mean()

    @jax.jit
    def step(carry, _):
        p, s = carry
        updates, s = opt.update(jax.grad(loss)(p), s)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, cfg.model.steps)
    return model, {"params": params}


def run(config: ml_collections.ConfigDict, ctx: RunContext) -> dict[str, Any]:
    """Trains, ablates and reports one run; returns its numbers (JSON-ready)."""
    cfg = from_config(config)
    k_data, k_init, k_infer = jax.random.split(jax.random.key(cfg.seed), 3)
    x_NxF, y_N = make_data(k_data, cfg.num_examples)
    model, variables = train(cfg, k_init, x_NxF, y_N)
    accuracy = float(jnp.mean(model.apply(variables, x_NxF).argmax(-1) == y_N))
    ctx.log(f"trained {cfg.model.hidden} hidden units: accuracy {accuracy:.3f}")

    site = bb.flax_site(model, variables, "Dense_0", x_NxF)
    task = bb.Task.build(site, x_NxF, bb.rules.top1(y_N), name="sign")
    inf = cfg.inference
    post = bb.infer(task, inf.method, key=k_infer, max_exact=inf.max_exact,
                    options=bb.ImportanceOptions(max_masks=inf.max_masks))
    metrics = bb.metrics.summarize(post)
    ctx.log(f"{post.method}: {metrics.task_information:.3f} bits, distributedness "
            f"{metrics.distributedness:.3f}")
    results = {"accuracy": accuracy, "num_units": task.num_units, "method": post.method,
               "marginals": [float(q) for q in post.marginals],
               "task_information": float(metrics.task_information),
               "distributedness": float(metrics.distributedness),
               "effective_units": float(metrics.effective_units),
               "entropy_bits": float(metrics.entropy)}
    report.write(ctx, cfg, results)
    return results
