"""bablate.plot: figures hold the numbers they claim, PNGs are valid, report.md links them."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

import bablate as bb
from bablate import chain_plots, plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _exact(name: str, log_w: np.ndarray, d: int = 3) -> bb.Posterior:
    """An exact posterior from unnormalised log weights of the 2^d masks."""
    log_probs = log_w - np.logaddexp.reduce(log_w)
    bits = (np.arange(2**d)[:, None] >> np.arange(d)[None]) & 1
    return bb.Posterior(task=name, method="exact", marginals=np.exp(log_probs) @ bits,
                        prior=np.full(d, 0.5), beta=1.0, log_probs=log_probs, site="s")


def _mcmc(name: str, q: np.ndarray, chains: int = 4, draws: int = 400, rho: float = 0.7,
          seed: int = 0) -> bb.Posterior:
    """Autocorrelated binary chains with marginals near ``q`` (a persistent Bernoulli chain)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, draws, q.size), np.uint8)
    for c in range(chains):
        cur = rng.random(q.size) < q
        for s in range(draws):
            fresh = rng.random(q.size) < q
            cur = np.where(rng.random(q.size) < rho, cur, fresh)
            x[c, s] = cur
    flat = x.reshape(-1, q.size)
    return bb.Posterior(task=name, method="mcmc-test", marginals=flat.mean(0),
                        prior=np.full(q.size, 0.5), beta=1.0, samples=flat, site="s",
                        num_chains=chains, log_density=np.zeros(chains * draws))


@pytest.fixture(scope="module")
def exact_posts():
    rng = np.random.default_rng(1)
    return [_exact("a|b", rng.normal(size=8) * 2), _exact("c", rng.normal(size=8))]


def _assert_png(path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(path)  # decodes the whole file
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_importance_heatmap_holds_the_marginals_on_one_scale(exact_posts, tmp_path):
    fig = plot.importance_heatmap(exact_posts)
    ax = fig.axes[0]
    image = ax.images[0]
    np.testing.assert_allclose(image.get_array(), np.stack([p.marginals for p in exact_posts]))
    assert image.get_clim() == (0.0, 1.0)
    assert fig.axes[1].get_ylabel() == "unit importance q(m_i = 1)"  # the colourbar
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a|b", "c"]
    _assert_png(plot.save_png(fig, tmp_path / "importance.png"))


def test_information_uses_one_colour_scale_in_bits(exact_posts, tmp_path):
    fig = plot.information(exact_posts)
    used_ax, harmful_ax = fig.axes[0], fig.axes[1]
    expected = [bb.metrics.split_information(p.marginals, p.prior) for p in exact_posts]
    used = np.stack([u for u, _ in expected])
    harmful = np.stack([h for _, h in expected])
    np.testing.assert_allclose(used_ax.images[0].get_array(), used)
    np.testing.assert_allclose(harmful_ax.images[0].get_array(), harmful)
    top = max(used.max(), harmful.max())
    assert used_ax.images[0].get_clim() == harmful_ax.images[0].get_clim() == (0.0, top)
    assert {a.get_ylabel() for a in fig.axes[2:]} == {"information (bits)"}
    _assert_png(plot.save_png(fig, tmp_path / "information.png"))


def test_js_matrix_is_joint_for_exact_and_marginal_otherwise(exact_posts):
    fig = plot.js_matrix(exact_posts)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(),
                               bb.metrics.js_matrix(exact_posts))
    assert fig.axes[0].get_title().startswith("Joint")
    sampled = [_mcmc("x", np.array([0.9, 0.2, 0.5])), _mcmc("y", np.array([0.1, 0.8, 0.5]))]
    fig = plot.js_matrix(sampled)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(),
                               bb.metrics.marginal_js_matrix(sampled))
    assert "marginal" in fig.axes[0].get_title() and "not the joint" in fig.axes[0].get_title()


def test_marginal_standard_error_is_sqrt_q_one_minus_q_over_ess():
    post = _mcmc("m", np.array([0.3, 0.6, 0.95]), rho=0.8)
    ess = np.asarray(effective_sample_size(post.chains().astype(np.float64)))
    q = post.marginals
    np.testing.assert_allclose(plot.marginal_standard_error(post), np.sqrt(q * (1 - q) / ess))
    # Autocorrelation (rho = 0.8) makes the error larger than independent draws would give,
    # by about sqrt((1 + rho) / (1 - rho)) = 3.
    naive = np.sqrt(q * (1 - q) / post.samples.shape[0])
    assert np.all(plot.marginal_standard_error(post) > 2 * naive)


