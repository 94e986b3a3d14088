"""Toy models of superposition (Elhage et al. 2022, "Toy Models of Superposition").

Three small autoencoders of n sparse features through m < n hidden dimensions:

- ``"relu_out"``: h = W x, x' = ReLU(Wᵀ h + b) with W tied (m×n) — the paper's main model;
- ``"linear"``: h = W x, x' = Wᵀ h + b — the linear baseline, which learns the top-m
  features as PCA does;
- ``"relu_hidden"``: computation in superposition with a privileged basis: h = ReLU(W1 x),
  y = ReLU(W2 h + b) trained to compute y = |x| on inputs x_i ∈ [−1, 1]. The paper's
  absolute-value experiments; the sizes, the untied W1/W2 and the absence of a hidden bias are
  our reconstruction.

Data: x_i ~ U[0, 1] (U[−1, 1] for ``"relu_hidden"``) with probability 1 − S (the density),
else 0, independently. Loss Σ_i I_i (target_i − x'_i)², mean over the batch. Training as in
the paper: AdamW (lr 1e-3, weight decay 0.01, the torch default), batch 1024, 10,000 steps,
xavier-normal W, b = 0.

The paper's public notebook (anthropics/toy-models-of-superposition, ``toy_models.ipynb``) trains
the same model with two differences, offered here as ``TrainConfig(init="notebook",
loss="mean")``: its W is one [instances, n, m] tensor initialised by torch's xavier-normal, whose
fans count the instance axis (fan_in = n·m, fan_out = instances·m), so each instance's weights
have std √(2 / (m (n + instances))) — smaller the more instances train together — where ours is
xavier-normal on each instance's own [m, n] matrix; and its loss is the importance-weighted error
averaged over features as well as the batch (ours sums over features). With AdamW the loss
scale barely matters (Adam normalises the gradient scale); the init scale is what differs.
Many instances (density × seed) train at once: the step is vmapped
over instances and run as a jitted ``lax.scan`` over chunks of steps, with a progress bar
between chunks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bablate import progress

MODEL_KINDS = ("relu_out", "linear", "relu_hidden")
INITS = ("xavier", "notebook")
LOSSES = ("sum", "mean")
Params = Any


class TiedToyModel(nn.Module):
    """h = W x, x' = act(Wᵀ h + b) with one tied W of shape [m, n]."""

    n_features: int
    m_hidden: int
    relu_output: bool = True

    def setup(self):
        self.W = self.param("W", nn.initializers.xavier_normal(), (self.m_hidden, self.n_features))
        self.b = self.param("b", nn.initializers.zeros, (self.n_features,))

    def encode(self, x_BxN: jax.Array) -> jax.Array:
        return x_BxN @ self.W.T

    def decode(self, h_BxM: jax.Array) -> jax.Array:
        out = h_BxM @ self.W + self.b[None, :]
        return nn.relu(out) if self.relu_output else out

    def __call__(self, x_BxN: jax.Array) -> jax.Array:
        return self.decode(self.encode(x_BxN))


