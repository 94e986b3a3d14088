"""Basis comparison: the toy ground truth (dictionary recovers the features, codes less
polysemantic than neurons), a smoke run of the quick config with tiny overrides, and the LLM
path (MLP-activation site, SAE basis, SVI) on a tiny random LLaMA."""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest

import bablate as bb
from bablate.runner import runs
from bablate.studies.basis_comparison import bases, config, reading
from bablate.studies.basis_comparison import toy as toy_step
from bablate.studies.basis_comparison.variants import get_config


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_shared_enumeration_matches_per_task_exact():
    from bablate.models import toy

    c = get_config("quick")
    c.toy.num_positive = c.toy.num_negative = 16
    cfg = config.from_config(c)
    spec = toy_step.toy_spec(cfg.toy)
    params = toy.init_params(spec, jax.random.key(0))
    tasks = toy_step.toy_tasks(spec, params, 0.3, cfg.toy, jax.random.key(1))[:3]
    rotated = bases.rebase(tasks, bases.random_rotation(jax.random.key(2), spec.m_hidden))
    assert isinstance(rotated, bb.TaskSet) and len(rotated) == 3  # still one site, one dataset
    assert all(t.site is rotated.site for t in rotated)
    shared = bb.infer_many(rotated, "exact")  # one enumeration for the three tasks
    for task, post in zip(rotated, shared, strict=True):
        ref = bb.infer(task, method="exact")
        np.testing.assert_allclose(post.marginals, ref.marginals, atol=1e-6)
        np.testing.assert_allclose(post.log_probs, ref.log_probs, atol=1e-5)
    # One network run for the three rules gives each task's own P(correct).
    masks = (np.random.default_rng(0).random((3, 4, spec.m_hidden)) < 0.5).astype(np.float32)
    many = reading.p_correct_own(rotated, masks)
    for j, task in enumerate(rotated):
        np.testing.assert_allclose(many[j], task.p_correct(masks[j]), atol=1e-6)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("huge")
    c = get_config("quick")
    c.toy.dictionary.methods = ""
    with pytest.raises(ValueError, match="dictionary.methods is empty"):
        config.from_config(c)
    c = get_config("llm")
    cfg = config.from_config(c)
    assert cfg.llm.enabled and not cfg.toy.enabled
    # The LLM layer is read by SVI, with the settings of the study's variants.py.
    assert cfg.llm.svi == config.SVIConfig(estimator="concrete", num_steps=80, num_particles=16,
                                           learning_rate=0.15, temperature=0.5)
    assert cfg.llm.fit_concepts == cfg.llm.concepts  # () = fit on the task concepts
    c.llm.concepts = ("cheese",)
    with pytest.raises(ValueError, match="at least two concepts"):
        config.from_config(c)


