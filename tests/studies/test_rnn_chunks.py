"""The RNN-chunks study: its typed config, its keys, its untrained network, its training
recipes, the intervals and agreements of its claims, the headline rule, and a smoke run of
every config variant."""

import json
import math

import jax
import numpy as np
import pytest

import bablate as bb
from bablate import errors
from bablate.models import rnn
from bablate.runner import runs
from bablate.studies import rnn_chunks
from bablate.studies.rnn_chunks import ablation, intervals, training
from bablate.studies.rnn_chunks import config as study_config
from bablate.studies.rnn_chunks import variants as rnn_config
from bablate.testbeds import sequences

TINY = {"compare_seeds": 1, "train.steps": 20, "train.chunk": 20, "train.eval_every": 20,
        "train.authors_steps": 20, "train.authors_window": 100,
        "dsc.max_tokens": 2000, "grafting.seeds": 2, "grafting.steps": 5,
        "grafting.eval_every": 5, "grafting.chunk": 5, "ablation.windows": 1,
        "ablation.window": 50, "ablation.max_tasks": 1, "ablation.min_examples": 2,
        "ablation.mcmc.num_samples": 10, "ablation.mcmc.num_warmup": 5,
        "ablation.mcmc.num_chains": 1}
N_DRAWS = {"reflection": 60, "compositional": 300, "context": 400, "hierarchy": 1500}


def _tiny(variant: str, **more):
    config = rnn_config.get_config(variant)
    for key, value in {**TINY, "n_draws": N_DRAWS[config.family], **more}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.mark.slow
@pytest.mark.parametrize("variant", rnn_config.VARIANTS)
def test_every_variant_runs_tiny(variant, tmp_path):
    config = _tiny(variant)
    if config.model.hidden > 16:
        config.model.hidden = 17  # keeps the MCMC path (hidden > 16) but small
    if variant not in ("quick", "tanh64"):  # those two cover ablation (exact, MCMC), grafting
        config.ablation.enabled = False
        config.grafting.enabled = False
    assert runs.run_one(config, tmp_path / variant) == "ran"
    results = json.loads((tmp_path / variant / "results.json").read_text())
    for key in ("accuracy", "decoding_accuracy", "n_unique_states", "vocab_size",
                "vocab_size_count_gt5", "parse_length"):
        assert key in results, key
    assert set(results["n_unique_states"]) == {"trained", "untrained"}
    assert set(results["dsc"]) == {"bablate", "authors"}
    for by_protocol in results["dsc"].values():
        assert set(by_protocol) == {"long", "authors"}
        for d in by_protocol.values():
            assert set(d) == {"trained", "untrained", "trained_minus_untrained"}
            assert d["trained"]["n_unique_states"] >= 1
    # The headline keys are our recipe's long protocol's.
    assert (results["dsc"]["bablate"]["long"]["trained"]["vocab_size"]
            == results["vocab_size"]["trained"])
    if config.ablation.enabled:
        for key in ("unit_importance", "polysemanticity_mean", "distributedness_mean",
                    "ablation_chunk_agreement", "ablation_headline_rule"):
            assert key in results, key
        assert len(results["unit_importance"][0]) == config.model.hidden
        head = results["ablation_headline_rule"]
        assert results["ablation"]["rule"] == head in config.ablation.rules
        for rule in set(config.ablation.rules) - {head}:
            assert results[f"ablation_{rule}"]["rule"] == rule
        for kind in ("dsc", "pa"):
            a = results["ablation"]["agreement"][kind]
            assert a["rho"] is None or a["lo"] <= a["rho"] <= a["hi"]
    report = (tmp_path / variant / "report.md").read_text()
    assert "## What reproduced" in report and "## What did not" in report
    assert (tmp_path / variant / "figures" / "dsc_trained_vs_untrained.png").exists()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        rnn_config.get_config("nope")


def test_untrained_network_is_the_trained_networks_own_start():
    cfg = study_config.from_config(rnn_config.get_config("quick"))
    seq = sequences.reflection(0, n_repeats=60)
    tc = rnn.TrainConfig(steps=0, batch=2, chunk=10, eval_every=0)
    start, _ = rnn.train(cfg.model, tc, seq.tokens, jax.random.key(7))
    jax.tree.map(np.testing.assert_array_equal,
                 training.initial_variables(cfg.model, jax.random.key(7)), start)


