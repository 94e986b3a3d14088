"""Sweep members: the runs a config file declares with ``get_sweep(arg) -> list[dict]``, and the
command-line flags that run them (``--sweep``, ``--jobs``, ``--launcher``).

Each dict maps dotted config keys to values (``{"seed": 1, "model.hidden": 24}``). A member runs
in ``<workdir>/<name>`` where the name is made from its overrides (``seed=1,model.hidden=24``),
so rerunning a sweep finds the same directories (`bablate.runner.sweeps` runs them).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from bablate import errors
from bablate.runner import config_file

_MAX_NAME = 120

SWEEP = flags.DEFINE_bool("sweep", False, "Run the sweep the config file's get_sweep declares.")
JOBS = flags.DEFINE_integer("jobs", 1, "Sweep members run at once (in subprocesses when > 1).")
LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"],
                             "Where sweep members run: this machine, or one SLURM job each.")


def flag_problem() -> str | None:
    """What is wrong with ``--jobs`` (None: nothing)."""
    if JOBS.value < 1:
        return f"--jobs must be at least 1 (got {JOBS.value}): it is how many sweep runs go at once"
    if JOBS.value > 1 and not SWEEP.value:
        return "--jobs only applies to sweeps; add --sweep or drop --jobs"
    return None


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One run of a sweep: its directory name, its overrides and the resolved config."""

    name: str
    overrides: dict[str, Any]
    config: ml_collections.ConfigDict


def format_value(value: Any) -> str:
    """A value as it appears in a member name and on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def member_name(overrides: Mapping[str, Any]) -> str:
    """The sub-directory name of a sweep member, e.g. ``seed=1,density=0.1``.

    Keys keep the order the config file gave them. Characters that are awkward in file names
    become ``_``; names longer than 120 characters are cut and made unique with a short hash.
    """
    if not overrides:
        return "base"
    def value(v):  # commas separate keys, so sequences are joined with '-'
        if isinstance(v, (list, tuple)):
            return "-".join(value(x) for x in v)
        return format_value(v).replace(",", "_")

    name = ",".join(f"{k}={value(v)}" for k, v in overrides.items())
    name = re.sub(r"[^A-Za-z0-9._,=+-]", "_", name)
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}_{digest}"
    return name


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted keys set; unknown keys and wrong types raise RunError."""
    out = copy.deepcopy(config)
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise errors.RunError(f"sweep override key {key!r} must be a dotted config key string")
        node, parts = out, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = ", ".join(sorted(node.keys())) if isinstance(
                    node, ml_collections.ConfigDict) else "none (not a section)"
                raise errors.RunError(
                    f"sweep sets unknown config key {key!r} ({'.'.join(parts[:i + 1])!r} not "
                    f"found; keys there: {known}); fix get_sweep in the config file")
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise errors.RunError(f"sweep sets {key}={value!r}, which the config does not accept "
                                  f"({e}); fix get_sweep in the config file") from e
    return out


def expand(config: ml_collections.ConfigDict, sweep: Sequence[Mapping[str, Any]]) -> list[Member]:
    """Checks a ``get_sweep`` result and turns it into members with resolved configs.

    Raises:
      RunError: the sweep is empty or not a list of dicts, sets an unknown key or a value of
        the wrong type, or two members get the same directory name.
    """
    if isinstance(sweep, Mapping) or not isinstance(sweep, Sequence) or not sweep:
        raise errors.RunError(
            "get_sweep must return a non-empty list of dicts of config overrides, "
            f"got {type(sweep).__name__} {sweep!r:.80}")
    members: list[Member] = []
    seen: dict[str, int] = {}  # directory name -> the first item that maps to it
    for i, overrides in enumerate(sweep):
        if not isinstance(overrides, Mapping):
            raise errors.RunError(f"get_sweep item {i} is a {type(overrides).__name__}, not a dict "
                                  "of config overrides")
        overrides = dict(overrides)
        for key, value in overrides.items():
            _check_value(i, key, value)
        name = member_name(overrides)
        if name in seen:
            raise errors.RunError(
                f"sweep items {seen[name]} and {i} both map to directory {name!r}; "
                "make their overrides differ")
        seen[name] = i
        members.append(Member(name, overrides, apply_overrides(config, overrides)))
    return members


def _check_value(i: int, key: Any, value: Any) -> None:
    """Refuses sweep values that cannot round-trip through a command line and config.json."""
    if value is None:
        raise errors.RunError(
            f"get_sweep item {i} sets {key}=None; a sweep value must be a number, "
            "string, bool or list (to switch something off use its own off "
            "value, e.g. 0 or false)")
    if isinstance(value, float) and not math.isfinite(value):
        raise errors.RunError(f"get_sweep item {i} sets {key}={value!r}; sweep values must be "
                              "finite numbers")
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_value(i, key, v)
    elif not isinstance(value, (bool, int, float, str)):
        raise errors.RunError(f"get_sweep item {i} sets {key} to a {type(value).__name__}; sweep "
                              "values must be numbers, strings, bools or lists of them")


def members(config: ml_collections.ConfigDict) -> list[Member]:
    """The members the ``--config`` file's ``get_sweep`` declares, over ``config`` (the file is
    not executed again: `config_file.load_module` returns the module the flag loaded).

    Raises:
      ConfigError: the file has no get_sweep, or it failed.
      RunError: its result is not a usable sweep (see `expand`).
    """
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    path, _, arg = spec.partition(":")
    module = config_file.load_module(path)
    if not callable(getattr(module, "get_sweep", None)):
        raise errors.ConfigError(
            f"{path} defines no get_sweep(arg); add one returning a list of override dicts such "
            "as [{'seed': 0}, {'seed': 1}], or drop --sweep")
    try:
        sweep = module.get_sweep(arg or None)
    except Exception as e:
        raise errors.ConfigError(
            f"get_sweep({arg or None!r}) in {path} failed: {type(e).__name__}: {e}") from e
    return expand(config, sweep)


def member_command(member: Member, member_workdir: Path) -> list[str]:
    """This program again, with the member's overrides on top of the command line's."""
    config = flags.FLAGS["config"]
    overrides = {**config_flags.get_override_values(config), **member.overrides}
    cmd = [*this_program(), f"--config={config_flags.get_config_filename(config)}"]
    cmd += [f"--config.{k}={format_value(v)}" for k, v in overrides.items()]
    cmd += [f"--workdir={member_workdir}"] + (["--overwrite"] if flags.FLAGS.overwrite else [])
    if flags.FLAGS.cpu_devices is not None:
        cmd.append(f"--cpu_devices={flags.FLAGS.cpu_devices}")
    return cmd


def this_program() -> list[str]:
    """How this process was started (``python launch.py`` or ``python -m bablate``), so that a
    sweep's members run the same code as the sweep."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name != "__main__.py" and script.is_file():
        return [sys.executable, str(script.resolve())]
    return [sys.executable, "-m", "bablate"]
