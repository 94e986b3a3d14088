"""Basis comparison: the toy ground truth (dictionary recovers the features, codes less
polysemantic than neurons) and a smoke run of the quick config with tiny overrides."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import bablate as bb
from bablate import runs
from bablate.studies import basis_comparison as bc
from experiments.basis_comparison import get_config


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick config: the toy part at a smaller but still trained size, the RNN part tiny."""
    c = get_config("quick")
    c.toy.train_steps = 3000
    c.toy.num_positive = c.toy.num_negative = 32
    c.toy.fit_samples = 8192
    c.toy.dictionary.methods = "nmf"
    c.toy.dictionary.steps = 500
    c.rnn.train_steps = 100
    c.rnn.windows = 3
    c.rnn.window = 60
    c.rnn.max_tasks = 2
    c.rnn.min_examples = 5
    c.rnn.fit_tokens = 2000
    c.rnn.dictionary.num_codes = 6
    c.rnn.dictionary.steps = 100
    c.rnn.dictionary.top_k = 2
    workdir = tmp_path_factory.mktemp("basis") / "run"
    runs.run_one(c, workdir)
    return workdir, json.loads((workdir / "results.json").read_text())


def test_toy_dictionary_recovers_true_features_and_is_less_polysemantic(quick_run):
    _, res = quick_run
    inst = res["toy"]["instances"][0]
    # The model is in superposition: more represented half-features ReLU(±W1_i) than neurons.
    assert len(inst["true_directions"]) > get_config("quick").toy.m_hidden
    assert inst["recovery_mean"]["nmf"] > 0.9, inst["recovery"]
    bases = inst["bases"]
    # Codes serve fewer tasks each than neurons; a random rotation is no better than neurons.
    assert bases["nmf"]["polysemanticity_mean"] < bases["neuron"]["polysemanticity_mean"] - 0.3
    assert bases["rotation"]["polysemanticity_mean"] > bases["nmf"]["polysemanticity_mean"]
    # Every basis reproduces the intact network exactly (all-ones mask): same P(correct).
    for name in ("rotation", "nmf"):
        np.testing.assert_allclose(bases[name]["p_correct_intact"],
                                   bases["neuron"]["p_correct_intact"], atol=1e-6)
    assert bases["nmf"]["num_units"] == 16 and bases["neuron"]["num_units"] == 5


def test_quick_smoke_writes_report_dictionaries_and_rnn_comparison(quick_run):
    workdir, res = quick_run
    report = (workdir / "report.md").read_text()
    assert "| network | basis |" in report and "### Verdicts" in report
    assert (workdir / "figures" / "basis_metrics.png").exists()
    assert (workdir / "figures" / "toy_recovery.png").exists()
    assert sorted(p.name for p in (workdir / "dictionaries").iterdir()) == [
        "rnn_sae_topk_6.npz", "toy_d0.03_nmf_16.npz"]
    rnn = res["rnn"]
    assert set(rnn["bases"]) == {"neuron", "rotation", "sae_topk"}
    assert rnn["bases"]["sae_topk"]["num_units"] == 6
    assert rnn["dictionaries"]["sae_topk"]["fvu"] < 1.0
    assert "toy_d0.03_nmf_polysemanticity" in res


def test_shared_enumeration_matches_per_task_exact():
    from bablate.models import toy

    c = get_config("quick")
    c.toy.num_positive = c.toy.num_negative = 16
    cfg = bc.StudyConfig.from_config(c)
    spec = bc.toy_spec(cfg.toy)
    params = toy.init_params(spec, jax.random.key(0))
    tasks = bc.toy_tasks(spec, params, 0.3, cfg.toy, jax.random.key(1))[:3]
    rotated = bc.rebase(tasks, bc.random_rotation(jax.random.key(2), spec.m_hidden))
    shared = bb.infer_many(rotated, "exact")  # one enumeration for the three tasks
    for task, post in zip(rotated, shared, strict=True):
        ref = bb.infer(task, method="exact")
        np.testing.assert_allclose(post.marginals, ref.marginals, atol=1e-6)
        np.testing.assert_allclose(post.log_probs, ref.log_probs, atol=1e-5)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("huge")
    c = get_config("quick")
    c.toy.dictionary.methods = ""
    with pytest.raises(ValueError, match="dictionary.methods is empty"):
        bc.StudyConfig.from_config(c)
