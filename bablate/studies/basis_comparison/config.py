"""The basis-comparison study's config: its rules and its typed form.

``variants.py`` builds the ConfigDict; :func:`validate` checks every value
before any work and :func:`from_config` turns it into :class:`StudyConfig`, nested frozen
dataclasses that mirror the ConfigDict key for key (built by keyword with
:func:`bablate.runner.config_checks.build`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, cast

import ml_collections

from bablate import dictionary as dl
from bablate.models import toy as toy_model
from bablate.runner import config_checks as cc

# The methods of :class:`bablate.dictionary.DictionaryConfig` (``dl.METHODS``), which checks the
# name it is given.
DictionaryMethod = Literal["nmf", "sae_l1", "sae_topk"]


def _dictionary_rules(prefix: str) -> dict:
    return {f"{prefix}.methods": cc.text(), f"{prefix}.num_codes": cc.integer(0),
            f"{prefix}.steps": cc.integer(1), f"{prefix}.top_k": cc.integer(1),
            f"{prefix}.sae_l1": cc.number(0), f"{prefix}.nmf_l1": cc.number(0),
            f"{prefix}.learning_rate": cc.number(0, low_open=True),
            f"{prefix}.batch_size": cc.optional(cc.integer(1))}


# Every field of variants.py's config, checked before any work.
CONFIG_RULES = {
    "seed": cc.integer(0), "top_k": cc.sequence(cc.integer(1), min_len=1),
    "inference.max_exact": cc.integer(0), "inference.mcmc.num_samples": cc.integer(1),
    "inference.mcmc.num_warmup": cc.integer(0), "inference.mcmc.num_chains": cc.integer(1),
    "toy.enabled": cc.boolean(), "toy.n_features": cc.integer(1), "toy.m_hidden": cc.integer(1),
    "toy.importance": cc.number(0, low_open=True),
    "toy.densities": cc.sequence(cc.number(0, 1, low_open=True), min_len=1),
    "toy.train_steps": cc.integer(1), "toy.batch_size": cc.integer(1),
    "toy.fit_samples": cc.integer(1), "toy.num_positive": cc.integer(1),
    "toy.num_negative": cc.integer(1), "toy.epsilon": cc.number(0, low_open=True),
    **_dictionary_rules("toy.dictionary"),
    "rnn.enabled": cc.boolean(),
    "rnn.family": cc.one_of("reflection", "compositional", "transfer", "context", "hierarchy"),
    "rnn.hidden": cc.integer(1), "rnn.cell": cc.one_of("linear", "tanh", "gru"),
    "rnn.train_steps": cc.integer(1), "rnn.windows": cc.integer(1), "rnn.window": cc.integer(2),
    "rnn.max_tasks": cc.integer(1), "rnn.min_examples": cc.integer(1),
    "rnn.fit_tokens": cc.integer(1), **_dictionary_rules("rnn.dictionary"),
    "llm.enabled": cc.boolean(), "llm.layer": cc.integer(0, 29),
    "llm.concepts": cc.sequence(cc.text()), "llm.fit_concepts": cc.sequence(cc.text()),
    "llm.max_prompts": cc.integer(1), "llm.positions": cc.one_of("last", "all"),
    "llm.top_k": cc.sequence(cc.integer(1)), "llm.stability_seeds": cc.integer(0),
    "llm.center_unit": cc.boolean(), "llm.svi.estimator": cc.one_of("score", "concrete"),
    "llm.svi.num_steps": cc.integer(1), "llm.svi.num_particles": cc.integer(2),
    "llm.svi.learning_rate": cc.number(0, low_open=True),
    "llm.svi.temperature": cc.number(0, low_open=True), **_dictionary_rules("llm.dictionary"),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    cc.require(config.toy.enabled or config.rnn.enabled or config.llm.enabled,
               "no network enabled; set --config.toy.enabled, rnn.enabled or llm.enabled to true")
    cc.parses(from_config, config)


@dataclasses.dataclass(frozen=True)
class DictionarySpec:
    """``<network>.dictionary``: one fit per comma-separated method of ``methods``.

    ``num_codes = 0`` takes the network's default (see :meth:`configs`).
    """

    methods: str
    num_codes: int
    steps: int
    top_k: int = 1
    sae_l1: float = 0.3
    nmf_l1: float = 0.3
    learning_rate: float = 3e-3
    batch_size: int = 1024

    def configs(self, default_codes: int) -> tuple[dl.DictionaryConfig, ...]:
        """One :class:`bablate.dictionary.DictionaryConfig` per method, in the given order."""
        methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        if not methods:
            raise ValueError("dictionary.methods is empty; give e.g. 'nmf' or 'sae_topk,sae_l1'.")
        codes = self.num_codes or default_codes
        return tuple(
            dl.DictionaryConfig(method=cast(DictionaryMethod, m), num_codes=codes, steps=self.steps,
                                l1=self.nmf_l1 if m == "nmf" else self.sae_l1, top_k=self.top_k,
                                learning_rate=self.learning_rate, batch_size=self.batch_size)
            for m in methods)


@dataclasses.dataclass(frozen=True)
class MCMCConfig:
    """``inference.mcmc``: the sampler beyond ``max_exact`` units."""

    num_samples: int
    num_warmup: int
    num_chains: int


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """``inference``: exact enumeration up to ``max_exact`` units, MCMC beyond."""

    max_exact: int
    mcmc: MCMCConfig


@dataclasses.dataclass(frozen=True)
class SVIConfig:
    """``llm.svi``: mean-field SVI of every task (sites too large to enumerate)."""

    estimator: str = "concrete"
    num_steps: int = 100
    num_particles: int = 16
    learning_rate: float = 0.1
    temperature: float = 0.5


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """``toy``: the |x| model in superposition, its feature tasks and dictionaries."""

    enabled: bool
    n_features: int
    m_hidden: int
    importance: float
    densities: tuple[float, ...]
    train_steps: int
    batch_size: int
    fit_samples: int
    num_positive: int
    num_negative: int
    epsilon: float
    dictionary: DictionarySpec

    def __post_init__(self):
        self.dictionaries  # noqa: B018 -- refuses a bad dictionary method or size now

    @property
    def train(self) -> toy_model.TrainConfig:
        return toy_model.TrainConfig(steps=self.train_steps, batch_size=self.batch_size)

    @property
    def dictionaries(self) -> tuple[dl.DictionaryConfig, ...]:
        """Default size: two codes per feature (its + and − half-directions)."""
        return self.dictionary.configs(default_codes=2 * self.n_features)


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    """``rnn``: the chunk study's RNN, its chunk-continuation tasks and dictionaries."""

    enabled: bool
    family: str
    hidden: int
    cell: str
    train_steps: int
    windows: int
    window: int
    max_tasks: int
    min_examples: int
    fit_tokens: int
    dictionary: DictionarySpec

    def __post_init__(self):
        self.dictionaries  # noqa: B018 -- refuses a bad dictionary method or size now

    @property
    def dictionaries(self) -> tuple[dl.DictionaryConfig, ...]:
        """Default size: one code per hidden unit."""
        return self.dictionary.configs(default_codes=self.hidden)


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """``llm``: the SmolLM2 MLP layer: concepts, prompts, site, dictionary and SVI settings.

    ``fit_concepts = ()`` means the task concepts (set so in ``__post_init__``).
    """

    enabled: bool
    layer: int
    concepts: tuple[str, ...]
    fit_concepts: tuple[str, ...]
    max_prompts: int
    positions: str
    top_k: tuple[int, ...]
    stability_seeds: int
    svi: SVIConfig
    dictionary: DictionarySpec
    center_unit: bool = True

    def __post_init__(self):
        if not self.fit_concepts:
            object.__setattr__(self, "fit_concepts", self.concepts)
        if not self.enabled:
            return  # a disabled layer's settings are checked by CONFIG_RULES only
        if len(self.concepts) < 2:
            raise ValueError(f"llm.concepts needs at least two concepts (polysemanticity is "
                             f"across tasks); got {list(self.concepts)}.")
        self.dictionaries  # noqa: B018 -- refuses a bad dictionary method or size now

    @property
    def dictionaries(self) -> tuple[dl.DictionaryConfig, ...]:
        """Default size: 512 codes."""
        return self.dictionary.configs(default_codes=512)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The whole study: seed, the top-k list, inference, and the three networks."""

    seed: int
    variant: str
    top_k: tuple[int, ...]
    inference: InferenceConfig
    toy: ToyConfig
    rnn: RNNConfig
    llm: LLMConfig


def from_config(config: ml_collections.ConfigDict) -> StudyConfig:
    """The typed config (raises ValueError / TypeError naming the bad field)."""
    return cc.build(StudyConfig, config, skip=("study",))
