"""Seeded generators of chunked symbol sequences (Wu, Alaniz, Schulz, Akata, arXiv 2502.01803).

Each family concatenates *words* (the ground-truth chunks) drawn from a small dictionary, with
the filler symbol 'E' between them. Every generator is a pure function of its seed and returns a
`ChunkedSequence`: the token array, the alphabet, and the ground-truth parse (which word each
position belongs to, where each word occurrence starts, and the position inside the word).

Families (DESIGN.md §3, "RNN chunks"):
  reflection:     'ABCD' + 'E'·randint(0, 20), repeated 1000 times.
  compositional:  words ['ABCD', 'GHI', 'JKLMN', 'E'] uniform, each + 'E'·randint(0, 10).
  transfer:       words ['ABCDLMN', 'E'] uniform, each + 'E'·randint(0, 10) (same alphabet as
                  compositional, so a network trained there can be trained on).
  context:        ['CDAB', 'AB', 'ABCD', 'E'] with p = [.1, .1, .1, .7], each + 'E', 10,000 draws.
  hierarchy:      start [A, B, C, D]; n_h times append the concatenation of two random existing
                  words; word probabilities = sorted Dirichlet(1)·0.2, 'E' gets 0.8; 100,000 draws.

`randint(a, b)` follows numpy (upper bound exclusive). Filler 'E' symbols are parsed as their own
one-symbol chunk 'E', so every position has a chunk id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

FILLER = "E"
COMPOSITIONAL_WORDS = ("ABCD", "GHI", "JKLMN", FILLER)
TRANSFER_WORDS = ("ABCDLMN", FILLER)
CONTEXT_WORDS = ("CDAB", "AB", "ABCD", FILLER)
CONTEXT_PROBS = (0.1, 0.1, 0.1, 0.7)
# One alphabet for compositional and transfer, so transfer training reuses the same network.
COMPOSITIONAL_ALPHABET = "ABCDEGHIJKLMN"
FAMILIES = ("reflection", "compositional", "transfer", "context", "hierarchy")


@dataclasses.dataclass(frozen=True)
class ChunkedSequence:
    """A token sequence with its ground-truth chunk parse.

    Attributes:
      tokens: int32 [T] symbol ids into `alphabet`.
      alphabet: the symbols; token i is `alphabet[i]`.
      words: the ground-truth chunk dictionary (strings); 'E' filler is a word of its own.
      chunk_ids: int32 [T] index into `words` of the chunk covering each position.
      chunk_start: bool [T] True where a chunk occurrence starts (parse boundaries).
      chunk_pos: int32 [T] position inside the chunk occurrence (0 at its first symbol).
    """

    tokens: np.ndarray
    alphabet: str
    words: tuple[str, ...]
    chunk_ids: np.ndarray
    chunk_start: np.ndarray
    chunk_pos: np.ndarray

    @property
    def text(self) -> str:
        """The sequence as a string of symbols."""
        return "".join(self.alphabet[t] for t in self.tokens)

    @property
    def num_symbols(self) -> int:
        return len(self.alphabet)

    @property
    def parse_length(self) -> int:
        """Number of chunk occurrences in the ground-truth parse."""
        return int(self.chunk_start.sum())


def encode(text: str, alphabet: str) -> np.ndarray:
    """Symbol string → int32 token ids; raises ValueError on a symbol outside the alphabet."""
    index = {s: i for i, s in enumerate(alphabet)}
    missing = sorted(set(text) - set(index))
    if missing:
        raise ValueError(f"symbols {missing} are not in the alphabet {alphabet!r}; "
                         "build the sequence with an alphabet that contains them.")
    return np.asarray([index[s] for s in text], dtype=np.int32)


def _assemble(word_ids: list[int], words: tuple[str, ...], alphabet: str) -> ChunkedSequence:
    """Concatenate word occurrences (filler included as its own word) into a parsed sequence."""
    text = "".join(words[w] for w in word_ids)
    lengths = np.asarray([len(words[w]) for w in word_ids], dtype=np.int64)
    chunk_ids = np.repeat(np.asarray(word_ids, dtype=np.int32), lengths)
    starts = np.cumsum(lengths) - lengths
    chunk_start = np.zeros(len(text), dtype=bool)
    chunk_start[starts] = True
    chunk_pos = (np.arange(len(text)) - np.repeat(starts, lengths)).astype(np.int32)
    return ChunkedSequence(tokens=encode(text, alphabet), alphabet=alphabet, words=words,
                           chunk_ids=chunk_ids, chunk_start=chunk_start, chunk_pos=chunk_pos)


def _with_filler(draws: np.ndarray, n_filler: np.ndarray, filler_id: int) -> list[int]:
    """Word ids of draws, each followed by n_filler[i] filler words."""
    out: list[int] = []
    for w, k in zip(draws.tolist(), n_filler.tolist(), strict=True):
        out.append(w)
        out.extend([filler_id] * k)
    return out


def reflection(seed: int, n_repeats: int = 1000, max_filler: int = 20) -> ChunkedSequence:
    """'ABCD' followed by 'E'·randint(0, max_filler), repeated `n_repeats` times."""
    _check_positive(n_repeats=n_repeats, max_filler=max_filler)
    rng = np.random.default_rng(seed)
    words = ("ABCD", FILLER)
    n_filler = rng.integers(0, max_filler, size=n_repeats)
    ids = _with_filler(np.zeros(n_repeats, dtype=np.int64), n_filler, 1)
    return _assemble(ids, words, "ABCDE")


def compositional(seed: int, n_draws: int = 1000, max_filler: int = 10,
                  words: tuple[str, ...] = COMPOSITIONAL_WORDS) -> ChunkedSequence:
    """Words drawn uniformly from `words`, each followed by 'E'·randint(0, max_filler)."""
    _check_positive(n_draws=n_draws, max_filler=max_filler)
    if FILLER not in words:
        raise ValueError(f"words {words} must include the filler {FILLER!r}.")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(words), size=n_draws)
    n_filler = rng.integers(0, max_filler, size=n_draws)
    ids = _with_filler(draws, n_filler, words.index(FILLER))
    return _assemble(ids, tuple(words), COMPOSITIONAL_ALPHABET)


def transfer(seed: int, n_draws: int = 1000, max_filler: int = 10) -> ChunkedSequence:
    """The transfer sequence: words ['ABCDLMN', 'E'] uniform, each + 'E'·randint(0, max_filler)."""
    return compositional(seed, n_draws=n_draws, max_filler=max_filler, words=TRANSFER_WORDS)


def context(seed: int, n_draws: int = 10_000) -> ChunkedSequence:
    """Context-dependent: ['CDAB', 'AB', 'ABCD', 'E'] with p = [.1, .1, .1, .7], each + 'E'."""
    _check_positive(n_draws=n_draws)
    rng = np.random.default_rng(seed)
    draws = rng.choice(len(CONTEXT_WORDS), size=n_draws, p=np.asarray(CONTEXT_PROBS))
    ids = _with_filler(draws, np.ones(n_draws, dtype=np.int64), CONTEXT_WORDS.index(FILLER))
    return _assemble(ids, CONTEXT_WORDS, "ABCDE")


def hierarchy_words(seed: int, n_h: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The hierarchy dictionary and its probabilities (filler last, probability 0.8).

    Starts from the atoms A, B, C, D; `n_h` times appends the concatenation of two existing
    words drawn uniformly (a concatenation that already exists is redrawn, so the dictionary
    has 4 + n_h distinct words). Word probabilities are Dirichlet(1) scaled to 0.2 and sorted in
    decreasing order (atoms first); the filler 'E' has probability 0.8.
    """
    if n_h < 0:
        raise ValueError(f"n_h={n_h} must be >= 0 (the paper uses 0, 5, ..., 35).")
    rng = np.random.default_rng(seed)
    words = ["A", "B", "C", "D"]
    while len(words) < 4 + n_h:
        i, j = rng.integers(0, len(words), size=2)
        new = words[i] + words[j]
        if new not in words:
            words.append(new)
    p_words = np.sort(rng.dirichlet(np.ones(len(words))))[::-1] * 0.2
    return tuple(words) + (FILLER,), np.concatenate([p_words, [0.8]])


def hierarchy(seed: int, n_h: int, n_draws: int = 100_000) -> ChunkedSequence:
    """Hierarchical sequence: `n_draws` i.i.d. draws from `hierarchy_words(seed, n_h)`."""
    _check_positive(n_draws=n_draws)
    words, probs = hierarchy_words(seed, n_h)
    rng = np.random.default_rng([seed, 1])
    draws = rng.choice(len(words), size=n_draws, p=probs)
    return _assemble(draws.tolist(), words, "ABCDE")


def generate(family: str, seed: int, **kwargs: int) -> ChunkedSequence:
    """Dispatch by family name: one of FAMILIES; kwargs go to the family's generator."""
    fns: dict[str, Callable[..., ChunkedSequence]] = {
        "reflection": reflection, "compositional": compositional, "transfer": transfer,
        "context": context, "hierarchy": hierarchy}
    if family not in fns:
        raise ValueError(f"unknown sequence family {family!r}; choose one of {FAMILIES}.")
    return fns[family](seed, **kwargs)


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if v <= 0:
            raise ValueError(f"{name}={v} must be a positive integer.")
