"""The ``--config`` flag: a study's name or a config file, loaded once, with its overrides,
and the command line's flag parsing with one-line errors (`parse_flags`, `read`).

``--config`` takes a config file (``path.py[:variant]``) or a study's name
(``<study>[:variant]``: the study's own config file, shipped with the package, so this works
from an installed wheel too); ``--config.<key>=<value>`` overrides a field (ml_collections).
The file is executed once per process (`load_module`), registered in ``sys.modules`` while it
runs, so that dataclasses it defines under ``from __future__ import annotations`` can be
created; the sweep and the error messages read that same module.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import logging
import os
import sys
import traceback
import types
from pathlib import Path
from typing import NoReturn

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as ml_flags  # its parser and flag classes

_STUDIES = Path(__file__).resolve().parents[1] / "studies"
_CLONE_EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
MODULE_NAME = "config_config"  # the --config file's module (the name ml_collections gives it)


def study_config_file(name: str) -> Path | None:
    """The config file of the study ``name``: its package's ``variants.py`` (shipped in the
    wheel), else ``experiments/<name>.py`` of the clone this package runs from; None if neither."""
    for path in (_STUDIES / name / "variants.py", _CLONE_EXPERIMENTS / f"{name}.py"):
        if path.is_file():
            return path
    return None


def study_names() -> list[str]:
    """The studies whose config file :func:`study_config_file` finds."""
    names = {p.name for p in _STUDIES.iterdir() if (p / "variants.py").is_file()}
    if _CLONE_EXPERIMENTS.is_dir():
        names |= {p.stem for p in _CLONE_EXPERIMENTS.glob("*.py") if not p.stem.startswith("_")}
    return sorted(names)


def resolve_config(spec: str) -> str:
    """``--config``'s value as ``path[:variant]``: a study name becomes its config file's path;
    a path is kept as given."""
    path, sep, arg = spec.partition(":")
    if os.path.isfile(path) or not path.isidentifier():
        return spec
    found = study_config_file(path)
    return f"{found}{sep}{arg}" if found is not None else spec


DEFAULT = resolve_config("toy_superposition:quick")


def resolved_argv(argv: list[str]) -> tuple[list[str], str, str]:
    """``(argv, spec, resolved)``: the ``--config`` value as given and as a file path, and argv
    with that one value (absl reads the last ``--config``) replaced by the path."""
    spec, at = DEFAULT, None
    for i, a in enumerate(argv[1:], 1):
        if a.startswith(("--config=", "-config=")):
            spec, at = a.split("=", 1)[1], i
        elif a in ("--config", "-config") and i + 1 < len(argv):
            spec, at = argv[i + 1], i + 1
    resolved = resolve_config(spec)
    if resolved != spec and at is not None:  # a study name: absl reads the file it names
        given = argv[at]  # "--config=<spec>", or "<spec>" after a bare --config
        argv = [*argv[:at], resolved if given == spec else f"{given.split('=', 1)[0]}={resolved}",
                *argv[at + 1:]]
    return argv, spec, resolved


def load_module(path: str) -> types.ModuleType:
    """The config file ``path`` as a module, executed once per process (a second call returns
    the same module); it stays in ``sys.modules`` as `MODULE_NAME`."""
    loaded = sys.modules.get(MODULE_NAME)
    if loaded is not None and loaded.__file__ == os.path.abspath(path):
        return loaded
    # Source whatever its suffix, as ml_collections loads the --config file.
    loader = importlib.machinery.SourceFileLoader(MODULE_NAME, os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(MODULE_NAME, loader.path, loader=loader)
    if module_spec is None:  # only when no loader is given
        raise ImportError(f"could not load the config file {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[MODULE_NAME] = module  # dataclasses look their module up while being created
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(MODULE_NAME, None)
        raise
    return module


class _ConfigFileParser(ml_flags.ConfigFileFlagParser):
    """ml_collections' parser of ``--config=path[:arg]``, loading the file with `load_module`."""

    def parse(self, path):
        file, *arg = path.split(":", 1)
        try:
            config = load_module(file).get_config(*arg)
            if config is None:
                logging.warning("%s:get_config() returned None", path)
        except OSError as e:  # reported when the config is read (see cli.main)
            config = ml_flags._ErrorConfig(e)
        except (TypeError, ValueError) as e:  # absl would drop the traceback: keep its text
            raise type(e)("Error whilst parsing config file:\n\n" + traceback.format_exc()) from e
        if self._lock_config and isinstance(getattr(config, "lock", None), types.MethodType):
            config.lock()
        return config


