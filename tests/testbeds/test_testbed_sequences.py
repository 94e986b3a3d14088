"""Sequence generators: determinism, the parse reproduces the text, and the family statistics."""

import numpy as np
import pytest

from bablate.testbeds import sequences


@pytest.mark.parametrize("family", ["reflection", "compositional", "transfer", "context"])
def test_seeded_and_parse_consistent(family):
    a, b = sequences.generate(family, 3), sequences.generate(family, 3)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, sequences.generate(family, 4).tokens)
    # Rebuilding the text from the parse (word id at each chunk start) gives the sequence back.
    starts = np.nonzero(a.chunk_start)[0]
    assert "".join(a.words[a.chunk_ids[s]] for s in starts) == a.text
    # Position-in-chunk agrees with the word's letters everywhere.
    letters = [a.words[c][p] for c, p in zip(a.chunk_ids, a.chunk_pos, strict=True)]
    assert "".join(letters) == a.text
    assert a.parse_length == len(starts)


def test_reflection_statistics():
    seq = sequences.reflection(0, n_repeats=1000, max_filler=20)
    assert seq.text.count("ABCD") == 1000
    assert seq.text.startswith("ABCD")
    # Filler runs are randint(0, 20): uniform on 0..19, mean 9.5.
    runs = np.asarray([len(r) for r in seq.text.split("ABCD")[1:]])
    assert runs.min() == 0 and runs.max() == 19
    assert abs(runs.mean() - 9.5) < 0.6  # sd of the mean = 5.77 / sqrt(1000) = 0.18


def test_compositional_statistics():
    seq = sequences.compositional(1, n_draws=4000)
    assert set(seq.text) == set("ABCDEGHIJKLMN")
    # Uniform over the 4 words: each drawn word is followed by randint(0, 10) fillers.
    drawn = seq.chunk_ids[seq.chunk_start]
    counts = np.bincount(drawn, minlength=4)
    n_filler_words = counts[3]
    non_filler = counts[:3].sum()
    # Filler words = the drawn 'E' words (~1000) + the fillers after all 4000 draws (~4.5 each).
    assert abs(n_filler_words - (1000 + 4.5 * 4000)) < 600
    assert all(abs(c - 1000) < 120 for c in counts[:3]), counts
    assert non_filler == sum(seq.text.count(w) for w in ("ABCD", "GHI", "JKLMN"))


def test_transfer_uses_compositional_alphabet():
    seq = sequences.transfer(0)
    assert seq.alphabet == sequences.COMPOSITIONAL_ALPHABET
    assert "ABCDLMN" in seq.text and "JK" not in seq.text


def test_context_statistics():
    seq = sequences.context(2, n_draws=10_000)
    drawn = seq.chunk_ids[seq.chunk_start & (seq.chunk_pos == 0)]
    # Each draw adds the drawn word and one filler word: 10,000 draws → 20,000 chunks.
    assert seq.parse_length == 20_000
    words = np.bincount(drawn, minlength=4) - np.asarray([0, 0, 0, 10_000])
    freqs = words / 10_000
    np.testing.assert_allclose(freqs, [0.1, 0.1, 0.1, 0.7], atol=0.015)


@pytest.mark.parametrize("n_h", [0, 5, 35])
def test_hierarchy_dictionary(n_h):
    words, probs = sequences.hierarchy_words(7, n_h)
    assert words[:4] == ("A", "B", "C", "D")  # the atoms come first
    assert len(words) == 4 + n_h + 1 and len(set(words)) == len(words)
    assert words[-1] == "E" and probs[-1] == pytest.approx(0.8)
    assert probs[:-1].sum() == pytest.approx(0.2)
    assert np.all(np.diff(probs[:-1]) <= 0)  # sorted, decreasing
    # Every composed word is the concatenation of two earlier words.
    for i in range(4, len(words) - 1):
        earlier = words[:i]
        assert any(words[i] == a + b for a in earlier for b in earlier)


def test_hierarchy_sequence_frequencies():
    seq = sequences.hierarchy(0, n_h=10, n_draws=20_000)
    _, probs = sequences.hierarchy_words(0, 10)
    freq = np.bincount(seq.chunk_ids[seq.chunk_start], minlength=len(probs)) / 20_000
    np.testing.assert_allclose(freq, probs, atol=0.012)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown sequence family"):
        sequences.generate("nope", 0)
    with pytest.raises(ValueError, match="not in the alphabet"):
        sequences.encode("AXB", "AB")
    with pytest.raises(ValueError, match="n_h"):
        sequences.hierarchy_words(0, -1)
