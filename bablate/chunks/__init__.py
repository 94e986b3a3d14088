"""Chunk discovery in neural population activity: DSC (discrete sequence chunking) and PA
(population averaging), after Wu, Alaniz, Schulz, Akata (arXiv 2502.01803)."""

from bablate.chunks.dsc import (
    AUTHORS_FIT_STEPS,
    PROTOCOLS,
    ChunkDictionary,
    Discretizer,
    DSCResult,
    Lookup,
    bpe_chunks,
    fit_discretizer,
    fit_lookup,
    greedy_parse,
    kmeans_1d,
    rebuild_chunks,
    run_dsc,
    run_dsc_authors,
    state_ids,
    state_strings,
    unit_chunk_information,
)
from bablate.chunks.pa import (
    AUTHORS_TOLERANCES,
    ROC,
    SweepPA,
    Template,
    bootstrap_auc,
    detection_rates,
    pa_detect,
    pa_scores,
    pa_template,
    sweep_template,
    tpr_fpr_auc,
)

__all__ = [
    "AUTHORS_TOLERANCES", "SweepPA", "bootstrap_auc", "sweep_template",
    "AUTHORS_FIT_STEPS", "PROTOCOLS", "greedy_parse", "rebuild_chunks", "run_dsc_authors",
    "ChunkDictionary", "DSCResult", "Discretizer", "Lookup", "ROC", "Template", "bpe_chunks",
    "detection_rates", "fit_discretizer", "fit_lookup", "kmeans_1d", "pa_detect", "pa_scores",
    "pa_template", "run_dsc", "state_ids", "state_strings", "tpr_fpr_auc",
    "unit_chunk_information",
]
