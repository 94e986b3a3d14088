"""Unsupervised chunk discovery (UCD, arXiv 2502.01803): K learnable unit vectors per layer.

The paper's objective: learn K directions u_1..u_K so that every token state s is close in
angle to at least one of them, i.e. maximise the mean over states of max_k cos(s, u_k). Each
direction is then a discovered "chunk"; a state belongs to the chunk of its best direction.
Trained here with optax (Adam) on the unit sphere (vectors renormalised in the loss), with
a log-sum-exp soft maximum during training (temperature ``tau``; tau → 0 is the hard max) so
that every direction receives gradient early on.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class Chunks:
    """K discovered directions.

    Attributes:
      directions: [K, D] unit vectors.
      center: [D] mean state subtracted before the cosine (states of a residual stream share a
        large common component that would otherwise dominate every angle).
      objective: final mean best cosine on the training states.
    """

    directions: np.ndarray
    center: np.ndarray
    objective: float

    @property
    def num_chunks(self) -> int:
        return int(self.directions.shape[0])

    def similarity(self, states_NxD: np.ndarray) -> np.ndarray:
        """Cosine similarity [N, K] of (centred) states to every direction."""
        s = np.asarray(states_NxD, np.float64) - self.center
        s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
        return s @ self.directions.T

    def assign(self, states_NxD: np.ndarray) -> np.ndarray:
        """Chunk index [N] of each state (its most similar direction)."""
        return np.argmax(self.similarity(states_NxD), axis=1)


def _normalise(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def discover(states_NxD: np.ndarray, num_chunks: int, key: jax.Array, *, steps: int = 300,
             learning_rate: float = 0.05, tau: float = 0.05, center: bool = True) -> Chunks:
    """Learns ``num_chunks`` directions maximising each state's best cosine similarity.

    Args:
      states_NxD: token states of one layer.
      num_chunks: K.
      key: PRNG key (initial directions = K random states, so none starts in an empty region).
      steps: Adam steps (full batch).
      learning_rate: Adam step size.
      tau: temperature of the soft maximum used for training.
      center: subtract the mean state first.

    Returns:
      The learned :class:`Chunks`.
    """
    s = np.asarray(states_NxD, np.float32)
    if s.ndim != 2 or s.shape[0] < num_chunks:
        raise ValueError(f"discover needs states [N >= K={num_chunks}, D], got {s.shape}.")
    if num_chunks < 1 or steps < 1:
        raise ValueError("num_chunks and steps must be positive.")
    mu = s.mean(0) if center else np.zeros(s.shape[1], np.float32)
    x = _normalise(jnp.asarray(s - mu))
    init = x[jax.random.choice(key, x.shape[0], (num_chunks,), replace=False)]
    opt = optax.adam(learning_rate)

    def loss(u):
        cos = x @ _normalise(u).T
        return -jnp.mean(tau * jax.nn.logsumexp(cos / tau, axis=1))

    @jax.jit
    def fit(u):
        def step(carry, _):
            u, st = carry
            g = jax.grad(loss)(u)
            upd, st = opt.update(g, st, u)
            return (optax.apply_updates(u, upd), st), None

        (u, _), _ = jax.lax.scan(step, (u, opt.init(u)), None, length=steps)
        u = _normalise(u)
        return u, jnp.mean(jnp.max(x @ u.T, axis=1))

    u, obj = fit(init)
    return Chunks(directions=np.asarray(u, np.float64), center=np.asarray(mu, np.float64),
                  objective=float(obj))


def alignment(chunks: Chunks, states_NxD: np.ndarray, labels_N: np.ndarray) -> dict:
    """How a labelled set of states (e.g. a concept word's occurrences) lines up with chunks.

    Returns:
      dict with ``chunk`` (the chunk most of the labelled states fall in), ``recall`` (fraction
      of labelled states in it), ``precision`` (fraction of that chunk's states that are
      labelled), and ``chance_precision`` (fraction of all states that are labelled).
    """
    y = np.asarray(labels_N, bool)
    if not y.any():
        raise ValueError("alignment needs at least one labelled state.")
    a = chunks.assign(states_NxD)
    best = int(np.bincount(a[y], minlength=chunks.num_chunks).argmax())
    in_best = a == best
    return {"chunk": best, "recall": float(np.mean(in_best[y])),
            "precision": float(np.mean(y[in_best])), "chance_precision": float(np.mean(y))}
