"""The study's typed config, declared once: nested frozen dataclasses whose fields carry their
defaults and checks (`bablate.runner.config_checks.field`); variants.py makes the ConfigDict
from them and overrides values by name; `validate` checks it and `from_config` reads it."""

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

    steps: int = cc.field(800, cc.integer(1))
    window: int = cc.field(200, cc.integer(2))
    batch: int = cc.field(8, cc.integer(1))
    learning_rate: float = cc.field(5e-3, cc.number(0, low_open=True))
    chunk: int = cc.field(50, cc.integer(1))
    eval_every: int = cc.field(50, cc.integer(0))
    # "both": ours fills the headline keys and trains the network that PA, perturbation,
    # grafting and ablation read; results["dsc"][recipe] holds each.
    recipe: str = cc.field("both", cc.one_of(*RECIPES, "both"))
    authors_steps: int = cc.field(200, cc.integer(1))
    authors_window: int = cc.field(2000, cc.integer(2))

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
    """DSC settings; ``protocol`` "long" (ours), "authors" (their notebooks: one trajectory of
    ``authors_length`` tokens, lookup fitted on its first ``authors_fit_steps``, vocabulary
    rebuilt from each parse) or "both" (long fills the headline keys;
    results["dsc"][recipe][protocol] holds each); see bablate.chunks.dsc."""

    k: int = cc.field(5, cc.integer(1))
    rounds: int = cc.field(6, cc.integer(1))
    top: int = cc.field(5, cc.integer(1))
    min_count: int = cc.field(10, cc.integer(1))
    max_tokens: int = cc.field(30_000, cc.integer(1))
    protocol: str = cc.field("long")  # checked by __post_init__; variants.py sets "both"
    authors_length: int = cc.field(2000)
    authors_fit_steps: int = cc.field(chunks.AUTHORS_FIT_STEPS)

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

    enabled: bool = cc.field(True, cc.boolean())
    seeds: int = cc.field(10, cc.integer(1))
    steps: int = cc.field(100, cc.integer(1))
    eval_every: int = cc.field(5, cc.integer(1))
    chunk: int = cc.field(5, cc.integer(1))


@dataclasses.dataclass(frozen=True)
class MCMCConfig:
    """MCMC settings of the ablation (used when the site is too large to enumerate)."""

    num_samples: int = cc.field(1000, cc.integer(1))
    num_warmup: int = cc.field(300, cc.integer(0))
    num_chains: int = cc.field(2, cc.integer(1))
    sampler: str = cc.field("informed", cc.one_of("auto", "informed", "gradient", "stock"))
    check_exact: bool = cc.field(True, cc.boolean())


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """Bayesian ablation of the hidden units, one task per chunk, one AMD per correctness rule:
    top-1 hits (headline keys) and the mean probability of the correct symbol (keys with the
    suffix _smooth_top1). ``method`` "auto": exact for hidden <= 16, else MCMC."""

    enabled: bool = cc.field(True, cc.boolean())
    method: str = cc.field("auto", cc.one_of("auto", "exact", "mcmc"))
    rules: tuple[str, ...] = cc.field(("top1", "smooth_top1"),
                                      cc.sequence(cc.one_of(*rnn_testbed.RULES), min_len=1))
    windows: int = cc.field(12, cc.integer(1))
    window: int = cc.field(100, cc.integer(2))
    max_tasks: int = cc.field(8, cc.integer(1))
    min_examples: int = cc.field(20, cc.integer(1))
    mcmc: MCMCConfig = cc.field(MCMCConfig())


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """``config.model``: the network's cell and width (`bablate.models.rnn.RNNConfig`, whose
    alphabet size `from_config` takes from the data)."""

    cell: str = cc.field("linear", cc.one_of(*rnn.CELLS))
    hidden: int = cc.field(12, cc.integer(1))


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Typed settings of the study, each field declared once with its default and check."""

    seed: int = cc.field(0, cc.integer(0))
    family: str = cc.field("compositional", cc.one_of(*sequences.FAMILIES))
    # hierarchy only: number of composed words (the paper sweeps 0, 5, ..., 35)
    n_h: int = cc.field(15, cc.integer(0))
    # 0 = the paper's sequence length; else words drawn (repeats for reflection)
    n_draws: int = cc.field(0, cc.integer(0))
    model: rnn.RNNConfig = cc.section(ModelSettings())
    train: TrainSettings = cc.field(TrainSettings())
    compare_seeds: int = cc.field(10, cc.integer(1))  # trained vs untrained DSC comparison
    dsc: DSCConfig = cc.field(DSCConfig())
    # PA tolerance, in units of the std of all hidden values
    pa_tolerance: float = cc.field(0.5, cc.number(0, low_open=True))
    perturbation: bool = cc.field(True, cc.boolean())
    grafting: GraftingConfig = cc.field(GraftingConfig())
    ablation: AblationConfig = cc.field(AblationConfig())


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, cc.rules(StudyConfig))
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
