"""The chunk study's RNN (Wu et al., arXiv 2502.01803) with a tanh cell: chunk-continuation tasks
read in neurons, sparse-autoencoder codes and a random rotation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate.models import rnn as rnn_model
from bablate.runner.context import RunContext
from bablate.testbeds.rnn import (
    TEST_SEED_OFFSET,
    chunk_tasks,
    hidden_site,
    make_sequence,
    to_windows,
)

from .bases import NEURON, ROTATION, fit_dictionaries, random_rotation
from .config import InferenceConfig, RNNConfig
from .keys import NetworkKeys
from .reading import compare_bases


def train_network(rc: RNNConfig, model: rnn_model.RNNConfig, tokens, ctx: RunContext,
                  key: jax.Array) -> tuple[dict, bool]:
    """The trained RNN's variables, and whether they were reloaded from the run's state."""
    def compute() -> dict:
        ctx.log(f"rnn: training a {rc.cell} RNN (hidden {rc.hidden}) on {rc.family} for "
                f"{rc.train_steps} steps")
        tcfg = rnn_model.TrainConfig(steps=rc.train_steps, eval_every=0)
        variables, _ = rnn_model.train(model, tcfg, tokens, key, desc="train rnn")
        return {"variables": variables}

    state, reused = ctx.load_or_compute("rnn_params", compute,
                                        like={"variables": rnn_model.init(model, key)})
    return jax.tree.map(jnp.asarray, state["variables"]), reused


def run(rc: RNNConfig, seed: int, inference: InferenceConfig, top_k: tuple[int, ...],
        ctx: RunContext, keys: NetworkKeys) -> dict:
    """Trains (or reloads) the RNN, fits its dictionaries, compares the bases on its tasks."""
    seq = make_sequence(rc.family, seed)
    model = rnn_model.RNNConfig(num_symbols=seq.num_symbols, hidden=rc.hidden, cell=rc.cell)
    variables, reuse = train_network(rc, model, seq.tokens, ctx, keys.train)
    # Dictionary fitted on hidden states of the training sequence; tasks on a held-out one.
    fit_w = to_windows(seq, rc.window, rc.fit_tokens)
    _, hidden = jax.jit(rnn_model.unroll_windows, static_argnums=0)(model, variables,
                                                                    fit_w.tokens)
    acts = np.asarray(hidden).reshape(-1, rc.hidden)
    bases, reports = fit_dictionaries(acts, rc.dictionaries, keys.dictionary, ctx, "rnn", reuse)
    test_seq = make_sequence(rc.family, seed + TEST_SEED_OFFSET)
    w = to_windows(test_seq, rc.window, rc.windows * rc.window)
    # As in the chunk study (the same builder): one top-1 task per chunk of >= 2 symbols, all
    # on one in-place site and one dataset, so the network runs once per mask for every task.
    tasks = chunk_tasks(hidden_site(model, variables), w, seq.words,
                        min_examples=rc.min_examples, rule="top1", max_tasks=rc.max_tasks,
                        check_intact=False)
    if len(tasks) < 2:
        return {"network": "rnn", "skipped": f"only {len(tasks)} chunk task(s) with enough "
                "examples; raise rnn.windows."}
    all_bases = {NEURON: None, ROTATION: random_rotation(keys.rotation, rc.hidden), **bases}
    metrics = compare_bases(bb.TaskSet.of(tasks), all_bases, inference, keys.inference, top_k,
                            "rnn")
    accuracy = rnn_model.accuracy(model, variables, jnp.asarray(w.tokens))
    return {"network": f"{rc.cell} RNN, hidden {rc.hidden} ({rc.family})",
            "accuracy": accuracy, "dictionaries": reports, "bases": metrics}
