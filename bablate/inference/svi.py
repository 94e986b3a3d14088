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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax.typing import ArrayLike

from bablate import amd, programs, progress, sharding
from bablate.amd import check_beta, nonfinite_error, prior_probs
from bablate.callsite import warn_caller
from bablate.inference.kernels import GRADIENT_PASSES
from bablate.inference.posterior import ConvergenceWarning, Posterior
from bablate.tasks import Task, bind, check_key

ESTIMATORS = ("score", "concrete")


def bernoulli_entropy_bits(q: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(q), elementwise, with 0 log 0 = 0."""
    q = np.clip(np.asarray(q, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(q > 0, q * np.log2(q), 0.0) + np.where(q < 1, (1 - q) * np.log2(1 - q), 0.0))
    return h


# Convergence checks over the averaged steps (the second half): the marginals averaged over the
# last quarter may differ from those over the whole half by at most DRIFT_MAX, and the mean
# gradient of every unit must lie within GRADIENT_Z_MAX standard errors of 0 (measured: below
# 1.2 for converged runs on 8-16 units, 8-47 for runs stopped 0.05-0.37 short of the optimum;
# 5 leaves room for the largest of a thousand units' chance deviations). Passing them does not
# bound the error: on SmolLM2's 270 heads a run of 40 steps × 8 masks passed both while 0.17 away
# from a converged importance-sampling reference (benchmarks/README.md); check large sites with
# bb.infer(task, "importance").
DRIFT_MAX = 0.02
GRADIENT_Z_MAX = 5.0


def svi(task: Task, key: jax.Array, prior: ArrayLike = 0.5, beta: float = 1.0, *,
        estimator: str = "score", num_steps: int = 2000, num_particles: int = 32,
        learning_rate: float = 0.05, final_learning_rate: float = 0.001,
        temperature: float = 0.5, smooth: bool = False, num_draws: int = 2000,
        steps_per_call: int = 50) -> Posterior:
    """Fits a mean-field Bernoulli guide to the AMD with optax.

    Adam's step size decays from ``learning_rate`` to ``final_learning_rate`` along a cosine,
    and the marginals returned are the average of the iterates over the second half of the
    steps (Polyak–Ruppert averaging): a stochastic gradient with a constant step size keeps
    jittering around the optimum, and the last iterate with it. A run shorter than
    4 × ``steps_per_call`` steps returns its last iterate and warns that it cannot be checked.
    The run is checked for convergence: when the average over the last quarter of the steps
    differs from the average over the last half by more than ``DRIFT_MAX`` on some unit, or
    when the mean gradient over the averaged steps is more than ``GRADIENT_Z_MAX`` standard
    errors from zero, a :class:`ConvergenceWarning` says so (``diagnostics["marginal_drift"]``,
    ``diagnostics["gradient_z"]``).

    The optimisation steps are compiled once per site, rule and settings and cached (the
    task's arrays, the prior, β and the step size are arguments), so tasks sharing a site reuse
    the program.

    Args:
      task: the task.
      key: PRNG key.
      prior: keep-probability, scalar or ``[d]``.
      beta: inverse temperature.
      estimator: "score" (hard or smooth likelihood) or "concrete" (smooth likelihood).
      num_steps: optimisation steps (rounded up to a multiple of ``steps_per_call``).
      num_particles: masks drawn per step (evaluated together with vmap).
      learning_rate: Adam's initial step size on the guide's logits.
      final_learning_rate: its value at the last step (cosine decay in between).
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
    if not 0 < final_learning_rate <= learning_rate:
        raise ValueError(f"need 0 < final_learning_rate <= learning_rate; got "
                         f"{final_learning_rate} and {learning_rate}.")
    key = check_key(key, f"svi for task {task.name!r}")
    beta = check_beta(beta)
    d = task.num_units
    p = prior_probs(prior, d)
    use_smooth = smooth or estimator == "concrete"
    if use_smooth and task.rule.soft is None:
        raise ValueError(f"rule {task.rule.name!r} has no smooth surrogate; use "
                         "estimator='score' with smooth=False.")
    settings = (estimator, num_particles, float(temperature), use_smooth, steps_per_call)
    optimizer, run_chunk = programs.cached_program(
        ("svi", *programs.program_key(task), *settings), lambda: _build(task, *settings))
    args = amd.amd_args(task, p, beta)
    # Start at the prior: the guide moves away from it only where the likelihood says so.
    phi = jnp.asarray(np.log(p) - np.log1p(-p))
    opt_state = optimizer.init(phi)
    key, key_draw = jax.random.split(key)
    num_chunks = -(-num_steps // steps_per_call)
    elbos, chunk_moments = [], []
    start = time.perf_counter()
    with progress.bar(total=num_chunks * steps_per_call, desc=f"svi {task.name}",
                      unit="step") as bar:
        for chunk in range(num_chunks):
            lr = final_learning_rate + 0.5 * (learning_rate - final_learning_rate) * (
                1 + np.cos(np.pi * chunk / max(num_chunks - 1, 1)))
            opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
            phi, opt_state, elbo, moments = run_chunk(phi, opt_state,
                                                      jax.random.fold_in(key, chunk), args)
            elbos.append(elbo)
            chunk_moments.append(moments)
            if not bar.disable:
                bar.update(steps_per_call)
                bar.set_postfix(elbo=f"{float(elbo[-10:].mean()):.3f}")
    elbo = np.concatenate([np.asarray(e) for e in elbos])
    moments = np.asarray(chunk_moments, np.float64)  # [chunks, 3, d]: q, g, g² per chunk
    if not (np.all(np.isfinite(elbo)) and np.all(np.isfinite(moments))):
        raise nonfinite_error(task.name, "in the SVI objective")
    # Polyak-Ruppert: average the iterates of the second half (whole chunks).
    tail = moments[num_chunks // 2:]
    q = tail[:, 0].mean(axis=0)
    drift = float(np.abs(tail[len(tail) // 2:, 0].mean(axis=0) - q).max())
    if num_chunks < 4:
        # Too short a run to average over a settled half: its iterates still climb away from
        # the prior, so the last iterate is the better estimate (and the run is flagged below).
        q = np.asarray(jax.nn.sigmoid(phi), np.float64)
    # At the optimum the expected gradient is 0: its mean over the averaged steps, in units of
    # its standard error (the steps' gradient draws are independent), says whether it is.
    n_tail = len(tail) * steps_per_call
    g_mean, g_sq = tail[:, 1].mean(axis=0), tail[:, 2].mean(axis=0)
    g_se = np.sqrt(np.maximum(g_sq - g_mean ** 2, 1e-30) / n_tail)
    gradient_z = float(np.max(np.abs(g_mean) / g_se))
    diagnostics: dict[str, Any] = {"seconds": time.perf_counter() - start,
                                   "elbo_final": float(elbo[-50:].mean()),
                                   "num_steps": int(elbo.size), "marginal_drift": drift,
                                   "gradient_z": gradient_z, "averaged_steps": n_tail}
    diagnostics["warnings"] = []
    if num_chunks < 4:
        diagnostics["warnings"].append(
            f"{num_steps} steps are too few to check convergence (the check compares the "
            f"last two quarters of at least 4 x steps_per_call = {4 * steps_per_call} steps); "
            "raise num_steps")
    elif drift > DRIFT_MAX or gradient_z > GRADIENT_Z_MAX:
        diagnostics["warnings"].append(
            f"over the averaged steps the mean gradient is {gradient_z:.1f} standard errors "
            f"from 0 (limit {GRADIENT_Z_MAX:g}) and the marginals moved by {drift:.3f} (limit "
            f"{DRIFT_MAX}): not converged; raise num_steps or learning_rate")
    # What SVI can say of itself: whether its optimisation settled, not how far the mean-field
    # optimum is from the AMD (check a large site with bb.infer(task, "importance")).
    per_mask = 1 + GRADIENT_PASSES if estimator == "concrete" else 1
    diagnostics.update({"converged": not diagnostics["warnings"], "max_se": None, "ess": None,
                        "forward_passes": int(elbo.size * num_particles * per_mask)})
    for message in diagnostics["warnings"]:
        warn_caller(f"SVI for task {task.name!r}: {message}", ConvergenceWarning)
    q_draws = jnp.broadcast_to(jnp.asarray(q, jnp.float32), (num_draws, d))
    draws = np.asarray(jax.random.bernoulli(key_draw, q_draws), np.uint8)
    return Posterior(task=task.name, method=f"svi-{estimator}", marginals=q,
                     prior=np.asarray(p), beta=beta, samples=draws,
                     entropy_bits=float(bernoulli_entropy_bits(q).sum()), mean_field=True,
                     diagnostics=diagnostics, site=task.site.identity)


def _build(task: Task, estimator: str, num_particles: int, temperature: float,
           use_smooth: bool, steps_per_call: int):
    """The optimiser and the jitted chunk of ``steps_per_call`` SVI steps for ``task``'s site.

    The step size lives in the optimiser's state (``optax.inject_hyperparams``), so the host
    sets it per chunk and one program serves every schedule.
    """
    d = task.num_units
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)

    def closed_form(phi, log_prior):
        q = jax.nn.sigmoid(phi)
        cross = amd.log_prior_of(q, log_prior)  # E_q log prior(m): linear in m
        entropy = dist.Bernoulli(logits=phi).entropy().sum()
        return cross + entropy

    def loss(phi, key, args):
        log_odds = functools.partial(bind(task, args).log_odds_fn, args["data"])
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
            phi = optax.apply_updates(phi, updates)
            return (phi, opt_state), (-value, jax.nn.sigmoid(phi), grad)

        # A step evaluates a few dozen masks: splitting them over devices would cost more in
        # synchronisation on every step than it saves.
        with sharding.unsplit():
            (phi, opt_state), (elbo, q, grad) = jax.lax.scan(
                step, (phi, opt_state), jax.random.split(key, steps_per_call))
        moments = jnp.stack([q.mean(0), grad.mean(0), (grad ** 2).mean(0)])
        return phi, opt_state, elbo, moments

    return optimizer, jax.jit(programs.trace_guard(run_chunk))
