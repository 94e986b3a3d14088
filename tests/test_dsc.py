"""DSC on hand-made state sequences with known answers; PA on synthetic data."""

import numpy as np
import pytest

from bablate import chunks


def test_kmeans_1d_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    true = np.asarray([-4.0, -1.0, 0.5, 3.0, 8.0])
    labels = rng.integers(0, 5, size=2000)
    x = true[labels] + 0.05 * rng.normal(size=2000)
    centres, got = chunks.kmeans_1d(x, 5)
    np.testing.assert_allclose(centres, true, atol=0.02)
    np.testing.assert_array_equal(got, labels)
    # Deterministic: same answer on a second call.
    np.testing.assert_array_equal(chunks.kmeans_1d(x, 5)[1], got)


def _states_for(text, table, noise, rng):
    """Hidden states [T, D]: each symbol's prototype vector plus noise."""
    return np.stack([table[c] for c in text]) + noise * rng.normal(size=(len(text), 3))


def test_dsc_hand_made_sequence():
    rng = np.random.default_rng(1)
    # Three neurons, values on a 5-level grid; symbols A..D and E have distinct state strings.
    levels = np.linspace(-2, 2, 5)
    table = {"A": levels[[0, 1, 2]], "B": levels[[1, 2, 3]], "C": levels[[2, 3, 4]],
             "D": levels[[3, 4, 0]], "E": levels[[4, 0, 1]]}
    text = "".join("ABCD" + "E" * int(k) for k in rng.integers(0, 3, size=300))
    sym = np.asarray(["ABCDE".index(c) for c in text])
    h = _states_for(text, table, 0.05, rng)
    res = chunks.run_dsc(h, sym, h, sym, k=5, rounds=3, top=1, min_count=10)
    # Exactly one state per symbol, decoded perfectly.
    assert res.n_unique_states == 5
    assert res.decoding_accuracy == 1.0 and res.unseen_fraction == 0.0
    # One merge per round: AB (300), then AB+C (300), then ABC+D (300) → the chunk ABCD.
    d = res.chunks
    decoded = ["".join("ABCDE"[res.lookup.table[d.states[s]]] for s in e) for e in d.entries]
    assert decoded[5:] == ["AB", "ABC", "ABCD"]
    assert d.vocab_size == 8
    n_e = text.count("E")
    assert d.counts[decoded.index("ABCD")] == 300
    assert d.parse_length == 300 + n_e
    # Entries with count > 5: ABCD and E (A, B, C, D, AB, ABC are fully merged away).
    assert d.vocab_size_count_gt(5) == 2


def test_bpe_min_count_and_ties():
    codes = np.asarray([[0], [1]] * 9)  # pair (0,1) occurs 9 times, (1,0) 8 times
    d = chunks.bpe_chunks(codes, rounds=6, top=5, min_count=10)
    assert d.merges == () and d.vocab_size == 2 and d.parse_length == 18
    d = chunks.bpe_chunks(codes, rounds=1, top=5, min_count=8)
    # Both pairs qualify; (0,1) first (more frequent) consumes every (1,0), which is skipped.
    assert d.merges == ((0, 1, 2),) and d.vocab_size == 3
    assert d.parse_length == 9 and d.counts[2] == 9


def test_lookup_unseen_state_counts_as_wrong():
    codes = np.asarray([[0, 0], [1, 1], [0, 0]])
    lk = chunks.fit_lookup(codes, np.asarray([3, 4, 3]))
    np.testing.assert_array_equal(lk.decode(np.asarray([[0, 0], [2, 2]])), [3, -1])


def test_unit_chunk_information():
    rng = np.random.default_rng(2)
    y = rng.random(4000) < 0.3
    codes = np.stack([y.astype(int) * 2,             # copies the indicator: MI = H(y)
                      rng.integers(0, 5, size=4000)], 1)  # independent: MI ≈ 0
    info = chunks.unit_chunk_information(codes, y)
    h = -(0.3 * np.log2(0.3) + 0.7 * np.log2(0.7))
    assert info[0] == pytest.approx(h, abs=0.01)
    assert info[1] < 0.01


