"""Study configs declared once: typed dataclass fields that carry their default and their check.

A study's config is one tree of frozen dataclasses whose fields say everything about a key::

    @dataclasses.dataclass(frozen=True)
    class Train:
        steps: int = field(10_000, integer(1))
        method: str = field("exact", one_of("exact", "mcmc"))

From that tree `config_dict` makes the ConfigDict the command line edits (the defaults, key by
key; a variant then overrides values by name), `rules` the dotted key → check table that
`check` runs before any work (every bad value becomes one `errors.ConfigError` line naming the
key, the value and what would work, e.g. ``config.ablation.method = 'exct' is not one of
'exact', 'mcmc'``, before the run directory is touched), and `build` the typed config ``run``
reads.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ml_collections

from bablate.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = typing.TypeVar("T", bound="DataclassInstance")
Rule = Callable[[Any], str | None]  # the problem with a value, or None when it is fine
_MISSING = object()
CHECK = "bablate.check"  # the metadata key of a field's check
SECTION = "bablate.section"  # the metadata key of a computed field's ConfigDict section
KEY = "bablate.key"  # the metadata key of a field's key in a flat ConfigDict (see `field`)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(low: int | None = None, high: int | None = None) -> Rule:
    """An int in [low, high] (either bound may be None)."""

    def rule(v):
        if not _is_int(v):
            return "is not an integer"
        if low is not None and v < low:
            return f"must be at least {low}"
        if high is not None and v > high:
            return f"must be at most {high}"
        return None

    return rule


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Rule:
    """A finite int or float within the bounds (closed unless ``*_open``)."""

    def rule(v):
        if not _is_number(v) or not math.isfinite(v):
            return "is not a finite number"
        if low is not None and (v <= low if low_open else v < low):
            return f"must be {'above' if low_open else 'at least'} {low}"
        if high is not None and (v >= high if high_open else v > high):
            return f"must be {'below' if high_open else 'at most'} {high}"
        return None

    return rule


def one_of(*options: Any) -> Rule:
    """One of the given values (e.g. an enum of method names)."""

    def rule(v):
        if v in options and type(v) in {type(o) for o in options}:
            return None
        return "is not one of " + ", ".join(repr(o) for o in options)

    return rule


def boolean() -> Rule:
    """True or False."""
    return lambda v: None if isinstance(v, bool) else "is not true or false"


def text(nonempty: bool = True) -> Rule:
    """A string (non-empty unless told otherwise)."""

    def rule(v):
        if not isinstance(v, str):
            return "is not a string"
        return "is empty" if nonempty and not v.strip() else None

    return rule


def sequence(item: Rule, min_len: int = 0) -> Rule:
    """A list or tuple of at least ``min_len`` items, each passing ``item``."""

    def rule(v):
        if not isinstance(v, (list, tuple)):
            return "is not a list"
        if len(v) < min_len:
            return f"needs at least {min_len} item{'s' * (min_len != 1)}"
        for i, x in enumerate(v):
            problem = item(x)
            if problem:
                return f"has item {i} = {x!r} that {problem}"
        return None

    return rule


@dataclasses.dataclass(frozen=True)
class _Optional:
    """A rule that a field the config does not have passes (:func:`check` asks for the type)."""

    rule: Rule

    def __call__(self, v: Any) -> str | None:
        return None if v is _MISSING else self.rule(v)


def optional(rule: Rule) -> Rule:
    """``rule``, but a field the config does not have is fine."""
    return _Optional(rule)


def field(default: Any, check: Rule | None = None, *, key: str | None = None) -> Any:
    """A dataclass field declared once: its default (the ConfigDict's value, see `config_dict`)
    and its check (None: none; see `rules`). A list, dict or dataclass default is copied for each
    instance; a dataclass type stands for its fields' defaults (as the ConfigDict declares them,
    before any ``__post_init__`` fills in a value). A list default stays a list in the
    ConfigDict (overridden as ``--config.k=1,2``), a tuple a tuple.

    ``key`` is for a study whose ConfigDict is flat (llm_concepts): a value's key there, or a
    dataclass section's prefix of its values' keys (default: the field's name, no prefix)."""
    meta = {CHECK: check, KEY: key}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata={**meta, SECTION: default})
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(settings: Any) -> Any:
    """A field whose typed value the study computes (its ``from_config`` gives it to `build`,
    e.g. a model config whose alphabet size comes from the data) but whose ConfigDict section,
    defaults and checks are those of the dataclass instance ``settings``."""
    return dataclasses.field(default=None, metadata={SECTION: settings})


def _default(f: dataclasses.Field) -> Any:
    if SECTION in f.metadata:
        return f.metadata[SECTION]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name!r} has no default; declare it with config_checks.field")


