"""The RNN-chunks study: its typed config, its keys, its untrained network, and a smoke run of
every config variant."""

import json

import jax
import numpy as np
import pytest

from bablate import runs, sequences
from bablate.models import rnn
from bablate.studies import rnn_chunks
from bablate.studies.rnn_chunks import config as study_config
from bablate.studies.rnn_chunks import training
from bablate.studies.rnn_chunks import variants as rnn_config

TINY = {"compare_seeds": 1, "train.steps": 20, "train.chunk": 20, "train.eval_every": 20,
        "dsc.max_tokens": 2000, "grafting.seeds": 2, "grafting.steps": 5,
        "grafting.eval_every": 5, "grafting.chunk": 5, "ablation.windows": 1,
        "ablation.window": 50, "ablation.max_tasks": 1, "ablation.min_examples": 2,
        "ablation.mcmc.num_samples": 10, "ablation.mcmc.num_warmup": 5,
        "ablation.mcmc.num_chains": 1}
N_DRAWS = {"reflection": 60, "compositional": 300, "context": 400, "hierarchy": 1500}


@pytest.mark.slow
@pytest.mark.parametrize("variant", rnn_config.VARIANTS)
def test_every_variant_runs_tiny(variant, tmp_path):
    config = rnn_config.get_config(variant)
    for key, value in {**TINY, "n_draws": N_DRAWS[config.family]}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
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
    assert set(results["dsc"]) == {"long", "authors"}
    for d in results["dsc"].values():
        assert set(d) == {"trained", "untrained"}
        assert d["trained"]["n_unique_states"] >= 1
    # The headline keys are the long protocol's.
    assert results["dsc"]["long"]["trained"]["vocab_size"] == results["vocab_size"]["trained"]
    if config.ablation.enabled:
        for key in ("unit_importance", "polysemanticity_mean", "distributedness_mean",
                    "ablation_chunk_agreement"):
            assert key in results, key
        assert len(results["unit_importance"][0]) == config.model.hidden
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
    assert cfg.train == rnn.TrainConfig(**config.train.to_dict())
    assert cfg.dsc.protocols == ("long", "authors")
    assert cfg.ablation.rules == ("smooth_top1",)
    assert cfg.ablation.mcmc.num_samples == 600 and cfg.grafting.enabled is False
    config.ablation.mcmc.num_smaples = 5
    with pytest.raises(runs.ConfigError, match=r"config\.ablation\.mcmc\.num_smaples is not a "
                                               r"field of MCMCConfig"):
        study_config.validate(config)


def test_keys_are_named_and_keep_their_values():
    """Network s trains with key(s) (whichever seed the run starts from); the transfer runs of
    seed s use key(s); the ablation's MCMC keys fold task indices into key(cfg.seed)."""
    config = rnn_config.get_config("quick")
    config.seed = 5
    cfg = study_config.from_config(config)
    keys = rnn_chunks.study_keys(cfg)
    data = jax.random.key_data
    assert list(keys.networks) == [5, 6, 7] and list(keys.transfer) == [5, 6, 7, 8]
    for s in (5, 6, 7):
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
    plots.dsc_comparison(Ctx(), {"long": {"trained": [row], "untrained": [row]}}, "context")
    titles = [ax.get_title() for ax in figs[0].axes]
    assert len(titles) == 5 and not any("gt5" in t or "_" in t or " n " in t for t in titles)


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
