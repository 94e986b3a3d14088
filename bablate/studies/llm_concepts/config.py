"""The study's config: the checks run before any work, and the typed config the steps read.

``variants.py`` keeps its flat keys (``svi_steps``, ``pa_layers``, ...); the
typed config groups them by step (``ablation.svi.steps``, ``pa.layers``, ...). `KEYS` names,
for every key of the ConfigDict, its field in the typed config, so the grouping is written in
one place and a key that names no field is refused.
"""

from __future__ import annotations

import dataclasses

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
# Every field of variants.py's config, checked before any work (the concept
# names are checked against bablate/data/concepts.json in `validate`).
CONFIG_RULES = {
    "seed": cc.integer(0), "concepts": cc.sequence(cc.text(), min_len=1),
    "max_prompts": cc.integer(1), "head_layers": cc.sequence(_LAYERS), "neuron_layer": _LAYERS,
    "positions": cc.one_of("last", "all"), "readout": cc.one_of("target", "logits"),
    "exact_max_units": cc.integer(0), "ablation_matmuls": cc.one_of("float32", "bfloat16"),
    "length_buckets": cc.integer(1),
    "importance_target_se": cc.number(0, 0.5, low_open=True, high_open=True),
    "importance_max_masks": cc.integer(2), "importance_min_masks": cc.integer(0),
    "importance_round_masks": cc.integer(2),
    "svi_concepts": cc.integer(0), "svi_steps": cc.integer(1), "svi_particles": cc.integer(2),
    "svi_lr": cc.number(0, low_open=True),
    "mcmc_concepts": cc.integer(0), "mcmc_samples": cc.integer(1),
    "mcmc_warmup": cc.integer(0), "mcmc_chains": cc.integer(1),
    "mcmc_sampler": cc.one_of(*MCMC_SAMPLERS),
    "head_mcmc_concepts": cc.integer(0), "head_mcmc_samples": cc.integer(4),
    "head_mcmc_warmup": cc.integer(0), "head_mcmc_chains": cc.integer(2),
    "head_mcmc_sampler": cc.one_of(*MCMC_SAMPLERS),
    "pa_layers": cc.sequence(_LAYERS), "pa_tolerance": cc.number(0, low_open=True),
    "pa_min_neurons": cc.integer(1), "pa_prose_k": cc.integer(1), "intervention_layer": _LAYERS,
    "intervention_num_layers": cc.integer(1), "intervention_positions": cc.integer(1),
    "intervention_template_lag": cc.integer(0),
    "intervention_formats": cc.sequence(cc.one_of(*FORMATS), min_len=1),
    "intervention_questions": cc.integer(1), "intervention_own_rows": cc.integer(1),
    "intervention_samples": cc.integer(1), "intervention_tokens": cc.integer(1),
    "temperature": cc.number(0, low_open=True),
    "ucd_chunks": cc.integer(1), "ucd_steps": cc.integer(1),
}

# ConfigDict key -> dotted field of `Config` (``study`` and ``variant`` are the runner's).
KEYS = {
    "seed": "seed", "concepts": "concepts",
    "max_prompts": "ablation.max_prompts", "head_layers": "ablation.head_layers",
    "neuron_layer": "ablation.neuron_layer", "positions": "ablation.positions",
    "readout": "ablation.readout",
    "exact_max_units": "ablation.exact_max_units", "ablation_matmuls": "ablation.matmuls",
    "length_buckets": "ablation.length_buckets",
    "importance_target_se": "ablation.importance.target_se",
    "importance_max_masks": "ablation.importance.max_masks",
    "importance_min_masks": "ablation.importance.min_masks",
    "importance_round_masks": "ablation.importance.round_masks",
    "svi_concepts": "ablation.svi.concepts", "svi_steps": "ablation.svi.steps",
    "svi_particles": "ablation.svi.particles", "svi_lr": "ablation.svi.lr",
    "mcmc_concepts": "ablation.mcmc.concepts", "mcmc_samples": "ablation.mcmc.samples",
    "mcmc_warmup": "ablation.mcmc.warmup", "mcmc_chains": "ablation.mcmc.chains",
    "mcmc_sampler": "ablation.mcmc.sampler",
    "head_mcmc_concepts": "ablation.head_mcmc.concepts",
    "head_mcmc_samples": "ablation.head_mcmc.samples",
    "head_mcmc_warmup": "ablation.head_mcmc.warmup",
    "head_mcmc_chains": "ablation.head_mcmc.chains",
    "head_mcmc_sampler": "ablation.head_mcmc.sampler",
    "pa_layers": "pa.layers", "pa_tolerance": "pa.tolerance",
    "pa_min_neurons": "pa.min_neurons", "pa_prose_k": "pa.prose_k",
    "intervention_layer": "interventions.layer",
    "intervention_num_layers": "interventions.num_layers",
    "intervention_positions": "interventions.positions",
    "intervention_template_lag": "interventions.template_lag",
    "intervention_formats": "interventions.formats",
    "intervention_questions": "interventions.questions",
    "intervention_own_rows": "interventions.own_rows",
    "intervention_samples": "interventions.samples",
    "intervention_tokens": "interventions.tokens",
    "temperature": "interventions.temperature",
    "ucd_chunks": "ucd.chunks", "ucd_steps": "ucd.steps",
}
RUNNER_KEYS = ("study", "variant")


