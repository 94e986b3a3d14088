"""Information-theoretic metrics of ablation mask distributions (DESIGN §2).

These are our reconstructions of the paper's suite; all quantities are in bits.

* unit importance π_i = q(m_i = 1); information I_i = KL(q_i ‖ prior_i);
* task information KL(q ‖ prior) (= d − H(q) under the uniform prior);
* distributedness: w_i = I_i / Σ_j I_j, effective units exp(H(w)), distributedness
  exp(H(w)) / d ∈ [1/d, 1]; undefined (NaN) when q carries no information;
* manifold complexity: total correlation TC = Σ_i H(q_i) − H(q);
* polysemanticity over a task set: effective number of tasks per unit exp(H(I_i(t)/Σ_t I_i(t)))
  and I(T; M_i) under the uniform mixture of task AMDs; task overlap by Jensen–Shannon.

Information below the prior. A unit whose removal *helps* the task has q_i < prior_i; KL counts
that as information too. ``unit_information_used`` is the part from units with q_i > prior_i (the
task uses them), ``unit_information_harmful`` the part from q_i < prior_i (the task goes better
without them). Distributedness and polysemanticity describe the code a task *uses*, so by
default (``information="used"``) they are computed on the used part; ``information="all"``
gives the plain KL of every unit.

H(q) is exact for enumerated posteriors and exact-for-q for mean-field SVI (whose TC is 0 by
construction). From MCMC draws, which are autocorrelated, it is estimated one of two ways
(``entropy_estimate`` says which and ``entropy_error`` gives a size for its error):

* ``"normaliser ratio"`` when the chains revisit masks: H(q) = log Z − E_q[log q̃(m)], with the
  unnormalised log density q̃ of each draw recorded by the sampler, E_q from all draws, and Z
  from a set A of masks seen in the first half of the chains: Z = Σ_{m∈A} q̃(m) / q(A), where
  q(A) is the fraction of second-half draws that fall in A (and the same with the halves
  swapped). Only frequencies of a *set* are estimated, never those of single masks, so the
  estimate does not depend on how many distinct masks the draws hold; it is consistent for a
  converged chain, with a bias of order 1/(draws in A) from the log of a ratio.
  ``entropy_error`` is its Monte Carlo standard error, by the delta method on the two chain
  averages it is made of, with their effective sample sizes (:func:`_ratio_error`);
* ``"chow-liu bound"`` once the chains rarely revisit masks (large d): TC(q) ≥ Σ_(i,j)∈T
  I(M_i; M_j) for the maximum spanning tree T of pairwise mutual informations (the KL from q to
  its Chow–Liu tree is TC minus that sum, and KL ≥ 0). Pairwise MI needs only 2×2 tables, so
  this lower bound is well estimated from a few thousand draws; H(q) = Σ H(q_i) − TC is then an
  upper bound and task information a lower bound. The plug-in pairwise MI is biased up by
  about 1/(2 n ln 2) bits per edge, n the effective sample size (autocorrelated draws count as
  fewer); we subtract it.

The plug-in entropy of the draws (:func:`plugin_entropy`) is kept for independent draws only: a
chain that repeats masks through rejections makes it far too low.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro.diagnostics import effective_sample_size

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


def chow_liu_bound(samples: np.ndarray, effective_size: float | None = None) -> float:
    """Lower bound on total correlation (bits): the maximum spanning tree of pairwise MI.

    Args:
      samples: masks ``[S, d]``.
      effective_size: the number of independent draws the samples are worth (the ESS of a
        chain); sets the bias correction. Default: S (independent draws).
    """
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
    n = samples.shape[0] if effective_size is None else min(effective_size, samples.shape[0])
    bias = (d - 1) / (2 * max(n, 1.0) * LN2)
    return max(total - bias, 0.0)


# Second-half draws that must fall in the first half's set of masks (each way) before the
# normaliser-ratio estimate is used: the relative error of q(A) is then a few per cent.
MIN_RATIO_HITS = 200


def _row_keys(samples: np.ndarray) -> np.ndarray:
    """One hashable key per mask row (the packed bits as a void scalar)."""
    packed = np.packbits(np.asarray(samples, np.uint8), axis=1)
    return np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()


@dataclasses.dataclass(frozen=True)
class RatioEstimate:
    """H(q) and the marginals of q from MCMC draws reweighted by their known densities.

    Attributes:
      entropy: H(q) in bits.
      marginals: ``[d]`` q(m_i = 1) from the same reweighting (consistent with ``entropy``, so
        total correlation Σ H(q_i) − H(q) does not mix two estimates).
      error: the standard error of ``entropy`` in bits (the mean of the halves' delta-method
        errors: the two halves' estimates share their draws, so their errors are not
        averaged down as if independent).
      coverage: c, the estimated mass of the revisited mask set.
    """

    entropy: float
    marginals: np.ndarray
    error: float
    coverage: float


def normaliser_ratio_estimate(samples: np.ndarray, log_density: np.ndarray,
                              num_chains: int = 1, min_hits: int = MIN_RATIO_HITS,
                              ) -> RatioEstimate | None:
    """H(q) and marginals from MCMC draws and their unnormalised log densities.

    With A the masks of one half of the chains, c = q(A) estimated by the fraction of the other
    half's draws in A, and Z = Σ_A q̃ / c, q is estimated as the mixture of q̃/Z on A (known
    masks, exact weights) and the other half's draws outside A (weight 1 − c):

        H = c · (log Z − E_{q|A}[log q̃]) + (1 − c) · (log Z − mean over draws ∉ A of log q̃),

    and the marginals likewise. Where the draws revisit masks (c → 1) almost nothing is left to
    sampling noise; the two halves swap roles and the estimates are averaged.

    Args:
      samples: ``[C·S, d]`` draws, chain-major.
      log_density: ``[C·S]`` log q̃ of each draw.
      num_chains: C; each chain is split into its first and second half.
      min_hits: fewest draws of one half that must fall in the other half's mask set.

    Returns:
      The estimate, or None when the chains revisit masks too rarely for it.
    """
    samples = np.asarray(samples, np.uint8)
    d = samples.shape[1]
    keys = _row_keys(samples).reshape(num_chains, -1)
    lp = np.asarray(log_density, np.float64).reshape(num_chains, -1)
    x = samples.reshape(num_chains, -1, d)
    half = keys.shape[1] // 2
    if half < 1:
        return None
    halves = [(keys[:, :half].ravel(), lp[:, :half].ravel(), x[:, :half].reshape(-1, d)),
              (keys[:, half:].ravel(), lp[:, half:].ravel(), x[:, half:].reshape(-1, d))]
    entropies, marginals, coverages, errors = [], [], [], []
    for (k_set, lp_set, x_set), (k_test, lp_test, x_test) in (halves, halves[::-1]):
        uniq, index = np.unique(k_set, return_index=True)
        inside = np.isin(k_test, uniq)
        hits = int(inside.sum())
        if hits < min_hits:
            return None
        c = hits / k_test.size
        lp_a = lp_set[index]
        log_mass = float(np.logaddexp.reduce(lp_a))
        w = np.exp(lp_a - log_mass)  # q restricted to A, normalised
        log_z = log_mass - np.log(c)
        mean_a = float(w @ lp_a)
        h = c * (log_z - mean_a)
        q = c * (w @ x_set[index].astype(np.float64))
        if hits < k_test.size:
            h += (1 - c) * (log_z - float(lp_test[~inside].mean()))
            q += (1 - c) * x_test[~inside].mean(axis=0)
        entropies.append(h / LN2)
        marginals.append(q)
        coverages.append(c)
        errors.append(_ratio_error(inside, lp_test, c, mean_a, num_chains) / LN2)
    return RatioEstimate(entropy=float(np.mean(entropies)), marginals=np.mean(marginals, axis=0),
                         error=float(np.mean(errors)), coverage=float(np.mean(coverages)))


def _ratio_error(inside: np.ndarray, lp_test: np.ndarray, c: float, mean_a: float,
                 num_chains: int) -> float:
    """The Monte Carlo standard error (nats) of one half's normaliser-ratio entropy.

    Given the set A, that entropy is H = const − log ā − ā·E_{q|A}[log q̃] − b̄, a function of
    two means over the test half's draws: ā of the indicator a_j = [m_j ∈ A] and b̄ of
    b_j = log q̃(m_j)·(1 − a_j). By the delta method its error is that of the mean of
    g_j = −(1/c + E_{q|A}[log q̃])·a_j − b_j, whose draws are autocorrelated: the standard
    error is sd(g) / √ESS(g), with the ESS of g's chains (numpyro's, as for R-hat). The
    half-swapped difference this replaces fell short of the true error in 9 of 10 runs.
    """
    g = -(1.0 / c + mean_a) * inside - lp_test * (~inside)
    chains = g.reshape(num_chains, -1)
    if g.std() == 0:
        return 0.0
    if chains.shape[1] < 4:
        return float(g.std() / np.sqrt(g.size))
    ess = float(effective_sample_size(chains[..., None].astype(np.float64))[0])
    return float(g.std() / np.sqrt(max(ess, 1.0)))


def _entropy(post: Posterior) -> tuple[float, str, float, np.ndarray]:
    """(H(q) bits, estimator, error size, the marginals consistent with that H)."""
    marginals = np.asarray(post.marginals, np.float64)
    if post.log_probs is not None:
        return float(table_entropy(jnp.asarray(post.log_probs))), "exact", 0.0, marginals
    if post.entropy_bits is not None:
        # Importance sampling estimates H(q) from its weights and records how and how well.
        how = "mean-field" if post.mean_field else post.diagnostics.get("entropy_estimate",
                                                                         "exact")
        return (float(post.entropy_bits), how,
                float(post.diagnostics.get("entropy_error", 0.0)), marginals)
    if post.samples is None:
        raise ValueError(f"posterior {post.task!r} has neither a table nor samples.")
    if post.log_density is not None:
        est = normaliser_ratio_estimate(post.samples, post.log_density, post.num_chains or 1)
        if est is not None:
            return est.entropy, "normaliser ratio", est.error, est.marginals
    h_marg = float(bernoulli_entropy(jnp.asarray(marginals, jnp.float32)).sum())
    tc = chow_liu_bound(post.samples, post.diagnostics.get("ess_mean"))
    return h_marg - tc, "chow-liu bound", float("nan"), marginals


def joint_entropy(post: Posterior) -> tuple[float, str, float]:
    """H(q) in bits, how it was obtained and a size for its error (0 when exact, NaN for the
    Chow–Liu bound; see the module docstring)."""
    return _entropy(post)[:3]


INFORMATION = ("used", "all")


def split_information(q: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL(q_i ‖ prior_i) in bits split into (used: q_i > prior_i, harmful: q_i < prior_i)."""
    q, prior = np.asarray(q, np.float64), np.asarray(prior, np.float64)
    info = np.asarray(bernoulli_kl(jnp.asarray(q, jnp.float32), jnp.asarray(prior, jnp.float32)),
                      np.float64)
    used = q > prior
    return np.where(used, info, 0.0), np.where(q < prior, info, 0.0)


