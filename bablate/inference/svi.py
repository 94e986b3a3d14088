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

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

from bablate import progress, sharding
from bablate.amd import prior_probs
from bablate.inference import programs
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

    The optimisation steps are compiled once per site, rule and settings and cached (the
    task's arrays, the prior and β are arguments), so tasks sharing a site reuse the program.

    Args:
      task: the task.
      key: PRNG key.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      estimator: "score" (hard or smooth likelihood) or "concrete" (smooth likelihood).
      num_steps: optimisation steps (rounded up to a multiple of ``steps_per_call``).
      num_particles: masks drawn per step (evaluated together with vmap).
      learning_rate: Adam step size on the guide's logits.
      temperature: Concrete relaxation temperature.
      smooth: use the smooth likelihood with the score estimator.
      num_draws: masks drawn from the fitted guide into ``samples``.
      steps_per_call: optimisation steps per jitted call (between progress updates).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}.")
    if num_particles < 2 or num_steps < 1 or steps_per_call < 1:
        raise ValueError(f"need num_particles >= 2 (the score estimator's baseline leaves one "
                         f"out), num_steps >= 1 and steps_per_call >= 1; got {num_particles}, "
                         f"{num_steps}, {steps_per_call}.")
    d = task.num_units
    p = prior_probs(prior, d)
    use_smooth = smooth or estimator == "concrete"
    if use_smooth and task.rule.soft is None:
        raise ValueError(f"rule {task.rule.name!r} has no smooth surrogate; use "
                         "estimator='score' with smooth=False.")
    settings = (estimator, num_particles, float(learning_rate), float(temperature), use_smooth,
                steps_per_call)
    optimizer, run_chunk = programs.cached_program(
        ("svi", *programs.program_key(task), *settings), lambda: _build(task, *settings))
    args = programs.amd_args(task, p, beta)
    # Start at the prior: the guide moves away from it only where the likelihood says so.
    phi = jnp.asarray(np.log(p) - np.log1p(-p))
    opt_state = optimizer.init(phi)
    key, key_draw = jax.random.split(key)
    elbos = []
    start = time.perf_counter()
    with progress.bar(total=num_steps, desc=f"svi {task.name}", unit="step") as bar:
        for chunk in range(-(-num_steps // steps_per_call)):
            phi, opt_state, elbo = run_chunk(phi, opt_state, jax.random.fold_in(key, chunk),
                                             args)
            elbos.append(elbo)
            if not bar.disable:
                bar.update(steps_per_call)
                bar.set_postfix(elbo=f"{float(elbo[-10:].mean()):.3f}")
    elbo = np.concatenate([np.asarray(e) for e in elbos])
    q = np.asarray(jax.nn.sigmoid(phi), np.float64)
    q_draws = jnp.broadcast_to(jnp.asarray(q), (num_draws, d))
    draws = np.asarray(jax.random.bernoulli(key_draw, q_draws), np.uint8)
    return Posterior(task=task.name, method=f"svi-{estimator}", marginals=q,
                     prior=np.asarray(p), beta=beta, samples=draws,
                     entropy_bits=float(bernoulli_entropy_bits(q).sum()), mean_field=True,
                     diagnostics={"seconds": time.perf_counter() - start,
                                  "elbo_final": float(elbo[-50:].mean()),
                                  "num_steps": int(elbo.size)})


def _build(task: Task, estimator: str, num_particles: int, learning_rate: float,
           temperature: float, use_smooth: bool, steps_per_call: int):
    """The optimiser and the jitted chunk of ``steps_per_call`` SVI steps for ``task``'s site."""
    d = task.num_units
    optimizer = optax.adam(learning_rate)

    def closed_form(phi, log_prior):
        q = jax.nn.sigmoid(phi)
        cross = q @ log_prior[0] + (1 - q) @ log_prior[1]
        entropy = dist.Bernoulli(logits=phi).entropy().sum()
        return cross + entropy

    def loss(phi, key, args):
        log_odds = functools.partial(programs.probe(task, args).log_odds_fn, args["data"])
        guide = dist.Bernoulli(logits=jnp.broadcast_to(phi, (num_particles, d)))
        if estimator == "concrete":
            masks = dist.RelaxedBernoulliLogits(temperature, logits=jnp.broadcast_to(
                phi, (num_particles, d))).rsample(key)
            f = args["beta"] * log_odds(masks, smooth=True)
            expected = f.mean()
        else:
            masks = jax.lax.stop_gradient(guide.sample(key))
            f = args["beta"] * log_odds(masks, smooth=use_smooth)
            baseline = (f.sum() - f) / (num_particles - 1)
            log_q = guide.log_prob(masks).sum(-1)
            # Value: the Monte Carlo mean; gradient: the leave-one-out score-function estimate.
            surrogate = (jax.lax.stop_gradient(f - baseline) * log_q).mean()
            expected = (jax.lax.stop_gradient(f.mean()) + surrogate
                        - jax.lax.stop_gradient(surrogate))
        return -(expected + closed_form(phi, args["log_prior"]))

    def run_chunk(phi, opt_state, key, args):
        def step(carry, k):
            phi, opt_state = carry
            value, grad = jax.value_and_grad(loss)(phi, k, args)
            updates, opt_state = optimizer.update(grad, opt_state, phi)
            return (optax.apply_updates(phi, updates), opt_state), -value

        # A step evaluates a few dozen masks: splitting them over devices would cost more in
        # synchronisation on every step than it saves.
        with sharding.unsplit():
            (phi, opt_state), elbo = jax.lax.scan(step, (phi, opt_state),
                                                  jax.random.split(key, steps_per_call))
        return phi, opt_state, elbo

    return optimizer, jax.jit(programs.trace_guard(run_chunk))
