"""Figures for your own posteriors, and a small report of them.

Every function takes :class:`bablate.Posterior` objects (one per task, on one site;
:func:`importance_heatmap` and :func:`information_panels` also plain ``[tasks, units]`` arrays,
such as a study's results) and returns a ``matplotlib.figure.Figure`` built without pyplot
(nothing global is touched; a notebook shows it, :func:`save_png` writes it). :func:`report`
writes ``report.md`` with all of them.

* :func:`importance_heatmap` — q(m_i = 1), tasks × units, one colour scale [0, 1] (also from
  a plain ``[tasks, units]`` array, e.g. read back from results.json, and into a given ``ax``);
* :func:`marginals` — q(m_i = 1) per unit with its Monte Carlo interval (MCMC: standard error
  from each unit's effective sample size; exact tables and mean-field guides have none);
* :func:`information` — KL(q_i ‖ prior_i) in bits per unit, split into used (q_i > prior_i)
  and harmful (q_i < prior_i), tasks × units, one colour scale across tasks;
* :func:`information_panels` — KL(q_i ‖ prior_i) in bits, one tasks × units panel per site or
  basis, all panels on one colour scale from 0 with one colourbar;
* :func:`js_matrix` — task overlap: the joint JS divergence for exact posteriors, else the mean
  JS between marginals (a different, smaller quantity; the title says which);
* :func:`rank` — rank plots of MCMC chains with ties broken at random, so 0/1 draws of
  agreeing chains give flat bars inside a drawn band (:mod:`bablate.chain_plots`);
* :func:`trace` — arviz's trace plot of an MCMC posterior's draws.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeGuard

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from numpyro.diagnostics import effective_sample_size

from bablate import io as bbio
from bablate import markdown as md
from bablate import metrics
from bablate.chain_plots import rank, rank_caption, trace
from bablate.inference.posterior import Posterior

# Intervals drawn by `marginals`: ± this many Monte Carlo standard errors (95 %).
Z_95 = 1.96
# Cells annotated with their value in heatmaps up to this many rows × columns.
_ANNOTATE_MAX = 144
# Widest figure, inches: wider units get narrower cells instead.
_MAX_WIDTH = 16.0


def _posts(posts: Posterior | Sequence[Posterior], what: str) -> list[Posterior]:
    posts = [posts] if isinstance(posts, Posterior) else list(posts)
    if not posts:
        raise ValueError(f"{what} needs at least one posterior, got an empty list.")
    d = {p.num_units for p in posts}
    if len(d) != 1:
        raise ValueError(f"{what} needs posteriors over one site; got unit counts {sorted(d)}. "
                         "Plot tasks on the same site together.")
    for p in posts:  # a NaN cell is drawn blank or skipped, which reads as a value
        for field in ("marginals", "prior"):
            bad = np.flatnonzero(~np.isfinite(np.asarray(getattr(p, field), np.float64)))
            if bad.size:
                raise ValueError(f"{what}: posterior {p.task!r} has NaN/inf {field} (units "
                                 f"{bad[:5].tolist()}{'...' if bad.size > 5 else ''}); check "
                                 "the inference that made it, or leave it out of the plot.")
    return posts


def _labels(posts: list[Posterior]) -> list[str]:
    """Row labels: task names, with the method added where a name repeats."""
    names = [p.task for p in posts]
    return [f"{p.task} [{p.method}]" if names.count(p.task) > 1 else p.task for p in posts]


def _label_fontsize(ax, rows: int) -> float:
    """Row-label size that fits ``rows`` labels into the height of ``ax`` (5 to 9 points)."""
    height = ax.get_position().height * ax.figure.get_figheight() * 72.0
    return float(np.clip(height / max(rows, 1), 5.0, 9.0))


def _heatmap(fig: Figure, ax, values: np.ndarray, rows: list[str], vmin: float, vmax: float,
             cmap: str, label: str | None, fmt: str = "{:.2f}", annotate: bool | None = None,
             xlabel: str = "unit"):
    """``values`` [rows, units] on one colour scale, a labelled colourbar (none when ``label``
    is None), cell values written in when ``annotate`` (None: when the grid is small and its
    cells are big enough to hold the text). Returns the image."""
    im = ax.imshow(values, aspect="auto", cmap=cmap, norm=Normalize(vmin=vmin, vmax=vmax),
                   interpolation="nearest")
    ax.set_yticks(range(len(rows)), rows, fontsize=_label_fontsize(ax, len(rows)))
    ax.set_xlabel(xlabel)
    box = ax.get_position()
    cell_w = box.width * fig.get_figwidth() * 72.0 / values.shape[1]  # points
    cell_h = box.height * fig.get_figheight() * 72.0 / values.shape[0]
    if values.shape[1] <= 32:
        # every unit when its number fits in its cell, else every 2nd or 5th
        step = next(s for s in (1, 2, 5, 10) if s * cell_w >= 16.0 or s == 10)
        ax.set_xticks(range(0, values.shape[1], step))
    if label is not None:
        cbar = fig.colorbar(im, ax=ax)
        cbar.set_label(label)
    if annotate is None:
        annotate = values.size <= _ANNOTATE_MAX and cell_w >= 20.0 and cell_h >= 10.0
    if annotate:
        for (r, c), v in np.ndenumerate(values):
            red, green, blue, _ = im.cmap(im.norm(v))
            # white text on dark cells, black on light ones, whatever the colour map
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    return im


def _rows(labels: Sequence[str] | None, n: int, what: str) -> list[str]:
    """Row labels: ``labels`` (one per row) or task 0, task 1, …"""
    if labels is None:
        return [f"task {i}" for i in range(n)]
    labels = [str(t) for t in labels]
    if len(labels) != n:
        raise ValueError(f"{what}: tasks has {len(labels)} labels for {n} rows; give one label "
                         "per row.")
    return labels


def _is_posteriors(x: object) -> TypeGuard[Posterior | Sequence[Posterior]]:
    """Posteriors (an empty list too, which :func:`_posts` refuses) rather than an array."""
    return isinstance(x, Posterior) or (isinstance(x, Sequence) and not isinstance(x, str)
                                        and all(isinstance(p, Posterior) for p in x))


def _matrix(values, what: str) -> np.ndarray:
    """A finite ``[tasks, units]`` float array, or a one-line error saying what was given."""
    try:
        x = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} needs posteriors or a [tasks, units] array of numbers; got "
                         f"{type(values).__name__}.") from None
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{what} needs a [tasks, units] array; got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: the array holds NaN or inf; drop or fill those cells first.")
    return x


def importance_heatmap(posts: Posterior | Sequence[Posterior] | np.ndarray, *,
                       tasks: Sequence[str] | None = None, ax=None, title: str | None = None,
                       cmap: str = "viridis", annotate: bool | None = None,
                       xlabel: str = "unit", label: str = "unit importance q(m_i = 1)") -> Figure:
    """Unit importance q(m_i = 1) of each task (rows) and unit (columns), colour scale [0, 1].

    Args:
      posts: posteriors over one site, or a ``[tasks, units]`` array of q(m_i = 1) (e.g. a
        study's ``unit_importance`` read back from results.json).
      tasks: row labels (default: the posteriors' task names, or task 0, task 1, … for an array).
      ax: draw into this matplotlib axes (its colourbar beside it) instead of a new figure.
      title: the axes title (default: "Unit importance", with the prior when one is shared;
        "" for none).
      cmap: colour map; a diverging one (e.g. "RdBu_r") centres on 0.5, the uniform prior.
      annotate: write each cell's value (default: when the cells are big enough).
      xlabel: the column axis label.
      label: the colourbar label.

    Returns:
      The figure drawn on (``ax``'s figure when ``ax`` is given).
    """
    if _is_posteriors(posts):
        posts = _posts(posts, "importance_heatmap")
        q = np.stack([np.asarray(p.marginals, np.float64) for p in posts])
        rows = _labels(posts) if tasks is None else _rows(tasks, len(posts), "importance_heatmap")
        prior = np.unique(np.concatenate([np.asarray(p.prior).ravel() for p in posts]))
        note = f" (prior {prior[0]:.2g})" if prior.size == 1 else ""
    else:
        q = _matrix(posts, "importance_heatmap")
        if q.min() < 0.0 or q.max() > 1.0:
            raise ValueError(f"importance_heatmap: values must be probabilities q(m_i = 1) in "
                             f"[0, 1]; got [{q.min():.3g}, {q.max():.3g}].")
        rows, note = _rows(tasks, q.shape[0], "importance_heatmap"), ""
    if ax is None:
        fig = Figure(figsize=(min(max(4.0, 0.35 * q.shape[1] + 2.5), _MAX_WIDTH),
                              0.45 * q.shape[0] + 1.6))
        ax = fig.subplots()
        own = True
    else:
        fig, own = ax.figure, False
    _heatmap(fig, ax, q, rows, 0.0, 1.0, cmap, label, annotate=annotate, xlabel=xlabel)
    ax.set_title(f"Unit importance{note}" if title is None else title)
    if own:
        fig.tight_layout()
    return fig


def marginal_standard_error(post: Posterior) -> np.ndarray:
    """``[d]`` Monte Carlo standard error of each marginal q(m_i = 1).

    MCMC: sqrt(q_i (1 − q_i) / ESS_i), with ESS_i from ``numpyro.diagnostics`` on the chains
    (units that never moved have no error estimate; they get 0). Exact tables and SVI's
    mean-field marginals (read from the guide, not from draws) have no Monte Carlo error: 0.
    """
    q = np.asarray(post.marginals, np.float64)
    if post.samples is None or not post.method.startswith("mcmc"):
        return np.zeros_like(q)
    x = post.chains().astype(np.float64)
    if x.shape[1] < 4:
        raise ValueError(f"marginal_standard_error needs at least 4 draws per chain for an "
                         f"ESS; {post.task!r} has {x.shape[1]}.")
    ess = np.asarray(effective_sample_size(x), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(q * (1 - q) / ess)
    return np.where(np.isfinite(se), se, 0.0)


def marginals(posts: Posterior | Sequence[Posterior]) -> Figure:
    """q(m_i = 1) per unit for each task, ± 1.96 Monte Carlo standard errors (MCMC), with the
    prior as a dashed line."""
    posts = _posts(posts, "marginals")
    d = posts[0].num_units
    fig = Figure(figsize=(min(max(5.0, 0.3 * d + 3.0), _MAX_WIDTH), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(posts)
    for k, post in enumerate(posts):
        x = np.arange(d) + (k - (len(posts) - 1) / 2) * width
        err = Z_95 * marginal_standard_error(post)
        label = _labels(posts)[k] + ("" if np.any(err) else f" ({post.method}: no MC error)")
        ax.errorbar(x, post.marginals, yerr=err, fmt="o", ms=3, capsize=2, label=label)
    for value in np.unique(np.concatenate([np.asarray(p.prior).ravel() for p in posts])):
        ax.axhline(value, color="grey", ls="--", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("unit")
    ax.set_ylabel("q(m_i = 1)")
    ax.set_title("Marginals ± 1.96 Monte Carlo s.e. (dashed: prior)")
    # Beside the axes, not on them: points fill the whole [0, 1] range, so "best" covers some.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def information(posts: Posterior | Sequence[Posterior]) -> Figure:
    """Information KL(q_i ‖ prior_i) in bits per unit and task: used (q_i > prior_i) and
    harmful (q_i < prior_i) side by side, both on one colour scale."""
    posts = _posts(posts, "information")
    used, harmful = (np.stack(v) for v in zip(*[metrics.split_information(p.marginals, p.prior)
                                                for p in posts], strict=True))
    top = max(float(used.max()), float(harmful.max()), 1e-6)
    rows = _labels(posts)
    d = used.shape[1]
    if d <= 16:  # side by side
        fig = Figure(figsize=(max(8.0, 0.6 * d + 4.0), 0.45 * len(posts) + 1.8))
        axes = fig.subplots(1, 2, sharey=True)
    else:  # one above the other, at most a page wide
        fig = Figure(figsize=(min(0.25 * d + 3.0, _MAX_WIDTH), 0.9 * len(posts) + 3.0))
        axes = fig.subplots(2, 1, sharex=True)
    for ax, values, title in ((axes[0], used, "used (q_i > prior_i)"),
                              (axes[1], harmful, "harmful (q_i < prior_i)")):
        _heatmap(fig, ax, values, rows, 0.0, top, "magma_r", "information (bits)")
        ax.set_title(f"{title}; largest task total {values.sum(1).max():.3g} bits", fontsize=9)
    fig.suptitle("Unit information KL(q_i ‖ prior_i), bits")
    fig.tight_layout()
    return fig


def information_panels(panels: Mapping[str, Sequence[Posterior] | np.ndarray], *,
                       tasks: Sequence[str] | None = None, vmax: float | None = None,
                       max_units: int | None = 48, title: str | None = None) -> Figure:
    """Unit information KL(q_i ‖ prior_i) in bits, tasks × units, one panel per site or basis
    (e.g. neurons vs a rotation vs a dictionary), every panel on one colour scale from 0.

    One scale makes panels comparable: a site whose units carry 0.02 bit looks dim next to
    one whose units carry 0.8 bit (per-panel scales would paint both equally bright).

    Args:
      panels: panel title → posteriors over that site (information from their marginals and
        priors), or a ``[tasks, units]`` array of information in bits.
      tasks: row labels of array panels (default: task 0, task 1, …).
      vmax: top of the colour scale in bits (default: the largest value of any panel); give
        one value to several figures to compare them.
      max_units: panels with more units show their ``max_units`` most informative ones (by
        total over tasks), in that order; None shows every unit.
      title: the figure title.

    Returns:
      The figure, with one colourbar labelled in bits for all panels.
    """
    if not isinstance(panels, Mapping):
        raise TypeError(f"information_panels takes a dict of panels {{title: posteriors or a "
                        f"[tasks, units] array}}, got a {type(panels).__name__}; e.g. "
                        "information_panels({'neurons': posts}).")
    if not panels:
        raise ValueError("information_panels needs at least one panel, got none.")
    if max_units is not None and max_units < 1:
        raise ValueError(f"information_panels: max_units must be >= 1 or None; got {max_units}.")
    data = []
    for name, value in panels.items():
        if _is_posteriors(value):
            posts = _posts(value, f"information_panels[{name!r}]")
            info = np.stack([sum(metrics.split_information(p.marginals, p.prior))
                             for p in posts])
            rows = _labels(posts)
        else:
            info = _matrix(value, f"information_panels[{name!r}]")
            if info.min() < 0.0:
                raise ValueError(f"information_panels[{name!r}]: information is a KL "
                                 f"divergence (>= 0 bits); got {info.min():.3g}.")
            rows = _rows(tasks, info.shape[0], f"information_panels[{name!r}]")
        data.append((str(name), info, rows))
    top = max(float(info.max()) for _, info, _ in data) if vmax is None else float(vmax)
    if not top > 0.0:
        raise ValueError(f"information_panels: vmax must be > 0 bits; got {vmax}.")
    fig = Figure(figsize=(min(3.2 * len(data) + 0.8, 4 * _MAX_WIDTH / 3),
                          0.3 * max(len(r) for _, _, r in data) + 2.1),
                 layout="constrained")
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    for ax, (name, info, rows) in zip(axes, data, strict=True):
        d = info.shape[1]
        shown = np.arange(d)
        if max_units is not None and d > max_units:
            shown = np.argsort(-info.sum(0), kind="stable")[:max_units]
            info = info[:, shown]
            ax.set_title(f"{name} (top {max_units} of {d} units)", fontsize=8)
            xlabel = "unit (most informative first)"
        else:
            ax.set_title(f"{name} ({d} units)", fontsize=8)
            xlabel = "unit"
        im = _heatmap(fig, ax, info, rows, 0.0, top, "magma", None, annotate=False,
                      xlabel=xlabel)
        if shown.size < d:  # reordered columns: name each by its unit, or by none
            if shown.size <= 32:
                ax.set_xticks(range(shown.size), [str(u) for u in shown], fontsize=6,
                              rotation=90)
            else:
                ax.set_xticks([])
    fig.colorbar(im, ax=axes.tolist(), fraction=0.03,
                 label="unit information KL(q_i ‖ prior_i) (bits)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def js_matrix(posts: Sequence[Posterior]) -> Figure:
    """Task × task overlap: the joint Jensen–Shannon divergence when every posterior is exact,
    else the mean JS between marginals (named in the title; bits, 0 = identical)."""
    posts = _posts(posts, "js_matrix")
    if all(p.log_probs is not None for p in posts):
        values, title = metrics.js_matrix(posts), "Joint Jensen–Shannon divergence (bits)"
    else:
        values = metrics.marginal_js_matrix(posts)
        title = "Mean marginal Jensen–Shannon divergence (bits; not the joint JS)"
    names = _labels(posts)
    fig = Figure(figsize=(0.5 * len(posts) + 3.5, 0.5 * len(posts) + 2.5))
    ax = fig.subplots()
    _heatmap(fig, ax, values, names, 0.0, max(float(values.max()), 1e-6), "Blues",
             "JS divergence (bits)", fmt="{:.3f}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_xlabel("")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Writes ``fig`` as a PNG atomically (never a half-written file) and releases it."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    bbio.atomic_write_bytes(path, buf.getvalue())
    import matplotlib.pyplot as plt

    plt.close(fig)  # a no-op for our pyplot-free figures; frees arviz's
    return path


def _md_cell(value) -> object:
    """A table value: floats to 3 significant digits (md.row escapes the text)."""
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.3g}"
    return value


def _per_task(posts: list[Posterior], text) -> str:
    """``text(post)`` when every posterior gives the same, else each value with its tasks."""
    groups: dict[str, list[str]] = {}
    for p in posts:
        groups.setdefault(text(p), []).append(p.task)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{v} ({', '.join(tasks)})" for v, tasks in groups.items())


def _prior_text(p: Posterior) -> str:
    q = np.unique(np.asarray(p.prior, np.float64))
    return (f"keep-probability {q[0]:.3g} for every unit" if q.size == 1 else
            f"keep-probability {q.min():.3g} to {q.max():.3g}, per unit")


def _settings_line(posts: list[Posterior]) -> str:
    """What the posteriors are of: site, prior, β and method (per task where they differ)."""
    return (f"**Site:** {md.cell(_per_task(posts, lambda p: p.site or 'not recorded'))}. "
            f"**Prior:** independent Bernoulli, {_per_task(posts, _prior_text)}. "
            f"**β:** {_per_task(posts, lambda p: f'{p.beta:g}')}. "
            f"**Method:** {_per_task(posts, lambda p: p.method)}.")


def report(posts: Posterior | Sequence[Posterior], path: str | os.PathLike,
           title: str = "Ablation mask distributions") -> Path:
    """Writes ``<path>/report.md`` with the site, prior, β and method, a metrics table and every
    figure of this module (``<path>/figures/*.png``): rank plots for MCMC posteriors, and trace
    plots when arviz is installed. Returns the path of report.md."""
    posts = _posts(posts, "report")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report path {out} is a file; give a directory for report.md and "
                         "its figures.")
    figures: list[tuple[str, str, Figure]] = [
        ("importance", "Unit importance q(m_i = 1) (one colour scale for all tasks).",
         importance_heatmap(posts)),
        ("marginals", "Marginals with ± 1.96 Monte Carlo standard errors (MCMC).",
         marginals(posts)),
        ("information", "Information per unit in bits, used and harmful, one colour scale.",
         information(posts)),
    ]
    if len(posts) > 1:
        figures.append(("js_matrix", "Task overlap by Jensen–Shannon divergence.",
                        js_matrix(posts)))
    notes: list[str] = []
    for i, p in enumerate(p for p in posts if p.method.startswith("mcmc")
                          and p.samples is not None):
        try:
            figures.append((f"trace_{i}", f"Trace of {p.task} (lowest-ESS units).", trace(p)))
        except ImportError as e:
            if not notes:
                notes.append(f"Trace plots left out: {e}")
        figures.append((f"rank_{i}", rank_caption(p.task), rank(p)))
    lines = [f"# {title}", "", _settings_line(posts), "",
             "| task | method | d | task information (bits) | "
             "used / harmful (bits) | distributedness | H(q) estimate | warnings |",
             "|---|---|---|---|---|---|---|---|"]
    for p in posts:
        m = metrics.summarize(p)
        lines.append(md.row(_md_cell(v) for v in (
            p.task, p.method, p.num_units, m.task_information,
            f"{m.used_information:.3g} / {m.harmful_information:.3g}", m.distributedness,
            m.entropy_estimate, "; ".join(p.warnings) or "none")))
    lines += ["", *notes]
    for name, caption, fig in figures:
        save_png(fig, out / "figures" / f"{name}.png")
        lines += ["", f"![{name}](figures/{name}.png)", "", caption]
    report_path = out / "report.md"
    bbio.atomic_write_text(report_path, "\n".join(lines) + "\n")
    return report_path