def _check_information(information: str) -> None:
    if information not in INFORMATION:
        raise ValueError(f"unknown information={information!r}; choose one of {INFORMATION} "
                         "('used' counts only units the task uses, q > prior).")


@dataclasses.dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one task's AMD (bits). See the module docstring for definitions.

    Attributes:
      unit_information: ``[d]`` KL(q_i ‖ prior_i), used + harmful.
      unit_information_used / unit_information_harmful: its parts from q_i > prior_i and
        q_i < prior_i.
      distributedness, effective_units: of ``information`` ("used" by default, or "all").
      entropy_estimate: how H(q) was obtained ("exact", "mean-field", "normaliser ratio",
        "chow-liu bound"); ``entropy_error`` a size for its error in bits (NaN: a bound).
    """

    task: str
    unit_importance: np.ndarray
    unit_information: np.ndarray
    task_information: float
    distributedness: float
    effective_units: float
    total_correlation: float
    entropy: float
    entropy_estimate: str
    unit_information_used: np.ndarray
    unit_information_harmful: np.ndarray
    information: str = "used"
    entropy_error: float = 0.0

    @property
    def used_information(self) -> float:
        """Σ_i of the used part of the unit information (bits)."""
        return float(np.sum(self.unit_information_used))

    @property
    def harmful_information(self) -> float:
        """Σ_i of the harmful part of the unit information (bits)."""
        return float(np.sum(self.unit_information_harmful))

    def as_dict(self) -> dict:
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
               for k, v in dataclasses.asdict(self).items()}
        out["used_information"] = self.used_information
        out["harmful_information"] = self.harmful_information
        return out

    def __repr__(self) -> str:
        return (f"TaskMetrics({self.task!r}: information {self.task_information:.3g} bits "
                f"(used {self.used_information:.3g}, harmful {self.harmful_information:.3g}), "
                f"distributedness {self.distributedness:.3g} ({self.information}), "
                f"TC {self.total_correlation:.3g} [{self.entropy_estimate}], "
                f"d={self.unit_importance.size})")


def distributedness(unit_information: np.ndarray) -> tuple[float, float]:
    """(distributedness ∈ [1/d, 1], effective units exp(H(w))); NaN when Σ I = 0."""
    info = jnp.asarray(unit_information, jnp.float32)
    eff, total = _spread(info)
    if float(total) <= 0:
        return float("nan"), float("nan")
    return float(eff) / info.shape[-1], float(eff)


def summarize(post: Posterior, information: str = "used") -> TaskMetrics:
    """All single-task metrics of a posterior.

    Args:
      post: the posterior.
      information: "used" (default): distributedness is computed on the information of units
        the task uses (q_i > prior_i); "all": on every unit's KL, harmful units included.
    """
    _check_information(information)
    p = jnp.asarray(post.prior, jnp.float32)
    used, harmful = split_information(post.marginals, post.prior)
    info = used + harmful
    h, how, err, q_of_h = _entropy(post)
    # TC and task information take H(q) and the marginals from one estimate (for MCMC draws
    # the reweighted ones), so that the two errors do not add up.
    q_h = jnp.asarray(q_of_h, jnp.float32)
    h_marg = float(bernoulli_entropy(q_h).sum())
    # KL(q‖prior) = −H(q) − E_q log prior(m), and the prior factorises over units.
    cross = -float((q_h * jnp.log2(p) + (1 - q_h) * jnp.log2(1 - p)).sum())
    dist_, eff = distributedness(used if information == "used" else info)
    return TaskMetrics(task=post.task, unit_importance=np.asarray(post.marginals, np.float64),
                       unit_information=info, task_information=max(cross - h, 0.0),
                       distributedness=dist_, effective_units=eff,
                       total_correlation=max(h_marg - h, 0.0), entropy=h, entropy_estimate=how,
                       unit_information_used=used, unit_information_harmful=harmful,
                       information=information, entropy_error=err)


def _check_same_site(posts: list[Posterior], what: str) -> None:
    """Refuses an empty list, or posteriors over different sites (by d and site identity)."""
    if not posts:
        raise ValueError(f"{what} needs at least one posterior, got an empty list.")
    sites = {(p.num_units, p.site) for p in posts}
    if len(sites) != 1:
        names = sorted({f"{p.site or '?'} [d={p.num_units}]" for p in posts})
        raise ValueError(f"{what} needs posteriors over one site; got {', '.join(names)}. "
                         "Compare tasks on the same site (same name, units, ablation, basis).")


@dataclasses.dataclass(frozen=True)
class Polysemanticity:
    """Per-unit polysemanticity over a task set.

    Attributes:
      tasks: task names.
      information: ``[T, d]`` I_i(t) in bits (the used part, or all of it; see
        :func:`polysemanticity`).
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

    def __repr__(self) -> str:
        return (f"Polysemanticity({len(self.tasks)} tasks, d={self.effective_tasks.size}: "
                f"mean {self.mean:.3g} effective tasks per unit)")