def test_dsc_protocol_is_checked():
    assert study_config.dsc_protocols("both") == ("long", "authors")
    assert study_config.dsc_protocols("authors") == ("authors",)
    with pytest.raises(ValueError, match="dsc.protocol"):
        study_config.dsc_protocols("paper")


def test_config_is_nested_and_mirrors_the_config_file():
    config = rnn_config.get_config("tanh64")
    cfg = study_config.from_config(config)
    assert cfg.model == rnn.RNNConfig(num_symbols=cfg.model.num_symbols, hidden=64,
                                      cell="tanh")
    ours = {k: v for k, v in config.train.to_dict().items()
            if k not in ("recipe", "authors_steps", "authors_window")}
    assert cfg.train.of("bablate") == rnn.TrainConfig(**ours)
    assert cfg.dsc.protocols == ("long", "authors")
    assert cfg.ablation.rules == ("smooth_top1",)
    assert cfg.ablation.mcmc.num_samples == 600 and cfg.grafting.enabled is False
    config.ablation.mcmc.num_smaples = 5
    with pytest.raises(errors.ConfigError, match=r"config\.ablation\.mcmc\.num_smaples is not a "
                                               r"field of MCMCConfig"):
        study_config.validate(config)


def test_keys_are_named_and_keep_their_values():
    """Network s trains with key(s) (whichever seed the run starts from, by every recipe); the
    transfer runs of seed s use key(s); the ablation's MCMC keys fold task indices into
    key(cfg.seed); the bootstrap draws from cfg.seed."""
    config = rnn_config.get_config("quick")
    config.seed = 5
    cfg = study_config.from_config(config)
    keys = rnn_chunks.study_keys(cfg)
    data = jax.random.key_data
    assert list(keys.networks) == [5, 6, 7, 8] and list(keys.transfer) == [5, 6, 7, 8]
    assert keys.bootstrap == 5
    for s in (5, 6, 7, 8):
        np.testing.assert_array_equal(data(keys.networks[s]), data(jax.random.key(s)))
    np.testing.assert_array_equal(data(keys.transfer[8]), data(jax.random.key(8)))
    np.testing.assert_array_equal(data(keys.ablation), data(jax.random.key(5)))


def test_perturbation_legend_covers_no_bar():
    from bablate.studies.rnn_chunks import plots

    figs = []

    class Ctx:
        def figure(self, fig, name, caption):
            figs.append(fig)

    pert = [{"inject": s, "feed": f, "expect": e, "p_expect_injected": 1.0,
             "p_expect_control": 0.0} for s, f, e in ("ABC", "BCD", "LMN")]
    plots.perturbation(Ctx(), pert)
    fig = figs[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in ax.patches
                   if bar.get_width() > 0)


def test_dsc_panel_titles_are_words_not_result_keys():
    from bablate.studies.rnn_chunks import plots

    figs = []

    class Ctx:
        def figure(self, fig, name, caption):
            figs.append(fig)

    row = {"n_unique_states": 5, "vocab_size": 6, "vocab_size_count_gt5": 2,
           "parse_length": 40, "decoding_accuracy": 0.9}
    rows = {"trained": [row], "untrained": [row]}
    plots.dsc_comparison(Ctx(), {"authors": {"long": rows}}, "context")
    titles = [ax.get_title() for ax in figs[0].axes]
    assert len(titles) == 5 and all("authors training, long DSC" in t for t in titles)
    assert not any("gt5" in t or "_" in t or " n " in t for t in titles)


def test_unit_importance_figure_is_the_library_heatmap_of_the_results():
    from bablate.studies.rnn_chunks import plots

    figs = []

    class Ctx:
        def figure(self, fig, name, caption):
            figs.append((fig, name, caption))

    imp = [[0.5, 0.9, 0.2], [0.45, 0.5, 0.7]]
    abl = {"unit_importance": imp, "tasks": ["ABCD", "GHI"], "method": "exact", "rule": "x"}
    plots.unit_importance(Ctx(), abl, "unit_importance_x")
    fig, name, caption = figs[0]
    ax = fig.axes[0]
    assert name == "unit_importance_x" and "0.5 = irrelevant" in caption
    np.testing.assert_allclose(ax.images[0].get_array(), imp)
    assert ax.images[0].get_clim() == (0.0, 1.0)  # one fixed scale, diverging around 0.5
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ABCD", "GHI"]
    assert ax.get_ylabel() == "chunk task" and ax.get_xlabel() == "hidden unit"
    assert fig.axes[1].get_ylabel() == "unit importance q(m_i = 1)"


