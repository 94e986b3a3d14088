"""An MCMC kernel for binary masks that scores many candidate masks per step with vmap.

numpyro's stock discrete samplers update one coordinate at a time, so a step over d units costs
d model evaluations one after another. :class:`FlipKernel` is a numpyro ``MCMCKernel`` over the
single binary site of a model (``mask`` in a plate) with two proposals:

* ``"informed"`` — the locally-balanced proposal of Zanella (2020) with g(t) = √t: all d
  single-bit flips of the current mask are scored in one vmapped batch and a flip is drawn with
  probability ∝ exp(Δ_j / 2), Δ_j the change in log density. The reverse neighbourhood is scored
  the same way, so the Metropolis–Hastings ratio is exact: accept with min(1, Z(x) / Z(y)).
* ``"gradient"`` — Gibbs-with-gradients (Grathwohl et al. 2021): Δ_j is approximated to first
  order, (1 − 2x_j) ∂f/∂x_j, from the gradient of a smooth log density f (the rule's smooth
  surrogate, from ``gradient_model``), so a step costs two gradient and two density evaluations
  whatever d is. The acceptance ratio uses the target model's exact density, so the chain
  targets the hard-count AMD even though its proposals come from the smooth one.

Each proposal flips one bit per step (``flips="single"``) or many (``flips="multi"``): with the
same Δ_j, every bit flips independently with probability σ(Δ_j/2 − 1/(2α)), the binary case of
the discrete Langevin proposal (Zhang et al. 2022). Bits that matter little flip often, so a
step refreshes many units at the cost of one batch of evaluations; the step size α is adapted
during warm-up towards an acceptance rate of 0.5 (Robbins–Monro on log α), then frozen.

All variants are pure JAX and run under ``chain_method="vectorized"``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.handlers import seed, trace
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import log_density
from numpyro.util import is_prng_key

PROPOSALS = ("informed", "gradient")
FLIPS = ("single", "multi")
TARGET_ACCEPT = 0.5


class FlipState(NamedTuple):
    """State of a :class:`FlipKernel` chain.

    Attributes:
      i: iteration.
      z: ``{site: mask}``, the current mask (float 0/1).
      log_density: target log density at z.
      proposal_logits: ``[d]`` unnormalised log proposal probabilities of each flip at z.
      accept_prob: acceptance probability of the last step.
      mean_accept_prob: running mean of the acceptance probability.
      log_step_size: log α of the multi-flip proposal (adapted during warm-up).
      rng_key: PRNG key.
    """

    i: jax.Array
    z: dict
    log_density: jax.Array
    proposal_logits: jax.Array
    accept_prob: jax.Array
    mean_accept_prob: jax.Array
    log_step_size: jax.Array
    rng_key: jax.Array


def _flip_all(x: jax.Array) -> jax.Array:
    """``[d, d]``: row j is x with bit j flipped."""
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    return x[None, :] * (1.0 - eye) + (1.0 - x[None, :]) * eye


class FlipKernel(MCMCKernel):
    """Locally-informed / gradient-informed single-flip MH for one binary site of a model.

    Args:
      model: a numpyro model with one latent binary site (sampled inside a plate).
      proposal: "informed" (exact Δ of all flips, vmapped) or "gradient" (first-order Δ).
      gradient_model: the model whose log density supplies gradients for "gradient" (e.g. the
        AMD with the smooth likelihood); defaults to ``model``.
      site: name of the binary site.
      flips: "single" (one bit per step) or "multi" (independent flips of every bit).
      step_size: initial α of the multi-flip proposal.
    """

    sample_field = "z"

    def __init__(self, model, proposal: str = "informed", gradient_model=None,
                 site: str = "mask", flips: str = "multi", step_size: float = 1.0):
        if proposal not in PROPOSALS:
            raise ValueError(f"unknown proposal {proposal!r}; choose one of {PROPOSALS}.")
        if flips not in FLIPS:
            raise ValueError(f"unknown flips {flips!r}; choose one of {FLIPS}.")
        self._flips = flips
        self._step_size = step_size
        self._num_warmup = 0
        self._model = model
        self._gradient_model = model if gradient_model is None else gradient_model
        self._proposal = proposal
        self._site = site
        self._vectorized = False

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        return ("z",)

    def get_diagnostics_str(self, state):
        return f"acc. prob={jnp.mean(state.mean_accept_prob):.2f}"

    def postprocess_fn(self, model_args, model_kwargs):
        return lambda z: z

    # ---- densities -------------------------------------------------------------------------

    def _log_density(self, model, x, args, kwargs):
        return log_density(model, args, kwargs, {self._site: x})[0]

    def _proposal_logits(self, x, log_px, args, kwargs):
        if self._proposal == "informed":
            neighbours = _flip_all(x)
            lp = jax.vmap(lambda y: self._log_density(self._model, y, args, kwargs))(neighbours)
            return 0.5 * (lp - log_px)
        grad = jax.grad(lambda y: self._log_density(self._gradient_model, y, args, kwargs))(x)
        return 0.5 * (1.0 - 2.0 * x) * grad

    # ---- MCMCKernel interface --------------------------------------------------------------

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        self._num_warmup = num_warmup
        tr = trace(seed(self._model, jax.random.PRNGKey(0))).get_trace(*model_args,
                                                                        **model_kwargs)
        if self._site not in tr:
            raise ValueError(f"the model has no sample site {self._site!r}; sites: "
                             f"{[k for k, v in tr.items() if v['type'] == 'sample']}.")
        shape = jnp.shape(tr[self._site]["value"])
        if len(shape) != 1:
            raise ValueError(f"FlipKernel needs a 1-D binary site (sample it inside a plate), "
                             f"got shape {shape}.")

        def init_one(key, x0):
            x0 = jnp.ones(shape, jnp.float32) if x0 is None else jnp.asarray(x0, jnp.float32)
            lp = self._log_density(self._model, x0, model_args, model_kwargs)
            logits = self._proposal_logits(x0, lp, model_args, model_kwargs)
            zero = jnp.zeros((), jnp.float32)
            log_alpha = jnp.log(jnp.asarray(self._step_size, jnp.float32))
            return FlipState(jnp.zeros((), jnp.int32), {self._site: x0}, lp, logits, zero,
                             zero, log_alpha, key)

        x0 = None if init_params is None else init_params.get(self._site)
        if is_prng_key(rng_key):
            return init_one(rng_key, x0)
        # chain_method="vectorized" hands a batch of keys.
        self._vectorized = True
        return jax.vmap(init_one, in_axes=(0, None if x0 is None or jnp.ndim(x0) == 1 else 0))(
            rng_key, x0)

    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        step = lambda s: self._sample_one(s, model_args, model_kwargs)
        return jax.vmap(step)(state) if self._vectorized else step(state)

    def _sample_one(self, state: FlipState, args, kwargs) -> FlipState:
        key, key_flip, key_accept = jax.random.split(state.rng_key, 3)
        x = state.z[self._site]
        if self._flips == "single":
            j = jax.random.categorical(key_flip, state.proposal_logits)
            y = x.at[j].set(1.0 - x[j])
        else:
            penalty = 0.5 * jnp.exp(-state.log_step_size)
            flip = jax.random.bernoulli(key_flip, jax.nn.sigmoid(state.proposal_logits - penalty))
            y = jnp.where(flip, 1.0 - x, x)
        log_py = self._log_density(self._model, y, args, kwargs)
        logits_y = self._proposal_logits(y, log_py, args, kwargs)
        if self._flips == "single":
            log_q_forward = state.proposal_logits[j] - jax.nn.logsumexp(state.proposal_logits)
            log_q_reverse = logits_y[j] - jax.nn.logsumexp(logits_y)
        else:
            log_q_forward = _flip_log_prob(state.proposal_logits - penalty, flip)
            log_q_reverse = _flip_log_prob(logits_y - penalty, flip)
        log_ratio = log_py - state.log_density + log_q_reverse - log_q_forward
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accept_prob = jnp.where(jnp.isfinite(accept_prob), accept_prob, 0.0)
        accept = jax.random.uniform(key_accept) < accept_prob
        keep = lambda a, b: jnp.where(accept, a, b)
        i = state.i + 1
        mean_accept = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i
        # Robbins-Monro on log α during warm-up only, so post-warm-up draws are a valid chain.
        rate = jnp.where(i <= self._num_warmup, 1.0 / jnp.sqrt(i.astype(jnp.float32)), 0.0)
        log_alpha = state.log_step_size + rate * (accept_prob - TARGET_ACCEPT)
        return FlipState(i, {self._site: keep(y, x)}, keep(log_py, state.log_density),
                         keep(logits_y, state.proposal_logits), accept_prob, mean_accept,
                         log_alpha, key)


def _flip_log_prob(logits: jax.Array, flip: jax.Array) -> jax.Array:
    """log-probability of the flip pattern under independent Bernoulli(σ(logits)) flips."""
    return jnp.sum(jnp.where(flip, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)))
