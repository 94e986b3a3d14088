"""The study's config, declared once: `Config`, nested frozen dataclasses whose fields carry
their defaults, checks and flat keys (`bablate.runner.config_checks.field`).

The ConfigDict keeps flat keys (``svi_steps``, ``pa_layers``, ...); the typed config groups them
by step (``ablation.svi.steps``, ``pa.layers``, ...): a section's ``key`` is its values' prefix,
a value's ``key`` its whole key. From the tree come `KEYS` (flat key → dotted field),
`CONFIG_RULES` (flat key → check), `config_dict` (the defaults, which variants.py overrides by
name) and `nest`, which refuses a key that names no field.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Iterator

import ml_collections

from bablate.runner import config_checks as cc
from bablate.testbeds.llama import load_concepts, neutral_questions

_NUM_LAYERS = 30  # SmolLM2-135M
_LAYERS = cc.integer(0, _NUM_LAYERS - 1)
# The library's MCMC samplers ("informed" scores every single flip per step: d model calls).
MCMC_SAMPLERS = ("gradient", "informed", "stock")
# Prompt formats of the interventions: "authors", the bare question (as the authors' code
# feeds TREC questions); "wrapped", the question as "Q: <question>\nA:".
FORMATS = ("authors", "wrapped")
RUNNER_KEYS = ("study", "variant")


@dataclasses.dataclass(frozen=True)
class Importance:
    """The certified estimate of every site too large to enumerate: adaptive importance
    sampling (bablate.inference.importance) until every marginal's standard error is at most
    ``target_se``, within ``max_masks`` masks (then the site is reported not converged)."""
    target_se: float = cc.field(0.05, cc.number(0, 0.5, low_open=True, high_open=True))
    max_masks: int = cc.field(4096, cc.integer(2))
    # masks evaluated before a site may stop (see bb.importance)
    min_masks: int = cc.field(512, cc.integer(0))
    round_masks: int = cc.field(256, cc.integer(2))  # masks per round of the adaptive proposal


@dataclasses.dataclass(frozen=True)
class Svi:
    """Mean-field SVI on both sites for the first ``concepts`` concepts: a cross-check,
    compared with the certified estimate in units of its standard errors."""
    concepts: int = cc.field(1, cc.integer(0))
    steps: int = cc.field(40, cc.integer(1))
    particles: int = cc.field(8, cc.integer(2))
    lr: float = cc.field(0.1, cc.number(0, low_open=True))


@dataclasses.dataclass(frozen=True)
class Mcmc:
    """MCMC on one site for the first ``concepts`` concepts (a cross-check of the certified
    estimate there)."""
    concepts: int = cc.field(0, cc.integer(0))
    samples: int = cc.field(40, cc.integer(1))
    warmup: int = cc.field(20, cc.integer(0))
    chains: int = cc.field(2, cc.integer(1))
    # "gradient", "informed" or "stock" (see bablate.infer's mcmc)
    sampler: str = cc.field("gradient", cc.one_of(*MCMC_SAMPLERS))


@dataclasses.dataclass(frozen=True)
class HeadMcmc(Mcmc):
    """MCMC on the head site (its own defaults, and at least 4 draws over 2 chains)."""
    samples: int = cc.field(150, cc.integer(4))
    warmup: int = cc.field(50, cc.integer(0))
    chains: int = cc.field(2, cc.integer(2))


@dataclasses.dataclass(frozen=True)
class Ablation:
    """AMDs over attention heads (``head_layers``) and one layer's MLP neurons."""
    # every correct training prompt (23–29 per concept)
    max_prompts: int = cc.field(32, cc.integer(1))
    head_layers: tuple[int, ...] = cc.field(list(range(_NUM_LAYERS)), cc.sequence(_LAYERS))
    neuron_layer: int = cc.field(20, _LAYERS)
    # "last" or "all": the prompt positions masks act at
    positions: str = cc.field("last", cc.one_of("last", "all"))
    # "target": the site returns top-1's margin and log-probability only (llm.target_rule);
    # "logits": the full next-token logits
    readout: str = cc.field("target", cc.one_of("target", "logits"))
    # exact enumeration when a site has at most this many units
    exact_max_units: int = cc.field(12, cc.integer(0))
    # "float32", or "bfloat16": masks are scored with bf16 projections (float32 accumulation;
    # llama.LlamaConfig.matmul_dtype)
    matmuls: str = cc.field("float32", cc.one_of("float32", "bfloat16"), key="ablation_matmuls")
    # with positions "all": prompts run in ≤ this many length groups
    length_buckets: int = cc.field(1, cc.integer(1))
    # the certified estimate of each site above exact_max_units
    importance: Importance = cc.field(Importance(), key="importance_")
    svi: Svi = cc.field(Svi(), key="svi_")  # cross-check on both sites
    mcmc: Mcmc = cc.field(Mcmc(), key="mcmc_")  # cross-check on the neuron site
    head_mcmc: HeadMcmc = cc.field(HeadMcmc(), key="head_mcmc_")  # cross-check on the head site


