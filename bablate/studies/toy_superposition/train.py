"""Step 1: train every (density × replicate) instance of the setting at once (vmapped)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bablate.models import toy
from bablate.runner.context import RunContext

from .config import StudyConfig


@dataclasses.dataclass(frozen=True)
class Instances:
    """Which density and replicate each trained instance k has (density fastest)."""

    density: np.ndarray  # [K] feature density 1 − S of instance k
    replicate: np.ndarray  # [K] replicate index of instance k
    num_densities: int

    @property
    def density_index(self) -> np.ndarray:
        """[K] index of instance k's density in the config's list."""
        return np.arange(self.density.size) % self.num_densities


def layout(cfg: StudyConfig) -> Instances:
    """Instance k has density ``densities[k % D]`` and replicate ``k // D``."""
    n_d = len(cfg.densities)
    dens_k = np.array([cfg.densities[k % n_d] for k in range(n_d * cfg.num_replicates)])
    return Instances(dens_k, np.arange(dens_k.size) // n_d, n_d)


def instance_keys(key: jax.Array, inst: Instances) -> jax.Array:
    """[K] training keys: replicate r folded into ``key``, then the density index."""
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, int(r)), int(d))
                      for r, d in zip(inst.replicate, inst.density_index, strict=True)])


def train(cfg: StudyConfig, ctx: RunContext, inst: Instances,
          key: jax.Array) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Trained parameters (stacked over instances) and final losses, cached as state "params".

    Returns:
      ``params_K`` (each leaf ``[K, ...]``) and the last-chunk training loss ``[K]``.
    """
    params_like, loss_like = toy.instances_like(cfg.spec, inst.density.size)

    def compute() -> dict:
        spec = cfg.spec
        ctx.log(f"training {inst.density.size} instances of {cfg.setting} ({spec.kind}) for "
                f"{cfg.train.steps} steps")
        params, loss = toy.train_instances(spec, jnp.asarray(inst.density),
                                           instance_keys(key, inst), cfg.train,
                                           desc=f"train {cfg.setting}")
        return {"params": jax.tree.map(np.asarray, params), "loss": np.asarray(loss)}

    state, _ = ctx.load_or_compute("params", compute,
                                   like={"params": params_like, "loss": loss_like})
    return state["params"], state["loss"]
