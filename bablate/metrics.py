"""Information-theoretic metrics of ablation mask distributions (DESIGN §2).

These are our reconstructions of the paper's suite; all quantities are in bits.

* unit importance π_i = q(m_i = 1); information I_i = KL(q_i ‖ prior_i);
* task information KL(q ‖ prior) (= d − H(q) under the uniform prior);
* distributedness: w_i = I_i / Σ_j I_j, effective units exp(H(w)), distributedness
  exp(H(w)) / d ∈ [1/d, 1]; undefined (NaN) when q carries no information;
* manifold complexity: total correlation TC = Σ_i H(q_i) − H(q);
* polysemanticity over a task set: effective number of tasks per unit exp(H(I_i(t)/Σ_t I_i(t)))
  and I(T; M_i) under the uniform mixture of task AMDs; task overlap by Jensen–Shannon.

H(q) is exact for enumerated posteriors and exact-for-q for mean-field SVI (whose TC is 0 by
construction). From MCMC samples it is estimated one of two ways (``entropy_estimate`` says
which):

* ``"plug-in"`` while the draws revisit masks (fewer distinct masks than half the draws): the
  empirical entropy with the Miller–Madow correction (K−1)/(2S ln 2). It is biased low and
  cannot exceed log2 S bits, so TC and task information are biased high;
* ``"chow-liu bound"`` once most draws are distinct (large d), where the plug-in joint entropy
  only measures the sample size: TC(q) ≥ Σ_(i,j)∈T I(M_i; M_j) for the maximum spanning tree
  T of pairwise mutual informations (the KL from q to its Chow–Liu tree is TC minus that sum,
  and KL ≥ 0). Pairwise MI needs only 2×2 tables, so this lower bound is well estimated from a
  few thousand draws; H(q) = Σ H(q_i) − TC is then an upper bound and task information a lower
  bound. The plug-in pairwise MI is biased up by about 1/(2S ln 2) bits per edge; we subtract it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bablate.inference.posterior import Posterior

LN2 = float(np.log(2.0))


@jax.jit
def bernoulli_entropy(q: jax.Array) -> jax.Array:
    """Entropy (bits) of Bernoulli(q), elementwise, with 0 log 0 = 0."""
    return -(jax.scipy.special.xlogy(q, q) + jax.scipy.special.xlogy(1 - q, 1 - q)) / LN2


@jax.jit
def bernoulli_kl(q: jax.Array, p: jax.Array) -> jax.Array:
    """KL(Bernoulli(q) ‖ Bernoulli(p)) in bits, elementwise."""
    kl = (jax.scipy.special.xlogy(q, q) - jax.scipy.special.xlogy(q, p)
          + jax.scipy.special.xlogy(1 - q, 1 - q) - jax.scipy.special.xlogy(1 - q, 1 - p))
    return jnp.maximum(kl, 0.0) / LN2


@jax.jit
def _spread(weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Effective number exp(H(w)) of a non-negative weight vector, and its total."""
    total = weights.sum(-1)
    w = weights / total[..., None]
    h = -jax.scipy.special.xlogy(w, w).sum(-1)
    return jnp.exp(h), total


@jax.jit
def table_entropy(log_probs: jax.Array) -> jax.Array:
    """Entropy (bits) of a normalised log-probability table."""
    p = jnp.exp(log_probs)
    return -jnp.sum(jnp.where(p > 0, p * log_probs, 0.0)) / LN2


def plugin_entropy(samples: np.ndarray, miller_madow: bool = True) -> float:
    """Plug-in entropy (bits) of the empirical distribution of mask samples ``[S, d]``."""
    samples = np.asarray(samples, np.uint8)
    _, counts = np.unique(samples, axis=0, return_counts=True)
    f = counts / counts.sum()
    h = float(-(f * np.log2(f)).sum())
    if miller_madow:
        h += (len(counts) - 1) / (2 * counts.sum() * LN2)
    return h


@jax.jit
def pairwise_mutual_information(samples: jax.Array) -> jax.Array:
    """``[d, d]`` plug-in mutual information (bits) between units, from masks ``[S, d]``."""
    x = samples.astype(jnp.float32)
    n = x.shape[0]
    p11 = x.T @ x / n
    q = x.mean(0)
    joint = {(1, 1): p11, (1, 0): q[:, None] - p11, (0, 1): q[None, :] - p11,
             (0, 0): 1.0 - q[:, None] - q[None, :] + p11}
    marg = {1: q, 0: 1.0 - q}
    mi = jnp.zeros_like(p11)
    for (a, b), pab in joint.items():
        pab = jnp.clip(pab, 0.0, 1.0)
        denom = marg[a][:, None] * marg[b][None, :]
        mi = mi + jnp.where(pab > 0, pab * (jnp.log(pab) - jnp.log(jnp.maximum(denom, 1e-30))),
                            0.0)
    return jnp.maximum(mi, 0.0) * (1.0 - jnp.eye(mi.shape[0])) / LN2


def chow_liu_bound(samples: np.ndarray) -> float:
    """Lower bound on total correlation (bits): the maximum spanning tree of pairwise MI."""
    samples = np.asarray(samples)
    d = samples.shape[1]
    if d < 2:
        return 0.0
    mi = np.asarray(pairwise_mutual_information(jnp.asarray(samples)), np.float64)
    # Prim's algorithm on the dense MI matrix, O(d^2).
    in_tree = np.zeros(d, bool)
    in_tree[0] = True
    best = mi[0].copy()
    total = 0.0
    for _ in range(d - 1):
        j = int(np.argmax(np.where(in_tree, -np.inf, best)))
        total += best[j]
        in_tree[j] = True
        best = np.maximum(best, mi[j])
    bias = (d - 1) / (2 * samples.shape[0] * LN2)
    return max(total - bias, 0.0)


