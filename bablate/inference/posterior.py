"""The posterior object every inference method returns."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bablate import io as bbio

_ARRAYS = ("marginals", "prior", "log_probs", "samples", "log_density")
_STAT = "sample_stat__"  # key prefix of the sample stats in a saved .npz


class ConvergenceWarning(UserWarning):
    """An inference run whose diagnostics say its numbers are not yet to be trusted."""


@dataclasses.dataclass(frozen=True, eq=False)
class Posterior:
    """An ablation mask distribution q for one task.

    Attributes:
      task: the task's name.
      method: "exact", "mcmc", "svi" or "importance".
      marginals: ``[d]`` q(m_i = 1), the unit importance π_i.
      prior: ``[d]`` prior keep-probabilities.
      beta: inverse temperature used.
      log_probs: ``[2^d]`` normalised log q of every mask (exact only); mask index k has
        unit i kept iff bit i of k is set.
      samples: ``[S, d]`` uint8 masks (mcmc: post-warmup draws of all chains; svi: draws from
        the fitted mean-field guide; importance: draws resampled by weight; exact: None).
      entropy_bits: H(q) in bits when known exactly (exact: the table; svi: the mean-field
        entropy), else None (then the metrics estimate it from the samples; see
        :func:`bablate.metrics.joint_entropy`).
      diagnostics: method-specific numbers (r_hat, ess, acceptance, elbo, wall time...);
        ``diagnostics["warnings"]`` lists convergence problems in words.
      site: the identity of the site (name, d, ablation, basis): metrics that combine several
        posteriors refuse to mix sites.
      log_density: ``[S]`` unnormalised log q of each draw in ``samples`` (mcmc), which the
        entropy estimate of :func:`bablate.metrics.joint_entropy` uses; None otherwise.
      num_chains: how many chains ``samples`` concatenates (chain-major), or None.
      sample_stats: per-draw numbers of the sampler, each ``[C·S]`` chain-major like
        ``samples`` (mcmc: ``accept_prob`` of the step that produced the draw, ``step_size``
        (frozen after warm-up, one value per chain)); empty otherwise.

    ``samples`` stays flat ``[C·S, d]`` (the layout every metric takes); :meth:`chains` gives the
    ``[C, S, d]`` view and :meth:`to_arviz` an ``arviz.InferenceData`` for R-hat, ESS, trace and
    rank plots.
    """

    task: str
    method: str
    marginals: np.ndarray
    prior: np.ndarray
    beta: float
    log_probs: np.ndarray | None = None
    samples: np.ndarray | None = None
    entropy_bits: float | None = None
    mean_field: bool = False
    diagnostics: dict = dataclasses.field(default_factory=dict)
    site: str = ""
    log_density: np.ndarray | None = None
    num_chains: int | None = None
    sample_stats: dict = dataclasses.field(default_factory=dict)

    @property
    def num_units(self) -> int:
        return int(self.marginals.shape[0])

    def probs(self) -> np.ndarray:
        """The exact table of probabilities ``[2^d]`` (exact posteriors only)."""
        if self.log_probs is None:
            raise ValueError(f"{self.method} posterior has no exact table; use samples.")
        return np.exp(self.log_probs)

    def top_masks(self, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k most probable masks ``[k, d]`` and their probabilities (exact only)."""
        p = self.probs()
        idx = np.argsort(-p)[:k]
        bits = (idx[:, None] >> np.arange(self.num_units)[None, :]) & 1
        return bits.astype(np.uint8), p[idx]

    def save(self, path: str | os.PathLike) -> None:
        """Writes the posterior to an ``.npz`` file atomically (temp file + rename)."""
        path = Path(path)
        meta = {"task": self.task, "method": self.method, "beta": self.beta,
                "entropy_bits": self.entropy_bits, "mean_field": self.mean_field,
                "diagnostics": self.diagnostics, "site": self.site,
                "num_chains": self.num_chains}
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}
        arrays.update({_STAT + k: np.asarray(v) for k, v in self.sample_stats.items()})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.asarray(json.dumps(meta)), **arrays)
        bbio.atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Posterior:
        """Reads a posterior written by :meth:`save`."""
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in _ARRAYS if k in f}
            stats = {k[len(_STAT):]: f[k] for k in f.files if k.startswith(_STAT)}
        return cls(**meta, **arrays, sample_stats=stats)

    def _num_chains(self, what: str) -> int:
        """C of the chain-major draws (1 for independent draws); refuses an exact table."""
        if self.samples is None:
            raise ValueError(f"{what} needs draws, and the {self.method} posterior of "
                             f"{self.task!r} has none (an exact table); use probs() or "
                             "infer(..., method='mcmc').")
        chains = self.num_chains or 1
        if self.samples.shape[0] % chains:
            raise ValueError(f"{self.samples.shape[0]} draws do not split into {chains} chains "
                             f"of equal length for {self.task!r}; was num_chains edited?")
        return chains

    def chains(self) -> np.ndarray:
        """The draws by chain, ``[C, S, d]`` (a view of ``samples``; C = 1 for independent
        draws such as SVI's)."""
        c = self._num_chains("chains()")
        return self.samples.reshape(c, -1, self.num_units)

    def chain_log_density(self) -> np.ndarray:
        """The unnormalised log density of each draw by chain, ``[C, S]`` (mcmc only)."""
        c = self._num_chains("chain_log_density()")
        if self.log_density is None:
            raise ValueError(f"the {self.method} posterior of {self.task!r} records no log "
                             "density per draw (only MCMC does).")
        return self.log_density.reshape(c, -1)

    def to_arviz(self) -> Any:
        """The draws as an ``arviz.InferenceData`` (needs the ``arviz`` extra).

        The posterior group holds ``mask`` with dims ``(chain, draw, unit)``; sample stats hold
        ``lp`` (the unnormalised log density, mcmc) and the sampler's per-draw stats
        (``acceptance_rate``, ``step_size``); constant data holds the ``prior``. Then
        ``az.summary``, ``az.plot_trace`` and ``az.plot_rank`` work as for any numpyro model.
        """
        from bablate.inference.arviz_data import to_inference_data

        return to_inference_data(self)

    def __repr__(self) -> str:
        draws = ""
        if self.samples is not None:
            chains = self.num_chains or 1
            draws = f", {chains} chain(s) x {self.samples.shape[0] // chains} draws"
        q = self.marginals
        return (f"Posterior({self.task!r}, {self.method}, d={self.num_units}{draws}: importance "
                f"mean {q.mean():.3g}, min {q.min():.3g}, max {q.max():.3g}"
                + (f", {len(self.warnings)} warning(s)" if self.warnings else "") + ")")

    @property
    def warnings(self) -> list[str]:
        """Convergence problems found by the inference method, in words (empty if none)."""
        return list(self.diagnostics.get("warnings", []))

    def summary(self) -> str:
        """One line: task, method, mean importance, numeric diagnostics and any warnings."""
        diag = ", ".join(f"{k}={v:.3g}" for k, v in self.diagnostics.items()
                         if isinstance(v, int | float) and not isinstance(v, bool))
        line = (f"{self.task} [{self.method}, d={self.num_units}] mean importance "
                f"{self.marginals.mean():.3f}; {diag}")
        return line + "".join(f"; WARNING: {w}" for w in self.warnings)
