"""Step 1a: the networks. Each seed's network is trained (or loaded from its checkpoint); its
untrained counterpart is exactly the start that training begins from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bablate.models import rnn
from bablate.testbeds.rnn import Windows

EVAL_WINDOWS = 30  # held-out windows for learning curves (a fixed count: one compile)


def initial_variables(model: rnn.RNNConfig, key: jax.Array) -> dict:
    """The untrained network: exactly the start ``rnn.train`` trains from with ``key`` (it
    splits the key into (init, data))."""
    k_init, _ = jax.random.split(key)
    return rnn.init(model, k_init)


def checkpoint_name(recipe: str, seed: int) -> str:
    """The checkpoint of seed ``seed``'s network trained by ``recipe`` (ours keeps the name it
    had before the authors' recipe was offered)."""
    return f"net_seed{seed}" if recipe == "bablate" else f"net_{recipe}_seed{seed}"


def train_or_load(model: rnn.RNNConfig, train: rnn.TrainConfig, name: str,
                  tokens: np.ndarray, test: Windows, key: jax.Array, ctx) -> tuple[dict, dict]:
    """Trains the network ``name`` on ``tokens`` with ``key`` (or loads its checkpoint) →
    (variables, history); the learning curve is read on the first held-out windows."""
    # The learning curve's lists vary in length; the variables must be the network's.
    def compute() -> dict:
        variables, hist = rnn.train(model, train, tokens, key,
                                    eval_windows=test.tokens[:EVAL_WINDOWS], desc=f"train {name}")
        return {"variables": variables, "history": hist}

    state, reused = ctx.load_or_compute(name, compute, like={
        "variables": initial_variables(model, key), "history": dict})
    variables = jax.tree.map(jnp.asarray, state["variables"]) if reused else state["variables"]
    return variables, state["history"]