def joint_entropy(post: Posterior) -> tuple[float, str]:
    """H(q) in bits and how it was obtained (see the module docstring)."""
    if post.log_probs is not None:
        return float(table_entropy(jnp.asarray(post.log_probs))), "exact"
    if post.entropy_bits is not None:
        return float(post.entropy_bits), "mean-field" if post.mean_field else "exact"
    if post.samples is None:
        raise ValueError(f"posterior {post.task!r} has neither a table nor samples.")
    distinct = len(np.unique(np.asarray(post.samples, np.uint8), axis=0))
    if distinct < 0.5 * len(post.samples):
        return plugin_entropy(post.samples), "plug-in"
    h_marg = float(bernoulli_entropy(jnp.asarray(post.marginals, jnp.float32)).sum())
    return h_marg - chow_liu_bound(post.samples), "chow-liu bound"


@dataclasses.dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one task's AMD (bits). See the module docstring for definitions."""

    task: str
    unit_importance: np.ndarray
    unit_information: np.ndarray
    task_information: float
    distributedness: float
    effective_units: float
    total_correlation: float
    entropy: float
    entropy_estimate: str

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in dataclasses.asdict(self).items()}


def distributedness(unit_information: np.ndarray) -> tuple[float, float]:
    """(distributedness ∈ [1/d, 1], effective units exp(H(w))); NaN when Σ I = 0."""
    info = jnp.asarray(unit_information, jnp.float32)
    eff, total = _spread(info)
    if float(total) <= 0:
        return float("nan"), float("nan")
    return float(eff) / info.shape[-1], float(eff)


def summarize(post: Posterior) -> TaskMetrics:
    """All single-task metrics of a posterior."""
    q = jnp.asarray(post.marginals, jnp.float32)
    p = jnp.asarray(post.prior, jnp.float32)
    info = np.asarray(bernoulli_kl(q, p), np.float64)
    h_marg = float(bernoulli_entropy(q).sum())
    h, how = joint_entropy(post)
    # KL(q‖prior) = −H(q) − E_q log prior(m), and the prior factorises over units.
    cross = -float((q * jnp.log2(p) + (1 - q) * jnp.log2(1 - p)).sum())
    dist_, eff = distributedness(info)
    return TaskMetrics(task=post.task, unit_importance=np.asarray(post.marginals, np.float64),
                       unit_information=info, task_information=max(cross - h, 0.0),
                       distributedness=dist_, effective_units=eff,
                       total_correlation=max(h_marg - h, 0.0), entropy=h, entropy_estimate=how)


@dataclasses.dataclass(frozen=True)
class Polysemanticity:
    """Per-unit polysemanticity over a task set.

    Attributes:
      tasks: task names.
      information: ``[T, d]`` I_i(t) in bits.
      effective_tasks: ``[d]`` exp(H(I_i(t)/Σ_t I_i(t))) ∈ [1, T]; NaN for units carrying less
        than ``min_information`` bits in total (they serve no task).
      mutual_information: ``[d]`` I(T; M_i) in bits under the uniform mixture of task AMDs.
    """

    tasks: list
    information: np.ndarray
    effective_tasks: np.ndarray
    mutual_information: np.ndarray

    @property
    def mean(self) -> float:
        """Mean effective number of tasks over units that serve any task (NaN if none)."""
        vals = self.effective_tasks[np.isfinite(self.effective_tasks)]
        return float(vals.mean()) if vals.size else float("nan")


def polysemanticity(posts: list[Posterior], min_information: float = 1e-3) -> Polysemanticity:
    """Polysemanticity of each unit across the tasks of ``posts`` (same site)."""
    if len({p.num_units for p in posts}) != 1:
        raise ValueError("polysemanticity needs posteriors over the same site (same d).")
    q = jnp.asarray(np.stack([p.marginals for p in posts]), jnp.float32)
    prior = jnp.asarray(np.stack([p.prior for p in posts]), jnp.float32)
    info = bernoulli_kl(q, prior)
    eff, total = _spread(info.T)
    eff = np.where(np.asarray(total) >= min_information, np.asarray(eff), np.nan)
    mi = bernoulli_entropy(q.mean(0)) - bernoulli_entropy(q).mean(0)
    return Polysemanticity(tasks=[p.task for p in posts], information=np.asarray(info),
                           effective_tasks=eff, mutual_information=np.maximum(np.asarray(mi), 0))


def _js_bits(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = lambda a: float(np.sum(np.where(a > 0, a * (np.log2(a) - np.log2(m)), 0.0)))
    return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def js_divergence(a: Posterior, b: Posterior, joint: bool | None = None) -> float:
    """Jensen–Shannon divergence (bits) between two task AMDs on the same site.

    With exact tables (``joint`` default) it is the JS of the full mask distributions ∈ [0, 1];
    otherwise the mean over units of the JS between marginals (a lower-resolution overlap that
    ignores correlations between units).
    """
    if a.num_units != b.num_units:
        raise ValueError("JS divergence needs posteriors over the same site.")
    if joint is None:
        joint = a.log_probs is not None and b.log_probs is not None
    if joint:
        return _js_bits(a.probs(), b.probs())
    vals = [_js_bits(np.array([1 - x, x]), np.array([1 - y, y]))
            for x, y in zip(a.marginals, b.marginals, strict=True)]
    return float(np.mean(vals))


def js_matrix(posts: list[Posterior], joint: bool | None = None) -> np.ndarray:
    """``[T, T]`` task-overlap matrix of pairwise JS divergences (bits)."""
    n = len(posts)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = js_divergence(posts[i], posts[j], joint)
    return out
