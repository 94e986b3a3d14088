"""The study's typed config: nested frozen dataclasses mirroring variants.py's
ConfigDict (see that file for the meaning of each field), its checks, and its reading."""

from __future__ import annotations

import dataclasses

import ml_collections

from bablate import chunks, sequences
from bablate import config_checks as cc
from bablate.models import rnn
from bablate.testbeds import rnn as rnn_testbed


@dataclasses.dataclass(frozen=True)
class DSCConfig:
    """DSC settings; ``protocol`` "long", "authors" or "both" (see bablate.chunks.dsc)."""

    k: int
    rounds: int
    top: int
    min_count: int
    max_tokens: int
    protocol: str = "long"
    authors_length: int = 2000
    authors_fit_steps: int = chunks.AUTHORS_FIT_STEPS

    def __post_init__(self):
        dsc_protocols(self.protocol)  # refuses an unknown protocol

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols to run; the first one fills the headline keys (PA, perturbation,
        grafting and ablation always read the long one)."""
        return dsc_protocols(self.protocol)


@dataclasses.dataclass(frozen=True)
class GraftingConfig:
    """Transfer training on 'ABCDLMN' with and without the grafted 'J' state."""

    enabled: bool
    seeds: int
    steps: int
    eval_every: int
    chunk: int


@dataclasses.dataclass(frozen=True)
class MCMCConfig:
    """MCMC settings of the ablation (used when the site is too large to enumerate)."""

    num_samples: int
    num_warmup: int
    num_chains: int
    sampler: str
    check_exact: bool


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """Bayesian ablation of the hidden units, one task per chunk, one AMD per rule."""

    enabled: bool
    method: str
    rules: tuple[str, ...]
    windows: int
    window: int
    max_tasks: int
    min_examples: int
    mcmc: MCMCConfig


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Typed settings of the study (see variants.py for the meaning of each)."""

    seed: int
    family: str
    n_h: int
    n_draws: int
    model: rnn.RNNConfig
    train: rnn.TrainConfig
    compare_seeds: int
    dsc: DSCConfig
    pa_tolerance: float
    perturbation: bool
    grafting: GraftingConfig
    ablation: AblationConfig


# Every field of variants.py's config, checked before any work.
CONFIG_RULES = {
    "seed": cc.integer(0), "family": cc.one_of(*sequences.FAMILIES),
    "n_h": cc.integer(0), "n_draws": cc.integer(0),
    "model.cell": cc.one_of(*rnn.CELLS), "model.hidden": cc.integer(1),
    "train.steps": cc.integer(1), "train.window": cc.integer(2), "train.batch": cc.integer(1),
    "train.learning_rate": cc.number(0, low_open=True), "train.chunk": cc.integer(1),
    "train.eval_every": cc.integer(0), "compare_seeds": cc.integer(1),
    "dsc.k": cc.integer(1), "dsc.rounds": cc.integer(1), "dsc.top": cc.integer(1),
    "dsc.min_count": cc.integer(1), "dsc.max_tokens": cc.integer(1),
    "pa_tolerance": cc.number(0, low_open=True), "perturbation": cc.boolean(),
    "grafting.enabled": cc.boolean(), "grafting.seeds": cc.integer(1),
    "grafting.steps": cc.integer(1), "grafting.eval_every": cc.integer(1),
    "grafting.chunk": cc.integer(1),
    "ablation.enabled": cc.boolean(), "ablation.method": cc.one_of("auto", "exact", "mcmc"),
    "ablation.rules": cc.sequence(cc.one_of(*rnn_testbed.RULES), min_len=1),
    "ablation.windows": cc.integer(1), "ablation.window": cc.integer(2),
    "ablation.max_tasks": cc.integer(1), "ablation.min_examples": cc.integer(1),
    "ablation.mcmc.num_samples": cc.integer(1), "ablation.mcmc.num_warmup": cc.integer(0),
    "ablation.mcmc.num_chains": cc.integer(1),
    "ablation.mcmc.sampler": cc.one_of("auto", "informed", "gradient", "stock"),
    "ablation.mcmc.check_exact": cc.boolean(),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    cc.require(not (config.ablation.enabled and config.ablation.method == "exact"
                    and config.model.hidden > 20),
               f"exact ablation needs model.hidden <= 20 (got {config.model.hidden}); set "
               "--config.ablation.method=auto or mcmc")
    cc.parses(from_config, config)


def from_config(config: ml_collections.ConfigDict) -> StudyConfig:
    """Reads the ConfigDict once, at the edge (the model's alphabet size comes from the data)."""
    seq = rnn_testbed.make_sequence(config.family, 0, config.n_h, config.n_draws)
    model = cc.build(rnn.RNNConfig, config.model, where="config.model",
                     num_symbols=seq.num_symbols)
    return cc.build(StudyConfig, config, skip=("study", "variant"), model=model)


def dsc_protocols(protocol: str) -> tuple[str, ...]:
    """config.dsc.protocol → the protocols to run ("both" = long first, then authors)."""
    if protocol == "both":
        return chunks.PROTOCOLS
    if protocol not in chunks.PROTOCOLS:
        raise ValueError(f"dsc.protocol must be one of {chunks.PROTOCOLS} or 'both'; got "
                         f"{protocol!r}.")
    return (protocol,)
