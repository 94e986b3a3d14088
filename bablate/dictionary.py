"""Dictionary learning on a site's activations: a learned basis whose codes can be ablated.

Two learners, both in JAX (Colin et al., arXiv 2411.03993; DESIGN.md §3 "Sparse distributed
basis"):

* **NMF** (as in CRAFT) for non-negative activations (post-ReLU neurons): A ≈ U·D with U, D ≥ 0,
  fitted by Lee–Seung multiplicative updates (an optional L1 weight on U makes the codes
  sparser). Dictionary rows are scaled to unit norm after fitting.
* **Sparse autoencoder** for any activations: codes = ReLU((a − c)·W_enc + b) (``"l1"``: an L1
  penalty on the codes; ``"topk"``: only the k largest pre-activations are kept, no penalty),
  reconstruction c + codes·W_dec, decoder rows kept at unit norm (in standardised units), Adam.

Both return a :class:`DictionaryBasis`, a :class:`bablate.Basis` whose ``encode`` gives the codes
that masks act on. The site rewrites the activation as ``a + (codes' − codes)·decoder``
(:func:`bablate.mask_activation`), so whatever the codes, the reconstruction error
``a − c − codes·decoder`` stays intact and the all-ones mask reproduces the network exactly.

How codes are obtained (``DictionaryBasis.encoding``):

* ``"nnls"`` (NMF's default): non-negative least squares against the fixed dictionary,
  argmin_{u ≥ 0} ‖a − u·D‖², by ``nnls_steps`` accelerated projected-gradient (FISTA) steps
  from the pseudo-inverse solution clipped at 0. This is CRAFT's "transform" of new activations.
  It is not linear in ``a`` (an overcomplete dictionary has no linear inverse that keeps the codes
  sparse), which is why the basis overrides ``encode``;
* ``"pinv"``: the linear least-squares codes a·D⁺ (a plain :class:`bablate.Basis`); exact for a
  dictionary with k ≤ d linearly independent rows, dense and signed when k > d;
* ``"relu"`` / ``"topk"``: the sparse autoencoder's own encoder.

A zero-ablated code removes its term codes_i·D_i from the activation; mean ablation sets the code
to its dataset mean.

The report gives the fraction of variance unexplained (FVU) = Σ‖a − â‖² / Σ‖a − ā‖², the mean
number of active codes per example (L0) and the dead codes (never active on the data).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from typing import Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bablate import io as bbio
from bablate import progress
from bablate.sites import Basis, _lift

Array = jax.Array
ENCODINGS = ("linear", "pinv", "nnls", "relu", "topk")
METHODS = ("nmf", "sae_l1", "sae_topk")
ACTIVE_TOL = 1e-6  # a code counts as active above this fraction of the activation scale


@dataclasses.dataclass(frozen=True, eq=False)
class DictionaryBasis(Basis):
    """A learned dictionary as a site basis (see the module docstring for ``encoding``).

    Attributes (beyond :class:`bablate.Basis`):
      bias: ``[k]`` encoder bias (sparse autoencoders), else None.
      encoding: how codes are computed: "pinv"/"linear" (``(a − c)·encoder``), "nnls", "relu"
        or "topk".
      top_k: codes kept per example for "topk".
      nnls_steps: projected-gradient steps for "nnls".
    """

    bias: Array | None = None
    encoding: str = "linear"
    top_k: int = 0
    nnls_steps: int = 200

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {ENCODINGS}.")
        k, d = self.decoder.shape
        if self.encoder.shape != (d, k):
            raise ValueError(f"encoder has shape {tuple(self.encoder.shape)} but the decoder "
                             f"{(k, d)} needs an encoder of shape {(d, k)}.")
        if self.encoding == "topk" and not 0 < self.top_k <= k:
            raise ValueError(f"encoding='topk' needs 0 < top_k <= {k}; got {self.top_k}.")

    def encode(self, act: Array) -> Array:
        """Codes ``[..., k]`` of activations ``[..., d]``."""
        x = act if self.center is None else act - _lift(self.center, act.ndim)
        if self.encoding in ("linear", "pinv"):
            return x @ self.encoder
        if self.encoding == "nnls":
            return nnls_codes(x, self.decoder, self.encoder, self.nnls_steps)
        pre = x @ self.encoder + _lift(self.bias, x.ndim)
        if self.encoding == "relu":
            return jax.nn.relu(pre)
        return _keep_top_k(pre, self.top_k)

    def decode(self, codes: Array) -> Array:
        """The reconstruction ``center + codes·decoder``."""
        out = codes @ self.decoder
        return out if self.center is None else out + _lift(self.center, out.ndim)


def _keep_top_k(pre: Array, k: int) -> Array:
    """ReLU of the k largest pre-activations per example, zeros elsewhere."""
    # min, not [..., -1:]: XLA on CPU turns that slice into a sort of the whole row
    # (on [30, 49,152] logits 325 ms against 3.5 ms); the value is the same.
    kth = jax.lax.top_k(pre, k)[0].min(axis=-1, keepdims=True)
    return jnp.where(pre >= kth, jax.nn.relu(pre), 0.0)


def nnls_codes(x: Array, decoder_KxD: Array, pinv_DxK: Array, steps: int) -> Array:
    """argmin_{u ≥ 0} ½‖x − u·D‖² per row of ``x`` (FISTA, warm-started at max(x·D⁺, 0))."""
    gram = decoder_KxD @ decoder_KxD.T
    step = 1.0 / (jnp.linalg.norm(gram, ord=2) + 1e-12)
    xd = x @ decoder_KxD.T
    u0 = jax.nn.relu(x @ pinv_DxK)

    def body(carry, _):
        u, y, t = carry
        u_new = jax.nn.relu(y - step * (y @ gram - xd))
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        y = u_new + ((t - 1.0) / t_new) * (u_new - u)
        return (u_new, y, t_new), None

    (u, _, _), _ = jax.lax.scan(body, (u0, u0, jnp.float32(1.0)), None, length=steps)
    return u


# ------------------------------------------------------------------------------------ report


@dataclasses.dataclass(frozen=True)
class DictionaryReport:
    """How well a dictionary describes activations.

    Attributes:
      method: "nmf", "sae_l1", "sae_topk" (or "loaded").
      num_codes: k.
      fvu: fraction of variance unexplained, Σ‖a − â‖² / Σ‖a − ā‖².
      l0: mean number of active codes per example.
      dead_codes: codes never active on the data.
      num_examples: examples evaluated.
    """

    method: str
    num_codes: int
    fvu: float
    l0: float
    dead_codes: int
    num_examples: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate(basis: DictionaryBasis, acts_NxD, method: str = "loaded") -> DictionaryReport:
    """Reconstruction error and sparsity of ``basis`` on activations ``[N, d]``."""
    acts = jnp.asarray(acts_NxD, jnp.float32)
    chex.assert_rank(acts, 2)
    codes = jax.jit(basis.encode)(acts)
    recon = basis.decode(codes)
    resid = float(jnp.sum((acts - recon) ** 2))
    total = float(jnp.sum((acts - acts.mean(0, keepdims=True)) ** 2))
    tol = ACTIVE_TOL * float(jnp.sqrt(jnp.mean(acts**2)) + 1e-12)
    active = np.asarray(jnp.abs(codes) > tol)
    return DictionaryReport(method=method, num_codes=basis.num_units,
                            fvu=resid / max(total, 1e-30), l0=float(active.sum(1).mean()),
                            dead_codes=int((~active.any(0)).sum()), num_examples=int(acts.shape[0]))


def max_cosine(dictionary_KxD, true_FxD) -> np.ndarray:
    """For each true direction ``[F, d]``, the max cosine similarity over dictionary rows."""
    a = np.asarray(dictionary_KxD, np.float64)
    b = np.asarray(true_FxD, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (b @ a.T).max(axis=1)


# ---------------------------------------------------------------------------------- learners


@dataclasses.dataclass(frozen=True)
class DictionaryConfig:
    """Settings of a dictionary fit.

    Attributes:
      method: "nmf", "sae_l1" or "sae_topk".
      num_codes: k (may exceed the activation width: an overcomplete dictionary).
      steps: multiplicative-update sweeps (NMF) or Adam steps (SAE), rounded up to a multiple
        of ``chunk``.
      l1: sparsity weight (NMF: on U, relative to the data scale; SAE "l1": on the codes of
        standardised activations).
      top_k: active codes per example for "sae_topk".
      learning_rate: Adam step size (SAE).
      batch_size: examples per Adam step (SAE; the full data when larger than N).
      encoding: NMF only: "nnls" (default) or "pinv" (see the module docstring).
      chunk: steps per jitted ``lax.scan`` call (the progress bar moves between chunks).
    """

    method: Literal["nmf", "sae_l1", "sae_topk"] = "nmf"
    num_codes: int = 16
    steps: int = 2000
    l1: float = 0.0
    top_k: int = 1
    learning_rate: float = 3e-3
    batch_size: int = 1024
    encoding: str = "nnls"
    chunk: int = 250

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown dictionary method {self.method!r}; choose one of "
                             f"{METHODS}.")
        if self.num_codes < 1 or self.steps < 1 or self.chunk < 1:
            raise ValueError(f"num_codes, steps and chunk must be positive; got {self}.")
        if self.method == "sae_topk" and not 0 < self.top_k <= self.num_codes:
            raise ValueError(f"sae_topk needs 0 < top_k <= num_codes; got top_k={self.top_k}.")
        if self.method == "nmf" and self.encoding not in ("nnls", "pinv"):
            raise ValueError(f"NMF codes are 'nnls' or 'pinv'; got {self.encoding!r}.")
        if self.l1 < 0:
            raise ValueError(f"l1 must be >= 0; got {self.l1}.")


def fit(acts_NxD, cfg: DictionaryConfig, key: Array) -> tuple[DictionaryBasis, DictionaryReport]:
    """Fits a dictionary to activations ``[N, d]`` (flatten positions / time steps into N).

    Args:
      acts_NxD: the site's activations, units last.
      cfg: what to fit.
      key: PRNG key for the initialisation (and SAE minibatches).

    Returns:
      (basis, report on ``acts_NxD``).

    Raises:
      ValueError: NMF on activations with negative values, or non-finite activations.
    """
    acts = jnp.asarray(acts_NxD, jnp.float32)
    if acts.ndim != 2:
        raise ValueError(f"fit() needs activations [N, d] (flatten other axes into N); got shape "
                         f"{tuple(acts.shape)}.")
    if not bool(jnp.all(jnp.isfinite(acts))):
        raise ValueError("fit(): the activations contain NaN/inf.")
    if cfg.method == "nmf":
        basis = fit_nmf(acts, cfg, key)
    else:
        basis = fit_sae(acts, cfg, key)
    return basis, evaluate(basis, acts, cfg.method)


def fit_nmf(acts_NxD: Array, cfg: DictionaryConfig, key: Array) -> DictionaryBasis:
    """Non-negative A ≈ U·D by multiplicative updates (Lee & Seung 2001, Frobenius loss)."""
    x = acts_NxD
    if float(jnp.min(x)) < 0:
        raise ValueError(f"NMF needs non-negative activations (min {float(jnp.min(x)):.3g}); use "
                         "method='sae_l1' or 'sae_topk' for signed activations, or a "
                         "post-ReLU site.")
    n, d = x.shape
    k = cfg.num_codes
    scale = jnp.sqrt(jnp.mean(x) / k) + 1e-6
    k_u, k_d = jax.random.split(key)
    u = jax.random.uniform(k_u, (n, k), minval=0.1, maxval=1.0) * scale
    dic = jax.random.uniform(k_d, (k, d), minval=0.1, maxval=1.0) * scale
    eps = 1e-9
    # L1 on U in the units of the data: a weight relative to the mean of X·Dᵀ.
    l1 = cfg.l1 * jnp.mean(x)

    def sweep(carry, _):
        u, dic = carry
        u = u * (x @ dic.T) / (u @ (dic @ dic.T) + l1 + eps)
        dic = dic * (u.T @ x) / ((u.T @ u) @ dic + eps)
        # Rows at unit norm keep the L1 weight meaningful (U cannot shrink by growing D).
        norms = jnp.linalg.norm(dic, axis=1, keepdims=True) + eps
        return (u * norms.T, dic / norms), None

    run = jax.jit(lambda u, dic: jax.lax.scan(sweep, (u, dic), None, length=cfg.chunk)[0])
    with progress.bar(total=cfg.steps, desc="nmf", unit="sweep") as bar:
        for _ in range(-(-cfg.steps // cfg.chunk)):
            u, dic = run(u, dic)
            bar.update(cfg.chunk)
    pinv = jnp.linalg.pinv(dic)
    return DictionaryBasis(encoder=pinv, decoder=dic, center=None, name="nmf",
                           encoding=cfg.encoding)


def _sae_forward(params: dict, x: Array, topk: int) -> tuple[Array, Array]:
    pre = x @ params["enc"] + params["b_enc"][None, :]
    codes = _keep_top_k(pre, topk) if topk else jax.nn.relu(pre)
    return codes, codes @ params["dec"] + params["b_dec"][None, :]


def fit_sae(acts_NxD: Array, cfg: DictionaryConfig, key: Array) -> DictionaryBasis:
    """A one-layer sparse autoencoder (L1 or top-k) on standardised activations, with Adam.

    Activations are centred and scaled so that E‖a‖² = 1 before fitting; the returned basis
    folds the scaling back in (codes are in standardised units, decoder rows in activation units).
    """
    x_raw = acts_NxD
    n, d = x_raw.shape
    k = cfg.num_codes
    mu = x_raw.mean(0)
    s = jnp.sqrt(jnp.mean(jnp.sum((x_raw - mu[None]) ** 2, axis=1))) + 1e-12
    x = (x_raw - mu[None]) / s
    k_init, k_batch = jax.random.split(key)
    dec = jax.random.normal(k_init, (k, d))
    dec = dec / jnp.linalg.norm(dec, axis=1, keepdims=True)
    params = {"enc": dec.T, "b_enc": jnp.zeros((k,)), "dec": dec, "b_dec": jnp.zeros((d,))}
    topk = cfg.top_k if cfg.method == "sae_topk" else 0
    l1 = cfg.l1 if cfg.method == "sae_l1" else 0.0
    opt = optax.adam(cfg.learning_rate)
    opt_state = opt.init(params)
    batch = min(cfg.batch_size, n)

    def loss_fn(p, xb):
        codes, recon = _sae_forward(p, xb, topk)
        return jnp.mean(jnp.sum((xb - recon) ** 2, axis=1)) + l1 * jnp.mean(jnp.sum(codes, 1))

    def step(carry, i):
        p, o = carry
        idx = jax.random.choice(jax.random.fold_in(k_batch, i), n, (batch,), replace=False)
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx])
        updates, o = opt.update(g, o, p)
        p = optax.apply_updates(p, updates)
        p["dec"] = p["dec"] / (jnp.linalg.norm(p["dec"], axis=1, keepdims=True) + 1e-12)
        return (p, o), loss

    run = jax.jit(lambda p, o, start: jax.lax.scan(step, (p, o), start + jnp.arange(cfg.chunk)))
    with progress.bar(total=cfg.steps, desc=cfg.method, unit="step") as bar:
        for start in range(0, cfg.steps, cfg.chunk):
            (params, opt_state), losses = run(params, opt_state, start)
            bar.update(cfg.chunk)
            bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
    return DictionaryBasis(encoder=params["enc"] / s, decoder=params["dec"] * s,
                           center=mu + s * params["b_dec"], bias=params["b_enc"], name=cfg.method,
                           encoding="topk" if topk else "relu", top_k=topk)


# ---------------------------------------------------------------------------------- save/load


def save(path: str | os.PathLike, basis: DictionaryBasis,
         report: DictionaryReport | None = None) -> None:
    """Writes a dictionary (and its report) to an ``.npz`` file, atomically: a run killed while
    saving leaves the old file or none, never a truncated one that a resume would read."""
    arrays = {"encoder": np.asarray(basis.encoder), "decoder": np.asarray(basis.decoder)}
    if basis.center is not None:
        arrays["center"] = np.asarray(basis.center)
    if basis.bias is not None:
        arrays["bias"] = np.asarray(basis.bias)
    meta = {"name": basis.name, "encoding": basis.encoding, "top_k": basis.top_k,
            "nnls_steps": basis.nnls_steps,
            "report": None if report is None else report.as_dict()}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, meta=np.asarray(json.dumps(meta)), **arrays)
    bbio.atomic_write_bytes(path, buf.getvalue())


def load(path: str | os.PathLike) -> tuple[DictionaryBasis, DictionaryReport | None]:
    """Reads a dictionary written by :func:`save`.

    Raises:
      ValueError: the file is not one (truncated, garbled, other arrays or metadata, arrays
        that do not fit together or hold NaN/inf), in one line naming it.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f or "decoder" not in f:
                raise ValueError("no meta or decoder array")
            arrays = {name: np.asarray(f[name]) for name in ("encoder", "decoder", "center",
                                                              "bias") if name in f}
            meta = json.loads(str(f["meta"]))
        bad = [name for name, a in arrays.items() if not np.all(np.isfinite(a))]
        if bad:
            raise ValueError(f"{bad[0]} holds NaN/inf")
        basis = DictionaryBasis(**{k: jnp.asarray(a) for k, a in arrays.items()},
                                name=meta["name"], encoding=meta["encoding"],
                                top_k=int(meta["top_k"]), nnls_steps=int(meta["nnls_steps"]))
        report = None if meta["report"] is None else DictionaryReport(**meta["report"])
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError) as e:  # np.load and json raise these for damaged files
        raise ValueError(f"{path} is not a dictionary file written by bablate.dictionary.save "
                         f"({type(e).__name__}: {e}).") from e
    return basis, report
