"""The toy-superposition config, declared once: `StudyConfig`, nested frozen dataclasses whose
fields carry their defaults and checks (`bablate.runner.config_checks.field`).

``variants.py`` makes the ConfigDict edge from it (`config_checks.config_dict`) and overrides
values by name; `validate` runs the fields' checks; `from_config` builds the typed config of
``run`` key by key (`config_checks.build`, so a renamed or misspelled key raises).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from bablate.models import toy
from bablate.runner import config_checks as cc

# Replicate r's instances take their keys from fold_in(root, r) (see train.instance_keys), so the
# named key streams of run() sit at 10_000 and above; more replicates would reuse their keys.
MAX_REPLICATES = 9_999

EXACT_MAX_UNITS = 20  # 2^20 masks per task is as far as exact enumeration goes here
DENSITIES_20_5 = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


@dataclasses.dataclass(frozen=True)
class Importance:
    """Feature importances I_i: ``value``^i (geometric) or ``value``^(−linspace(0, 1, n))
    (loglinear)."""

    kind: str = cc.field("geometric", cc.one_of("geometric", "loglinear"))
    value: float = cc.field(0.7, cc.number(0, low_open=True))


@dataclasses.dataclass(frozen=True)
class DensityGrid:
    """The paper's loglinear density grid (``num`` = 0: use the explicit densities)."""

    num: int = cc.field(0, cc.integer(0))
    ratio: float = cc.field(20.0, cc.number(1, low_open=True))


@dataclasses.dataclass(frozen=True)
class Control:
    """Initialisation control at the sparsest density (tied models): this many more seeds from
    the paper's init and as many from every feature already represented (0 = off)."""

    num_seeds: int = cc.field(0, cc.optional(cc.integer(0)))


@dataclasses.dataclass(frozen=True)
class RotationControl:
    """Basis control: the ablation repeated in this many random rotations of the hidden space
    on replicate 0's ablated instances (0 = off)."""

    num_rotations: int = cc.field(0, cc.optional(cc.integer(0)))


@dataclasses.dataclass(frozen=True)
class Train(toy.TrainConfig):
    """The training recipe (:class:`bablate.models.toy.TrainConfig`: ``init`` "xavier" |
    "notebook", ``loss`` "sum" | "mean", see variants.py), with the study's checks."""

    steps: int = cc.field(10_000, cc.integer(1))
    batch_size: int = cc.field(1024, cc.integer(1))
    learning_rate: float = cc.field(1e-3, cc.number(0, low_open=True))
    weight_decay: float = cc.field(0.01, cc.number(0))
    chunk_steps: int = cc.field(250, cc.integer(1))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Sample sizes of the code-geometry measurements."""

    num_samples: int = cc.field(8192, cc.integer(1))
    num_points: int = cc.field(101, cc.integer(2))
    num_projections: int = cc.field(32, cc.integer(1))


@dataclasses.dataclass(frozen=True)
class McmcCheck:
    """MCMC against exact marginals on the first ``num_tasks`` (informative first) tasks."""

    enabled: bool = cc.field(True, cc.boolean())
    num_samples: int = cc.field(2000, cc.integer(1))
    num_warmup: int = cc.field(500, cc.integer(0))
    num_chains: int = cc.field(2, cc.integer(1))
    num_tasks: int = cc.field(3, cc.integer(0))


@dataclasses.dataclass(frozen=True)
class Ablation:
    """The feature tasks and how their AMDs are inferred: every ``feature_stride``-th feature's
    task, at ``num_densities`` densities spread dense → sparsest (0 = all)."""

    enabled: bool = cc.field(True, cc.boolean())
    epsilon: float = cc.field(0.25, cc.number(0, low_open=True))
    num_positive: int = cc.field(256, cc.integer(1))
    num_negative: int = cc.field(256, cc.integer(1))
    method: str = cc.field("exact", cc.one_of("exact", "mcmc"))
    feature_stride: int = cc.field(1, cc.integer(1))
    mcmc_check: McmcCheck = cc.field(McmcCheck())
    num_densities: int = cc.field(0, cc.optional(cc.integer(0)))


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One toy-superposition setting, as ``run`` reads it.

    ``densities`` holds the densities the study runs: the config's list, or the grid when
    ``density_grid.num`` > 0 (`from_config` resolves it).
    """

    variant: str = cc.field("quick")
    seed: int = cc.field(0, cc.integer(0))
    setting: str = cc.field("20->5", cc.text())
    model: str = cc.field("relu_out", cc.one_of("relu_out", "linear", "relu_hidden"))
    n_features: int = cc.field(20, cc.integer(1))
    m_hidden: int = cc.field(5, cc.integer(1))
    importance: Importance = cc.field(Importance())
    # Densities 1 − S: the config's explicit list (the grid's when density_grid.num > 0).
    densities: tuple[float, ...] = cc.field(list(DENSITIES_20_5),
                                            cc.sequence(cc.number(0, 1, low_open=True)))
    density_grid: DensityGrid = cc.field(DensityGrid())
    # Independent instances per density (seeds of the vmapped batch).
    num_replicates: int = cc.field(1, cc.integer(1, MAX_REPLICATES))
    control: Control = cc.field(Control())
    rotation_control: RotationControl = cc.field(RotationControl())
    train: toy.TrainConfig = cc.section(Train())  # built as a toy.TrainConfig by from_config
    geometry: Geometry = cc.field(Geometry())
    ablation: Ablation = cc.field(Ablation())

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
    train = cc.build(toy.TrainConfig, c.train, where="config.train")
    return cc.build(StudyConfig, c, skip=("study",), densities=_densities(c), train=train)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the whole config before any work (called by the runner); raises ConfigError."""
    cc.check(config, cc.rules(StudyConfig))
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