@dataclasses.dataclass(frozen=True)
class Pa:
    """Population-averaging templates: from prompts, and from prose as the authors build them."""
    layers: tuple[int, ...] = cc.field([0, 5, 10, 15, 20, 25], cc.sequence(_LAYERS))
    # in units of the median per-neuron std of the layer
    tolerance: float = cc.field(0.5, cc.number(0, low_open=True))
    # the tolerance is raised where fewer neurons qualify
    min_neurons: int = cc.field(16, cc.integer(1))
    prose_k: int = cc.field(5, cc.integer(1))  # occurrences per prose template


@dataclasses.dataclass(frozen=True)
class Interventions:
    """The occurrence experiment: prose templates grafted / zeroed, and the typed-word control,
    in each prompt format."""
    layer: int = cc.field(2, _LAYERS)
    num_layers: int = cc.field(8, cc.integer(1))
    # prompt tokens overwritten: this many before the last one
    positions: int = cc.field(3, cc.integer(1))
    # the template of layer l − template_lag is grafted at layer l
    template_lag: int = cc.field(1, cc.integer(0))
    # of FORMATS; the first is the headline
    formats: tuple[str, ...] = cc.field(["authors", "wrapped"],
                                        cc.sequence(cc.one_of(*FORMATS), min_len=1))
    # neutral questions (bablate/data/neutral_questions.json, categories in turn)
    questions: int = cc.field(30, cc.integer(1))
    samples: int = cc.field(1, cc.integer(1))  # per neutral question
    # inhibition: prompts the model completes with the concept, repeated
    own_rows: int = cc.field(30, cc.integer(1))
    # new tokens sampled per row (cut at the model's end of turn)
    tokens: int = cc.field(48, cc.integer(1))
    temperature: float = cc.field(0.8, cc.number(0, low_open=True), key="temperature")

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers whose entering residual stream the interventions overwrite."""
        return tuple(range(self.layer, self.layer + self.num_layers))

    @property
    def template_layers(self) -> tuple[int, ...]:
        """The layers whose templates are grafted, one per layer of `layers`."""
        return tuple(layer - self.template_lag for layer in self.layers)


@dataclasses.dataclass(frozen=True)
class Ucd:
    """Unsupervised chunk discovery per PA layer."""
    chunks: int = cc.field(16, cc.integer(1))
    steps: int = cc.field(200, cc.integer(1))


@dataclasses.dataclass(frozen=True)
class Config:
    """The typed config of one run."""
    seed: int = cc.field(0, cc.integer(0))
    # concept names, checked against bablate/data/concepts.json in `validate`
    concepts: tuple[str, ...] = cc.field(["cheese", "capitals", "numbers"],
                                         cc.sequence(cc.text(), min_len=1))
    ablation: Ablation = cc.field(Ablation())
    pa: Pa = cc.field(Pa(), key="pa_")
    interventions: Interventions = cc.field(Interventions(), key="intervention_")
    ucd: Ucd = cc.field(Ucd(), key="ucd_")


def _leaves(cls: type, path: str = "", prefix: str = ""
            ) -> Iterator[tuple[str, str, dataclasses.Field]]:
    """(dotted field, flat ConfigDict key, field) of every value of ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, key = hints[f.name], f.metadata.get(cc.KEY)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield from _leaves(kind, f"{path}{f.name}.", key or "")
        else:
            yield f"{path}{f.name}", key or prefix + f.name, f


