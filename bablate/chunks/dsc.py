"""Discrete sequence chunking (DSC) of hidden-state trajectories (Wu et al., arXiv 2502.01803).

1. Each neuron's activations are clustered with 1-D k-means (5 clusters), so every time step
   becomes a *state string*: the tuple of per-neuron cluster ids.
2. A lookup table maps each state to the input symbol it most often co-occurs with; its
   accuracy on held-out steps is the decoding accuracy (a state never seen in fitting counts as
   wrong, and the share of such steps is reported).
3. BPE-like merging: for a few rounds, the most frequent adjacent pairs of tokens (states or
   already merged chunks) with count >= `min_count` become new dictionary entries. The result is
   a chunk dictionary with counts and the parse of the sequence into chunks.

Vocabulary size = number of dictionary entries (distinct states + merged chunks); "count > 5"
counts the entries that occur more than 5 times in the final parse; parse length = number of
tokens in the final parse. The k-means is deterministic (quantile initialisation, Lloyd steps).

Two protocols (``PROTOCOLS``):

- ``"long"`` (``run_dsc``, ours): k-means, lookup and chunks fitted on a long trajectory (many
  windows), decoding tested on another sequence; the vocabulary accumulates every state and
  every merged chunk.
- ``"authors"`` (``run_dsc_authors``), as the authors' notebooks (github swu32/
  Chunk-Interpretability, RNN_1/RNN_3) do it: one trajectory; the lookup is fitted on its first
  100 steps and tested on the rest of the same trajectory; the vocabulary is rebuilt each round
  from the tokens of the current parse plus the new pairs, and the state sequence is parsed
  again from scratch (``rebuild_chunks``), so states absorbed into chunks drop out. Their
  parsing function is not public; ours is greedy longest match, left to right. Their lookup
  keeps the last symbol written for a state; ours keeps the majority (equal wherever a state
  maps to one symbol).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

PROTOCOLS = ("long", "authors")
AUTHORS_FIT_STEPS = 100  # the notebooks fit the lookup on the first 100 steps


def kmeans_1d(x_N: np.ndarray, k: int = 5, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 1-D k-means.

    Centres start at the (i + 0.5)/k quantiles and follow Lloyd updates until they stop moving;
    an empty cluster keeps its centre.

    Args:
      x_N: values [N].
      k: number of clusters.
      iters: maximum Lloyd iterations.

    Returns:
      (centres [k] in increasing order, labels int [N] in 0..k-1).
    """
    x = np.asarray(x_N, np.float64).ravel()
    if x.size == 0 or k < 1:
        raise ValueError(f"kmeans_1d needs a non-empty input and k >= 1 (got {x.size}, k={k}).")
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        labels = _assign(x, centres)
        sums = np.bincount(labels, weights=x, minlength=k)
        counts = np.bincount(labels, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        new = np.sort(new)
        if np.allclose(new, centres, rtol=0.0, atol=1e-12):
            break
        centres = new
    return centres, _assign(x, centres)


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    # Sorted centres: the nearest one is found from the midpoints (ties go to the lower one).
    mids = (centres[1:] + centres[:-1]) / 2.0
    return np.searchsorted(mids, x, side="left").astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Discretizer:
    """Per-neuron k-means centres [D, k] (increasing along k)."""

    centres: np.ndarray

    def codes(self, h_NxD: np.ndarray) -> np.ndarray:
        """Per-neuron cluster ids int [N, D]."""
        h = np.asarray(h_NxD)
        if h.ndim != 2 or h.shape[1] != self.centres.shape[0]:
            raise ValueError(f"states must be [N, {self.centres.shape[0]}], got {h.shape}.")
        return np.stack([_assign(h[:, i], self.centres[i]) for i in range(h.shape[1])], axis=1)

    def vector(self, code_D: np.ndarray) -> np.ndarray:
        """The hidden vector of a state string (each neuron at its cluster centre) [D]."""
        return self.centres[np.arange(self.centres.shape[0]), np.asarray(code_D)]


def fit_discretizer(h_NxD: np.ndarray, k: int = 5) -> Discretizer:
    """1-D k-means with k clusters on every neuron of states [N, D]."""
    h = np.asarray(h_NxD)
    if h.ndim != 2:
        raise ValueError(f"states must be [N, D], got shape {h.shape}.")
    return Discretizer(np.stack([kmeans_1d(h[:, i], k)[0] for i in range(h.shape[1])]))


def state_strings(codes_NxD: np.ndarray) -> list[str]:
    """Readable state strings, one per step (cluster ids joined; '.' separates if k > 10)."""
    codes = np.asarray(codes_NxD)
    sep = "" if codes.max(initial=0) < 10 else "."
    return [sep.join(map(str, row)) for row in codes]


@dataclasses.dataclass(frozen=True)
class Lookup:
    """State → symbol table (majority vote) fitted on one trajectory."""

    table: dict[tuple[int, ...], int]

    def decode(self, codes_NxD: np.ndarray) -> np.ndarray:
        """Decoded symbols int [N]; -1 where the state was never seen in fitting."""
        return np.asarray([self.table.get(tuple(r), -1) for r in np.asarray(codes_NxD).tolist()],
                          dtype=np.int64)


def fit_lookup(codes_NxD: np.ndarray, symbols_N: np.ndarray) -> Lookup:
    """Majority symbol per state (ties → the smaller symbol id)."""
    votes: dict[tuple[int, ...], collections.Counter] = collections.defaultdict(
        collections.Counter)
    for row, s in zip(np.asarray(codes_NxD).tolist(), np.asarray(symbols_N).tolist(),
                      strict=True):
        votes[tuple(row)][s] += 1
    return Lookup({st: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                   for st, c in votes.items()})


@dataclasses.dataclass(frozen=True)
class ChunkDictionary:
    """Result of BPE-like merging.

    Attributes:
      entries: each entry as a tuple of base state ids (index into `states`).
      counts: occurrences of each entry in the final parse.
      parse: the final parse as entry ids.
      states: base states (state strings as code tuples), id = position.
      merges: (left entry, right entry) → new entry, in order.
    """

    entries: tuple[tuple[int, ...], ...]
    counts: np.ndarray
    parse: np.ndarray
    states: tuple[tuple[int, ...], ...]
    merges: tuple[tuple[int, int, int], ...]

    @property
    def vocab_size(self) -> int:
        return len(self.entries)

    def vocab_size_count_gt(self, n: int = 5) -> int:
        return int(np.sum(self.counts > n))

    @property
    def parse_length(self) -> int:
        return len(self.parse)


def state_ids(codes_NxD: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """Integer id per step (order of first appearance) and the distinct states."""
    index: dict[tuple[int, ...], int] = {}
    ids = [index.setdefault(tuple(r), len(index)) for r in np.asarray(codes_NxD).tolist()]
    return np.asarray(ids, np.int64), tuple(index)


def _merge_pair(seq: list[int], a: int, b: int, new: int) -> list[int]:
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


def bpe_chunks(codes_NxD: np.ndarray, rounds: int = 6, top: int = 5,
               min_count: int = 10) -> ChunkDictionary:
    """BPE-like merging of frequent adjacent states into a chunk dictionary.

    Each round counts adjacent token pairs in the current parse, takes the `top` most frequent
    pairs with count >= `min_count` (ties: first occurrence), and merges them one after another
    (left to right, non-overlapping), each into a new entry; a pair that an earlier merge of the
    same round has pushed below `min_count` is skipped.

    Args:
      codes_NxD: per-neuron cluster ids of a trajectory.
      rounds: merge rounds.
      top: pairs merged per round.
      min_count: minimum pair count for a merge.

    Returns:
      The chunk dictionary (see `ChunkDictionary`).
    """
    ids, states = state_ids(codes_NxD)
    entries: list[tuple[int, ...]] = [(i,) for i in range(len(states))]
    seq = ids.tolist()
    merges = []
    for _ in range(rounds):
        pairs = collections.Counter(zip(seq[:-1], seq[1:], strict=True))
        best = [(p, c) for p, c in pairs.most_common() if c >= min_count][:top]
        if not best:
            break
        for (a, b), _ in best:
            # An earlier merge of this round may have consumed the pair: recount it.
            if sum(1 for x, y in zip(seq[:-1], seq[1:], strict=True)
                   if x == a and y == b) < min_count:
                continue
            new = len(entries)
            entries.append(entries[a] + entries[b])
            seq = _merge_pair(seq, a, b, new)
            merges.append((a, b, new))
    counts = np.bincount(np.asarray(seq, np.int64), minlength=len(entries))
    return ChunkDictionary(entries=tuple(entries), counts=counts, parse=np.asarray(seq),
                           states=states, merges=tuple(merges))


@dataclasses.dataclass(frozen=True)
class DSCResult:
    """Everything DSC extracts from a trajectory (see module docstring)."""

    discretizer: Discretizer
    lookup: Lookup
    chunks: ChunkDictionary
    n_unique_states: int
    decoding_accuracy: float
    unseen_fraction: float


def run_dsc(h_fit_NxD: np.ndarray, symbols_fit_N: np.ndarray, h_test_MxD: np.ndarray,
            symbols_test_M: np.ndarray, k: int = 5, rounds: int = 6, top: int = 5,
            min_count: int = 10) -> DSCResult:
    """DSC: discretise, fit the lookup and the chunk dictionary on one trajectory, decode another.

    Args:
      h_fit_NxD: hidden states used to fit the k-means, lookup and chunks.
      symbols_fit_N: input symbol at each fitting step.
      h_test_MxD: held-out hidden states (same network, another sequence).
      symbols_test_M: their input symbols.
      k, rounds, top, min_count: DSC settings.
    """
    disc = fit_discretizer(h_fit_NxD, k)
    codes = disc.codes(h_fit_NxD)
    lookup = fit_lookup(codes, symbols_fit_N)
    decoded = lookup.decode(disc.codes(h_test_MxD))
    chunks = bpe_chunks(codes, rounds, top, min_count)
    return DSCResult(discretizer=disc, lookup=lookup, chunks=chunks,
                     n_unique_states=len(chunks.states),
                     decoding_accuracy=float(np.mean(decoded == np.asarray(symbols_test_M))),
                     unseen_fraction=float(np.mean(decoded < 0)))


def unit_chunk_information(codes_NxD: np.ndarray, in_chunk_N: np.ndarray) -> np.ndarray:
    """Mutual information (bits) between each neuron's cluster id and a chunk indicator [D].

    This is how DSC ties units to a chunk for the agreement with Bayesian ablation: a neuron
    whose discrete state tells whether the step is inside the chunk carries its information.
    """
    codes = np.asarray(codes_NxD)
    y = np.asarray(in_chunk_N, bool).astype(np.int64)
    out = np.zeros(codes.shape[1])
    for i in range(codes.shape[1]):
        k = int(codes[:, i].max()) + 1
        joint = np.zeros((k, 2))
        np.add.at(joint, (codes[:, i], y), 1.0)
        joint /= joint.sum()
        px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
        nz = joint > 0
        out[i] = float(np.sum(joint[nz] * np.log2(joint[nz] / (px @ py)[nz])))
    return out


def greedy_parse(ids_N: np.ndarray | list[int], vocab: set[tuple[int, ...]]) -> list[tuple]:
    """Left-to-right longest-match parse of a state-id sequence into vocabulary tokens.

    A single state is always a valid token (so every sequence parses), whether or not it is in
    ``vocab``.
    """
    seq = [int(i) for i in np.asarray(ids_N).tolist()]
    by_len = sorted({len(v) for v in vocab if len(v) > 1}, reverse=True)
    out, i = [], 0
    while i < len(seq):
        for n in by_len:
            tok = tuple(seq[i:i + n])
            if len(tok) == n and tok in vocab:
                out.append(tok)
                i += n
                break
        else:
            out.append((seq[i],))
            i += 1
    return out


def rebuild_chunks(codes_NxD: np.ndarray, rounds: int = 6, top: int = 5,
                   min_count: int = 10) -> ChunkDictionary:
    """The authors' chunking: the vocabulary is rebuilt from the current parse every round.

    Each round, the vocabulary is the set of tokens in the current parse plus the `top` most
    frequent adjacent token pairs with count >= `min_count` (each pair concatenated into one
    token); the state sequence is then parsed again from scratch with it (``greedy_parse``). A
    state that now occurs only inside chunks is no longer a token of the parse, so it leaves
    the vocabulary the next round. Rounds stop early when no pair qualifies.

    Returns:
      A ``ChunkDictionary`` whose entries are the distinct tokens of the final parse (its
      vocabulary, the authors' "vocab size"), in order of first appearance; ``merges`` is empty
      (there is no merge tree).
    """
    ids, states = state_ids(codes_NxD)
    parse: list[tuple[int, ...]] = [(int(i),) for i in ids]
    for _ in range(rounds):
        pairs = collections.Counter(zip(parse[:-1], parse[1:], strict=True))
        new = [a + b for (a, b), c in pairs.most_common(top) if c >= min_count]
        if not new:
            break
        parse = greedy_parse(ids, set(parse) | set(new))
    index: dict[tuple[int, ...], int] = {}
    seq = [index.setdefault(tok, len(index)) for tok in parse]
    counts = np.bincount(np.asarray(seq, np.int64), minlength=len(index))
    return ChunkDictionary(entries=tuple(index), counts=counts, parse=np.asarray(seq),
                           states=states, merges=())


def run_dsc_authors(h_NxD: np.ndarray, symbols_N: np.ndarray, k: int = 5, rounds: int = 6,
                    top: int = 5, min_count: int = 10,
                    fit_steps: int = AUTHORS_FIT_STEPS) -> DSCResult:
    """DSC as the authors' notebooks run it, on one trajectory.

    k-means on the whole trajectory; lookup fitted on its first `fit_steps` steps and tested on
    the rest; chunks by ``rebuild_chunks`` on the whole trajectory.

    Args:
      h_NxD: hidden states of one trajectory (the notebooks: 2,000 steps).
      symbols_N: input symbol at each step.
      k, rounds, top, min_count: DSC settings (the notebooks: 5, 6, 5, 10).
      fit_steps: lookup fitting steps (the notebooks: 100).
    """
    h, sym = np.asarray(h_NxD), np.asarray(symbols_N)
    if h.ndim != 2 or h.shape[0] != sym.shape[0]:
        raise ValueError(f"states must be [N, D] with one symbol per step; got {h.shape} and "
                         f"{sym.shape}.")
    if not 0 < fit_steps < h.shape[0]:
        raise ValueError(f"fit_steps must be in (0, {h.shape[0]}) so that steps remain for "
                         f"testing; got {fit_steps}. Use a longer trajectory.")
    disc = fit_discretizer(h, k)
    codes = disc.codes(h)
    lookup = fit_lookup(codes[:fit_steps], sym[:fit_steps])
    decoded = lookup.decode(codes[fit_steps:])
    chunk_dict = rebuild_chunks(codes, rounds, top, min_count)
    return DSCResult(discretizer=disc, lookup=lookup, chunks=chunk_dict,
                     n_unique_states=len(chunk_dict.states),
                     decoding_accuracy=float(np.mean(decoded == sym[fit_steps:])),
                     unseen_fraction=float(np.mean(decoded < 0)))
