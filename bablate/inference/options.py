"""The options of each inference method as typed values: one frozen dataclass per method.

``bb.infer(task, "mcmc", key, options=bb.McmcOptions(num_samples=500))`` is the same call as
``bb.infer(task, "mcmc", key, num_samples=500)``: :func:`resolve` maps the keyword form onto
the options object, in this one place. The defaults are the methods' own (``exact``,
``importance``, ``mcmc``, ``svi``; a test holds them equal). A field of the wrong type or
outside its choices fails when the object is built; the ranges are the methods' to check.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from jax.typing import ArrayLike

from bablate.inference.importance import TARGET_SE
from bablate.inference.kernels import FLIPS
from bablate.inference.mcmc import CHAIN_METHODS, SAMPLERS
from bablate.inference.posterior import Posterior
from bablate.inference.svi import ESTIMATORS


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _is_float(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


# A field's annotation -> the values it takes (a bool is no number here: True is no count).
_CHECKS = {"int": ("an int", _is_int), "float": ("a number", _is_float),
           "bool": ("a bool", lambda v: isinstance(v, bool | np.bool_)),
           "str": ("a string", lambda v: isinstance(v, str))}


class _Options:
    """Checks the fields' types and choices on construction; ``kwargs()`` for the method."""

    METHOD: ClassVar[str]
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            kinds = str(field.type).split(" | ")
            if value is None and "None" in kinds:
                continue
            checked = [_CHECKS[k] for k in kinds if k in _CHECKS]
            if checked and not any(ok(value) for _, ok in checked):
                raise ValueError(f"{name}.{field.name} must be "
                                 f"{' or '.join(w for w, _ in checked)}, got {value!r} "
                                 f"({type(value).__name__}).")
            choices = self.CHOICES.get(field.name)
            if choices is not None and value not in choices:
                raise ValueError(f"unknown {field.name} {value!r} in {name}; choose one of "
                                 f"{choices}.")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the method; a None field is left to the method's default
        (every field that may be None defaults to None)."""
        return {n: getattr(self, n) for n in self.names() if getattr(self, n) is not None}


@dataclasses.dataclass(frozen=True)
class ExactOptions(_Options):
    """Options of :func:`bablate.exact` (and :func:`bablate.inference.exact_many`).

    Attributes:
      smooth: the smooth likelihood instead of hard counts.
      chunk_size: masks per jitted call; None: 8192 for one task, 4096 for tasks enumerated
        together.
      max_units: the largest site enumerated (up to 24); None: 20, or under ``method="auto"``
        ``max(max_exact, 20)``.
    """

    METHOD: ClassVar[str] = "exact"
    smooth: bool = False
    chunk_size: int | None = None
    max_units: int | None = None


@dataclasses.dataclass(frozen=True)
class ImportanceOptions(_Options):
    """Options of :func:`bablate.importance` (see its arguments)."""

    METHOD: ClassVar[str] = "importance"
    target_se: float = TARGET_SE
    max_masks: int = 65_536
    min_masks: int = 4096
    round_masks: int = 512
    adapt: bool = True
    components: int = 2
    defensive: float = 0.3
    proposal: ArrayLike | Posterior | None = dataclasses.field(default=None, compare=False)
    smooth: bool = False
    num_draws: int = 2000
    chunk_size: int = 256


@dataclasses.dataclass(frozen=True)
class McmcOptions(_Options):
    """Options of :func:`bablate.mcmc` (see its arguments)."""

    METHOD: ClassVar[str] = "mcmc"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "sampler": SAMPLERS, "chain_method": CHAIN_METHODS, "flips": FLIPS}
    sampler: str = "auto"
    num_samples: int = 2000
    num_warmup: int = 500
    num_chains: int = 4
    thinning: int = 1
    smooth: bool = False
    chain_method: str = "auto"
    init_mask: np.ndarray | None = dataclasses.field(default=None, compare=False)
    flips: str = "multi"
    step_size: float = 1.0


@dataclasses.dataclass(frozen=True)
class SviOptions(_Options):
    """Options of :func:`bablate.svi` (see its arguments)."""

    METHOD: ClassVar[str] = "svi"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"estimator": ESTIMATORS}
    estimator: str = "score"
    num_steps: int = 2000
    num_particles: int = 32
    learning_rate: float = 0.05
    final_learning_rate: float = 0.001
    temperature: float = 0.5
    smooth: bool = False
    num_draws: int = 2000
    steps_per_call: int = 50


Options = ExactOptions | ImportanceOptions | McmcOptions | SviOptions
OPTIONS: dict[str, type[Options]] = {c.METHOD: c for c in (ExactOptions, ImportanceOptions,
                                                           McmcOptions, SviOptions)}


def _listing(method: str) -> str:
    return f"{method}: {', '.join(OPTIONS[method].names())}"


def resolve(method: str, requested: str, options: Options | Sequence[Options] | None,
            keywords: dict[str, Any]) -> Options:
    """The options object of ``method`` (the method chosen for a task).

    ``options`` is one options object, or one per method (under "auto": e.g. exact settings
    for the small sites and importance settings for the large ones); ``keywords`` replace its
    fields. Under ``requested == "auto"`` a keyword goes to each method that has it (and must
    belong to one); otherwise every keyword must be an option of ``method``.

    Raises:
      ValueError: in one line, an unknown option (naming the methods' options) or options
        for another method.
    """
    given = [] if options is None else [options] if isinstance(options, _Options) else options
    if not isinstance(given, Sequence) or not all(isinstance(o, _Options) for o in given):
        raise ValueError(f"options= takes an ExactOptions, ImportanceOptions, McmcOptions or "
                         f"SviOptions (or one per method under method='auto'), got "
                         f"{type(options).__name__}.")
    by_method = {o.METHOD: o for o in given}
    if len(by_method) < len(given):
        raise ValueError(f"options= holds two objects for one method: {given}.")
    if requested != "auto" and set(by_method) - {method}:
        raise ValueError(f"options for method {sorted(set(by_method) - {method})} passed to "
                         f"method {method!r}; pass {OPTIONS[method].__name__}.")
    if requested == "auto":
        unknown = sorted(set(keywords) - {n for c in OPTIONS.values() for n in c.names()})
        if unknown:
            raise ValueError(f"unknown inference option(s) {unknown}; the methods' options are "
                             f"{'; '.join(_listing(m) for m in OPTIONS)}.")
        keywords = {k: v for k, v in keywords.items() if k in OPTIONS[method].names()}
    unknown = sorted(set(keywords) - set(OPTIONS[method].names()))
    if unknown:
        raise ValueError(f"unknown inference option(s) {unknown} for method {method!r}; its "
                         f"options are {', '.join(OPTIONS[method].names())}.")
    base = by_method.get(method) or OPTIONS[method]()
    return dataclasses.replace(base, **keywords) if keywords else base