class ReluHiddenModel(nn.Module):
    """h = ReLU(W1 x), y = ReLU(W2 h + b): the hidden neurons are a privileged basis."""

    n_features: int
    m_hidden: int

    def setup(self):
        init = nn.initializers.xavier_normal()
        self.W1 = self.param("W1", init, (self.m_hidden, self.n_features))
        self.W2 = self.param("W2", init, (self.n_features, self.m_hidden))
        self.b = self.param("b", nn.initializers.zeros, (self.n_features,))

    def encode(self, x_BxN: jax.Array) -> jax.Array:
        return nn.relu(x_BxN @ self.W1.T)

    def decode(self, h_BxM: jax.Array) -> jax.Array:
        return nn.relu(h_BxM @ self.W2.T + self.b[None, :])

    def __call__(self, x_BxN: jax.Array) -> jax.Array:
        return self.decode(self.encode(x_BxN))


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """One toy setting: sizes, model kind and feature importances I_i."""

    n_features: int
    m_hidden: int
    kind: str
    importance: tuple[float, ...]

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown toy model kind {self.kind!r}; choose one of {MODEL_KINDS}.")
        if len(self.importance) != self.n_features:
            raise ValueError(f"importance has {len(self.importance)} entries but n_features="
                             f"{self.n_features}; give one importance per feature.")
        if not 0 < self.m_hidden:
            raise ValueError(f"m_hidden must be positive; got {self.m_hidden}.")

    @property
    def signed(self) -> bool:
        """Whether features take values in [−1, 1] (the |x| task) rather than [0, 1]."""
        return self.kind == "relu_hidden"

    def model(self) -> nn.Module:
        if self.kind == "relu_hidden":
            return ReluHiddenModel(self.n_features, self.m_hidden)
        return TiedToyModel(self.n_features, self.m_hidden, relu_output=self.kind == "relu_out")

    def target(self, x_BxN: jax.Array) -> jax.Array:
        """What the model must output: x itself, or |x| for computation in superposition."""
        return jnp.abs(x_BxN) if self.signed else x_BxN

    def encoder_weights(self, params: Params) -> jax.Array:
        """The m×n matrix whose columns W_i embed feature i (W, or W1 for ``relu_hidden``)."""
        return params["W1"] if self.kind == "relu_hidden" else params["W"]


def importance_geometric(n: int, base: float) -> tuple[float, ...]:
    """I_i = base^i, i = 0..n−1 (0.9 for 5→2, 0.7 for 20→5)."""
    return tuple(float(base**i) for i in range(n))


def importance_loglinear(n: int, ratio: float) -> tuple[float, ...]:
    """I_i = ratio^(−linspace(0, 1, n)) (ratio = 100 for 100→20)."""
    return tuple(float(v) for v in ratio ** -np.linspace(0.0, 1.0, n))


def densities_loglinear(ratio: float, num: int) -> tuple[float, ...]:
    """1 − S = ratio^(−linspace(0, 1, num)), the paper's density grids (ratio = 20)."""
    return tuple(float(v) for v in ratio ** -np.linspace(0.0, 1.0, num))


def sample_features(key: jax.Array, batch: int, n: int, density: float | jax.Array,
                    signed: bool = False) -> jax.Array:
    """x_i ~ U[0, 1] (U[−1, 1] when signed) with probability ``density``, else exactly 0."""
    k_on, k_val = jax.random.split(key)
    active = jax.random.uniform(k_on, (batch, n)) < density
    vals = jax.random.uniform(k_val, (batch, n), minval=-1.0 if signed else 0.0, maxval=1.0)
    return jnp.where(active, vals, 0.0)