@dataclasses.dataclass(frozen=True)
class Importance:
    """The certified estimate of every site too large to enumerate: adaptive importance
    sampling (bablate.inference.importance) until every marginal's standard error is at most
    ``target_se``, within ``max_masks`` masks (then the site is reported not converged)."""
    target_se: float
    max_masks: int
    min_masks: int    # masks evaluated before a site may stop (see bb.importance)
    round_masks: int  # masks per round of the adaptive proposal


@dataclasses.dataclass(frozen=True)
class Svi:
    """Mean-field SVI on both sites for the first ``concepts`` concepts: a cross-check,
    compared with the certified estimate in units of its standard errors."""
    concepts: int
    steps: int
    particles: int
    lr: float


@dataclasses.dataclass(frozen=True)
class Mcmc:
    """MCMC on one site for the first ``concepts`` concepts (a cross-check of the certified
    estimate there)."""
    concepts: int
    samples: int
    warmup: int
    chains: int
    sampler: str   # "gradient", "informed" or "stock" (see bablate.infer's mcmc)


@dataclasses.dataclass(frozen=True)
class Ablation:
    """AMDs over attention heads (``head_layers``) and one layer's MLP neurons."""
    max_prompts: int
    head_layers: tuple[int, ...]
    neuron_layer: int
    positions: str         # "last" or "all": the prompt positions masks act at
    readout: str           # "target": the site returns top-1's margin and log-probability
                           # only (llm.target_rule); "logits": the full next-token logits
    exact_max_units: int   # exact enumeration when a site has at most this many units
    matmuls: str           # "float32", or "bfloat16": masks are scored with bf16 projections
                           # (float32 accumulation; llama.LlamaConfig.matmul_dtype)
    length_buckets: int    # with positions "all": prompts run in ≤ this many length groups
    importance: Importance  # the certified estimate of each site above exact_max_units
    svi: Svi         # cross-check on both sites
    mcmc: Mcmc       # cross-check on the neuron site
    head_mcmc: Mcmc  # cross-check on the head site


@dataclasses.dataclass(frozen=True)
class Pa:
    """Population-averaging templates: from prompts, and from prose as the authors build them."""
    layers: tuple[int, ...]
    tolerance: float       # in units of the median per-neuron std of the layer
    min_neurons: int       # the tolerance is raised where fewer neurons qualify
    prose_k: int           # occurrences per prose template


@dataclasses.dataclass(frozen=True)
class Interventions:
    """The occurrence experiment: prose templates grafted / zeroed, and the typed-word control,
    in each prompt format."""
    layer: int
    num_layers: int
    positions: int     # prompt tokens overwritten: this many before the last one
    template_lag: int  # the template of layer l − template_lag is grafted at layer l
    formats: tuple[str, ...]  # of FORMATS; the first is the headline
    questions: int     # neutral questions (bablate/data/neutral_questions.json, categories in turn)
    samples: int       # per neutral question
    own_rows: int      # inhibition: prompts the model completes with the concept, repeated
    tokens: int        # new tokens sampled per row (cut at the model's end of turn)
    temperature: float

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
    chunks: int
    steps: int


@dataclasses.dataclass(frozen=True)
class Config:
    """The typed config of one run."""
    seed: int
    concepts: tuple[str, ...]
    ablation: Ablation
    pa: Pa
    interventions: Interventions
    ucd: Ucd


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
