"""The bases a site is read in: a random rotation, fitted dictionaries (with their center as one
more unit, for the LLM layer), and the same tasks moved into a basis."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate import dictionary as dl
from bablate.errors import RunError
from bablate.runner.context import RESTART_FIX, RunContext

NEURON, ROTATION = "neuron", "rotation"


def random_rotation(key: jax.Array, d: int) -> bb.Basis:
    """A Haar-random rotation of a d-unit site (QR of a Gaussian, signs fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    q = q * jnp.sign(jnp.diag(r))[None, :]
    return bb.Basis.orthogonal(q, name=ROTATION)


@dataclasses.dataclass(frozen=True, eq=False)
class CenterUnitBasis(bb.Basis):
    """A dictionary whose center (the reconstruction at all-zero codes) is one more unit.

    A sparse autoencoder reconstructs ``a ≈ c + codes·D``. Zero-ablating every code leaves ``c``
    (plus the reconstruction error), whereas zero-ablating every neuron leaves nothing; where
    ``c`` is most of the activation (an LLM MLP layer: ~2/3 of its norm at the answer position)
    the two bases would be compared at different ablation baselines. Here unit k (the last) is
    the constant 1 with decoder row ``c``, so every basis can ablate the whole activation except
    the dictionary's reconstruction error, and the all-ones mask is still exact.
    """

    dictionary: dl.DictionaryBasis | None = None

    @classmethod
    def wrap(cls, d: dl.DictionaryBasis) -> CenterUnitBasis:
        """``d`` with its center appended as the last unit."""
        k, width = d.decoder.shape
        center = jnp.zeros((width,)) if d.center is None else jnp.asarray(d.center)
        # ``encode`` is overridden; the encoder only carries the unit count (k + 1).
        encoder = jnp.concatenate([d.encoder, jnp.zeros((width, 1))], axis=1)
        return cls(encoder=encoder, decoder=jnp.concatenate([d.decoder, center[None]]),
                   center=None, name=d.name, dictionary=d)

    def encode(self, act: jax.Array) -> jax.Array:
        assert self.dictionary is not None  # set by wrap
        codes = self.dictionary.encode(act)
        return jnp.concatenate([codes, jnp.ones(codes.shape[:-1] + (1,), codes.dtype)], axis=-1)


def fit_dictionaries(acts_NxD: np.ndarray, configs: tuple[dl.DictionaryConfig, ...],
                     key: jax.Array, ctx: RunContext, network: str, reuse: bool
                     ) -> tuple[dict[str, dl.DictionaryBasis], dict[str, dict]]:
    """Fits every dictionary of one network and saves it to the run's ``dictionaries/``.

    With ``reuse`` (the network itself was reloaded from the run's state, so its activations are
    the same) a dictionary already saved there is loaded instead of refitted.

    Returns:
      The bases and their fit reports (plain dicts), both by method name.
    """
    bases: dict[str, dl.DictionaryBasis] = {}
    reports: dict[str, dict] = {}
    folder = ctx.workdir / "dictionaries"
    for j, cfg in enumerate(configs):
        path = folder / f"{network}_{cfg.method}_{cfg.num_codes}.npz"
        try:
            loaded = dl.load(path) if reuse and path.exists() else None
        except ValueError as e:  # damaged since it was saved: one line, as a checkpoint's
            raise RunError(f"{str(e).rstrip('.')}; {RESTART_FIX}") from e
        if loaded is not None and loaded[1] is not None:
            basis, report = loaded[0], loaded[1]
        else:
            ctx.log(f"{network}: fitting {cfg.method} with {cfg.num_codes} codes on "
                    f"{acts_NxD.shape[0]} activations of width {acts_NxD.shape[1]}")
            basis, report = dl.fit(acts_NxD, cfg, jax.random.fold_in(key, j))
            if getattr(ctx, "writer", True):
                folder.mkdir(parents=True, exist_ok=True)
                dl.save(path, basis, report)
        bases[cfg.method] = basis
        reports[cfg.method] = report.as_dict()
    return bases, reports


def rebase(tasks: bb.TaskSet | list[bb.Task], basis: bb.Basis | None
           ) -> bb.TaskSet | list[bb.Task]:
    """The same tasks (inputs, rules, cached activations) with masks acting in ``basis``.

    A :class:`bablate.TaskSet` stays one (its tasks share the rebased site and the dataset);
    separate tasks each get their rebased site.
    """
    if basis is None:
        return tasks
    move = lambda site: dataclasses.replace(site, basis=basis, num_units=basis.num_units,
                                            name=f"{site.name}/{basis.name}")
    build = lambda task, site: bb.Task.build(site, task.data["inputs"], task.rule,
                                             name=task.name, activation=task.data["act"],
                                             check_intact=False)
    if isinstance(tasks, bb.TaskSet):
        site = move(tasks.site)
        first = build(tasks[0], site)
        rest = [dataclasses.replace(t, site=site, data={**first.data, "rule": t.rule.data})
                for t in list(tasks)[1:]]
        return bb.TaskSet.of([first, *rest])
    return [build(task, move(task.site)) for task in tasks]
