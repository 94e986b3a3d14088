"""Step 4: the initialisation control -- features represented at the sparsest density over more
seeds and two starts."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bablate.models import toy
from bablate.runner.context import RunContext
from bablate.testbeds import toy as toy_testbed
from bablate.testbeds import toy_geometry

from .config import StudyConfig
from .geometry import REPRESENTED_THRESHOLDS

STARTS = ("xavier", "all_represented")


def _like(n: int, n_features: int) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
    """What the "control" checkpoint holds: per start, n counts, norms and losses."""
    counts = jax.ShapeDtypeStruct((n,), np.int64)
    return {name: {"features_represented": counts,
                   **{f"features_represented_at_{t:g}": counts for t in REPRESENTED_THRESHOLDS},
                   "feature_norms": jax.ShapeDtypeStruct((n, n_features), np.float32),
                   "heldout_loss": jax.ShapeDtypeStruct((n,), np.float64)}
            for name in STARTS}


def initialisation_control(cfg: StudyConfig, ctx: RunContext, key: jax.Array) -> dict[str, Any]:
    """Features represented at the sparsest density over more seeds and two starts.

    ``control.num_seeds`` instances start from the paper's xavier-normal init and as many from
    every feature already represented (``toy.init_all_represented``); all train exactly like
    the main instances. If both end with the same number of features, that number is what the
    objective asks for rather than an accident of the start. Tied models only. Cached as state
    "control".
    """
    density = min(cfg.densities)
    spec, n = cfg.spec, cfg.control.num_seeds

    def compute() -> dict:
        keys = jax.random.split(key, 2 * n)
        # One vmapped run: the first n instances start as the paper's, the next n with every
        # feature represented.
        starts = [jax.vmap(functools.partial(init, spec))(keys[j * n:(j + 1) * n])
                  for j, init in enumerate((toy.init_params, toy.init_all_represented))]
        init_K = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *starts)
        params, _ = toy.train_instances(spec, jnp.full((2 * n,), density), keys, cfg.train,
                                        desc="initialisation control", init_K=init_K)
        norms = np.linalg.norm(np.asarray(params["W"]), axis=1)  # [2n, features]
        counts = (norms > toy_geometry.REPRESENTED_NORM).sum(axis=1)
        counts_at = {f"{t:g}": (norms > t).sum(axis=1) for t in REPRESENTED_THRESHOLDS}
        # Every instance is scored on the same held-out samples.
        loss_key = jax.random.fold_in(key, 2 * n)
        losses = np.array([float(toy_testbed.heldout_loss(spec, toy.unstack(params, i), loss_key,
                                                          jnp.float32(density)))
                           for i in range(2 * n)])
        return {name: {"features_represented": counts[j * n:(j + 1) * n],
                       **{f"features_represented_at_{t}": c[j * n:(j + 1) * n]
                          for t, c in counts_at.items()},
                       "feature_norms": norms[j * n:(j + 1) * n],
                       "heldout_loss": losses[j * n:(j + 1) * n]}
                for j, name in enumerate(STARTS)}

    state, _ = ctx.load_or_compute("control", compute, like=_like(n, spec.n_features))
    lists = {name: {k: np.asarray(v).tolist() for k, v in rec.items()}
             for name, rec in state.items()}
    return {"density": density, "seeds": n, **lists}
