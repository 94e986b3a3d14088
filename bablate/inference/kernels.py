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
  surrogate, from ``gradient_model``), so a step costs one density and one gradient evaluation
  (at the proposed mask; the current mask's are carried in the state) whatever d is. The
  acceptance ratio uses the target model's exact density, so the chain targets the hard-count
  AMD even though its proposals come from the smooth one.

Each proposal flips one bit per step (``flips="single"``) or many (``flips="multi"``): with the
same Δ_j, every bit flips independently with probability σ(Δ_j/2 − 1/(2α)), the binary case of
the discrete Langevin proposal (Zhang et al. 2022). Bits that matter little flip often, so a
step refreshes many units at the cost of one batch of evaluations; the step size α is adapted
during warm-up towards an acceptance rate of 0.5 (Robbins–Monro on log α), then frozen.

All variants are pure JAX. A step advances a batch of chains with one batched evaluation (also
under numpyro's ``chain_method="vectorized"``); :func:`bablate.inference.mcmc.mcmc` runs the
kernel in a cached, jitted loop of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.handlers import seed, trace
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import log_density
from numpyro.util import is_prng_key

PROPOSALS = ("informed", "gradient")
# What one gradient of the smooth log density costs, in forward passes of the same masks
# (reverse mode runs the network forward and back): the unit that compares samplers' budgets
# (diagnostics["forward_passes"]). Measured by benchmarks/certified_inference.py.
GRADIENT_PASSES = 3
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
      num_nonfinite: steps whose proposed mask had a NaN/inf log density or proposal (such
        proposals are rejected, so without this count a broken likelihood would go unseen).
    """

    i: jax.Array
    z: dict
    log_density: jax.Array
    proposal_logits: jax.Array
    accept_prob: jax.Array
    mean_accept_prob: jax.Array
    log_step_size: jax.Array
    rng_key: jax.Array
    num_nonfinite: jax.Array


def _flip_all(x: jax.Array) -> jax.Array:
    """``[d, d]``: row j is x with bit j flipped."""
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    return x[None, :] * (1.0 - eye) + (1.0 - x[None, :]) * eye


class FlipKernel(MCMCKernel):
    """Locally-informed / gradient-informed flip MH for one binary site of a model.

    A step is written for a batch of chains: every log density of the batch is evaluated in one
    call (``[C, d]`` masks), and the gradients of all chains come from one gradient of their
    sum (the chains do not interact). With ``chain_method="vectorized"`` numpyro hands the
    kernel such a batch; a single chain is a batch of one. Random draws use each chain's own
    key, so a chain's draws do not depend on which other chains share its batch.

    Args:
      model: a numpyro model with one latent binary site (sampled inside a plate).
      proposal: "informed" (exact Δ of all flips, vmapped) or "gradient" (first-order Δ).
      gradient_model: the model whose log density supplies gradients for "gradient" (e.g. the
        AMD with the smooth likelihood); defaults to ``model``.
      site: name of the binary site.
      flips: "single" (one bit per step) or "multi" (independent flips of every bit).
      step_size: initial α of the multi-flip proposal.
      log_density_fn: optional ``(masks_CxD, *model_args, **model_kwargs) -> [C]``, the log
        density of ``model`` for a batch of masks (e.g. a closure over
        :func:`bablate.amd.log_joint`). When given it replaces numpyro's per-mask
        ``log_density`` vmapped over the batch, whose gradient is several times slower on CPU
        (d = 64, N = 256: 1.0 vs 0.13 ms per 4-chain step).
      gradient_log_density_fn: the same for ``gradient_model``.
    """

    sample_field = "z"

    def __init__(self, model, proposal: str = "informed", gradient_model=None,
                 site: str = "mask", flips: str = "multi", step_size: float = 1.0,
                 log_density_fn: Callable | None = None,
                 gradient_log_density_fn: Callable | None = None):
        if proposal not in PROPOSALS:
            raise ValueError(f"unknown proposal {proposal!r}; choose one of {PROPOSALS}.")
        if flips not in FLIPS:
            raise ValueError(f"unknown flips {flips!r}; choose one of {FLIPS}.")
        self._flips = flips
        self._step_size = step_size
        self._num_warmup = 0
        self._model = model
        self._gradient_model = model if gradient_model is None else gradient_model
        self._log_density_fn = log_density_fn
        self._gradient_log_density_fn = (log_density_fn if gradient_model is None
                                         else gradient_log_density_fn)
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

    # ---- densities of a batch of masks ``[C, d]`` -----------------------------------------

    def _log_density(self, x_CxD, args, kwargs, gradient: bool = False):
        fn = self._gradient_log_density_fn if gradient else self._log_density_fn
        if fn is not None:
            return fn(x_CxD, *args, **kwargs)
        model = self._gradient_model if gradient else self._model
        return jax.vmap(lambda x: log_density(model, args, kwargs, {self._site: x})[0])(x_CxD)

    def _proposal_logits(self, x_CxD, log_px_C, args, kwargs):
        if self._proposal == "informed":
            c, d = x_CxD.shape
            neighbours = jax.vmap(_flip_all)(x_CxD).reshape(c * d, d)
            lp = self._log_density(neighbours, args, kwargs).reshape(c, d)
            return 0.5 * (lp - log_px_C[:, None])
        # The chains are independent, so the gradient of their summed log densities holds
        # every chain's own gradient: one backward pass for the whole batch.
        grad = jax.grad(lambda y: self._log_density(y, args, kwargs, gradient=True).sum())(
            x_CxD)
        return 0.5 * (1.0 - 2.0 * x_CxD) * grad

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
        single = is_prng_key(rng_key)
        # chain_method="vectorized" hands a batch of keys; one chain is a batch of one.
        keys = rng_key[None] if single else rng_key
        if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
            keys = jax.random.key_data(keys)  # the state holds raw key words
        self._vectorized = not single
        num_chains = keys.shape[0]
        x0 = None if init_params is None else init_params.get(self._site)
        if x0 is None:
            x0 = jnp.ones(shape, jnp.float32)
        x0 = jnp.broadcast_to(jnp.asarray(x0, jnp.float32), (num_chains, *shape))
        lp = self._log_density(x0, model_args, model_kwargs)
        logits = self._proposal_logits(x0, lp, model_args, model_kwargs)
        zero = jnp.zeros((num_chains,), jnp.float32)
        log_alpha = jnp.full((num_chains,), jnp.log(self._step_size), jnp.float32)
        state = FlipState(jnp.zeros((num_chains,), jnp.int32), {self._site: x0}, lp, logits,
                          zero, zero, log_alpha, keys, _nonfinite(lp, logits))
        return jax.tree.map(lambda v: v[0], state) if single else state

    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if self._vectorized:
            return self._sample_batch(state, model_args, model_kwargs)
        batch = jax.tree.map(lambda v: v[None], state)
        return jax.tree.map(lambda v: v[0], self._sample_batch(batch, model_args, model_kwargs))

    def _sample_batch(self, state: FlipState, args, kwargs) -> FlipState:
        x = state.z[self._site]
        d = x.shape[-1]
        # d + 1 uniforms per chain (flips, or Gumbel noise for the single flip; acceptance)
        # and the chain's next key, from one call of the chain's generator.
        key, u = jax.vmap(lambda k: _uniforms(k, d + 1))(state.rng_key)
        u_accept = u[:, d]
        # Independent flips temper their proposal by the adapted step size (single flips don't).
        penalty = 0.5 * jnp.exp(-state.log_step_size)[:, None]
        if self._flips == "single":
            gumbel = -jnp.log(-jnp.log(jnp.maximum(u[:, :d], jnp.finfo(jnp.float32).tiny)))
            j = jnp.argmax(state.proposal_logits + gumbel, axis=-1)
            flip = jax.nn.one_hot(j, d, dtype=bool)
        else:
            # Independent flips: u_j < p_j is a Bernoulli(p_j) draw.
            flip = u[:, :d] < jax.nn.sigmoid(state.proposal_logits - penalty)
        y = jnp.where(flip, 1.0 - x, x)
        log_py = self._log_density(y, args, kwargs)
        logits_y = self._proposal_logits(y, log_py, args, kwargs)
        if self._flips == "single":
            pick = lambda logits: jnp.take_along_axis(logits, j[:, None], axis=-1)[:, 0]
            log_q_forward = pick(state.proposal_logits) - jax.nn.logsumexp(
                state.proposal_logits, axis=-1)
            log_q_reverse = pick(logits_y) - jax.nn.logsumexp(logits_y, axis=-1)
        else:
            log_q_forward = _flip_log_prob(state.proposal_logits - penalty, flip)
            log_q_reverse = _flip_log_prob(logits_y - penalty, flip)
        log_ratio = log_py - state.log_density + log_q_reverse - log_q_forward
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accept_prob = jnp.where(jnp.isfinite(accept_prob), accept_prob, 0.0)
        accept = u_accept < accept_prob
        keep = lambda a, b: jnp.where(accept.reshape(accept.shape + (1,) * (a.ndim - 1)), a, b)
        i = state.i + 1
        mean_accept = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i
        # Robbins-Monro on log α during warm-up only, so post-warm-up draws are a valid chain.
        rate = jnp.where(i <= self._num_warmup, jax.lax.rsqrt(i.astype(jnp.float32)), 0.0)
        log_alpha = state.log_step_size + rate * (accept_prob - TARGET_ACCEPT)
        return FlipState(i, {self._site: keep(y, x)}, keep(log_py, state.log_density),
                         keep(logits_y, state.proposal_logits), accept_prob, mean_accept,
                         log_alpha, key, state.num_nonfinite + _nonfinite(log_py, logits_y))


def _nonfinite(log_p_C: jax.Array, logits_CxD: jax.Array) -> jax.Array:
    """1 for each chain whose density or proposal logits hold a NaN/inf, else 0 (int32)."""
    bad = ~jnp.isfinite(log_p_C) | ~jnp.all(jnp.isfinite(logits_CxD), axis=-1)
    return bad.astype(jnp.int32)


def _uniforms(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` uniforms in [0, 1) and a fresh key from one draw of raw random bits.

    Splitting the key and then drawing costs two calls of the generator (threefry) per step;
    one call that also yields the next key's words costs one, in run time and in compile time.
    """
    words = key.shape[-1]
    bits = jax.random.bits(key, (n + words,), jnp.uint32)
    # 23 random mantissa bits under exponent 0: a float in [1, 2), shifted to [0, 1).
    one = jnp.uint32(0x3F800000)
    u = jax.lax.bitcast_convert_type((bits[:n] >> jnp.uint32(9)) | one, jnp.float32) - 1.0
    return bits[n:].astype(key.dtype), u


def _flip_log_prob(logits: jax.Array, flip: jax.Array) -> jax.Array:
    """log-probability of each chain's flip pattern under independent Bernoulli(σ(logits))."""
    return jnp.sum(jnp.where(flip, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)),
                   axis=-1)