# ConfigDict key -> dotted field of `Config`, and -> its check (``study`` and ``variant`` are
# the runner's).
KEYS = {key: dotted for dotted, key, _ in _leaves(Config)}
CONFIG_RULES = {key: f.metadata[cc.CHECK] for _, key, f in _leaves(Config)}


def config_dict(variant: str) -> ml_collections.ConfigDict:
    """The flat ConfigDict of `Config`'s defaults, one key per value, after ``study`` and
    ``variant``."""
    c = ml_collections.ConfigDict({"study": "llm_concepts", "variant": variant})
    defaults = Config()
    for key, dotted in KEYS.items():
        c[key] = copy.deepcopy(functools.reduce(getattr, dotted.split("."), defaults))
    return c


def nest(config: ml_collections.ConfigDict) -> dict:
    """The flat ConfigDict as nested dicts shaped like `Config` (see `KEYS`).

    Raises:
      TypeError: a key of the config names no field (one line, with the known keys).
    """
    nested: dict = {}
    for key in config.keys():
        if key in RUNNER_KEYS:
            continue
        if key not in KEYS:
            raise TypeError(f"config.{key} is not a key of this study (keys: "
                            f"{', '.join(sorted(KEYS))}); rename the key or add it to KEYS in "
                            "bablate/studies/llm_concepts/config.py")
        *groups, name = KEYS[key].split(".")
        node = nested
        for g in groups:
            node = node.setdefault(g, {})
        node[name] = config[key]
    return nested


def from_config(config: ml_collections.ConfigDict) -> Config:
    """The typed config of ``config`` (built by keyword, see `config_checks.build`)."""
    return cc.build(Config, nest(config))


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    known = load_concepts()
    unknown = [n for n in config.concepts if n not in known]
    cc.require(not unknown, f"config.concepts names unknown concepts {unknown}; available: "
               f"{', '.join(sorted(known))}")
    for key in ("mcmc_concepts", "head_mcmc_concepts", "svi_concepts"):
        cc.require(config[key] <= len(config.concepts),
                   f"config.{key} = {config[key]} exceeds the {len(config.concepts)} concepts; "
                   f"lower it to at most {len(config.concepts)}")
    cc.require(config.importance_round_masks <= config.importance_max_masks and
               config.importance_min_masks <= config.importance_max_masks,
               f"config.importance_round_masks = {config.importance_round_masks} and "
               f"config.importance_min_masks = {config.importance_min_masks} must not exceed "
               f"config.importance_max_masks = {config.importance_max_masks}")
    cc.require(config.length_buckets == 1 or config.positions == "all",
               f"config.length_buckets = {config.length_buckets} groups prompts only with "
               "config.positions = 'all'; set length_buckets = 1 or positions = 'all'")
    # Templates are built at every intervention layer (not only at pa_layers), so the only
    # constraint is that the layers exist.
    last = config.intervention_layer + config.intervention_num_layers - 1
    cc.require(last <= _NUM_LAYERS - 1,
               f"config.intervention_layer + config.intervention_num_layers - 1 = {last} is past "
               f"SmolLM2's last layer {_NUM_LAYERS - 1}; lower either of them")
    cc.require(config.intervention_template_lag <= config.intervention_layer,
               f"config.intervention_template_lag = {config.intervention_template_lag} would "
               f"graft the template of layer {config.intervention_layer} - "
               f"{config.intervention_template_lag} < 0; lower it to at most "
               f"config.intervention_layer = {config.intervention_layer}")
    formats = list(config.intervention_formats)
    cc.require(len(set(formats)) == len(formats),
               f"config.intervention_formats = {formats} names a format twice; name each once")
    available = len(neutral_questions())
    cc.require(config.intervention_questions <= available,
               f"config.intervention_questions = {config.intervention_questions} exceeds the "
               f"{available} questions of bablate/data/neutral_questions.json; lower it")
    cc.parses(from_config, config)
