"""Stochastic variational inference with a mean-field Bernoulli guide, for the largest sites.

q(m) = Π_i Bernoulli(σ(φ_i)). The ELBO splits into closed-form parts (the prior cross-entropy
and the entropy of q, both functions of the marginals alone) and the expected log-odds, whose
gradient is estimated either

* ``"score"``: score-function (REINFORCE) with the leave-one-out baseline over K vmapped draws;
  unbiased, works with the hard-count likelihood; or
* ``"concrete"``: reparameterised relaxed-Bernoulli (Concrete) draws on the smooth likelihood;
  lower variance, biased by the relaxation temperature.

Mean-field q has no correlations between units, so its total correlation is 0 by construction
and marginals can differ from the exact AMD where units are redundant or synergistic.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

from bablate import progress
from bablate.amd import prior_probs
from bablate.inference.posterior import Posterior
from bablate.tasks import Task

ESTIMATORS = ("score", "concrete")


def bernoulli_entropy_bits(q: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(q), elementwise, with 0 log 0 = 0."""
    q = np.clip(np.asarray(q, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(q > 0, q * np.log2(q), 0.0) + np.where(q < 1, (1 - q) * np.log2(1 - q), 0.0))
    return h


def svi(task: Task, key: jax.Array, prior=0.5, beta: float = 1.0, *,
        estimator: str = "score", num_steps: int = 1000, num_particles: int = 32,
        learning_rate: float = 0.05, temperature: float = 0.5, smooth: bool = False,
        num_draws: int = 2000, steps_per_call: int = 50) -> Posterior:
    """Fits a mean-field Bernoulli guide to the AMD with optax.

    Args:
      task: the task.
      key: PRNG key.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      estimator: "score" (hard or smooth likelihood) or "concrete" (smooth likelihood).
      num_steps: optimisation steps.
      num_particles: masks drawn per step (evaluated together with vmap).
      learning_rate: Adam step size on the guide's logits.
      temperature: Concrete relaxation temperature.
      smooth: use the smooth likelihood with the score estimator.
      num_draws: masks drawn from the fitted guide into ``samples``.
      steps_per_call: optimisation steps per jitted call (between progress updates).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}.")
    d = task.num_units
    p = prior_probs(prior, d)
    use_smooth = smooth or estimator == "concrete"
    if use_smooth and task.rule.soft is None:
        raise ValueError(f"rule {task.rule.name!r} has no smooth surrogate; use "
                         "estimator='score' with smooth=False.")
    optimizer = optax.adam(learning_rate)

    def closed_form(phi):
        q = jax.nn.sigmoid(phi)
        cross = q @ jnp.log(p) + (1 - q) @ jnp.log1p(-p)
        entropy = dist.Bernoulli(logits=phi).entropy().sum()
        return cross + entropy

    def loss(phi, key, data):
        guide = dist.Bernoulli(logits=jnp.broadcast_to(phi, (num_particles, d)))
        if estimator == "concrete":
            masks = dist.RelaxedBernoulliLogits(temperature, logits=jnp.broadcast_to(
                phi, (num_particles, d))).rsample(key)
            f = beta * task.log_odds_fn(data, masks, smooth=True)
            expected = f.mean()
        else:
            masks = jax.lax.stop_gradient(guide.sample(key))
            f = beta * task.log_odds_fn(data, masks, smooth=use_smooth)
            baseline = (f.sum() - f) / (num_particles - 1)
            log_q = guide.log_prob(masks).sum(-1)
            # Value: the Monte Carlo mean; gradient: the leave-one-out score-function estimate.
            surrogate = (jax.lax.stop_gradient(f - baseline) * log_q).mean()
            expected = (jax.lax.stop_gradient(f.mean()) + surrogate
                        - jax.lax.stop_gradient(surrogate))
        return -(expected + closed_form(phi))

    @jax.jit
    def run_chunk(phi, opt_state, key, data):
        def step(carry, k):
            phi, opt_state = carry
            value, grad = jax.value_and_grad(loss)(phi, k, data)
            updates, opt_state = optimizer.update(grad, opt_state, phi)
            return (optax.apply_updates(phi, updates), opt_state), -value

        (phi, opt_state), elbo = jax.lax.scan(step, (phi, opt_state),
                                              jax.random.split(key, steps_per_call))
        return phi, opt_state, elbo

    # Start at the prior: the guide moves away from it only where the likelihood says so.
    phi = jnp.log(p) - jnp.log1p(-p)
    opt_state = optimizer.init(phi)
    key, key_draw = jax.random.split(key)
    elbos = []
    start = time.perf_counter()
    with progress.bar(total=num_steps, desc=f"svi {task.name}", unit="step") as bar:
        for chunk in range(-(-num_steps // steps_per_call)):
            phi, opt_state, elbo = run_chunk(phi, opt_state, jax.random.fold_in(key, chunk),
                                             task.data)
            elbos.append(np.asarray(elbo))
            bar.update(steps_per_call)
            bar.set_postfix(elbo=f"{float(elbos[-1][-10:].mean()):.3f}")
    elbo = np.concatenate(elbos)
    q = np.asarray(jax.nn.sigmoid(phi), np.float64)
    q_draws = jnp.broadcast_to(jnp.asarray(q), (num_draws, d))
    draws = np.asarray(jax.random.bernoulli(key_draw, q_draws), np.uint8)
    return Posterior(task=task.name, method=f"svi-{estimator}", marginals=q,
                     prior=np.asarray(p), beta=beta, samples=draws,
                     entropy_bits=float(bernoulli_entropy_bits(q).sum()), mean_field=True,
                     diagnostics={"seconds": time.perf_counter() - start,
                                  "elbo_final": float(elbo[-50:].mean()),
                                  "num_steps": int(elbo.size)})
