"""The posterior object every inference method returns."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bablate import io as bbio

_ARRAYS = ("marginals", "prior", "log_probs", "samples", "log_density")
_STAT = "sample_stat__"  # key prefix of the sample stats in a saved .npz
FILE_FORMAT, FILE_VERSION = "bablate.Posterior", 1  # the "meta" of a saved posterior
# Our per-draw stat names -> arviz's conventional sample-stat names (as numpyro's converter
# writes them), so arviz's plots and summaries find them.
_ARVIZ_STATS = {"accept_prob": "acceptance_rate", "step_size": "step_size"}
_META = {"task": (str,), "method": (str,), "beta": (int, float),
         "entropy_bits": (int, float, type(None)), "mean_field": (bool,), "diagnostics": (dict,),
         "site": (str,), "num_chains": (int, type(None))}


class PosteriorFileError(ValueError):
    """A file that :meth:`Posterior.load` cannot read as a saved posterior."""


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
        """Writes the posterior to ``path`` atomically (temp file + rename), as data only.

        The file is a numpy ``.npz`` archive (a zip of ``.npy`` arrays, no pickled objects), so
        ``numpy.load(path)`` reads it, as do npz readers of other languages:

        * ``meta``: a 0-d string array holding JSON: ``{"format": "bablate.Posterior",
          "version": 1, "task", "method", "beta", "entropy_bits", "mean_field",
          "diagnostics", "site", "num_chains"}`` (non-finite numbers as Python's json writes
          them: ``NaN``, ``Infinity``);
        * ``marginals`` ``[d]`` and ``prior`` ``[d]``; when the method made them,
          ``log_probs`` ``[2^d]`` (exact), ``samples`` ``[S, d]`` uint8 (chain-major),
          ``log_density`` ``[S]`` and one ``sample_stat__<name>`` ``[S]`` per sampler stat.

        :meth:`load` (or ``bablate.load_posterior``) reads it back equal.
        """
        path = Path(path)
        meta = {"format": FILE_FORMAT, "version": FILE_VERSION, "task": self.task,
                "method": self.method, "beta": self.beta, "entropy_bits": self.entropy_bits,
                "mean_field": self.mean_field, "diagnostics": self.diagnostics,
                "site": self.site, "num_chains": self.num_chains}
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}
        arrays.update({_STAT + k: np.asarray(v) for k, v in self.sample_stats.items()})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.asarray(json.dumps(meta, default=_plain)), **arrays)
        bbio.atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Posterior:
        """Reads a posterior written by :meth:`save` (nothing in the file can run code).

        Raises:
          PosteriorFileError: the file is not a posterior :meth:`save` wrote (plain text,
            another archive), or it is truncated or corrupt; one line naming the file.
          OSError: the file cannot be opened (e.g. it does not exist).
        """
        path = Path(path)
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":  # the zip signature every .npz starts with
            raise PosteriorFileError(f"{path} is not a posterior file: it is not an .npz "
                                     f"archive (it starts with {head!r}); give the path "
                                     "Posterior.save wrote")
        try:
            with np.load(path, allow_pickle=False) as f:
                files = set(f.files)
                if "meta" not in files:
                    raise PosteriorFileError(f"{path} is an .npz archive without the 'meta' "
                                             "entry of a saved posterior; give the path "
                                             "Posterior.save wrote")
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in _ARRAYS if k in files}
                stats = {k[len(_STAT):]: f[k] for k in files if k.startswith(_STAT)}
        except PosteriorFileError:
            raise
        except (ValueError, EOFError, OSError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise PosteriorFileError(f"{path} is truncated or corrupt ({type(e).__name__}: "
                                     f"{_first_line(e)}); save the posterior again") from None
        fields = _check_meta(meta, path)
        post = cls(**fields, **arrays, sample_stats=stats)
        _check_shapes(post, path)
        return post

    def _draws(self, what: str) -> tuple[np.ndarray, int]:
        """The chain-major draws and C (1 for independent draws); refuses an exact table."""
        if self.samples is None:
            raise ValueError(f"{what} needs draws, and the {self.method} posterior of "
                             f"{self.task!r} has none (an exact table); use probs() or "
                             "infer(..., method='mcmc').")
        chains = self.num_chains or 1
        if self.samples.shape[0] % chains:
            raise ValueError(f"{self.samples.shape[0]} draws do not split into {chains} chains "
                             f"of equal length for {self.task!r}; was num_chains edited?")
        return self.samples, chains

    def chains(self) -> np.ndarray:
        """The draws by chain, ``[C, S, d]`` (a view of ``samples``; C = 1 for independent
        draws such as SVI's)."""
        samples, c = self._draws("chains()")
        return samples.reshape(c, -1, self.num_units)

    def chain_log_density(self) -> np.ndarray:
        """The unnormalised log density of each draw by chain, ``[C, S]`` (mcmc only)."""
        _, c = self._draws("chain_log_density()")
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


def load_posterior(path: str | os.PathLike) -> Posterior:
    """The posterior :meth:`Posterior.save` wrote to ``path`` (see there for the format)."""
    return Posterior.load(path)


def import_arviz() -> Any:
    """arviz, or a one-line error saying how to install it."""
    try:
        with warnings.catch_warnings():
            # arviz 0.2x announces its coming refactor with a FutureWarning on import.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz  # imported on use only: the arviz extra is optional
    except ImportError as e:
        raise ImportError("to_arviz and bablate.plot's trace plots need arviz; install "
                          "it with pip install 'bablate[arviz]'.") from e
    return arviz


def to_inference_data(post: Posterior) -> Any:
    """See :meth:`Posterior.to_arviz`."""
    post._draws("to_arviz()")  # an exact table has no draws: say so in to_arviz's name
    az = import_arviz()
    chains = post.chains()
    c, s, d = chains.shape
    sample_stats = {}
    if post.log_density is not None:
        sample_stats["lp"] = post.chain_log_density()
    for name, values in post.sample_stats.items():
        sample_stats[_ARVIZ_STATS.get(name, name)] = np.asarray(values).reshape(c, s)
    coords = {"unit": np.arange(d)}
    attrs = {"task": post.task, "method": post.method, "site": post.site, "beta": post.beta,
             "inference_library": "bablate"}
    # int64, not uint8: arviz treats signed integers as discrete (histograms, not densities).
    return az.from_dict(posterior={"mask": chains.astype(np.int64)},
                        sample_stats=sample_stats or None,
                        constant_data={"prior": np.asarray(post.prior)}, coords=coords,
                        dims={"mask": ["unit"], "prior": ["unit"]}, attrs=dict(attrs),
                        posterior_attrs=dict(attrs))


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in diagnostics as the JSON numbers and lists they hold."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} in the diagnostics cannot be saved as JSON")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else "no details"


