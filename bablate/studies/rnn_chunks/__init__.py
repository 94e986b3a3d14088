"""RNN chunks: chunk discovery in hidden states, perturbation, grafting, and Bayesian ablation.

Reproduces the RNN part of Wu, Alaniz, Schulz, Akata, "Discovering Chunks in Neural Embeddings
for Interpretability" (arXiv 2502.01803) and reads the same networks with Bayesian ablation
(DESIGN.md §3). Steps of `run`:

1. Train the RNN on a sequence family for `compare_seeds` seeds, by each training recipe
   (`train.recipe`: ours, the authors' 200 steps on one 2,000-token window, or both); for each
   seed run DSC on every trained network and on their common untrained start (unique states,
   vocabulary, parse length, held-out decoding accuracy); trained − untrained per recipe and
   protocol with a t-interval over seeds.
2. PA templates of every ground-truth chunk (state at the chunk's last symbol): TPR/FPR/AUC.
3. Perturbation: inject the DSC state decoded as symbol a as the hidden state and feed b (for
   every a, b, c consecutive inside a word): does the network predict c? Control: the state
   decoded as the filler 'E'.
4. Grafting (compositional family): continue training on the transfer sequence 'ABCDLMN' with
   and without writing the state decoded as 'J' into the hidden state after 'C', so that 'D' is
   read together with the state that, in 'JKLMN', is read with 'K' and predicts 'L'; learning
   curves over seeds of the one new transition (L after ABCD). Our reconstruction of the
   paper's grafting experiment; curves are measured without the graft unless labelled so.
5. Bayesian ablation: site = the hidden units, masked at every step; one task per chunk
   ("predict the continuation inside chunk k" at positions inside chunk k after its first
   symbol), one AMD per correctness rule (top-1 next symbol; the smooth rule, the mean
   probability of the correct symbol); exact AMD when hidden <= 16 (every chunk task in one
   enumeration), MCMC otherwise. The headline keys are those of the first rule whose AMD
   carries information (task information >= 0.1 bits on some chunk), not of a rule by name.
   Agreement with DSC and PA (our reconstruction): per chunk, Spearman rank correlation over
   units between the AMD importance π_i and the mutual information between unit i's DSC
   cluster id and "this step is a task step of chunk k" (DSC), or unit i's membership in the
   chunk's PA template (PA); averaged over chunks, with a percentile bootstrap interval over
   units.

Config: variants.py (``python -m bablate --config=rnn_chunks:<variant>``), read into
`config.StudyConfig`. Modules, one per step: `training` (networks), `dsc` (steps 1-2),
`perturb` (3-4), `ablation` (5), `intervals` (the intervals of the comparisons), `plots`
(figures), `report` (report.md, with what reproduced and what did not); the sequences,
the hidden-unit site and the chunk tasks come from `bablate.testbeds.rnn`.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from bablate.studies.rnn_chunks import ablation, dsc, perturb, plots, report
from bablate.studies.rnn_chunks.config import StudyConfig, from_config, validate

__all__ = ["Keys", "run", "study_keys", "validate"]


@dataclasses.dataclass(frozen=True)
class Keys:
    """Every PRNG key of a run, named.

    Attributes:
      networks: seed s → the key network s trains with, ``key(s)``: a network depends on its
        own seed only, so network s (and its checkpoint ``net_seed{s}``) is the same whichever
        seed a run starts from; its untrained counterpart is initialised from the same key
        (it is exactly the start of training).
      transfer: seed s → the key of the two grafting transfer runs of seed s, ``key(s)``.
      ablation: MCMC of chunk task i uses ``fold_in(ablation, i)``; ``key(cfg.seed)``, the root.
      bootstrap: the seed of the numpy generator that draws the bootstrap resamples of the
        agreement intervals (the same draws for every rule), ``cfg.seed``.
    """

    networks: dict[int, jax.Array]
    transfer: dict[int, jax.Array]
    ablation: jax.Array
    bootstrap: int


def study_keys(cfg: StudyConfig) -> Keys:
    """The run's named keys, all derived here from the config's seed."""
    root = jax.random.key(cfg.seed)
    seed_key = lambda s: jax.random.key(s)  # per-network keys: see Keys.networks
    return Keys(networks={cfg.seed + i: seed_key(cfg.seed + i)
                          for i in range(cfg.compare_seeds)},
                transfer={cfg.seed + i: seed_key(cfg.seed + i)
                          for i in range(cfg.grafting.seeds)},
                ablation=root, bootstrap=cfg.seed)


def run(config: ml_collections.ConfigDict, ctx) -> dict:
    """Runs the study (see the module docstring) and returns results.json's numbers."""
    cfg = from_config(config)
    keys = study_keys(cfg)
    ctx.log(f"family {cfg.family}, cell {cfg.model.cell}, hidden {cfg.model.hidden}, "
            f"{cfg.compare_seeds} seeds")

    # 1-2. DSC trained vs untrained over seeds; PA templates; the DSC chunk dictionary.
    comp = dsc.compare(cfg, keys.networks, ctx)
    results = dsc.comparison_results(comp)
    first = comp.first
    seq = first.seq
    word_ids = [k for k, wd in enumerate(seq.words) if len(wd) >= 2]
    results["pa"] = dsc.pa_chunks(cfg.pa_tolerance, seq.words, first.fit, first.test,
                                  first.h_fit, first.h_test, word_ids)
    top = dsc.top_chunks(first.res, seq.alphabet, 20)
    results["top_chunks"] = top[:15]
    plots.training_curves(ctx, comp.histories)
    plots.dsc_comparison(ctx, comp.rows_by, cfg.family)
    plots.chunk_dictionary(ctx, top)

    # 3. Perturbation.
    if cfg.perturbation:
        pert = perturb.perturbation(cfg.model, first.variables, first.res, first.h_fit, seq)
        results.update(perturb.perturbation_results(pert))
        if pert:
            plots.perturbation(ctx, pert)

    # 4. Grafting (compositional family only).
    if cfg.grafting.enabled and cfg.family == "compositional":
        graft = perturb.grafting(cfg, first.variables, first.res, first.h_fit, keys.transfer)
        results["grafting"] = graft
        if graft:
            plots.grafting(ctx, graft)

    # 5. Bayesian ablation, one AMD per rule; the rule whose AMD carries information fills
    # the headline keys, the others get a suffix (e.g. _top1).
    abls = {rule: ablation.ablation(cfg, first.variables, seq, first.res, first.h_fit,
                                    first.fit, word_ids, rule, keys.ablation)
            for rule in (cfg.ablation.rules if cfg.ablation.enabled else ())}
    head = ablation.headline_rule(abls)
    if head is not None:
        results["ablation_headline_rule"] = head
    for rule in sorted(abls, key=lambda r: r != head):  # the headline's keys first
        abl = abls[rule]
        sfx = "" if rule == head else f"_{rule}"
        results["ablation" + sfx] = abl
        if abl:
            abl["agreement"] = ablation.agreement(abl, results["pa"],
                                                  np.random.default_rng(keys.bootstrap))
            results.update(ablation.headline(abl, sfx))
            plots.unit_importance(ctx, abl, "unit_importance" + sfx)
    report.report_text(ctx, cfg, results)
    return results