@pytest.mark.slow
def test_llm_path_on_a_tiny_llama_with_svi():
    """Two prompt sets on one MLP layer of a random LLaMA, read in neurons and in a top-k SAE
    (with its center as a unit) with the study's SVI: both bases reproduce the intact model,
    ablating every SAE unit leaves only the reconstruction error, and a code that is zero on
    every prompt of a task keeps exactly the prior (its Concrete gradient is zero)."""
    import jax.numpy as jnp

    from bablate import dictionary as dl
    from bablate import llm
    from bablate.models import llama
    from bablate.testbeds import llama as llama_testbed

    # One layer: the suffix is the MLP output and the unembedding (cheap to compile); the path
    # through later layers is checked against a numpy forward in tests/test_llama.py.
    cfg = llama.LlamaConfig(vocab_size=32, num_layers=1, width=32, mlp_width=48, num_heads=4,
                            num_kv_heads=2, rope_base=10000.0)
    params = llama.init_params(cfg, jax.random.key(0), scale=0.25)
    rng = np.random.default_rng(0)
    tasks, acts = [], []
    for t in range(2):
        prompts = llm.Prompts(rng.integers(3, cfg.vocab_size, (6, 5)).astype(np.int32),
                              np.ones((6, 5), bool))
        act, logits = llm.mlp_activations(params, cfg, prompts, 0, with_logits=True)
        acts.append(np.asarray(act).reshape(-1, cfg.mlp_width))
        site, inputs = llm.build_mlp_site(params, cfg, 0, prompts,
                                          targets=np.asarray(jnp.argmax(logits, -1)))
        tasks.append(bb.Task.build(site, inputs, llm.target_rule(), name=f"set{t}"))
    sae, _ = dl.fit(llama_testbed.unique_rows(np.concatenate(acts)),
                    dl.DictionaryConfig("sae_topk", 24, steps=60, top_k=3, chunk=60),
                    jax.random.key(1))
    basis = bases.CenterUnitBasis.wrap(sae)
    assert basis.num_units == 25
    # Every unit ablated = the activation minus its reconstruction (the error term only).
    act = tasks[0].data["act"]
    site = bases.rebase(tasks[:1], basis)[0].site
    masked = bb.mask_activation(act, jnp.zeros(25), 0.0, basis=basis)
    np.testing.assert_allclose(masked, act - sae.decode(sae.encode(act)), atol=1e-5)
    np.testing.assert_array_equal(bb.mask_activation(act, jnp.ones(25), 0.0, basis=basis), act)
    assert site.num_units == 25

    svi = config.SVIConfig(num_steps=10, num_particles=8, learning_rate=0.2)
    out = reading.compare_bases(tasks, {"neuron": None, "sae_topk": basis}, svi,
                                jax.random.key(3), (1, 4), "tiny")
    for name, d in (("neuron", cfg.mlp_width), ("sae_topk", 25)):
        m = out[name]
        assert m["method"] == "svi-concrete" and m["num_units"] == d
        np.testing.assert_allclose(m["p_correct_intact"], [7 / 8, 7 / 8])  # (6 + 1)/(6 + 2)
        assert np.isnan(m["total_correlation_mean"])  # mean-field: no TC
        assert np.isfinite(m["polysemanticity_weighted"])
    for t, task in enumerate(tasks):
        codes = np.asarray(sae.encode(task.data["act"]))[:, 0]  # last position, [N, 24]
        silent = ~(np.abs(codes) > 0).any(0)
        assert silent.any() and (~silent).any()
        importance = np.asarray(out["sae_topk"]["unit_importance"][t])[:24]
        np.testing.assert_array_equal(importance[silent], 0.5)
        assert np.abs(importance[~silent] - 0.5).max() > 0.01


def test_named_keys_are_the_fold_ins_the_study_has_always_used():
    """The named keys equal the fold-in chains of the flat study, so results do not move."""
    from bablate.studies.basis_comparison.keys import StudyKeys, rerun_key

    root = jax.random.key(5)
    keys = StudyKeys.from_root(root, num_densities=3)
    f, data = jax.random.fold_in, jax.random.key_data
    k_toy, k_rnn, k_llm = f(root, 1), f(root, 2), f(root, 3)
    for k in range(3):
        np.testing.assert_array_equal(data(keys.toy.train[k]), data(f(k_toy, k)))
        inst = keys.toy.instances[k]
        for j, got in enumerate((inst.fit, inst.tasks, inst.dictionary, inst.rotation,
                                 inst.inference)):
            np.testing.assert_array_equal(data(got), data(f(k_toy, 100 * (k + 1) + j)))
    for net, k_net in ((keys.rnn, k_rnn), (keys.llm, k_llm)):
        for j, got in enumerate((net.train, net.dictionary, net.rotation, net.inference,
                                 net.stability)):
            np.testing.assert_array_equal(data(got), data(f(k_net, j)))
    np.testing.assert_array_equal(data(rerun_key(keys.llm.stability, 2, 1)),
                                  data(f(f(k_llm, 4), 1000 * 3 + 1)))


def test_the_study_imports_no_other_study():
    import ast
    from pathlib import Path

    import bablate.studies.basis_comparison as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("bablate.studies"):
                    assert name.startswith("bablate.studies.basis_comparison"), (path.name, name)
        assert len(path.read_text().splitlines()) <= 400, path.name