def _check_meta(meta: Any, path: Path) -> dict:
    """The constructor fields of a saved posterior's ``meta``, or a one-line error."""
    def bad(why: str) -> PosteriorFileError:
        return PosteriorFileError(f"{path} has unreadable posterior metadata ({why}); save the "
                                  "posterior again")

    if not isinstance(meta, dict):
        raise bad(f"a {type(meta).__name__} instead of a JSON object")
    version = meta.pop("version", FILE_VERSION)  # files of bablate 0.1.0 have neither
    if meta.pop("format", FILE_FORMAT) != FILE_FORMAT or version != FILE_VERSION:
        raise PosteriorFileError(f"{path} is a posterior file of format version {version!r}; "
                                 f"this bablate reads version {FILE_VERSION}: upgrade bablate")
    unknown = sorted(set(meta) - set(_META))
    if unknown or "task" not in meta or "method" not in meta or "beta" not in meta:
        raise bad(f"unknown keys {unknown}" if unknown else "task, method or beta missing")
    for key, value in meta.items():
        kinds = _META[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise bad(f"{key} is {value!r}")  # (a bool is an int to isinstance)
    return meta


def _check_shapes(post: Posterior, path: Path) -> None:
    """Refuses arrays whose shapes do not fit together (a file edited or damaged inside)."""
    d = post.marginals.shape[0] if post.marginals.ndim == 1 else 0
    wanted: dict[str, tuple[int, ...]] = {"marginals": (d,), "prior": (d,)}
    if post.log_probs is not None:
        wanted["log_probs"] = (2 ** min(d, 62),)
    if post.samples is not None:
        n = post.samples.shape[0] if post.samples.ndim == 2 else -1
        wanted["samples"] = (n, d)
        if post.log_density is not None:
            wanted["log_density"] = (n,)
        wanted.update({_STAT + k: (n,) for k in post.sample_stats})
    got = {k: np.shape(getattr(post, k)) for k in _ARRAYS if getattr(post, k) is not None}
    got.update({_STAT + k: np.shape(v) for k, v in post.sample_stats.items()})
    for key, shape in wanted.items():
        if d < 1 or got.get(key, shape) != shape:
            raise PosteriorFileError(f"{path} holds {key} of shape {got.get(key)} for "
                                     f"{max(d, 0)} units; the file is damaged: save the "
                                     "posterior again")