def polysemanticity(posts: list[Posterior], min_information: float = 1e-3,
                    information: str = "used") -> Polysemanticity:
    """Polysemanticity of each unit across the tasks of ``posts`` (same site).

    Args:
      posts: one posterior per task, all over one site.
      min_information: units with less total information are left out (NaN).
      information: "used" (default): a unit serves a task by the information from q > prior
        (the task uses it); "all": its whole KL, harmful information included.
    """
    _check_information(information)
    _check_same_site(posts, "polysemanticity")
    q = jnp.asarray(np.stack([p.marginals for p in posts]), jnp.float32)
    used, harmful = zip(*[split_information(p.marginals, p.prior) for p in posts], strict=True)
    info = np.stack(used) if information == "used" else np.stack(used) + np.stack(harmful)
    eff, total = _spread(jnp.asarray(info.T, jnp.float32))
    eff = np.where(np.asarray(total) >= min_information, np.asarray(eff), np.nan)
    mi = bernoulli_entropy(q.mean(0)) - bernoulli_entropy(q).mean(0)
    return Polysemanticity(tasks=[p.task for p in posts], information=info,
                           effective_tasks=eff, mutual_information=np.maximum(np.asarray(mi), 0))


def _js_bits(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    kl = lambda a: float(np.sum(np.where(a > 0, a * (np.log2(a) - np.log2(m)), 0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 · log 0 is masked out
        return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def js_divergence(a: Posterior, b: Posterior) -> float:
    """Jensen–Shannon divergence (bits, ∈ [0, 1]) between two task AMDs on the same site: the
    JS of the full mask distributions, which needs exact tables.

    For sampled posteriors use :func:`marginal_js_divergence`, a different (smaller) quantity.
    """
    _check_same_site([a, b], "js_divergence")
    if a.log_probs is None or b.log_probs is None:
        raise ValueError(f"js_divergence is the JS of the whole mask distributions and needs "
                         f"exact posteriors; {a.task!r} ({a.method}) and {b.task!r} ({b.method})"
                         " are not both exact. Use bablate.metrics.marginal_js_divergence (mean "
                         "over units of the JS between marginals) for sampled posteriors.")
    return _js_bits(a.probs(), b.probs())


def marginal_js_divergence(a: Posterior, b: Posterior) -> float:
    """Mean over units of the JS divergence (bits) between the two tasks' marginals q_i.

    Defined for any posteriors. It ignores the correlations between units, so it is a
    different quantity from the joint :func:`js_divergence` (often an order of magnitude
    smaller) and goes by its own name.
    """
    _check_same_site([a, b], "marginal_js_divergence")
    vals = [_js_bits(np.array([1 - x, x]), np.array([1 - y, y]))
            for x, y in zip(a.marginals, b.marginals, strict=True)]
    return float(np.mean(vals))


def _pairwise(posts: list[Posterior], fn, what: str) -> np.ndarray:
    _check_same_site(posts, what)
    n = len(posts)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = fn(posts[i], posts[j])
    return out


def js_matrix(posts: list[Posterior]) -> np.ndarray:
    """``[T, T]`` task-overlap matrix of joint JS divergences (bits; exact posteriors)."""
    return _pairwise(posts, js_divergence, "js_matrix")


def marginal_js_matrix(posts: list[Posterior]) -> np.ndarray:
    """``[T, T]`` matrix of :func:`marginal_js_divergence` (bits; any posteriors)."""
    return _pairwise(posts, marginal_js_divergence, "marginal_js_matrix")


# ---- a task set read as a whole -------------------------------------------------------------

INFORMATIVE_BITS = 0.1  # tasks carrying less task information are left out of per-task means


def informative_mean(values: ArrayLike, informative: np.ndarray) -> float:
    """Mean of ``values`` ``[T]`` over the informative tasks, NaNs skipped; NaN when no task
    is informative or every informative value is NaN."""
    v = np.asarray(values, np.float64)[np.asarray(informative, bool)]
    return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")


@dataclasses.dataclass(frozen=True)
class TaskSetMetrics:
    """The metrics of a task set on one site, per task and over the set (bits).

    Per task (``[T]``, or ``[T, d]``): the :class:`TaskMetrics` fields of each posterior, with
    ``total_correlation`` NaN for mean-field posteriors (their TC is 0 by construction, not
    measured). ``informative`` marks the tasks carrying at least ``informative_bits`` of task
    information; the ``*_mean`` fields average over those (NaN when none is), except
    ``task_information_mean``, the mean over every task.

    Polysemanticity (two tasks or more, else None): ``effective_tasks`` ``[d]`` and its
    ``polysemanticity_mean`` (:func:`polysemanticity`), ``polysemanticity_weighted`` (weighted
    by each unit's total information, so that units carrying next to nothing count for next to
    nothing), ``units_serving_tasks`` (units with a finite effective number), ``unit_task_mi``
    ``[d]`` I(T; M_i) and its mean, and ``tasks_served`` ``[d]``: for how many tasks each unit
    carries at least ``informative_bits`` (with its mean over units).
    """

    tasks: list[str]
    methods: list[str]
    informative_bits: float
    task_information: np.ndarray
    distributedness: np.ndarray
    effective_units: np.ndarray
    total_correlation: np.ndarray
    entropy_estimate: list[str]
    unit_information: np.ndarray
    unit_importance: np.ndarray
    informative: np.ndarray
    informative_tasks: int
    task_information_mean: float
    distributedness_mean: float
    effective_units_mean: float
    total_correlation_mean: float
    effective_tasks: np.ndarray | None = None
    polysemanticity_mean: float | None = None
    polysemanticity_weighted: float | None = None
    units_serving_tasks: int | None = None
    unit_task_mi: np.ndarray | None = None
    unit_task_mi_mean: float | None = None
    tasks_served: np.ndarray | None = None
    tasks_served_mean: float | None = None

    def mean(self, values: ArrayLike) -> float:
        """Mean of per-task ``values`` ``[T]`` over this set's informative tasks
        (:func:`informative_mean`), e.g. a study's own per-task numbers."""
        return informative_mean(values, self.informative)

    def as_dict(self) -> dict:
        """Plain JSON-ready values: lists, floats, ints, strings (NaN stays a float NaN; the
        run's JSON writer stores it as null)."""
        out = {}
        for field in dataclasses.fields(self):
            v = getattr(self, field.name)
            out[field.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    def __repr__(self) -> str:
        poly = ("" if self.polysemanticity_mean is None
                else f", {self.polysemanticity_mean:.3g} effective tasks per unit")
        return (f"TaskSetMetrics({len(self.tasks)} tasks, {self.informative_tasks} informative "
                f"(≥ {self.informative_bits:g} bit): distributedness "
                f"{self.distributedness_mean:.3g}, TC {self.total_correlation_mean:.3g}{poly})")


def summarize_tasks(posts: list[Posterior], informative_bits: float = INFORMATIVE_BITS,
                    information: str = "used") -> TaskSetMetrics:
    """Reads a task set: :func:`summarize` per task, means over the informative tasks and, for
    two tasks or more, polysemanticity (see :class:`TaskSetMetrics`).

    Args:
      posts: one posterior per task, all over one site.
      informative_bits: tasks with less task information are left out of the means; a unit
        serves a task (``tasks_served``) when it carries at least this much for it.
      information: "used" (default) or "all", as in :func:`summarize`.
    """
    _check_same_site(posts, "summarize_tasks")
    summaries = [summarize(p, information) for p in posts]
    info = np.array([m.task_information for m in summaries])
    keep = info >= informative_bits
    tc = np.array([float("nan") if p.mean_field else m.total_correlation
                   for p, m in zip(posts, summaries, strict=True)])
    dist_ = np.array([m.distributedness for m in summaries])
    eff = np.array([m.effective_units for m in summaries])
    summary = TaskSetMetrics(
        tasks=[p.task for p in posts], methods=[p.method for p in posts],
        informative_bits=float(informative_bits), task_information=info,
        distributedness=dist_, effective_units=eff, total_correlation=tc,
        entropy_estimate=[m.entropy_estimate for m in summaries],
        unit_information=np.stack([m.unit_information for m in summaries]),
        unit_importance=np.stack([m.unit_importance for m in summaries]),
        informative=keep, informative_tasks=int(keep.sum()),
        task_information_mean=float(info.mean()),
        distributedness_mean=informative_mean(dist_, keep),
        effective_units_mean=informative_mean(eff, keep),
        total_correlation_mean=informative_mean(tc, keep))
    if len(posts) == 1:
        return summary
    poly = polysemanticity(posts, information=information)
    serving = np.isfinite(poly.effective_tasks)
    weight = np.where(serving, poly.information.sum(0), 0.0)
    weighted = (float(np.sum(weight * np.nan_to_num(poly.effective_tasks)) / weight.sum())
                if weight.sum() > 0 else float("nan"))
    served = (poly.information >= informative_bits).sum(axis=0)
    return dataclasses.replace(
        summary, effective_tasks=poly.effective_tasks, polysemanticity_mean=poly.mean,
        polysemanticity_weighted=weighted, units_serving_tasks=int(serving.sum()),
        unit_task_mi=poly.mutual_information,
        unit_task_mi_mean=float(poly.mutual_information.mean()), tasks_served=served,
        tasks_served_mean=float(served.mean()))
