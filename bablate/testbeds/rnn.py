"""The chunk-paper RNN testbed: sequences cut into windows, the hidden-unit site, chunk tasks.

Plain arguments only (a family name, seeds, window lengths, a model config and its variables),
so any study can build on it:

* :func:`make_sequence` / :func:`to_windows`: a sequence family of
  `bablate.testbeds.sequences` and its windows with per-step chunk ids and positions (held-out
  data uses seed + :data:`TEST_SEED_OFFSET`);
* :func:`hidden_site`: the in-place site of the hidden units, masked at every time step of
  every window; its outputs are the log-probabilities of every window and step;
* :func:`chunk_tasks`: THE chunk-task family: one task per chunk (word), "predict the next
  symbol where it lies inside the chunk after its first symbol", all on one site and one
  dataset, each rule reading its own positions, so exact enumeration runs the network once
  per mask for all of them (`bablate.inference.exact_many`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import bablate as bb
from bablate.models import rnn
from bablate.testbeds import sequences

TEST_SEED_OFFSET = 1_000_003  # held-out sequences use seed + this offset

# Correctness rules of chunk tasks (the library's): "top1" counts the target as the unique
# arg-max; "smooth_top1" is the probability of the target, which also sees a unit that only
# sharpens an already correct prediction.
RULES = {"top1": bb.rules.top1, "smooth_top1": bb.rules.smooth_top1}


def make_sequence(family: str, seed: int, n_h: int = 0,
                  n_draws: int = 0) -> sequences.ChunkedSequence:
    """The family's sequence; n_draws = 0 keeps the paper's length."""
    kwargs = {}
    if family == "hierarchy":
        kwargs["n_h"] = n_h
    if n_draws:
        kwargs["n_repeats" if family == "reflection" else "n_draws"] = n_draws
    return sequences.generate(family, seed, **kwargs)


@dataclasses.dataclass(frozen=True)
class Windows:
    """A sequence cut into windows [W, L] (tokens, chunk ids, position in chunk)."""

    tokens: np.ndarray
    chunk_ids: np.ndarray
    chunk_pos: np.ndarray


def to_windows(seq: sequences.ChunkedSequence, length: int,
               max_tokens: int | None = None) -> Windows:
    """``seq`` (at most its first ``max_tokens`` symbols) cut into windows of ``length``."""
    n = len(seq.tokens) if max_tokens is None else min(len(seq.tokens), max_tokens)
    cut = lambda a: rnn.windows(a[:n], length)
    return Windows(cut(seq.tokens), cut(seq.chunk_ids), cut(seq.chunk_pos))


def hidden_site(model: rnn.RNNConfig, variables: dict) -> bb.Site:
    """In-place site: the hidden units, masked at every time step of every window.

    Its inputs are int windows [W, L] and its outputs the log-probabilities [W, L, V] of the
    next symbol at every step.
    """

    def apply(windows_WxL, ablate):
        logp, _ = rnn.unroll_windows(model, variables, windows_WxL, ablate=ablate)
        return logp

    return bb.Site.in_place("hidden", model.hidden, apply)


def word_end_mask(w: Windows, words: Sequence[str], k: int) -> np.ndarray:
    """bool [W*L]: the step is the last symbol of an occurrence of word k."""
    return ((w.chunk_ids == k) & (w.chunk_pos == len(words[k]) - 1)).ravel()


def _next_inside(w: Windows, k: int) -> np.ndarray:
    """bool [W, L-1]: the symbol after step t lies inside chunk k after its first symbol."""
    return (w.chunk_ids[:, 1:] == k) & (w.chunk_pos[:, 1:] >= 1)


def task_steps(w: Windows, k: int) -> np.ndarray:
    """bool [W*L]: steps t whose next symbol is a task target of chunk k."""
    m = np.zeros_like(w.tokens, dtype=bool)
    m[:, :-1] = _next_inside(w, k)
    return m.ravel()


@functools.cache
def _positional(rule: str):
    """The library rule ``rule`` reading one task's positions of the site's [W, L, V] outputs:
    (hard, soft, check), built once per rule name so that every chunk task shares one compiled
    program (the targets and positions travel as data)."""
    proto = RULES[rule](np.zeros(1, np.int32))

    def at(correct):
        return lambda logp, d: correct(logp[d["w"], d["t"]], d["y"])

    def check(logp, d):
        proto.check(jax.ShapeDtypeStruct((d["y"].shape[0], logp.shape[-1]), logp.dtype), d["y"])

    return at(proto.hard), at(proto.soft), check


def chunk_tasks(site: bb.Site, w: Windows, words: Sequence[str], *,
                word_ids: Sequence[int] | None = None, min_examples: int = 1,
                rule: str = "top1", max_tasks: int | None = None,
                check_intact: bool = True) -> list[bb.Task]:
    """One task per chunk: predict x_{t+1} where t+1 lies inside chunk k after its first symbol.

    Every task shares ``site`` (a :func:`hidden_site`) and one dataset, the windows' tokens;
    each task's rule reads its own positions (w, t) and targets x_{t+1}, so the network runs
    once per mask for all tasks under exact enumeration.

    Args:
      site: the hidden-unit site of the network (:func:`hidden_site`).
      w: the windows the tasks read.
      words: the sequence's words; task k is named ``words[k]``.
      word_ids: the chunks to try, in order (default: every word of at least 2 symbols).
      min_examples: a chunk with fewer positions gets no task.
      rule: "top1" (the target is the unique arg-max) or "smooth_top1" (its probability).
      max_tasks: keep at most this many tasks (the first ones in ``word_ids`` order).
      check_intact: warn when the intact network already fails a task.
    """
    if rule not in RULES:
        raise ValueError(f"unknown ablation rule {rule!r}; choose one of {tuple(RULES)}.")
    if min_examples < 1:
        raise ValueError(f"min_examples must be at least 1, got {min_examples}.")
    if word_ids is None:
        word_ids = [k for k, word in enumerate(words) if len(word) >= 2]
    hard, soft, check = _positional(rule)
    inputs = jnp.asarray(w.tokens, jnp.int32)  # one object: tasks share the dataset
    tasks: list[bb.Task] = []
    for k in word_ids:
        if max_tasks is not None and len(tasks) >= max_tasks:
            break
        wi, ti = np.nonzero(_next_inside(w, k))
        if len(wi) < min_examples:
            continue
        library = RULES[rule](w.tokens[wi, ti + 1])  # checks the targets
        data = {"w": jnp.asarray(wi, jnp.int32), "t": jnp.asarray(ti, jnp.int32),
                "y": library.data}
        task_rule = dataclasses.replace(library, hard=hard, soft=soft, check=check, data=data)
        tasks.append(bb.Task.build(site, inputs, task_rule, name=words[k],
                                   check_intact=check_intact))
    return tasks


def num_examples(task: bb.Task) -> int:
    """The number of positions a :func:`chunk_tasks` task reads."""
    return int(task.data["rule"]["y"].shape[0])