@pytest.mark.slow
def test_authors_recipe_runs_and_records_per_seed_counts(tmp_path):
    """Both recipes train from the same start: the untrained rows agree, the trained networks
    differ, the authors' network took authors_steps steps of one authors_window window, and
    dsc[recipe][protocol] holds per-seed counts, means, ranges and paired differences."""
    config = _tiny("context", compare_seeds=2, perturbation=False,
                   **{"ablation.enabled": False, "train.authors_steps": 30,
                      "train.authors_window": 150})
    assert runs.run_one(config, tmp_path) == "ran"
    results = json.loads((tmp_path / "results.json").read_text())
    dsc = results["dsc"]
    assert results["dsc_primary_recipe"] == "bablate"
    for protocol in ("long", "authors"):
        ours, theirs = dsc["bablate"][protocol], dsc["authors"][protocol]
        assert ours["untrained"]["per_seed"] == theirs["untrained"]["per_seed"]
        for d in (ours, theirs):
            for net in ("trained", "untrained"):
                counts = d[net]["per_seed"]["n_unique_states"]
                assert len(counts) == 2 and all(c >= 1 for c in counts)
                assert d[net]["n_unique_states"] == pytest.approx(np.mean(counts))
                assert d[net]["range"]["n_unique_states"] == [min(counts), max(counts)]
            diff = np.subtract(d["trained"]["per_seed"]["vocab_size"],
                               d["untrained"]["per_seed"]["vocab_size"])
            got = d["trained_minus_untrained"]["vocab_size"]
            assert got["mean"] == pytest.approx(diff.mean()) and got["n"] == 2
            assert got["lo"] <= got["mean"] <= got["hi"]
    for s in (0, 1):
        theirs, _ = bb.read_checkpoint(tmp_path / "state" / f"net_authors_seed{s}.msgpack")
        ours, _ = bb.read_checkpoint(tmp_path / "state" / f"net_seed{s}.msgpack")
        assert theirs["history"]["step"][-1] == 30
        assert ours["history"]["step"][-1] == config.train.steps
        kernel = lambda t: t["variables"]["params"]["update"]["kernel"]  # noqa: E731
        assert not np.allclose(kernel(theirs), kernel(ours))  # two networks per seed


def test_authors_recipe_is_their_iterations_and_window():
    cfg = study_config.from_config(rnn_config.get_config("context"))
    assert cfg.train.recipes == ("bablate", "authors")
    theirs = cfg.train.of("authors")
    assert (theirs.steps, theirs.window, theirs.batch) == (200, 2000, 1)
    assert theirs.learning_rate == cfg.train.of("bablate").learning_rate == 5e-3
    assert theirs.steps % theirs.chunk == 0
    assert study_config.train_recipes("authors") == ("authors",)
    with pytest.raises(ValueError, match="train.recipe"):
        study_config.train_recipes("paper")


def test_a_window_longer_than_the_sequence_is_one_config_line():
    config = rnn_config.get_config("quick")
    config.train.authors_window = 10 ** 6
    with pytest.raises(errors.ConfigError, match=r"train\.authors_window = 1000000 is not "
                                               r"shorter than the compositional sequence"):
        study_config.validate(config)


# ---- intervals and agreements -------------------------------------------------------------

def test_t_interval_against_its_closed_form():
    # Two seeds: one degree of freedom, where Student's t is Cauchy: t_0.975 = tan(0.475 π).
    ci = intervals.mean_ci(np.array([0.0, 2.0]))
    assert ci["mean"] == 1.0
    assert ci["ci95"] == pytest.approx(math.tan(0.475 * math.pi) * math.sqrt(2) / math.sqrt(2))
    d = intervals.paired_difference([5.0, 9.0], [1.0, 3.0])  # differences 4, 6
    half = math.tan(0.475 * math.pi) * math.sqrt(2) / math.sqrt(2)
    assert (d["mean"], d["n"]) == (5.0, 2)
    assert (d["lo"], d["hi"]) == pytest.approx((5.0 - half, 5.0 + half))
    one = intervals.paired_difference([5.0], [1.0])  # one seed: no spread, no interval
    assert one["mean"] == 4.0 and math.isnan(one["lo"]) and math.isnan(one["hi"])