def sample_conditioned(key: jax.Array, batch: int, n: int, density: float | jax.Array,
                       feature: int | jax.Array, active: bool, signed: bool = False) -> jax.Array:
    """The data distribution conditioned on feature ``feature`` being active (≠ 0) or 0."""
    k_x, k_f = jax.random.split(key)
    x = sample_features(k_x, batch, n, density, signed)
    if active:
        lo = -1.0 if signed else 0.0
        val = jax.random.uniform(k_f, (batch,), minval=lo, maxval=1.0)
        val = jnp.where(val == 0.0, 0.5, val)  # a drawn exact 0 would not be "active"
    else:
        val = jnp.zeros((batch,))
    return x.at[:, feature].set(val)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings (paper defaults)."""

    steps: int = 10_000
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    chunk_steps: int = 250
    # "xavier": xavier-normal on each instance's [m, n] W (ours); "notebook": the public
    # notebook's xavier on the stacked [instances, n, m] tensor (see the module docstring).
    init: str = "xavier"
    # Instance count the "notebook" init scale uses; 0 = the number of instances trained at once.
    init_instances: int = 0
    # "sum" over features (ours) or "mean" over features (the notebook); both mean over the batch.
    loss: str = "sum"

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.chunk_steps < 1:
            raise ValueError(f"steps, batch_size and chunk_steps must be positive; got {self}.")
        if self.init not in INITS:
            raise ValueError(f"train.init must be one of {INITS}; got {self.init!r}.")
        if self.loss not in LOSSES:
            raise ValueError(f"train.loss must be one of {LOSSES}; got {self.loss!r}.")
        if self.init_instances < 0:
            raise ValueError(f"train.init_instances must be >= 0 (0 = instances trained at "
                             f"once); got {self.init_instances}.")


def weighted_mse(spec: ToySpec, params: Params, x_BxN: jax.Array,
                 reduce: str = "sum") -> jax.Array:
    """Σ_i I_i (target_i − x'_i)², averaged over the batch (``reduce="mean"``: also averaged
    over features, the public notebook's loss, 1/n of ours)."""
    # flax types apply's result as the output or an (output, variables) pair; the pair comes
    # only with mutable=, never set here.
    out = cast(jax.Array, spec.model().apply({"params": params}, x_BxN))
    importance = jnp.asarray(spec.importance, x_BxN.dtype)
    per_example = jnp.sum(importance[None, :] * (spec.target(x_BxN) - out) ** 2, axis=-1)
    scale = 1.0 / spec.n_features if reduce == "mean" else 1.0
    return scale * jnp.mean(per_example)


def init_params(spec: ToySpec, key: jax.Array) -> Params:
    """Parameters of one instance (xavier-normal weights, zero bias)."""
    return spec.model().init(key, jnp.zeros((1, spec.n_features)))["params"]


def notebook_std(spec: ToySpec, num_instances: int) -> float:
    """Std of the public notebook's W entries: torch xavier-normal on an [I, n, m] tensor.

    torch takes fan_in = size(1) · receptive field = n·m and fan_out = size(0) · m = I·m, so
    std = √(2 / (fan_in + fan_out)) = √(2 / (m (n + I))).
    """
    if num_instances < 1:
        raise ValueError(f"num_instances must be >= 1; got {num_instances}.")
    return float(np.sqrt(2.0 / (spec.m_hidden * (spec.n_features + num_instances))))


def init_notebook(spec: ToySpec, key: jax.Array, num_instances: int) -> Params:
    """The public notebook's start: W ~ N(0, notebook_std²) i.i.d. (untruncated), b = 0.

    Only for the tied models (the notebook has no |x| model).
    """
    if spec.kind == "relu_hidden":
        raise ValueError("train.init='notebook' is for the tied models ('relu_out', 'linear'); "
                         "use train.init='xavier' for 'relu_hidden'.")
    std = notebook_std(spec, num_instances)
    return {"W": std * jax.random.normal(key, (spec.m_hidden, spec.n_features)),
            "b": jnp.zeros((spec.n_features,))}


def init_all_represented(spec: ToySpec, key: jax.Array, bias: float = -0.2) -> Params:
    """A start with every feature already represented: unit-norm W_i and a negative bias.

    A control for "features represented": if the least important features are dropped when
    training starts from here too, they are dropped by the objective, not by the initialisation.
    Only for the tied models, whose W_i are the columns of W.
    """
    if spec.kind == "relu_hidden":
        raise ValueError("init_all_represented is for the tied models ('relu_out', 'linear').")
    params = init_params(spec, key)
    w = params["W"]
    return {"W": w / jnp.linalg.norm(w, axis=0, keepdims=True),
            "b": jnp.full_like(params["b"], bias)}


def train_instances(spec: ToySpec, densities_K: jax.Array, keys_K: jax.Array,
                    cfg: TrainConfig = TrainConfig(), desc: str = "train toy models",
                    init_K: Params | None = None) -> tuple[Params, jax.Array]:
    """Train K independent instances at once (vmap over instances, scan over steps).

    Args:
      spec: the toy setting shared by all instances.
      densities_K: [K] feature density 1 − S of each instance.
      keys_K: [K] PRNG keys; instance k's init and data stream come from keys_K[k] only, so
        an instance trains the same whichever others it is batched with (except under the
        "notebook" init with ``init_instances = 0``, whose scale depends on K as the
        notebook's does).
      cfg: optimiser and loop settings.
      desc: progress-bar label.
      init_K: starting parameters stacked over K; default: from each instance's key,
        ``init_params`` (xavier-normal W, zero b) or, with ``cfg.init == "notebook"``,
        ``init_notebook`` at ``cfg.init_instances`` (0: K) instances.

    Returns:
      (params stacked over K, [K] loss averaged over the last chunk of steps).
    """
    densities_K = jnp.asarray(densities_K, jnp.float32)
    chex.assert_rank(densities_K, 1)
    chex.assert_equal(densities_K.shape[0], keys_K.shape[0])
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    init_keys, data_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys_K)
    if init_K is not None:
        params = init_K
    elif cfg.init == "notebook":
        n_inst = cfg.init_instances or int(keys_K.shape[0])
        params = jax.vmap(lambda k: init_notebook(spec, k, n_inst))(init_keys)
    else:
        params = jax.vmap(lambda k: init_params(spec, k))(init_keys)
    opt_state = jax.vmap(tx.init)(params)

    def one_step(p, o, key, density, step):
        x = sample_features(jax.random.fold_in(key, step), cfg.batch_size, spec.n_features,
                            density, spec.signed)
        loss, grads = jax.value_and_grad(lambda q: weighted_mse(spec, q, x, cfg.loss))(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    many_steps = jax.vmap(one_step, in_axes=(0, 0, 0, 0, None))

    @jax.jit
    def run_chunk(p, o, start, length_mask):
        def body(carry, i):
            p, o = carry
            new_p, new_o, loss = many_steps(p, o, data_keys, densities_K, start + i)
            keep = length_mask[i]  # steps past cfg.steps in the last chunk are no-ops
            p = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_p, p)
            o = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_o, o)
            return (p, o), loss * keep
        (p, o), losses = jax.lax.scan(body, (p, o), jnp.arange(cfg.chunk_steps))
        return p, o, jnp.sum(losses, axis=0) / jnp.maximum(jnp.sum(length_mask), 1)

    last_loss = jnp.zeros(keys_K.shape[0])
    with progress.bar(total=cfg.steps, desc=desc, unit="step") as bar:
        for start in range(0, cfg.steps, cfg.chunk_steps):
            n_valid = min(cfg.chunk_steps, cfg.steps - start)
            mask = jnp.arange(cfg.chunk_steps) < n_valid
            params, opt_state, last_loss = run_chunk(params, opt_state, start, mask)
            bar.update(n_valid)
    return params, last_loss


