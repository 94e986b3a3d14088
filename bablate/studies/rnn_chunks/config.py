"""The study's typed config: nested frozen dataclasses mirroring variants.py's
ConfigDict (see that file for the meaning of each field), its checks, and its reading."""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from bablate import chunks
from bablate.models import rnn
from bablate.runner import config_checks as cc
from bablate.testbeds import rnn as rnn_testbed
from bablate.testbeds import sequences

RECIPES = ("bablate", "authors")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The training recipes of the networks; ``recipe`` "bablate", "authors" or "both".

    "bablate" (ours): ``steps`` Adam steps on batches of ``batch`` random ``window``-token
    windows. "authors" (the call in their notebook RNN_3, github swu32/Chunk-Interpretability:
    ``train_rnn(..., n_iters=200, chunk_len=2000)``, whose loop their RNN_2 notebook shows):
    ``authors_steps`` Adam steps, each on ONE random ``authors_window``-token window, at the
    same learning rate (theirs: 0.005). Their loss sums the window's cross-entropies, ours
    averages them; under Adam the two differ only through its epsilon.
    """

    steps: int
    window: int
    batch: int
    learning_rate: float
    chunk: int
    eval_every: int
    recipe: str = "bablate"
    authors_steps: int = 200
    authors_window: int = 2000

    def __post_init__(self):
        train_recipes(self.recipe)  # refuses an unknown recipe

    @property
    def recipes(self) -> tuple[str, ...]:
        """The recipes to run; the first one's networks fill the headline keys and are the
        ones PA, perturbation, grafting and ablation read."""
        return train_recipes(self.recipe)

    def of(self, recipe: str) -> rnn.TrainConfig:
        """The optimisation settings of ``recipe``."""
        ours = rnn.TrainConfig(steps=self.steps, window=self.window, batch=self.batch,
                               learning_rate=self.learning_rate, chunk=self.chunk,
                               eval_every=self.eval_every)
        if recipe == "bablate":
            return ours
        if recipe != "authors":
            raise ValueError(f"unknown training recipe {recipe!r}; choose one of {RECIPES}.")
        # Steps per jitted scan must divide the step count; the curve is read at each.
        chunk = math.gcd(self.chunk, self.authors_steps)
        return dataclasses.replace(ours, steps=self.authors_steps, window=self.authors_window,
                                   batch=1, chunk=chunk, eval_every=chunk)


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
    train: TrainSettings
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
    "train.eval_every": cc.integer(0), "train.recipe": cc.one_of(*RECIPES, "both"),
    "train.authors_steps": cc.integer(1), "train.authors_window": cc.integer(2),
    "compare_seeds": cc.integer(1),
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
    cfg = cc.build(StudyConfig, config, skip=("study", "variant"), model=model)
    for recipe in cfg.train.recipes:
        window = cfg.train.of(recipe).window
        if window >= len(seq.tokens):
            key = "window" if recipe == "bablate" else "authors_window"
            raise ValueError(f"train.{key} = {window} is not shorter than the {cfg.family} "
                             f"sequence ({len(seq.tokens)} symbols at seed 0); lower it or "
                             "raise n_draws")
    return cfg


def train_recipes(recipe: str) -> tuple[str, ...]:
    """config.train.recipe → the recipes to run ("both" = ours first, then the authors')."""
    return _one_or_both(recipe, RECIPES, "train.recipe")


def dsc_protocols(protocol: str) -> tuple[str, ...]:
    """config.dsc.protocol → the protocols to run ("both" = long first, then authors)."""
    return _one_or_both(protocol, chunks.PROTOCOLS, "dsc.protocol")


def _one_or_both(value: str, options: tuple[str, str], key: str) -> tuple[str, ...]:
    if value == "both":
        return options
    if value not in options:
        raise ValueError(f"{key} must be one of {options} or 'both'; got {value!r}.")
    return (value,)
