"""bablate.testbeds.counts: count sites whose exact AMD is known at any d, checked against
their own definition (k(c) correct examples at group counts c), permutation invariance within
groups, and exact enumeration of all 2^d masks on a small site."""

import itertools

import numpy as np
import pytest

import bablate as bb
from bablate.testbeds import counts


def _small() -> counts.CountSpec:
    table = np.array([[0, 2, 5], [1, 3, 6], [2, 6, 8]])
    return counts.CountSpec("small", 7, ((0, 1), (2, 3)), 8, table)


def test_the_network_gets_k_of_c_examples_right_at_every_count():
    spec = _small()
    task = counts.count_task(spec)
    masks, ks = [], []
    for bits in itertools.product((0, 1), repeat=7):
        m = np.asarray(bits, np.float32)
        masks.append(m)
        ks.append(spec.correct[int(m[0] + m[1]), int(m[2] + m[3])])
    p = task.p_correct(np.asarray(masks))
    np.testing.assert_allclose(p, (np.asarray(ks) + 1) / (8 + 2), rtol=1e-6)


def test_exact_answer_equals_enumeration_of_every_mask():
    spec = _small()
    task = counts.count_task(spec)
    for prior, beta in ((0.5, 1.0), (0.3, 2.0)):
        answer = counts.exact_answer(spec, task, prior, beta)
        exact = bb.infer(task, "exact", prior=prior, beta=beta)
        np.testing.assert_allclose(answer.marginals, exact.marginals, atol=1e-6)
        assert answer.log_z == pytest.approx(exact.diagnostics["log_z"], abs=1e-5)
        assert answer.entropy_bits == pytest.approx(exact.entropy_bits, abs=1e-4)
        # The irrelevant units (4, 5, 6) keep their prior.
        np.testing.assert_allclose(answer.marginals[4:], prior, atol=1e-6)


def test_the_study_regimes_have_the_shapes_they_claim():
    near, bimodal = counts.near_prior(), counts.bimodal()
    assert near.num_units == bimodal.num_units == 270
    assert near.sizes == (12, 12, 12) and bimodal.sizes == (5, 5)
    # Near the prior: most masks of the prior get nothing right, the kept-share beyond the
    # threshold gets (nearly) everything right.
    assert near.correct[6, 6, 6] == 0 and near.correct[-1, -1, -1] == near.num_examples
    # Bimodal: only the two mirror-image corners score.
    assert np.count_nonzero(bimodal.correct) == 2
    assert bimodal.correct[5, 0] == 100 and bimodal.correct[0, 5] == 90


@pytest.mark.parametrize("args,message", [
    (dict(groups=((0, 1), (1, 2))), "disjoint"),
    (dict(correct=np.zeros((2, 2), int)), "must have shape"),
    (dict(correct=np.full((3, 3), 9)), "must lie in"),
])
def test_bad_specs_are_refused_in_one_line(args, message):
    base = dict(name="bad", num_units=5, groups=((0, 1), (2, 3)), num_examples=8,
                correct=np.zeros((3, 3), int))
    with pytest.raises(ValueError, match=message):
        counts.CountSpec(**{**base, **args})