def test_bootstrap_interval_of_a_mean_matches_the_normal_closed_form():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=4000)
    lo, hi, used = intervals.bootstrap_interval(lambda idx: x[idx].mean(1), x.size,
                                                np.random.default_rng(2))
    half = 1.959964 * x.std(ddof=1) / math.sqrt(x.size)
    assert used == intervals.RESAMPLES
    assert lo == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_row_spearman_is_scipys_with_ties_and_nan_for_a_constant_row():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(3, 12)).astype(float)  # ties
    y = rng.normal(size=(3, 12))
    want = [stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(intervals.row_spearman(x, y), want, rtol=1e-12)
    assert np.isnan(intervals.row_spearman(np.ones((1, 5)), y[:1, :5])[0])


def test_rank_agreement_of_known_cases():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(2, 12))
    same = intervals.rank_agreement(x, x ** 2, rng)  # monotone in every chunk: ρ = 1 always
    assert (same["rho"], same["lo"], same["hi"]) == (1.0, 1.0, 1.0)
    mixed = intervals.rank_agreement(x, np.stack([x[0], -x[1]]), rng)  # +1 and -1
    assert mixed["per_chunk"] == pytest.approx([1.0, -1.0]) and mixed["rho"] == 0.0
    flat = intervals.rank_agreement(np.ones((2, 12)), x, rng)  # constant importances
    assert math.isnan(flat["rho"]) and flat["resamples"] == 0


def test_headline_rule_is_read_from_task_information_not_from_the_name():
    flat, info = {"task_information": [0.03, 0.0]}, {"task_information": [0.4, 0.2]}
    assert ablation.headline_rule({"top1": flat, "smooth_top1": info}) == "smooth_top1"
    assert ablation.headline_rule({"top1": info, "smooth_top1": info}) == "top1"
    assert ablation.headline_rule({"smooth_top1": flat, "top1": info}) == "top1"
    # None informative: the one that carries the most.
    assert ablation.headline_rule({"top1": flat, "smooth_top1":
                                   {"task_information": [0.05]}}) == "smooth_top1"
    assert ablation.headline_rule({"top1": {}}) is None


def test_pa_agreement_reads_template_membership_and_skips_chunks_without_one():
    imp = [[0.9, 0.8, 0.2, 0.1], [0.1, 0.2, 0.8, 0.9], [0.5, 0.6, 0.4, 0.3]]
    abl = {"tasks": ["AB", "CD", "EF"], "unit_importance": imp,
           "dsc_information": [[4, 3, 2, 1], [1, 2, 3, 4], [1, 2, 3, 4]]}
    pa = {"AB": {"neuron_mask": [True, True, False, False]},
          "CD": {"neuron_mask": [True, True, False, False]}, "EF": {"num_neurons": 0}}
    g = ablation.agreement(abl, pa, np.random.default_rng(0))
    # AB: template units are the important ones (+), CD: the unimportant ones (-).
    assert g["pa"]["chunks"] == ["AB", "CD"]
    assert g["pa"]["per_chunk"][0] > 0 > g["pa"]["per_chunk"][1]
    assert g["dsc"]["per_chunk"] == pytest.approx([1.0, 1.0, -0.8])


def test_report_sorts_dsc_claims_by_their_intervals():
    from bablate.studies.rnn_chunks import report

    def summary(states, diff_lo, diff_hi):
        iv = {"mean": states, "lo": states - 20.0, "hi": states + 20.0, "n": 4}
        diff = {"mean": (diff_lo + diff_hi) / 2, "lo": diff_lo, "hi": diff_hi, "n": 4}
        return {"trained": {"interval": {"n_unique_states": iv}},
                "untrained": {"interval": {"n_unique_states": {**iv, "mean": 41.0, "lo": 35.0,
                                                               "hi": 47.0}}},
                "trained_minus_untrained": {"n_unique_states": diff, "vocab_size": diff}}

    cfg = study_config.from_config(rnn_config.get_config("context"))
    r = {"dsc": {"bablate": {"authors": summary(150.0, 80.0, 120.0)},
                 "authors": {"authors": summary(370.0, -10.0, 600.0)}}}
    good, bad = report._dsc_claims(cfg, r)
    assert any("bablate training, authors DSC" in g and "more DSC states" in g for g in good)
    assert any("not resolved" in b and "authors training" in b for b in bad)
    # The paper's 364.5 lies above ours [130, 170] and inside theirs [350, 390]; its untrained
    # 41.0 inside [35, 47], said once.
    assert any("bablate training" in b and "lies above" in b for b in bad)
    assert any("authors training" in g and "lies inside" in g for g in good)
    assert sum("Untrained unique states" in g for g in good) == 1
