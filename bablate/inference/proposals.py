"""Proposals for importance sampling of masks: the prior mixed with product-Bernoulli
components fitted to weighted draws.

A proposal is r(m) = α · prior(m) + (1 − α) · Σ_k π_k Π_i Bernoulli(m_i; θ_ki). The prior's
share α (the *defensive* share) keeps every mask reachable and bounds every importance weight
against r by odds_max^β / α whatever the components got wrong. The components are fitted to
weighted draws of a target (:func:`fit`): weighted EM for a mixture, and a per-unit shrinkage
towards the prior that leaves a unit at its prior keep-probability unless its weighted mean moved
by more than its own noise. Without that shrinkage a fit from a few hundred effective draws on
hundreds of units moves every unit by its sampling noise, and those small moves multiply: on a
270-unit site a noise of 0.05 per unit spreads the log-weights by √(270 · 0.05² / 0.25) ≈ 1.6,
which costs more effective draws than the fit gains.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# A component's keep-probabilities stay in [EPS, 1 − EPS]: a unit the fit pins still flips
# now and then, so the component's log-density is finite everywhere.
EPS = 1e-3
EM_ITERATIONS = 25
# Masks (resampled by weight) a mixture's EM runs on.
MAX_FIT = 4096


def log_bernoulli(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """log Π_i Bernoulli(m_i; probs_i) per mask: ``[M]`` for probs ``[d]``, ``[M, K]`` for
    probs ``[K, d]``. Probabilities lie strictly inside (0, 1) (priors are checked, components
    clipped), so the log-density is the affine m · (log p − log(1 − p)) + Σ log(1 − p): one
    matrix product."""
    probs = np.asarray(probs, np.float64)
    log_p, log_q = np.log(probs), np.log1p(-probs)
    out = np.asarray(masks, np.float32) @ (log_p - log_q).T.astype(np.float32)
    return out.astype(np.float64) + log_q.sum(-1)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """α · prior + (1 − α) · Σ_k π_k Π_i Bernoulli(θ_ki).

    Attributes:
      alpha: the prior's share, in (0, 1] (1: the prior alone).
      weights: ``[K]`` the components' shares π (summing to 1; K = 0 when ``alpha`` is 1).
      theta: ``[K, d]`` the components' keep-probabilities.
    """

    alpha: float
    weights: np.ndarray
    theta: np.ndarray

    @classmethod
    def prior(cls, num_units: int) -> Proposal:
        """The prior alone."""
        return cls(1.0, np.zeros(0), np.zeros((0, num_units)))

    @classmethod
    def mixed(cls, theta: np.ndarray, alpha: float, weights: np.ndarray | None = None
              ) -> Proposal:
        """The prior (share ``alpha``) mixed with components ``theta`` ``[K, d]`` or ``[d]``."""
        theta = np.atleast_2d(np.clip(np.asarray(theta, np.float64), EPS, 1.0 - EPS))
        k = theta.shape[0]
        weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
        return cls(float(alpha), weights / weights.sum(), theta)

    @property
    def num_components(self) -> int:
        return int(self.theta.shape[0])

    def sample(self, key: jax.Array, num: int, prior: np.ndarray) -> np.ndarray:
        """``num`` masks ``[num, d]`` (float32 0/1) drawn from the proposal."""
        k_component, k_units = jax.random.split(key)
        shares = np.concatenate([[self.alpha], (1.0 - self.alpha) * self.weights])
        component = np.asarray(jax.random.choice(k_component, shares.size, (num,),
                                                 p=shares / shares.sum()))
        keep = np.vstack([prior[None, :], self.theta])[component]
        u = np.asarray(jax.random.uniform(k_units, (num, prior.size)))
        return (u < keep).astype(np.float32)

    def log_prob(self, masks: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """log r(m) per mask ``[M]``."""
        log_prior = log_bernoulli(masks, prior)
        if self.alpha >= 1.0:
            return log_prior
        components = log_bernoulli(masks, self.theta) + np.log(self.weights)[None, :]
        mixture = np.logaddexp.reduce(components, axis=1)
        return np.logaddexp(np.log(self.alpha) + log_prior, np.log1p(-self.alpha) + mixture)

    def describe(self) -> str:
        if self.alpha >= 1.0:
            return "prior"
        return (f"prior (share {self.alpha:g}) mixed with {self.num_components} product-"
                "Bernoulli component(s)")


def shrink(theta_hat: np.ndarray, n_eff: float, prior: np.ndarray) -> np.ndarray:
    """Weighted means ``[d]`` from ``n_eff`` effective draws, moved towards the prior unit by
    unit (see the module docstring).

    A unit the target leaves alone has a weighted mean spread around its prior with standard
    error √(p(1 − p) / n_eff). Across d such units the largest chance deviation is about
    √(2 ln d) standard errors (the universal threshold of wavelet shrinkage, Donoho and
    Johnstone 1994), so a move within that many is dropped and a larger one is shrunk by
    1 − (threshold / move)². Without the d-dependent threshold a component fitted to a few heavy
    draws copies their irrelevant units (a quarter of them agree among three draws by chance)
    and its density at those draws, and their weights with it, goes astray by orders of
    magnitude.
    """
    move = theta_hat - prior
    z = np.sqrt(2.0 * np.log(max(prior.size, 2)))
    threshold_sq = z ** 2 * prior * (1.0 - prior) / max(n_eff, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(move != 0, 1.0 - threshold_sq / move ** 2, 0.0)
    return prior + np.clip(factor, 0.0, 1.0) * move


def fit(masks: np.ndarray, w_hat: np.ndarray, prior: np.ndarray, components: int,
        key: jax.Array, max_fit: int = MAX_FIT) -> tuple[np.ndarray, np.ndarray]:
    """Product-Bernoulli components fitted to weighted masks.

    Args:
      masks: ``[M, d]`` 0/1 draws.
      w_hat: ``[M]`` their normalised weights under the target.
      prior: ``[d]`` the prior keep-probabilities (what each unit shrinks towards).
      components: K; with K > 1 an EM for a mixture on ``max_fit`` masks resampled by weight,
        started from K of them picked by k-means++ on Hamming distance.
      key: PRNG key of the resampling and the initial picks.
      max_fit: masks the EM runs on.

    Returns:
      (weights ``[K]``, theta ``[K, d]``), each component shrunk towards the prior by its
      share of the draws' effective sample size (:func:`shrink`) and clipped to
      [EPS, 1 − EPS].
    """
    w_hat = np.asarray(w_hat, np.float64) / np.sum(w_hat)
    n_eff = 1.0 / np.sum(w_hat ** 2)
    if components == 1:
        theta = shrink(w_hat @ masks, n_eff, prior)[None, :]
        return np.ones(1), np.clip(theta, EPS, 1.0 - EPS)
    rng = np.random.default_rng(np.asarray(jax.random.bits(key, (4,), np.uint32)))
    # Systematic resampling: the EM then runs on equally weighted masks.
    picks = np.searchsorted(np.cumsum(w_hat), (rng.random() + np.arange(max_fit)) / max_fit)
    x = np.asarray(masks[np.minimum(picks, masks.shape[0] - 1)], np.float64)
    theta, weights = _em(jnp.asarray(x, jnp.float32),
                         jnp.asarray(_kmeans_plus_plus(x, components, rng), jnp.float32),
                         jnp.full((components,), 1.0 / components, jnp.float32))
    theta, weights = np.asarray(theta, np.float64), np.asarray(weights, np.float64)
    # Each component rests on the effective sample size of the weighted draws it explains:
    # a component that a few heavy draws (resampled many times) make up shrinks as far as
    # those few draws deserve, so it cannot memorise them.
    log_r = log_bernoulli(masks, theta) + np.log(weights)[None, :]
    resp = np.exp(log_r - np.logaddexp.reduce(log_r, axis=1, keepdims=True))
    wk = w_hat[:, None] * resp
    n_eff_k = wk.sum(0) ** 2 / np.maximum(np.sum(wk ** 2, axis=0), 1e-300)
    theta = np.stack([shrink(theta[k], n_eff_k[k], prior) for k in range(components)])
    return weights, np.clip(theta, EPS, 1.0 - EPS)


@jax.jit
def _em(x: jax.Array, theta: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """EM_ITERATIONS steps of EM for a mixture of product Bernoullis on masks ``x`` ``[N, d]``
    (compiled: numpy's small matrix products are several times slower on a busy CPU)."""

    def step(_, carry):
        theta, weights = carry
        log_p, log_q = jnp.log(theta), jnp.log1p(-theta)
        log_r = x @ (log_p - log_q).T + log_q.sum(-1)[None, :] + jnp.log(weights)[None, :]
        resp = jax.nn.softmax(log_r, axis=1)
        mass = jnp.maximum(resp.sum(0), 1e-12)
        return jnp.clip(resp.T @ x / mass[:, None], EPS, 1.0 - EPS), mass / mass.sum()

    return jax.lax.fori_loop(0, EM_ITERATIONS, step, (theta, weights))


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """K starting components: a random mask, then each next one with probability ∝ squared
    Hamming distance to the nearest pick, softened to [0.25, 0.75]."""
    picks = [int(rng.integers(x.shape[0]))]
    dist = np.full(x.shape[0], np.inf)
    for _ in range(1, k):
        dist = np.minimum(dist, np.abs(x - x[picks[-1]]).sum(1) ** 2)
        picks.append(int(rng.choice(x.shape[0], p=dist / dist.sum())) if dist.sum() > 0
                     else int(rng.integers(x.shape[0])))
    return 0.25 + 0.5 * x[picks]