def _as_config(value: Any) -> Any:
    if isinstance(value, type) and dataclasses.is_dataclass(value):
        return config_dict(value)
    if dataclasses.is_dataclass(value):
        return ml_collections.ConfigDict(
            {f.name: _as_config(getattr(value, f.name)) for f in dataclasses.fields(value)})
    return copy.deepcopy(value)


def config_dict(cls: type, **first: Any) -> ml_collections.ConfigDict:
    """The ConfigDict of ``cls``'s defaults, in field order (a dataclass field becomes a nested
    ConfigDict); ``first`` are keys put before the fields, or values given to fields of those
    names (e.g. ``study``, ``variant``)."""
    c = ml_collections.ConfigDict()
    for key, value in first.items():
        c[key] = value
    for f in dataclasses.fields(cls):
        if f.name not in first:
            c[f.name] = _as_config(_default(f))
    return c


def rules(cls: type, prefix: str = "") -> dict[str, Rule]:
    """The checks of ``cls``'s fields by dotted key, nested dataclasses included, in field
    order."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Rule] = {}
    for f in dataclasses.fields(cls):
        kind = f.metadata.get(SECTION, hints[f.name])
        kind = kind if isinstance(kind, type) else type(kind)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out.update(rules(kind, f"{prefix}{f.name}."))
        elif f.metadata.get(CHECK) is not None:
            out[prefix + f.name] = f.metadata[CHECK]
    return out


def get(config: Mapping, key: str) -> Any:
    """The value at dotted ``key``, or a sentinel when any part is missing."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node


def check(config: Mapping, rules: Mapping[str, Rule]) -> None:
    """Checks every rule; the first failure raises.

    Raises:
      ConfigError: ``config.<key> = <value> <problem>; set --config.<key> to ...``.
    """
    for key, rule in rules.items():
        value = get(config, key)
        if value is _MISSING and not isinstance(rule, _Optional):
            raise ConfigError(f"the config has no field {key!r}, which this study needs; add it "
                              "to the config file")
        problem = rule(value)
        if problem:
            raise ConfigError(f"config.{key} = {value!r} {problem}; fix it in the config file or "
                              f"with --config.{key}=...")


def variant(arg: str | None, variants: tuple[str, ...]) -> str:
    """The variant a ``get_config(arg)`` was asked for: ``arg``, or the first of ``variants``
    when it is empty; an unknown one is a one-line error that lists them."""
    name = arg or variants[0]
    if name not in variants:
        raise ValueError(f"unknown variant {name!r}; choose from: {', '.join(variants)}")
    return name


def require(ok: bool, message: str) -> None:
    """Raises `ConfigError(message)` unless ``ok`` (for checks across several fields)."""
    if not ok:
        raise ConfigError(message)


def parses(from_config: Callable[[Any], Any], config: Any) -> Any:
    """``from_config(config)``, its ValueError / TypeError turned into one `ConfigError` line.

    For a study's own config parser (which builds frozen dataclasses that check themselves):
    whatever it refuses is a config problem, reported before any work.
    """
    try:
        return from_config(config)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"invalid config: {msg}") from e


def build(cls: type[T], node: Mapping, *, skip: tuple[str, ...] = (), where: str = "config",
          **given: Any) -> T:
    """The frozen dataclass ``cls`` built by keyword from the ConfigDict ``node``.

    Each field takes the key of the same name: a dataclass-typed field is built from the
    sub-dict of that name, ``tuple[X, ...]`` fields from a list or tuple, and int / float / str /
    bool fields are converted from the config's value; a field the node lacks keeps its default.
    ``given`` supplies fields that do not come from the node (e.g. a model config computed from
    the data). Keys of the node that no field names raise, so a renamed field cannot be ignored
    silently; ``skip`` lists keys read elsewhere (e.g. ``study``, ``variant``).

    Raises:
      TypeError: a key names no field, or a field without default is missing (one line, with
        the dotted path).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(node.keys()) - names - set(skip) - set(given))
    if unknown:
        raise TypeError(f"{where}.{unknown[0]} is not a field of {cls.__name__} (fields: "
                        f"{', '.join(sorted(names))}); rename the key or add the field")
    kwargs = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in given or f.name not in node:
            continue
        kwargs[f.name] = _convert(hints[f.name], node[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"{where}: {e}") from None


def _convert(kind: Any, value: Any, where: str) -> Any:
    """``value`` as the annotated type ``kind`` (see :func:`build`)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
        return _convert(kind, value, where)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return build(kind, value, where=where)
    if origin is tuple:
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if kind in (int, float, str, bool):
        return kind(value)
    return value