def test_pa_template_detects_concept():
    rng = np.random.default_rng(3)
    d = 20
    concept = rng.normal(size=d)
    stable = np.arange(d) < 8  # the concept fixes 8 neurons; the rest vary freely
    def sample(n, present):
        x = rng.normal(size=(n, d)) * 2.0
        if present:
            x[:, stable] = concept[stable] + 0.05 * rng.normal(size=(n, stable.sum()))
        return x
    tpl = chunks.pa_template(sample(10, True), tolerance=0.3)
    np.testing.assert_array_equal(tpl.neuron_mask, stable)
    pos, neg = sample(200, True), sample(2000, False)
    states = np.concatenate([pos, neg])
    labels = np.r_[np.ones(200, bool), np.zeros(2000, bool)]
    tpr, fpr = chunks.detection_rates(chunks.pa_detect(tpl, states), labels)
    assert tpr > 0.8 and fpr < 0.01
    roc = chunks.tpr_fpr_auc(chunks.pa_scores(tpl, states), labels)
    assert roc.auc > 0.999


def test_auc_closed_form_with_ties():
    # Positives {1, 2}, negatives {2, 3} with lower = positive: pairs (1<2),(1<3),(2=2),(2<3)
    # → AUC = (1 + 1 + 0.5 + 1) / 4.
    roc = chunks.tpr_fpr_auc(np.asarray([1.0, 2.0, 2.0, 3.0]),
                             np.asarray([True, True, False, False]))
    assert roc.auc == pytest.approx(3.5 / 4)
    assert roc.tpr[-1] == 1.0 and roc.fpr[-1] == 1.0
    flipped = chunks.tpr_fpr_auc(-np.asarray([1.0, 2.0, 2.0, 3.0]),
                                 np.asarray([True, True, False, False]), lower_is_positive=False)
    assert flipped.auc == pytest.approx(roc.auc)


def test_bootstrap_auc_equals_the_auc_of_each_resample():
    """Each bootstrap AUC is `tpr_fpr_auc` on the items resampled as documented (positives,
    then negatives, with replacement), for a continuous score and a 0/1 score with ties."""
    rng = np.random.default_rng(0)
    labels = rng.random(40) < 0.3
    scores = np.stack([rng.normal(size=40) - labels, labels.astype(float) * (rng.random(40) < 0.8)])
    got = chunks.bootstrap_auc(scores, labels, np.random.default_rng(5), num=30,
                               lower_is_positive=False)
    draw = np.random.default_rng(5)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    for b in range(30):
        idx = np.concatenate([pos[draw.integers(0, pos.size, pos.size)],
                              neg[draw.integers(0, neg.size, neg.size)]])
        for k in range(2):
            want = chunks.tpr_fpr_auc(scores[k, idx], labels[idx], lower_is_positive=False).auc
            assert got[b, k] == pytest.approx(want, abs=1e-12)
    assert np.ptp(got[:, 0]) > 0.05  # the resamples differ
    # Lower-is-positive scores: the same AUCs as their negation read the other way.
    low = chunks.bootstrap_auc(-scores, labels, np.random.default_rng(5), num=30)
    np.testing.assert_allclose(low, got)


def test_pa_errors():
    with pytest.raises(ValueError, match="raise the tolerance"):
        chunks.pa_template(np.asarray([[0.0, 0.0], [5.0, 5.0]]), tolerance=0.1)
    with pytest.raises(ValueError, match="both positives and negatives"):
        chunks.tpr_fpr_auc(np.zeros(3), np.ones(3, bool))


