"""The toy-superposition config: value rules, ``validate``, and the typed config of ``run``.

``variants.py`` is the ConfigDict edge; `from_config` turns it into
`StudyConfig`, nested frozen dataclasses that mirror the ConfigDict key by key (built by
keyword with `bablate.runner.config_checks.build`, so a renamed or misspelled key raises).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from bablate.models import toy
from bablate.runner import config_checks as cc

# Replicate r's instances take their keys from fold_in(root, r) (see train.instance_keys), so the
# named key streams of run() sit at 10_000 and above; more replicates would reuse their keys.
MAX_REPLICATES = 9_999

# Every field of variants.py's config, checked before any work.
CONFIG_RULES = {
    "seed": cc.integer(0), "setting": cc.text(),
    "model": cc.one_of("relu_out", "linear", "relu_hidden"),
    "n_features": cc.integer(1), "m_hidden": cc.integer(1),
    "importance.kind": cc.one_of("geometric", "loglinear"),
    "importance.value": cc.number(0, low_open=True),
    "densities": cc.sequence(cc.number(0, 1, low_open=True)),
    "density_grid.num": cc.integer(0), "density_grid.ratio": cc.number(1, low_open=True),
    "num_replicates": cc.integer(1, MAX_REPLICATES),
    "control.num_seeds": cc.optional(cc.integer(0)),
    "rotation_control.num_rotations": cc.optional(cc.integer(0)),
    "train.steps": cc.integer(1), "train.batch_size": cc.integer(1),
    "train.learning_rate": cc.number(0, low_open=True), "train.weight_decay": cc.number(0),
    "train.chunk_steps": cc.integer(1),
    "geometry.num_samples": cc.integer(1), "geometry.num_points": cc.integer(2),
    "geometry.num_projections": cc.integer(1),
    "ablation.enabled": cc.boolean(), "ablation.epsilon": cc.number(0, low_open=True),
    "ablation.num_positive": cc.integer(1), "ablation.num_negative": cc.integer(1),
    "ablation.method": cc.one_of("exact", "mcmc"), "ablation.feature_stride": cc.integer(1),
    "ablation.num_densities": cc.optional(cc.integer(0)),
    "ablation.mcmc_check.enabled": cc.boolean(), "ablation.mcmc_check.num_samples": cc.integer(1),
    "ablation.mcmc_check.num_warmup": cc.integer(0),
    "ablation.mcmc_check.num_chains": cc.integer(1),
    "ablation.mcmc_check.num_tasks": cc.integer(0),
}
EXACT_MAX_UNITS = 20  # 2^20 masks per task is as far as exact enumeration goes here


@dataclasses.dataclass(frozen=True)
class Importance:
    """Feature importances I_i: ``value``^i (geometric) or ``value``^(−linspace(0, 1, n))."""

    kind: str
    value: float


@dataclasses.dataclass(frozen=True)
class DensityGrid:
    """The paper's loglinear density grid (``num`` = 0: use the explicit densities)."""

    num: int
    ratio: float


@dataclasses.dataclass(frozen=True)
class Control:
    """Initialisation control at the sparsest density: this many seeds per start (0 = off)."""

    num_seeds: int = 0


@dataclasses.dataclass(frozen=True)
class RotationControl:
    """Basis control: the ablation repeated in this many random rotations of the hidden space
    on replicate 0's ablated instances (0 = off)."""

    num_rotations: int = 0


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Sample sizes of the code-geometry measurements."""

    num_samples: int
    num_points: int
    num_projections: int


@dataclasses.dataclass(frozen=True)
class McmcCheck:
    """MCMC against exact marginals on the first ``num_tasks`` (informative first) tasks."""

    enabled: bool
    num_samples: int
    num_warmup: int
    num_chains: int
    num_tasks: int


@dataclasses.dataclass(frozen=True)
class Ablation:
    """The feature tasks and how their AMDs are inferred."""

    enabled: bool
    epsilon: float
    num_positive: int
    num_negative: int
    method: str
    feature_stride: int
    mcmc_check: McmcCheck
    num_densities: int = 0  # ablate this many densities, spread dense → sparsest; 0 = all


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One toy-superposition setting, as ``run`` reads it.

    ``densities`` holds the densities the study runs: the config's list, or the grid when
    ``density_grid.num`` > 0 (`from_config` resolves it).
    """

    seed: int
    variant: str
    setting: str
    model: str
    n_features: int
    m_hidden: int
    importance: Importance
    densities: tuple[float, ...]
    density_grid: DensityGrid
    num_replicates: int
    train: toy.TrainConfig
    geometry: Geometry
    ablation: Ablation
    control: Control = Control()
    rotation_control: RotationControl = RotationControl()

    def __post_init__(self):
        if not self.densities or not all(0 < d <= 1 for d in self.densities):
            raise ValueError(f"densities must be a non-empty list in (0, 1]; got "
                             f"{self.densities}. Set config.densities or "
                             "config.density_grid.num.")
        if self.importance.kind not in ("geometric", "loglinear"):
            raise ValueError(f"importance.kind must be 'geometric' or 'loglinear'; got "
                             f"{self.importance.kind!r}.")
        a = self.ablation
        if a.enabled and a.method == "exact" and self.m_hidden > EXACT_MAX_UNITS:
            raise ValueError(f"exact ablation needs m_hidden <= {EXACT_MAX_UNITS} (got "
                             f"{self.m_hidden}); set ablation.method='mcmc'.")
        self.spec  # noqa: B018 -- the model spec checks sizes and kind now, not mid-run

    @property
    def spec(self) -> toy.ToySpec:
        """The toy model: sizes, kind and feature importances."""
        n, imp = self.n_features, self.importance
        make = (toy.importance_geometric if imp.kind == "geometric"
                else toy.importance_loglinear)
        return toy.ToySpec(n, self.m_hidden, self.model, make(n, imp.value))


def _densities(c: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The densities 1 − S to train at: the grid if ``density_grid.num`` > 0, else the list."""
    grid = c.density_grid
    if grid.num > 0:
        return toy.densities_loglinear(float(grid.ratio), int(grid.num))
    return tuple(float(d) for d in c.densities)


def from_config(c: ml_collections.ConfigDict) -> StudyConfig:
    """The typed config of one run (raises ValueError / TypeError naming the bad field)."""
    return cc.build(StudyConfig, c, skip=("study",), densities=_densities(c))


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, CONFIG_RULES)
    cc.require(config.densities or config.density_grid.num > 0,
               "config.densities is empty and config.density_grid.num is 0; give densities "
               "(e.g. --config.densities=1,0.1) or a grid size")
    cc.require(not (config.ablation.enabled and config.ablation.method == "exact"
                    and config.m_hidden > EXACT_MAX_UNITS),
               f"exact ablation needs m_hidden <= {EXACT_MAX_UNITS} (got {config.m_hidden}); "
               "set --config.ablation.method=mcmc")
    mc = config.ablation.mcmc_check
    cc.require(not (config.ablation.enabled and mc.enabled and mc.num_tasks < 1),
               "config.ablation.mcmc_check.num_tasks = 0 leaves the MCMC check nothing to "
               "compare; set --config.ablation.mcmc_check.num_tasks to 1 or more, or "
               "--config.ablation.mcmc_check.enabled=false")
    cc.parses(from_config, config)
