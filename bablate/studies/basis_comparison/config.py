"""The basis-comparison study's config, declared once: :class:`StudyConfig`, nested frozen
dataclasses whose fields carry their defaults and checks
(:func:`bablate.runner.config_checks.field`).

``variants.py`` makes the ConfigDict from it and overrides values by name; :func:`validate`
checks every value before any work and :func:`from_config` builds the typed config key for key
(:func:`bablate.runner.config_checks.build`).
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


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, cc.rules(StudyConfig))
    cc.require(config.toy.enabled or config.rnn.enabled or config.llm.enabled,
               "no network enabled; set --config.toy.enabled, rnn.enabled or llm.enabled to true")
    cc.parses(from_config, config)


@dataclasses.dataclass(frozen=True)
class DictionarySpec:
    """``<network>.dictionary``: one fit per comma-separated method of ``methods``.

    ``num_codes = 0`` takes the network's default (see :meth:`configs`).
    """

    methods: str = cc.field("nmf,sae_topk", cc.text())  # comma-separated: nmf, sae_l1, sae_topk
    # 0 = 2 × n_features (toy) / hidden (rnn) / 512 (llm)
    num_codes: int = cc.field(0, cc.integer(0))
    steps: int = cc.field(1000, cc.integer(1))
    top_k: int = cc.field(1, cc.integer(1))
    sae_l1: float = cc.field(0.3, cc.number(0))
    nmf_l1: float = cc.field(0.3, cc.number(0))
    learning_rate: float = cc.field(3e-3, cc.number(0, low_open=True))
    batch_size: int = cc.field(1024, cc.optional(cc.integer(1)))

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

    num_samples: int = cc.field(1000, cc.integer(1))
    num_warmup: int = cc.field(300, cc.integer(0))
    num_chains: int = cc.field(2, cc.integer(1))


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """``inference``: exact enumeration up to ``max_exact`` units, MCMC beyond."""

    max_exact: int = cc.field(20, cc.integer(0))
    mcmc: MCMCConfig = cc.field(MCMCConfig())


@dataclasses.dataclass(frozen=True)
class SVIConfig:
    """``llm.svi``: mean-field SVI of every task (sites too large to enumerate)."""

    estimator: str = cc.field("concrete", cc.one_of("score", "concrete"))
    num_steps: int = cc.field(80, cc.integer(1))
    num_particles: int = cc.field(16, cc.integer(2))
    learning_rate: float = cc.field(0.15, cc.number(0, low_open=True))
    temperature: float = cc.field(0.5, cc.number(0, low_open=True))


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """``toy``: the |x| model in superposition, its feature tasks and dictionaries."""

    enabled: bool = cc.field(True, cc.boolean())
    n_features: int = cc.field(8, cc.integer(1))
    m_hidden: int = cc.field(5, cc.integer(1))
    importance: float = cc.field(0.9, cc.number(0, low_open=True))
    densities: tuple[float, ...] = cc.field(
        [0.03], cc.sequence(cc.number(0, 1, low_open=True), min_len=1))
    train_steps: int = cc.field(6000, cc.integer(1))
    batch_size: int = cc.field(1024, cc.integer(1))
    fit_samples: int = cc.field(16384, cc.integer(1))
    num_positive: int = cc.field(64, cc.integer(1))
    num_negative: int = cc.field(64, cc.integer(1))
    epsilon: float = cc.field(0.1, cc.number(0, low_open=True))
    dictionary: DictionarySpec = cc.field(DictionarySpec())

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

    enabled: bool = cc.field(True, cc.boolean())
    family: str = cc.field("compositional", cc.one_of(
        "reflection", "compositional", "transfer", "context", "hierarchy"))
    hidden: int = cc.field(12, cc.integer(1))
    cell: str = cc.field("tanh", cc.one_of("linear", "tanh", "gru"))
    train_steps: int = cc.field(800, cc.integer(1))
    windows: int = cc.field(6, cc.integer(1))
    window: int = cc.field(100, cc.integer(2))
    max_tasks: int = cc.field(8, cc.integer(1))
    min_examples: int = cc.field(20, cc.integer(1))
    fit_tokens: int = cc.field(20_000, cc.integer(1))
    dictionary: DictionarySpec = cc.field(DictionarySpec("sae_topk", 16, 1500, top_k=4))

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

    enabled: bool = cc.field(False, cc.boolean())
    # The last MLP: zeroing it at the answer position breaks every concept.
    layer: int = cc.field(29, cc.integer(0, 29))
    # Tasks (bablate/data/concepts.json).
    concepts: tuple[str, ...] = cc.field(("cheese", "capitals", "numbers"),
                                         cc.sequence(cc.text()))
    # Prompts the dictionary is fitted on; () = the task concepts.
    fit_concepts: tuple[str, ...] = cc.field((), cc.sequence(cc.text()))
    max_prompts: int = cc.field(12, cc.integer(1))  # correctly completed prompts per concept
    # Mask the MLP hidden at the last prompt position ("all": every).
    positions: str = cc.field("last", cc.one_of("last", "all"))
    top_k: tuple[int, ...] = cc.field((1, 2, 4, 16, 64), cc.sequence(cc.integer(1)))
    stability_seeds: int = cc.field(1, cc.integer(0))  # extra SVI seeds for the first concept
    # The SAE's center c (a ≈ c + codes·D) is one more ablatable unit.
    center_unit: bool = cc.field(True, cc.boolean())
    svi: SVIConfig = cc.field(SVIConfig())
    dictionary: DictionarySpec = cc.field(
        DictionarySpec("sae_topk", 512, 300, top_k=16, batch_size=256))

    def __post_init__(self):
        if not self.fit_concepts:
            object.__setattr__(self, "fit_concepts", self.concepts)
        if not self.enabled:
            return  # a disabled layer's settings are checked by the field checks only
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

    variant: str = cc.field("quick")
    seed: int = cc.field(0, cc.integer(0))
    top_k: tuple[int, ...] = cc.field([1, 2, 4], cc.sequence(cc.integer(1), min_len=1))
    # Exact enumeration up to inference.max_exact units (codes), MCMC beyond.
    inference: InferenceConfig = cc.field(InferenceConfig())
    toy: ToyConfig = cc.field(ToyConfig())
    rnn: RNNConfig = cc.field(RNNConfig())
    llm: LLMConfig = cc.field(LLMConfig)  # its declared defaults: fit_concepts ()


def from_config(config: ml_collections.ConfigDict) -> StudyConfig:
    """The typed config (raises ValueError / TypeError naming the bad field)."""
    return cc.build(StudyConfig, config, skip=("study",))
