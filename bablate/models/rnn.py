"""Next-symbol RNNs of the chunk paper (Wu, Alaniz, Schulz, Akata, arXiv 2502.01803).

The paper's network reads c_t = [onehot(x_t); h_{t-1}], updates h_t = W c_t + b (linear, no
tanh) and outputs log-softmax(V c_t + a): the prediction of x_{t+1} from the current symbol and
the previous state; hidden size 12, h_0 = 0. Also offered: a tanh cell and a GRU cell, which
read the prediction from the new state h_t (the usual Elman/GRU readout).

The flax module holds the parameters and one step; `unroll` runs the recurrence in a
`lax.scan` and is where interventions happen:

* `ablate(h)` is applied to the new hidden state at EVERY step, before the readout and before
  the state is passed on (this is the in-place site of Bayesian ablation);
* `h0` sets the initial state and `inject_h`/`inject_mask` overwrite the state at chosen steps
  (perturbation and grafting of chunk states).

Training (`train`) uses Adam on random windows of the sequence with full BPTT inside each
window (each window starts from h_0 = 0), jitted, run as `lax.scan` over chunks of steps with a
progress bar between chunks. Loss = mean cross-entropy over the window's positions (the paper
sums; with Adam the two differ only through its epsilon).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import chex
import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bablate import progress

CELLS = ("linear", "tanh", "gru")
Array = jax.Array
# window [L] -> (states [L, H] to write, bool [L] where to write them)
Graft = Callable[[Array], tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    """Architecture of a next-symbol RNN.

    Attributes:
      num_symbols: alphabet size V (input one-hot and output classes).
      hidden: number of hidden units (the paper: 12).
      cell: "linear" (the paper's), "tanh" or "gru".
    """

    num_symbols: int
    hidden: int = 12
    cell: str = "linear"

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {CELLS}.")
        if self.hidden < 1 or self.num_symbols < 2:
            raise ValueError(f"need hidden >= 1 and num_symbols >= 2, got {self.hidden}, "
                             f"{self.num_symbols}.")


def _torch_dense(features: int, fan_in: int, name: str) -> nn.Dense:
    # PyTorch's nn.Linear default (uniform ±1/sqrt(fan_in) for weights and bias), as in the
    # paper's networks: the untrained baseline of the chunk comparison depends on this scale.
    bound = 1.0 / np.sqrt(fan_in)

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, kernel_init=uniform, bias_init=uniform, name=name)


class RNN(nn.Module):
    """One step of a next-symbol RNN; `unroll` scans it over a sequence."""

    config: RNNConfig

    def setup(self):
        cfg = self.config
        if cfg.cell == "gru":
            self.gru = nn.GRUCell(features=cfg.hidden)
        else:
            self.update = _torch_dense(cfg.hidden, cfg.num_symbols + cfg.hidden, "update")
        fan_in = cfg.hidden if cfg.cell == "gru" else cfg.num_symbols + cfg.hidden
        self.out = _torch_dense(cfg.num_symbols, fan_in, "out")

    def _inputs(self, h_prev: Array, x: Array) -> Array:
        return jnp.concatenate([jax.nn.one_hot(x, self.config.num_symbols), h_prev], axis=-1)

    def cell(self, h_prev: Array, x: Array) -> Array:
        """New hidden state h_t from h_{t-1} [..., H] and symbol x_t [...] (int)."""
        if self.config.cell == "gru":
            h_new, _ = self.gru(h_prev, jax.nn.one_hot(x, self.config.num_symbols))
            return h_new
        pre = self.update(self._inputs(h_prev, x))
        return jnp.tanh(pre) if self.config.cell == "tanh" else pre

    def readout(self, h_prev: Array, x: Array, h_new: Array) -> Array:
        """Log-probabilities of x_{t+1} [..., V]."""
        if self.config.cell == "linear":
            return jax.nn.log_softmax(self.out(self._inputs(h_prev, x)))
        return jax.nn.log_softmax(self.out(h_new))

    def __call__(self, h_prev: Array, x: Array) -> tuple[Array, Array]:
        h_new = self.cell(h_prev, x)
        return self.readout(h_prev, x, h_new), h_new


def init(config: RNNConfig, key: Array) -> dict:
    """Initial flax variables of `RNN(config)`."""
    h0 = jnp.zeros((config.hidden,), jnp.float32)
    # A plain dict whatever flax's init gives (its type also allows a FrozenDict).
    return flax.core.unfreeze(RNN(config).init(key, h0, jnp.zeros((), jnp.int32)))


def unroll(config: RNNConfig, variables: dict, tokens_T: Array, *, h0: Array | None = None,
           ablate: Callable[[Array], Array] | None = None, inject_h: Array | None = None,
           inject_mask: Array | None = None) -> tuple[Array, Array]:
    """Runs the RNN over one sequence.

    Args:
      config: the architecture.
      variables: flax variables from `init` / `train`.
      tokens_T: int [T] symbols.
      h0: initial state [H] (zeros if None).
      ablate: applied to the new hidden state at every step (identity if None).
      inject_h: [T, H] states that replace h_t at steps where `inject_mask` is True
        (after `ablate`); the readout at that step and the next step see the injected state.
      inject_mask: bool [T].

    Returns:
      (log_probs [T, V] of the next symbol, hidden states [T, H]: h_t after reading x_t).
    """
    model = RNN(config)
    H = config.hidden
    chex.assert_rank(tokens_T, 1)
    T = tokens_T.shape[0]
    h0 = jnp.zeros((H,), jnp.float32) if h0 is None else h0
    ablate = (lambda h: h) if ablate is None else ablate
    if inject_h is None:
        inject_h = jnp.zeros((T, H), jnp.float32)
        inject_mask = jnp.zeros((T,), bool)
    elif inject_mask is None:
        raise ValueError("inject_h needs inject_mask (bool [T]) saying at which steps to inject.")
    chex.assert_shape(inject_h, (T, H))

    def step(h_prev, inp):
        x, new_h, use_new = inp
        h_new = ablate(model.apply(variables, h_prev, x, method=RNN.cell))
        h_new = jnp.where(use_new, new_h, h_new)
        logp = model.apply(variables, h_prev, x, h_new, method=RNN.readout)
        return h_new, (logp, h_new)

    _, (logp, hs) = jax.lax.scan(step, h0, (tokens_T, inject_h, inject_mask))
    return logp, hs


def windows(tokens: np.ndarray, length: int) -> np.ndarray:
    """Consecutive non-overlapping windows [W, length] of a sequence (the tail is dropped)."""
    n = len(tokens) // length
    if n < 1:
        raise ValueError(f"sequence of {len(tokens)} symbols is shorter than one window "
                         f"({length}); generate a longer sequence or use a shorter window.")
    return np.asarray(tokens[: n * length]).reshape(n, length)


def unroll_windows(config: RNNConfig, variables: dict, windows_WxL: Array,
                   ablate: Callable[[Array], Array] | None = None,
                   graft: Graft | None = None) -> tuple[Array, Array]:
    """`unroll` over windows, each from h_0 = 0 → (log_probs [W, L, V], hidden [W, L, H]).

    `graft(window) -> (inject_h [L, H], inject_mask [L])` writes states into each window.
    """
    def one(w):
        inj_h, inj_m = (None, None) if graft is None else graft(w)
        return unroll(config, variables, w, ablate=ablate, inject_h=inj_h, inject_mask=inj_m)

    return jax.vmap(one)(windows_WxL)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _correct(config, variables, windows_WxL, mask, graft):
    logp, _ = unroll_windows(config, variables, windows_WxL, graft=graft)
    hit = (jnp.argmax(logp[:, :-1], axis=-1) == windows_WxL[:, 1:]).astype(jnp.float32)
    return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def accuracy(config: RNNConfig, variables: dict, windows_WxL: Array,
             mask_Wx_L1: Array | None = None, graft: Graft | None = None) -> float:
    """Next-symbol top-1 accuracy over within-window transitions.

    Args:
      config, variables: the network.
      windows_WxL: int [W, L] windows, each run from h_0 = 0.
      mask_Wx_L1: optional float/bool [W, L-1]: which transitions t → t+1 count.
      graft: optional state graft applied while running (see `unroll_windows`).
    """
    w = jnp.asarray(windows_WxL, jnp.int32)
    mask = (jnp.ones((w.shape[0], w.shape[1] - 1), jnp.float32) if mask_Wx_L1 is None
            else jnp.asarray(mask_Wx_L1, jnp.float32))
    chex.assert_shape(mask, (w.shape[0], w.shape[1] - 1))
    return float(_correct(config, variables, w, mask, graft))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training of a next-symbol RNN.

    Attributes:
      steps: Adam steps.
      window: tokens per training window (full BPTT inside it).
      batch: windows per step.
      learning_rate: Adam learning rate (the paper: 5e-3).
      chunk: steps per jitted `lax.scan` call (the progress bar moves between chunks).
      eval_every: record loss/accuracy on held-out windows every this many steps (multiple of
        chunk; 0 = only at the end).
    """

    steps: int = 500
    window: int = 200
    batch: int = 8
    learning_rate: float = 5e-3
    chunk: int = 50
    eval_every: int = 50


def window_loss(config: RNNConfig, variables: dict, window_L: Array,
                inject_h: Array | None = None, inject_mask: Array | None = None) -> Array:
    """Mean next-symbol cross-entropy over one window."""
    logp, _ = unroll(config, variables, window_L, inject_h=inject_h, inject_mask=inject_mask)
    ll = jnp.take_along_axis(logp[:-1], window_L[1:, None], axis=-1)[:, 0]
    return -jnp.mean(ll)


_PAD_BLOCK = 4096


def _loss(config: RNNConfig, graft: Graft | None, variables: dict, batch_BxL: Array) -> Array:
    if graft is None:
        return jnp.mean(jax.vmap(lambda w: window_loss(config, variables, w))(batch_BxL))
    inj_h, inj_m = jax.vmap(graft)(batch_BxL)
    return jnp.mean(jax.vmap(lambda w, ih, im: window_loss(config, variables, w, ih, im))(
        batch_BxL, inj_h, inj_m))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_chunk(config: RNNConfig, tc: TrainConfig, graft: Graft | None, variables: dict,
                 opt_state, data: Array, starts_max: Array, k_data: Array, first_step):
    """`tc.chunk` Adam steps in one `lax.scan` → (variables, opt_state, mean loss)."""
    opt = optax.adam(tc.learning_rate)

    def one_step(carry, step):
        v, s = carry
        starts = jax.random.randint(jax.random.fold_in(k_data, step), (tc.batch,), 0,
                                    starts_max + 1)
        batch = jax.vmap(lambda s0: jax.lax.dynamic_slice(data, (s0,), (tc.window,)))(starts)
        loss, grads = jax.value_and_grad(lambda v_: _loss(config, graft, v_, batch))(v)
        updates, s = opt.update(grads, s, v)
        return (optax.apply_updates(v, updates), s), loss

    (variables, opt_state), losses = jax.lax.scan(one_step, (variables, opt_state),
                                                  first_step + jnp.arange(tc.chunk))
    return variables, opt_state, jnp.mean(losses)


def train(config: RNNConfig, train_cfg: TrainConfig, tokens: np.ndarray, key: Array, *,
          variables: dict | None = None, eval_windows: np.ndarray | None = None,
          eval_mask: np.ndarray | None = None, graft: Graft | None = None,
          eval_graft: bool = False, desc: str = "train rnn") -> tuple[dict, dict]:
    """Trains with Adam on random windows of `tokens`.

    Args:
      config: architecture.
      train_cfg: optimisation settings.
      tokens: int [T] training sequence.
      key: PRNG key (initialisation and window positions).
      variables: start from these (fine-tuning / transfer) instead of a fresh init.
      eval_windows: int [W, L] held-out windows for the learning curve (None: none recorded).
      eval_mask: optional [W, L-1] transitions that count in the learning-curve accuracy.
      graft: optional `window_L -> (inject_h [L, H], inject_mask [L])`, states written into the
        hidden trajectory during training (grafting a chunk state).
      eval_graft: also record the learning-curve accuracy with the graft applied
        (history["accuracy_grafted"]).
      desc: progress-bar label.

    Returns:
      (variables, history) with history = {"step": [...], "loss": [...], "accuracy": [...]}
      (loss = mean training loss over the last chunk; accuracy on `eval_windows`).
    """
    tc = train_cfg
    if len(tokens) <= tc.window:
        raise ValueError(f"training sequence ({len(tokens)}) must be longer than the window "
                         f"({tc.window}).")
    if tc.steps % tc.chunk:
        raise ValueError(f"steps={tc.steps} must be a multiple of chunk={tc.chunk}.")
    k_init, k_data = jax.random.split(key)
    if variables is None:
        variables = init(config, k_init)
    opt_state = optax.adam(tc.learning_rate).init(variables)
    # Pad the sequence to a multiple of a fixed block so sequences of similar length share one
    # compiled step; window starts are drawn below len(tokens) - window only.
    n_pad = -(-len(tokens) // _PAD_BLOCK) * _PAD_BLOCK
    data = jnp.asarray(np.pad(np.asarray(tokens, np.int32), (0, n_pad - len(tokens))))
    starts_max = jnp.int32(len(tokens) - tc.window)
    static_tc = dataclasses.replace(tc, steps=0, eval_every=0)  # one compile per step shape
    history: dict[str, list[float]] = {"step": [], "loss": [], "accuracy": [],
                                       "accuracy_grafted": []}
    eval_w = None if eval_windows is None else jnp.asarray(eval_windows, jnp.int32)

    def record(step, loss):
        history["step"].append(int(step))
        history["loss"].append(float(loss))
        nan = float("nan")
        history["accuracy"].append(
            nan if eval_w is None else accuracy(config, variables, eval_w, eval_mask))
        history["accuracy_grafted"].append(
            accuracy(config, variables, eval_w, eval_mask, graft)
            if eval_graft and eval_w is not None and graft is not None else nan)

    with progress.bar(total=tc.steps, desc=desc, unit="step") as bar:
        if tc.eval_every:
            record(0, float("nan"))
        for start in range(0, tc.steps, tc.chunk):
            variables, opt_state, loss = _train_chunk(config, static_tc, graft, variables,
                                                      opt_state, data, starts_max, k_data, start)
            done = start + tc.chunk
            if (tc.eval_every and done % tc.eval_every == 0) or done == tc.steps:
                record(done, loss)
            bar.update(tc.chunk)
            bar.set_postfix(loss=f"{float(loss):.3f}")
    if not np.all(np.isfinite(history["loss"][-1:])):
        raise FloatingPointError(f"training diverged (loss {history['loss'][-1]}); lower the "
                                 "learning rate or shorten the window.")
    return variables, history
