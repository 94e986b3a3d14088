"""Neurons vs a learned sparse dictionary as the basis for Bayesian ablation (DESIGN.md §3).

Colin et al. (arXiv 2411.03993) argue that sparse distributed (dictionary) features are a better
unit of interpretation than single neurons; Golechha & Dao (arXiv 2402.03855) that
representations, not neurons, are the unit of analysis. Here the claim is tested causally: the
same tasks on the same network are read with the ablation mask distribution (AMD) in

* the **neuron** basis (the site's own units),
* a **dictionary** basis (NMF for non-negative sites, a sparse autoencoder otherwise; fitted on
  the site's activations with :mod:`bablate.dictionary`; masks ablate codes and keep the
  reconstruction error intact, so the intact network is reproduced exactly),
* a random **rotation** of the neuron basis (control: same dimension, no sparsity),

and compared by distributedness (effective units / d), total correlation, polysemanticity
(effective number of tasks per unit, and I(T; M_i)) and how much of a task's unit information
the top-k units carry (plus P(correct) with only those k units kept).

Networks: the toy ReLU-hidden model computing |x| in superposition (Elhage et al. 2022, §8),
where the true feature directions in the hidden layer are known (ReLU(±W1_i)) and the
dictionary's recovery of them is checked; the chunk study's RNN with a tanh cell (hidden states
are signed: sparse autoencoder; tasks = chunk continuations; the paper's linear cell reads the
current symbol directly, so within-chunk continuation needs no hidden neuron and every task
carries < 0.1 bit in the neuron basis, which makes it a poor test bed here); and the 1536 MLP
neurons of one SmolLM2-135M layer (:func:`bablate.llm.build_mlp_site`, a cached site whose
activation is the MLP hidden at the last prompt position) with the concept-completion tasks of the
LLM study and a top-k sparse autoencoder fitted on the layer's activations over the concept
prompts. Its sites are too large for exact enumeration, so its AMDs come from mean-field SVI
(Concrete gradients of the smooth likelihood: a code that is zero on every prompt gets an exactly
zero gradient and stays at the prior), which has no total correlation to report. The SAE's
center (its reconstruction at all-zero codes, most of the activation there) is one more unit
(:class:`~.bases.CenterUnitBasis`), so that every basis is read against the same all-ablated
baseline.

Config: ``variants.py`` (``--config=basis_comparison:<variant>``: quick, toy, rnn, llm,
full). Steps: :mod:`.toy`, :mod:`.rnn`, :mod:`.llm` (one per network; each fits its
dictionaries with :mod:`.bases` and reads its tasks in every basis with :mod:`.reading`), then
:mod:`.summary` (the headline scalars), :mod:`.plots` and :mod:`.report`.
"""

from __future__ import annotations

import jax
import ml_collections

from bablate.runner.context import RunContext

from . import llm, plots, report, rnn, summary, toy
from .config import from_config, validate
from .keys import StudyKeys

__all__ = ["run", "validate"]


def run(config: ml_collections.ConfigDict, ctx: RunContext) -> dict:
    """Runs the comparison for every enabled network and writes figures, table and report."""
    cfg = from_config(config)
    root = jax.random.key(cfg.seed)
    keys = StudyKeys.from_root(root, num_densities=len(cfg.toy.densities))

    results: dict = {}
    if cfg.toy.enabled:
        results["toy"] = toy.run(cfg.toy, cfg.inference, cfg.top_k, ctx, keys.toy)
    if cfg.rnn.enabled:
        results["rnn"] = rnn.run(cfg.rnn, cfg.seed, cfg.inference, cfg.top_k, ctx, keys.rnn)
    if cfg.llm.enabled:
        results["llm"] = llm.run(cfg.llm, ctx, keys.llm)
    if not results:
        raise ValueError("no network enabled; set toy.enabled, rnn.enabled or llm.enabled.")
    results.update(summary.headline(results))

    rows = summary.table_rows(results)
    plots.make_figures(ctx, results, rows)
    ctx.text(report.report_text(cfg, results, rows))
    return results