def test_marginals_plot_draws_the_intervals(exact_posts, tmp_path):
    post = _mcmc("m", np.array([0.3, 0.6, 0.95]))
    fig = plot.marginals([post, exact_posts[0]])
    ax = fig.axes[0]
    lines = [c for c in ax.containers]
    assert len(lines) == 2
    points, _, (bars,) = lines[0].lines
    np.testing.assert_allclose(points.get_ydata(), post.marginals)
    half = np.array([abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.get_segments()])
    np.testing.assert_allclose(half, plot.Z_95 * plot.marginal_standard_error(post))
    assert np.all(exact_posts[0].marginals == lines[1].lines[0].get_ydata())
    assert "no MC error" in ax.get_legend().get_texts()[1].get_text()  # exact: no interval
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    legend, box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= box.x1  # beside the points, never over them
    _assert_png(plot.save_png(fig, tmp_path / "marginals.png"))


def test_plots_refuse_posteriors_of_different_sites():
    with pytest.raises(ValueError, match="one site"):
        plot.importance_heatmap([_mcmc("a", np.full(3, 0.5)), _mcmc("b", np.full(4, 0.5))])
    with pytest.raises(ValueError, match="at least one posterior"):
        plot.information([])


def test_trace_and_rank_need_chains(exact_posts):
    with pytest.raises(ValueError, match="MCMC chains"):
        plot.trace(exact_posts[0])
    with pytest.raises(ValueError, match="MCMC chains"):
        plot.rank(exact_posts[0])


def test_report_writes_markdown_and_valid_pngs(exact_posts, tmp_path):
    pytest.importorskip("arviz", reason="trace/rank plots need arviz (pip install "
                        "'bablate[arviz]')")
    sampled = _mcmc("sampled", np.array([0.2, 0.7, 0.5]))
    path = plot.report([*exact_posts, sampled], tmp_path / "rep")
    text = path.read_text()
    assert path == tmp_path / "rep" / "report.md"
    # The '|' in the task name "a|b" is escaped, so the table keeps its 8 columns.
    row = next(line for line in text.splitlines() if line.startswith("| a"))
    assert row.startswith("| a\\|b |") and len(re.findall(r"(?<!\\)\|", row)) == 9
    linked = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", text)
    assert {"figures/importance.png", "figures/js_matrix.png", "figures/trace_0.png",
            "figures/rank_0.png"} <= set(linked)
    rank_caption = text.split("](figures/rank_0.png)", 1)[1].strip().splitlines()[0]
    assert "ties broken at random" in rank_caption and "band" in rank_caption
    for rel in linked:
        _assert_png(tmp_path / "rep" / rel)
    assert not list((tmp_path / "rep").rglob(".*.tmp"))  # atomic writes leave no temp files


def test_trace_and_rank_show_the_lowest_ess_units(tmp_path):
    pytest.importorskip("arviz", reason="trace/rank plots need arviz")
    post = _mcmc("m", np.array([0.5, 0.5, 0.5, 0.5, 0.5]), rho=0.5)
    # Unit 3 made sticky: it has the lowest ESS, so it is among the units shown by default.
    x = post.chains().copy()
    x[:, :, 3] = np.repeat(x[:, ::40, 3], 40, axis=1)[:, :x.shape[1]]
    flat = x.reshape(-1, 5)
    post = bb.Posterior(task="m", method="mcmc-test", marginals=flat.mean(0),
                        prior=np.full(5, 0.5), beta=1.0, samples=flat, num_chains=4)
    fig = plot.trace(post, k=2)
    assert "3" in fig._suptitle.get_text()
    _assert_png(plot.save_png(fig, tmp_path / "trace.png"))
    _assert_png(plot.save_png(plot.rank(post, units=[0, 3]), tmp_path / "rank.png"))


def _chain_posterior(x: np.ndarray) -> bb.Posterior:
    """An MCMC posterior of the draws ``x`` [chains, draws, units]."""
    flat = x.reshape(-1, x.shape[-1])
    return bb.Posterior(task="t", method="mcmc-test", marginals=flat.mean(0),
                        prior=np.full(x.shape[-1], 0.5), beta=1.0, samples=flat,
                        num_chains=x.shape[0])


def _rank_bars(fig, chains: int, bins: int) -> list[np.ndarray]:
    """Per drawn unit, the ``[chains, bins]`` bar heights of a rank plot."""
    return [np.rint([p.get_height() for p in ax.patches]).reshape(chains, bins)
            for ax in fig.axes if ax.get_visible() and ax.patches]


def _normal_band(chains: int, draws: int, bins: int) -> float:
    """Half-width of a simultaneous 95 % band of the bars of agreeing chains of independent
    draws, by the normal approximation of a bar's hypergeometric count (independent of the
    exact band the plot draws)."""
    from scipy.stats import norm

    n, share = chains * draws, 1.0 / bins
    sd = np.sqrt(draws * share * (1 - share) * (n - draws) / (n - 1))
    return norm.isf(0.05 / (2 * chains * bins)) * sd