def define_flag(help_string: str) -> flags.FlagHolder:
    """Defines ``--config`` (default: the quick toy-superposition study)."""
    flag = ml_flags._ConfigFlag(
        parser=_ConfigFileParser(name="config", lock_config=True),
        serializer=flags.ArgumentSerializer(), name="config", default=DEFAULT,
        help_string=help_string)
    return flags.DEFINE_flag(flag)


class _ListParser(flags.ArgumentParser):
    """Parses a list field's override: ``1,0.1``, ``(1, 0.1)``, ``[1, 0.1]`` or one value."""

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            return list(argument)
        text = str(argument).strip()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):  # e.g. a,b: comma-separated words
            value = [_literal(part) for part in text.split(",")] if text else []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def flag_type(self):
        return "list"


def _literal(text: str):
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ml_collections overrides tuples but not lists; fields whose value is None take any literal.
config_flags.register_flag_parser_for_type(list, _ListParser())
config_flags.register_flag_parser_for_type(type(None), ml_flags._LiteralParser())


def bad_override(path: str, arg: str | None, argv: list[str]) -> str | None:
    """The one-line message for the first --config.<key> naming no field of the config."""
    try:
        config = load_module(path).get_config(arg or None)
    except Exception:
        return None
    for a in argv[1:]:
        if not a.startswith(("--config.", "-config.", "--noconfig.")):
            continue
        key = a.split("=", 1)[0].split(".", 1)[1]
        node, parts = config, key.split(".")
        for i, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(parts[:i]) or "the top level"
                known = (", ".join(sorted(node.keys())) if hasattr(node, "keys")
                         else f"none, {where} holds a {type(node).__name__} value")
                return (f"'--config.{key}' overrides a key the config does not have ({part!r} "
                        f"not found at {where}; keys there: {known}); check the field names in "
                        f"{path}")
            node = node[part]
    return None


def die(msg: str) -> NoReturn:
    """Ends the program with the one-line error ``msg`` (exit 2)."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def one_line(e: BaseException, last: bool = False) -> str:
    """An exception's text as one line (KeyError's str() would add quotes and escapes): its
    lines joined, or only the ``last`` one (absl puts the cause there)."""
    text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    line = lines[-1] if last else " ".join(lines)
    if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'":  # a quoted repr
        line = line[1:-1]
    return line


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors instead of tracebacks and usage text."""
    argv, spec, resolved = resolved_argv(argv)
    path, _, arg = resolved.partition(":")
    studies = ", ".join(study_names())
    if os.path.isdir(path):
        die(f"config file {path!r} is a directory; pass a config file in it "
             f"(--config={path.rstrip('/')}/<name>.py[:variant]) or a study name (studies: "
             f"{studies})")
    if not os.path.isfile(path):
        die(f"config file {path!r} does not exist and names no study; pass "
             f"--config=<study>[:variant] (studies: {studies}) or "
             "--config=<path of a config file>.py[:variant]")
    # ml_collections logs a warning when get_config returns None; main reports it as one line.
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        return flags.FLAGS(argv)
    except BrokenPipeError:  # --help piped into a reader that stopped (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (AttributeError, KeyError) as e:  # ml_collections: an override names no field
        if "get_config" in str(e):
            die(f"{path} defines no get_config(arg); a config file needs get_config(arg=None) "
                 "returning an ml_collections.ConfigDict (see experiments/ for examples)")
        die(bad_override(path, arg, argv) or f"{one_line(e, last=True)} (while "
             f"reading --config={spec} and its overrides)")
    except Exception as e:  # flags.Error, or get_config raising (e.g. an unknown variant)
        die(f"{one_line(e, last=True)} (while reading --config={spec} and its overrides)")
    finally:
        absl_log.setLevel(level)


def read(holder: flags.FlagHolder) -> ml_collections.ConfigDict:
    """The parsed ``--config``; a file that could not be loaded, a get_config returning no
    ConfigDict, or a config without a study ends the program with one line."""
    try:
        config = holder.value
    except OSError as e:
        die(f"could not load the config: {str(e).splitlines()[-1]}")
    except flags.Error:  # get_config returned None
        config = None
    if not isinstance(config, ml_collections.ConfigDict):
        path = config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]
        die(f"get_config in {path} returned {type(config).__name__}; it must return an "
            "ml_collections.ConfigDict")
    if "study" not in config:
        die("the config has no 'study' field; every config needs 'study', 'variant' and 'seed'")
    if not isinstance(config.study, str) or not config.study:
        die(f"config.study must be a study module name, got {config.study!r}")
    return config