def test_greedy_parse_prefers_the_longest_token():
    vocab = {(0, 1), (0, 1, 2)}
    assert chunks.greedy_parse([0, 1, 2, 0, 1, 3], vocab) == [(0, 1, 2), (0, 1), (3,)]
    # A state outside the vocabulary still parses as itself.
    assert chunks.greedy_parse([5, 0], vocab) == [(5,), (0,)]


def test_rebuilt_vocabulary_drops_absorbed_states():
    rng = np.random.default_rng(1)
    text = "".join("ABCD" + "E" * int(k) for k in rng.integers(0, 3, size=300))
    codes = np.asarray(["ABCDE".index(c) for c in text])[:, None]
    # One pair per round: AB, then AB+C, then ABC+D (each 300 times; E E is rarer).
    d = chunks.rebuild_chunks(codes, rounds=3, top=1, min_count=10)
    names = ["".join("ABCDE"[d.states[s][0]] for s in e) for e in d.entries]
    # A, B, C and D now occur only inside ABCD, so they left the vocabulary: ABCD and E remain.
    assert sorted(names) == ["ABCD", "E"]
    assert d.vocab_size == 2 and d.merges == ()
    assert d.counts[names.index("ABCD")] == 300
    assert d.parse_length == 300 + text.count("E")
    # The cumulative dictionary keeps every state and every intermediate chunk.
    assert chunks.bpe_chunks(codes, rounds=3, top=1, min_count=10).vocab_size == 8


def test_authors_protocol_fits_the_lookup_on_the_first_steps_only():
    # Symbol = state, except a sixth state that first appears after the fitting steps.
    sym = np.tile(np.arange(5), 60)  # 300 steps
    levels = np.linspace(-2, 2, 6)
    h = levels[sym][:, None] * np.ones((1, 2))
    h[250:, 1] = 5.0  # steps 250.. land in states never seen in the first 100 steps
    res = chunks.run_dsc_authors(h, sym, k=6, rounds=1, top=1, min_count=10, fit_steps=100)
    assert res.unseen_fraction == pytest.approx(50 / 200)
    assert res.decoding_accuracy == pytest.approx(150 / 200)
    with pytest.raises(ValueError, match="fit_steps"):
        chunks.run_dsc_authors(h[:50], sym[:50], fit_steps=100)


def test_sweep_template_picks_the_accurate_tolerance():
    rng = np.random.default_rng(4)
    d = 12
    concept = rng.normal(size=d)
    stable = np.arange(d) < 4
    n = 400
    y = np.zeros(n, bool)
    y[::20] = True  # 20 occurrences
    s = rng.normal(size=(n, d)) * 3.0
    s[np.ix_(y, stable)] = concept[stable]  # exactly fixed: every occurrence has MSE 0
    sweep = chunks.sweep_template(s, y, 5, np.random.default_rng(0),
                                  tolerances=(100.0, 0.1, 0.0))
    # 100 keeps every neuron (the varying ones too); 0.1 keeps the 4 stable neurons and
    # detects every occurrence and nothing else; 0 keeps none and detects nothing.
    np.testing.assert_array_equal(sweep.num_neurons, [d, 4, 0])
    assert sweep.tolerance == 0.1
    np.testing.assert_array_equal(sweep.template.neuron_mask, stable)
    assert sweep.tpr[1] == 1.0 and sweep.fpr[1] == 0.0 and sweep.accuracy[1] == 1.0
    assert sweep.tpr[2] == 0.0 and sweep.fpr[2] == 0.0
    # The authors' AUC: trapezoid over the sweep's points sorted by FPR, (1, 1) appended.
    f, t = sweep.fpr[0], sweep.tpr[0]
    assert 0 < f < 1
    expected = np.trapezoid([0.0, 1.0, t, 1.0], [0.0, 0.0, f, 1.0])
    assert sweep.auc == pytest.approx(expected)
    assert len(sweep.occurrences) == 5 and y[sweep.occurrences].all()
    with pytest.raises(ValueError, match="occurrences"):
        chunks.sweep_template(s, np.zeros(n, bool), 5, np.random.default_rng(0))
