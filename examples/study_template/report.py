"""The study template's report: the figures and the text of report.md (numbers drawn from the
results, never computed here)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from bablate.runner.runs import RunContext

from .config import StudyConfig


def write(ctx: RunContext, cfg: StudyConfig, results: dict[str, Any]) -> None:
    """Adds the marginals figure and the summary to the run's report.md."""
    q = np.asarray(results["marginals"])
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.bar(np.arange(q.size), q)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")  # the prior
    ax.set(xlabel="hidden unit", ylabel="q(keep)", ylim=(0, 1))
    ctx.text(f"## The AMD of the sign task\n\nAn MLP with {cfg.model.hidden} hidden units "
             f"(seed {cfg.seed}) gets {results['accuracy']:.1%} of {cfg.num_examples} examples "
             f"right. Method: `{results['method']}`.")
    ctx.figure(fig, "marginals", "Keep-probability of each hidden unit under the AMD (dashed: "
               "the prior).")
    ctx.text("| task information (bits) | distributedness | effective units |\n"
             "|---|---|---|\n"
             f"| {results['task_information']:.3f} | {results['distributedness']:.3f} | "
             f"{results['effective_units']:.2f} |")