def test_rank_plot_of_identical_well_mixed_chains_is_flat_within_its_band():
    """Four copies of one chain of independent 0/1 draws agree perfectly: every bar lies in
    the band (with average ranks for the ties, as arviz ranks, each chain has spikes and empty
    bins instead)."""
    rng = np.random.default_rng(0)
    draws, bins = 1000, 20
    one = (rng.random((draws, 3)) < np.array([0.5, 0.2, 0.95])).astype(np.uint8)
    post = _chain_posterior(np.stack([one] * 4))
    bars = _rank_bars(plot.rank(post, units=[0, 1, 2], bins=bins), 4, bins)
    assert len(bars) == 3
    half = _normal_band(4, draws, bins)
    for b in bars:
        assert b.sum(1).tolist() == [draws] * 4
        assert np.abs(b - draws / bins).max() <= half + 1, b
    low, high = chain_plots.uniform_band(4, draws, bins)
    np.testing.assert_allclose(high - draws / bins, half, atol=2)
    np.testing.assert_allclose(draws / bins - low, half, atol=2)


def test_rank_plot_shows_chains_that_disagree_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = (rng.random((4, 1000, 1)) < np.array([0.2, 0.5, 0.5, 0.5])[:, None, None])
    post = _chain_posterior(x.astype(np.uint8))
    (bars,) = _rank_bars(plot.rank(post, units=[0], bins=20), 4, 20)
    low, high = chain_plots.uniform_band(4, 1000, 20)
    outside = (bars < low) | (bars > high)
    assert outside[0].any()  # the chain that samples another distribution leaves the band
    again = _rank_bars(plot.rank(post, units=[0], bins=20), 4, 20)[0]
    other = _rank_bars(plot.rank(post, units=[0], bins=20, seed=1), 4, 20)[0]
    np.testing.assert_array_equal(bars, again)
    assert not np.array_equal(bars, other)
    ranks = chain_plots.tie_broken_ranks(x[:, :, 0], seed=3)
    assert sorted(ranks.ravel()) == list(range(4000))  # a permutation ordered by value:
    assert ranks[x[:, :, 0] == 0].max() < ranks[x[:, :, 0] == 1].min()


@pytest.mark.slow
def test_report_on_a_real_mcmc_run(tmp_path):
    """End to end on the README's kind of model: one site, exact and MCMC posteriors."""
    pytest.importorskip("arviz", reason="trace/rank plots need arviz")
    site = bb.Site.from_functions("h", 4, lambda x: x,
                                  lambda a, x: jnp.stack([a.sum(-1), -a.sum(-1)], -1))
    x = np.ones((16, 4), np.float32)
    task = bb.Task.build(site, x, bb.rules.top1(np.zeros(16, np.int32)), name="sum>0")
    # Every mask but the empty one is correct, and the chains never meet the empty one (AMD
    # mass 2e-4): the likelihood is flat on every draw; the report must carry that warning
    # into its table.
    with pytest.warns(bb.inference.ConvergenceWarning, match="one value at every drawn mask"):
        sampled = bb.infer(task, "mcmc", key=jax.random.key(0), num_samples=600,
                           num_warmup=100, num_chains=2)
    path = plot.report([bb.infer(task, "exact"), sampled], tmp_path)
    text = path.read_text()
    assert ("**Site:** h (d=4, zero ablation). **Prior:** independent Bernoulli, "
            "keep-probability 0.5 for every unit. **β:** 1. **Method:** exact (sum>0); "
            "mcmc-gradient-multi (sum>0).") in text
    assert "| sum>0 | exact |" in text
    row = next(line for line in text.splitlines() if line.startswith("| sum>0 | mcmc"))
    assert "one value at every drawn mask" in row
    for png in (tmp_path / "figures").glob("*.png"):
        _assert_png(png)


def test_importance_heatmap_draws_an_array_into_a_given_axes(tmp_path):
    from matplotlib.figure import Figure

    q = np.array([[0.5, 0.9, 0.1], [0.0, 1.0, 0.5]])
    host = Figure(figsize=(9, 3))
    left, right = host.subplots(1, 2)
    fig = plot.importance_heatmap(q, tasks=["ABCD", "GHI"], ax=right, cmap="RdBu_r",
                                  title="mine", xlabel="hidden unit")
    assert fig is host and not left.images  # drawn into `right`, nothing else touched
    np.testing.assert_allclose(right.images[0].get_array(), q)
    assert right.images[0].get_clim() == (0.0, 1.0)
    assert right.images[0].get_cmap().name == "RdBu_r"
    assert [t.get_text() for t in right.get_yticklabels()] == ["ABCD", "GHI"]
    assert right.get_title() == "mine" and right.get_xlabel() == "hidden unit"
    assert [a.get_ylabel() for a in host.axes[2:]] == ["unit importance q(m_i = 1)"]
    _assert_png(plot.save_png(host, tmp_path / "host.png"))
    # Default labels for an array; posteriors' task names can be replaced.
    fig = plot.importance_heatmap(q, label="q(m_u = 1)")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["task 0", "task 1"]
    assert fig.axes[1].get_ylabel() == "q(m_u = 1)"


