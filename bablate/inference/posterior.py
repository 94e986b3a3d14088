"""The posterior object every inference method returns."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from bablate.runs import atomic_write_bytes

_ARRAYS = ("marginals", "prior", "log_probs", "samples")


@dataclasses.dataclass(frozen=True, eq=False)
class Posterior:
    """An ablation mask distribution q for one task.

    Attributes:
      task: the task's name.
      method: "exact", "mcmc" or "svi".
      marginals: ``[d]`` q(m_i = 1), the unit importance π_i.
      prior: ``[d]`` prior keep-probabilities.
      beta: inverse temperature used.
      log_probs: ``[2^d]`` normalised log q of every mask (exact only); mask index k has
        unit i kept iff bit i of k is set.
      samples: ``[S, d]`` uint8 masks (mcmc: post-warmup draws of all chains; svi: draws from
        the fitted mean-field guide; exact: None).
      entropy_bits: H(q) in bits when known exactly (exact: the table; svi: the mean-field
        entropy), else None (then metrics use a plug-in estimate from samples).
      diagnostics: method-specific numbers (r_hat, ess, acceptance, elbo, wall time...).
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
                "diagnostics": self.diagnostics}
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.asarray(json.dumps(meta)), **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Posterior:
        """Reads a posterior written by :meth:`save`."""
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in _ARRAYS if k in f}
        return cls(**meta, **arrays)

    def summary(self) -> str:
        diag = ", ".join(f"{k}={v:.3g}" for k, v in self.diagnostics.items()
                         if isinstance(v, int | float))
        return (f"{self.task} [{self.method}, d={self.num_units}] mean importance "
                f"{self.marginals.mean():.3f}; {diag}")