def instances_like(spec: ToySpec, num_instances: int) -> tuple[Params, jax.ShapeDtypeStruct]:
    """What `train_instances` returns for ``num_instances`` instances, to check a saved copy
    against (``like`` of `bablate.runner.context.RunContext.load_state`): parameters stacked as
    a fresh start makes them (nonzero weights) and the shape of the ``[K]`` losses."""
    keys = jax.random.split(jax.random.key(0), num_instances)
    return (jax.vmap(lambda k: init_params(spec, k))(keys),
            jax.ShapeDtypeStruct((num_instances,), jnp.float32))


def unstack(params_K: Params, k: int) -> Params:
    """Instance k's parameters from a stacked pytree."""
    return jax.tree.map(lambda a: a[k], params_K)


def rotate_hidden(spec: ToySpec, params: Params, q: jax.Array) -> Params:
    """The instance with its hidden space rotated: the new hidden code is h q.

    ``q`` is an orthogonal ``[m, m]`` (columns = the new hidden units). For the tied models
    W → qᵀW leaves WᵀW, so the function and every loss, unchanged: their hidden basis is not
    privileged, and ablating the rotated model's units is ablating the codes of
    ``bb.Basis.orthogonal(q)`` in the original. For ``relu_hidden`` W1 → qᵀW1 and W2 → W2 q
    change the function, because the ReLU between them does not commute with q: its hidden
    neurons are a privileged basis.
    """
    chex.assert_shape(q, (spec.m_hidden, spec.m_hidden))
    if spec.kind == "relu_hidden":
        return {"W1": q.T @ params["W1"], "W2": params["W2"] @ q, "b": params["b"]}
    return {"W": q.T @ params["W"], "b": params["b"]}