def test_importance_heatmap_refuses_bad_arrays():
    with pytest.raises(ValueError, match="one label per row"):
        plot.importance_heatmap(np.full((2, 3), 0.5), tasks=["only one"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        plot.importance_heatmap(np.array([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="tasks, units"):
        plot.importance_heatmap(np.full(3, 0.5))
    with pytest.raises(ValueError, match="NaN"):
        plot.importance_heatmap(np.array([[0.5, np.nan]]))


def test_annotations_are_readable_on_dark_and_light_cells():
    # viridis is dark at 0 and light (yellow) at 1: white text on 0, black on 1.
    fig = plot.importance_heatmap(np.array([[0.0, 1.0]]), annotate=True)
    colours = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colours == {"0.00": "white", "1.00": "black"}
    fig = plot.importance_heatmap(np.array([[0.0, 1.0]]), annotate=False)
    assert not fig.axes[0].texts


def test_information_panels_share_one_scale_from_zero_and_one_colourbar(exact_posts, tmp_path):
    weak = np.array([[0.02, 0.0, 0.01], [0.0, 0.015, 0.0]])
    strong = np.array([[0.8, 0.1, 0.0, 0.3], [0.0, 0.0, 0.6, 0.0]])
    fig = plot.information_panels({"neuron": weak, "dictionary": strong}, tasks=["a", "b"],
                                  title="net")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["neuron (3 units)", "dictionary (4 units)"]
    assert {im.get_clim() for ax in panels for im in ax.images} == {(0.0, 0.8)}
    np.testing.assert_allclose(panels[0].images[0].get_array(), weak)
    assert [t.get_text() for t in panels[1].get_yticklabels()] == ["a", "b"]
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(bars) == 1 and "(bits)" in bars[0].get_ylabel()
    assert fig.get_suptitle() == "net"
    _assert_png(plot.save_png(fig, tmp_path / "panels.png"))
    # A fixed vmax (to compare figures) and posteriors as a panel.
    fig = plot.information_panels({"exact": exact_posts, "weak": weak}, vmax=2.0)
    panels = [ax for ax in fig.axes if ax.images]
    assert {ax.images[0].get_clim() for ax in panels} == {(0.0, 2.0)}
    expected = np.stack([sum(bb.metrics.split_information(p.marginals, p.prior))
                         for p in exact_posts])
    np.testing.assert_allclose(panels[0].images[0].get_array(), expected)
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["a|b", "c"]


def test_information_panels_show_the_most_informative_units_by_their_ids():
    info = np.zeros((2, 10))
    info[0, 7], info[1, 2], info[0, 4] = 0.9, 0.5, 0.1
    fig = plot.information_panels({"wide": info}, max_units=3)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), info[:, [7, 2, 4]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["7", "2", "4"]
    assert ax.get_title() == "wide (top 3 of 10 units)"
    with pytest.raises(ValueError, match=">= 0 bits"):
        plot.information_panels({"bad": -info})
    with pytest.raises(ValueError, match="at least one panel"):
        plot.information_panels({})


def test_information_panels_given_a_list_says_it_takes_a_dict(exact_posts):
    for panels in (exact_posts, [np.zeros((2, 3))]):
        with pytest.raises(TypeError, match=r"takes a dict of panels .* got a list; e\.g\. "
                           r"information_panels\(\{'neurons': posts\}\)") as err:
            plot.information_panels(panels)
        assert "\n" not in str(err.value)


def test_report_names_each_tasks_prior_and_beta_where_they_differ(tmp_path):
    import dataclasses

    rng = np.random.default_rng(3)
    a = _exact("a", rng.normal(size=8))
    b = dataclasses.replace(_exact("b", rng.normal(size=8)), prior=np.array([0.2, 0.5, 0.8]),
                            beta=2.0)
    text = plot.report([a, b], tmp_path).read_text()
    assert ("**Site:** s. **Prior:** independent Bernoulli, keep-probability 0.5 for every "
            "unit (a); keep-probability 0.2 to 0.8, per unit (b). **β:** 1 (a); 2 (b). "
            "**Method:** exact.") in text