def _synthetic_results() -> dict:
    """A results dict of two networks whose basis sets differ (toy: 4 bases, rnn: 3), with
    task names holding '|' as the toy |x| tasks do; the rnn's neuron units carry ~0.02 bit,
    its dictionary's up to 0.8 bit."""
    rng = np.random.default_rng(0)

    def basis(d, tasks, scale):
        info = rng.uniform(0, scale, (len(tasks), d))
        return {"tasks": tasks, "unit_information": info.tolist(),
                "task_information": info.sum(1).tolist(),
                "effective_units": [2.0] * len(tasks), "effective_units_mean": 2.0,
                "distributedness_mean": 0.4, "total_correlation_mean": 0.1,
                "polysemanticity_mean": 1.5, "informative_tasks": len(tasks), "num_units": d}

    toy_tasks = ["|x0|", "|x1|"]
    inst = {"density": 0.03, "true_directions": ["+x0", "-x0", "+x1"],
            "recovery": {"nmf": [0.9, 0.8, 1.0], "sae_topk": [1.0, 0.95, 0.7]},
            "dictionaries": {"nmf": {"fvu": 0.1, "l0": 1.0},
                             "sae_topk": {"fvu": 0.2, "l0": 1.0}},
            "bases": {"neuron": basis(5, toy_tasks, 0.3), "rotation": basis(5, toy_tasks, 0.3),
                      "nmf": basis(8, toy_tasks, 0.3), "sae_topk": basis(8, toy_tasks, 0.3)}}
    rnn_tasks = ["ABCD", "GHI"]
    rnn = {"network": "rnn", "dictionaries": {"sae_topk": {"fvu": 0.1, "l0": 1.0}},
           "bases": {"neuron": basis(12, rnn_tasks, 0.02),
                     "rotation": basis(12, rnn_tasks, 0.1),
                     "sae_topk": basis(16, rnn_tasks, 0.8)}}
    return {"toy": {"network": "toy |x| 8->5", "instances": [inst]}, "rnn": rnn}


def test_markdown_table_escapes_pipes_in_every_cell():
    from bablate.studies.basis_comparison import report, summary

    rows = summary.table_rows(_synthetic_results())
    table = report.markdown_table(rows).splitlines()
    n_cols = len(report.COLUMNS) + 2

    def cells(line):  # split on the '|' markdown reads as a cell border (not on '\|')
        return re.split(r"(?<!\\)\|", line)[1:-1]

    assert all(len(cells(line)) == n_cols for line in table), table
    assert any("toy \\|x\\| 8->5" in line for line in table)


def test_each_basis_has_one_colour_in_every_panel_and_figure():
    from matplotlib.colors import to_rgba

    from bablate.studies.basis_comparison import plots, summary

    results = _synthetic_results()
    seen: dict[str, set] = {}

    def note(name, colour):
        seen.setdefault(name, set()).add(tuple(np.round(to_rgba(colour), 6)))

    fig = plots.fig_metrics(summary.table_rows(results))
    for ax in fig.axes:
        names = [t.get_text() for t in ax.get_xticklabels()]
        for name, bar in zip(names, ax.patches, strict=True):
            note(name, bar.get_facecolor())
    for ax in plots.fig_share_curves(results).axes:
        for line in ax.get_lines():
            note(line.get_label(), line.get_color())
    for ax in plots.fig_recovery(results["toy"]["instances"]).axes:
        for container in ax.containers:
            note(container.get_label(), container.patches[0].get_facecolor())
    assert {"neuron", "rotation", "nmf", "sae_topk"} <= set(seen)
    assert all(len(c) == 1 for c in seen.values()), seen
    assert len({next(iter(c)) for c in seen.values()}) == len(seen)  # distinct bases differ


def test_information_panels_share_one_colour_scale_in_bits():
    from bablate.studies.basis_comparison import plots

    rnn = _synthetic_results()["rnn"]
    fig = plots.fig_information(rnn, "rnn")
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3
    assert len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1
    top = max(float(np.max(m["unit_information"])) for m in rnn["bases"].values())
    assert images[0].norm.vmax == pytest.approx(top)  # the 0.02-bit panel is drawn dim
    bars = [ax for ax in fig.axes if not ax.get_images() and "bits" in ax.get_ylabel()]
    assert len(bars) == 1  # one colourbar for the figure, labelled in bits
