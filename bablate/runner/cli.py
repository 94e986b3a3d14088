"""The command line: runs a bablate study, or a sweep of them, into a run directory.

    python -m bablate                                  # the quick toy-superposition study
    python -m bablate --config=rnn_chunks:quick --config.seed=3
    python -m bablate --config=experiments/rnn_chunks.py:quick --config.seed=3
    python -m bablate --config=toy_superposition:quick --sweep --jobs 2
    python -m bablate --config=toy_superposition:quick --sweep --launcher=slurm \
        --slurm_gpus_per_node=1 --slurm_time=120     # one SLURM job per member (bablate[slurm])

``launch.py`` at the top of a clone is the same program. ``--config`` takes a config file
(``path.py[:variant]``) or a study's name (``<study>[:variant]``: the study's own config file,
shipped with the package, so this works from an installed wheel too).

Each run writes config.json, log.txt, figures/, report.md and results.json into --workdir
(default runs/<study>/<variant>, or runs/<study>/<variant>-sweep for a sweep); see README.md,
"Sweeps and run directories".

On CPU, --cpu_devices (default: one per core) splits the CPU into that many JAX devices, so
masks and MCMC chains are evaluated on all cores (XLA:CPU runs most of one device's work on a
single thread); results equal one device's up to float rounding (MCMC draws are identical).
--cpu_devices=1 keeps JAX's default.
A device count forced in XLA_FLAGS (--xla_force_host_platform_device_count) is kept unless
--cpu_devices is given.
"""

import ast
import errno
import logging
import os
import sys
import types
from pathlib import Path
from typing import NoReturn

os.environ.setdefault("MPLBACKEND", "Agg")  # runs write PNGs; never open windows

import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_STUDIES = Path(__file__).resolve().parents[1] / "studies"
_CLONE_EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


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


_DEFAULT = resolve_config("toy_superposition:quick")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT, "A study, or a config file <path>.py[:variant] (default: "
    "toy_superposition:quick); --config.<field>=<value> sets a field.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<study>/<variant>; "
                                "runs/<study>/<variant>-sweep with --sweep).")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run the sweep the config file's get_sweep declares.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Sweep members run at once (in subprocesses when > 1).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Redo finished runs and replace other configs.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "JAX CPU devices for masks and chains (default: one per core; 1: one "
    "device).")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"],
                              "Where sweep members run: this machine, or one SLURM job each.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None, "SLURM partition of the "
                                       "members' jobs (default: the cluster's).")
_SLURM_TIME = flags.DEFINE_integer("slurm_time", 60, "Time limit of each member's SLURM job, "
                                   "in minutes.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs for each member's SLURM "
                                   "job (0: none).")
_SLURM_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", None, "CPU cores for each member's "
                                   "SLURM job (default: the cluster's).")
_SLURM_MEM = flags.DEFINE_float("slurm_mem_gb", None, "Memory of each member's SLURM job in GB "
                                "(default: the cluster's).")
_SLURM_PARALLEL = flags.DEFINE_integer("slurm_array_parallelism", None, "How many members' "
                                       "SLURM jobs run at once (default: all).")
_SLURM_FLAGS = (_SLURM_PARTITION, _SLURM_TIME, _SLURM_GPUS, _SLURM_CPUS, _SLURM_MEM,
                _SLURM_PARALLEL)
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first "
                               "(one process per host of a multi-host job).")
_OWN_FLAGS = ("config", "workdir", "sweep", "jobs", "launcher", "overwrite", "cpu_devices",
              "multihost", *(f.name for f in _SLURM_FLAGS))
_HINTS = {"config": "=<study>[:variant]", "workdir": "=<dir>"}
_EXAMPLES = """\
  python -m bablate                                  # the quick toy-superposition study
  python -m bablate --config=rnn_chunks:quick --config.seed=3
  python -m bablate --config=experiments/rnn_chunks.py:quick --workdir=runs/mine
  python -m bablate --config=toy_superposition:quick --sweep --jobs=2
  python -m bablate --config=toy_superposition --sweep --launcher=slurm --slurm_time=120"""


def usage() -> str:
    """What ``--help`` prints (absl prints the main module's docstring, which `entry` sets to
    this): the command, examples, and bablate's own flags, one line each."""
    lines = []
    for name in _OWN_FLAGS:
        flag = flags.FLAGS[name]
        text, values = flag.help, getattr(flag.parser, "enum_values", None)
        if values:  # absl puts "<a|b>: " before an enum's help
            hint = "=" + "|".join(values)
            text = text.removeprefix(f"<{'|'.join(values)}>: ")
        else:
            hint = _HINTS.get(name, "" if flag.flag_type() == "bool" else
                              f"=<{flag.flag_type()}>")
        lines.append(f"  --{name}{hint}".ljust(34) + f" {text}")
    return (f"python -m bablate: runs a bablate study, or a sweep of them, into a run directory "
            f"(config.json, log.txt, figures/, report.md, results.json).\n\nExamples:\n"
            f"{_EXAMPLES}\n\nFlags:\n" + "\n".join(lines) + "\n\nStudies: "
            f"{', '.join(study_names())}. Details: README.md, \"Sweeps and run directories\".\n")


def _die(msg: str) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


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
config_flags.register_flag_parser_for_type(type(None), config_flags.config_flags._LiteralParser())


def _message(e: BaseException, last: bool = False) -> str:
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


def _load_config_module(path: str) -> types.ModuleType:
    import importlib.machinery
    import importlib.util

    # Source whatever its suffix, as ml_collections loads the --config file.
    loader = importlib.machinery.SourceFileLoader("bablate_launch_config", path)
    module_spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
    if module_spec is None:  # only when no loader is given
        raise ImportError(f"could not load the config file {path}")
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module


def _bad_override(path: str, arg: str | None, argv: list[str]) -> str | None:
    """The one-line message for the first --config.<key> naming no field of the config."""
    try:
        config = _load_config_module(path).get_config(arg or None)
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


def resolved_argv(argv: list[str]) -> tuple[list[str], str, str]:
    """``(argv, spec, resolved)``: the ``--config`` value as given and as a file path, and argv
    with that one value (absl reads the last ``--config``) replaced by the path."""
    spec, at = _DEFAULT, None
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


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors instead of tracebacks and usage text."""
    argv, spec, resolved = resolved_argv(argv)
    path, _, arg = resolved.partition(":")
    if os.path.isdir(path):
        _die(f"config file {path!r} is a directory; pass a config file in it "
             f"(--config={path.rstrip('/')}/<name>.py[:variant]) or a study name (studies: "
             f"{', '.join(study_names())})")
    if not os.path.isfile(path):
        _die(f"config file {path!r} does not exist and names no study; pass "
             f"--config=<study>[:variant] (studies: {', '.join(study_names())}) or "
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
            _die(f"{path} defines no get_config(arg); a config file needs get_config(arg=None) "
                 "returning an ml_collections.ConfigDict (see experiments/ for examples)")
        _die(_bad_override(path, arg, argv) or f"{_message(e, last=True)} (while reading "
             f"--config={spec} and its overrides)")
    except Exception as e:  # flags.Error, or get_config raising (e.g. an unknown variant)
        _die(f"{_message(e, last=True)} (while reading --config={spec} and its overrides)")
    finally:
        absl_log.setLevel(level)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _die(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    if _JOBS.value < 1:
        _die(f"--jobs must be at least 1 (got {_JOBS.value}): it is how many sweep runs go at once")
    if _JOBS.value > 1 and not _SWEEP.value:
        _die("--jobs only applies to sweeps; add --sweep or drop --jobs")
    if _MULTIHOST.value and _SWEEP.value:
        _die("--multihost runs one study across hosts; launch each sweep member as its own job")
    launcher = _slurm_launcher() if _LAUNCHER.value == "slurm" else None
    if launcher is None:
        given = [f"--{f.name}" for f in _SLURM_FLAGS if flags.FLAGS[f.name].present]
        if given:
            _die(f"{given[0]} only applies with --launcher=slurm; add it or drop {given[0]}")
    if _CPU_DEVICES.value is not None and _CPU_DEVICES.value < 1:
        _die(f"--cpu_devices must be at least 1 (got {_CPU_DEVICES.value}); leave it out for one "
             "device per core")
    try:
        setup_cpu_devices(_CPU_DEVICES.value)
    except RuntimeError as e:  # the config file already started JAX
        if _CPU_DEVICES.value is not None:
            _die(f"--cpu_devices={_CPU_DEVICES.value} cannot apply: {e}")
        print(f"warning: keeping JAX's devices ({e})", file=sys.stderr)
    from bablate import errors  # after the flag checks, as the line below
    from bablate.runner import runs, sweeps  # after the flag checks, so bad input fails fast

    try:
        config = _CONFIG.value
    except OSError as e:
        _die(f"could not load the config: {str(e).splitlines()[-1]}")
    except flags.Error:  # get_config returned None
        config = None
    if not isinstance(config, ml_collections.ConfigDict):
        path = config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]
        _die(f"get_config in {path} returned {type(config).__name__}; it must return an "
             "ml_collections.ConfigDict")
    if "study" not in config:
        _die("the config has no 'study' field; every config needs 'study', 'variant' and 'seed'")
    study, variant = config.study, config.get("variant", None) or "default"
    if not isinstance(study, str) or not study:
        _die(f"config.study must be a study module name, got {study!r}")
    # A sweep gets a directory of its own, so it never mixes with a single run of the variant.
    default = Path("runs") / study.rsplit(".", 1)[-1] / (
        f"{variant}-sweep" if _SWEEP.value else str(variant))
    workdir = Path(_WORKDIR.value or default)
    writer = True
    if _MULTIHOST.value:
        import jax

        jax.distributed.initialize()
        writer = jax.process_index() == 0
    # User errors (RunError, a refused write) are one line and exit 2; anything else is a bug
    # and keeps its traceback.
    try:
        if not _SWEEP.value:
            runs.run_one(config, workdir, overwrite=_OVERWRITE.value, writer=writer)
            return
        out = sweeps.run_sweep(_sweep_members(config), workdir, jobs=_JOBS.value,
                               overwrite=_OVERWRITE.value, command_for=_member_command,
                               launcher=launcher)
    except errors.RunError as e:
        _die(_message(e))
    except KeyboardInterrupt:
        interrupted()
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        _die(runs.disk_message(e, workdir))
    if out["failed"]:
        print(f"error: {len(out['failed'])} sweep run(s) failed: {', '.join(out['failed'])}; "
              "see their log.txt / console.txt", file=sys.stderr)
        sys.exit(1)


def _slurm_launcher():
    """The SLURM launcher the --slurm_* flags describe; bad input ends the program (exit 2)."""
    from bablate.runner import slurm  # only when --slurm_* flags are given

    if not _SWEEP.value:
        _die("--launcher=slurm submits the members of a sweep; add --sweep (a single run is "
             "submitted with your own sbatch script running python -m bablate)")
    if _JOBS.value > 1:
        _die("--jobs applies to --launcher=local; with --launcher=slurm use "
             "--slurm_array_parallelism to bound how many members run at once")
    for flag, least in ((_SLURM_TIME, 1), (_SLURM_GPUS, 0), (_SLURM_CPUS, 1),
                        (_SLURM_PARALLEL, 1)):
        if flag.value is not None and flag.value < least:
            _die(f"--{flag.name} must be at least {least} (got {flag.value})")
    if _SLURM_MEM.value is not None and not _SLURM_MEM.value > 0:
        _die(f"--slurm_mem_gb must be a positive number of GB (got {_SLURM_MEM.value})")
    missing = slurm.missing_requirement()
    if missing:
        _die(missing)
    return slurm.SlurmLauncher(
        partition=_SLURM_PARTITION.value, time_min=_SLURM_TIME.value,
        gpus_per_node=_SLURM_GPUS.value, cpus_per_task=_SLURM_CPUS.value,
        mem_gb=_SLURM_MEM.value, array_parallelism=_SLURM_PARALLEL.value)


def setup_cpu_devices(n: int | None) -> int | None:
    """Splits the CPU into ``n`` JAX devices (None: one per core, unless XLA_FLAGS forces a
    count); must run before JAX starts. Returns the count set, or None when left as it was."""
    from bablate import sharding  # on use: the flags are parsed before anything loads JAX

    if n is None:
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            return None
        n = sharding.cpu_cores()
    return sharding.use_cpu_devices(n)


def _sweep_members(config) -> list:
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    path, _, arg = spec.partition(":")
    module = _load_config_module(path)
    if not callable(getattr(module, "get_sweep", None)):
        _die(f"{path} defines no get_sweep(arg); add one returning a list of override dicts "
             "such as [{'seed': 0}, {'seed': 1}], or drop --sweep")
    try:
        sweep = module.get_sweep(arg or None)
    except Exception as e:
        _die(f"get_sweep({arg or None!r}) in {path} failed: {type(e).__name__}: {e}")
    from bablate.runner import sweeps  # on use, after the flag checks (as runs above)

    return sweeps.expand(config, sweep)


def _member_command(member, member_workdir: Path) -> list[str]:
    """launch.py again, with this run's overrides on top of the command line's."""
    from bablate.runner import sweeps  # on use, after the flag checks (as runs above)

    overrides = {**config_flags.get_override_values(flags.FLAGS["config"]), **member.overrides}
    cmd = [*_this_program(), f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}"]
    cmd += [f"--config.{k}={sweeps.format_value(v)}" for k, v in overrides.items()]
    cmd += [f"--workdir={member_workdir}"] + (["--overwrite"] if _OVERWRITE.value else [])
    if _CPU_DEVICES.value is not None:
        cmd.append(f"--cpu_devices={_CPU_DEVICES.value}")
    return cmd


def _this_program() -> list[str]:
    """How this process was started (``python launch.py`` or ``python -m bablate``), so that a
    sweep's members run the same code as the sweep."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name != "__main__.py" and script.is_file():
        return [sys.executable, str(script.resolve())]
    return [sys.executable, "-m", "bablate"]


def interrupted() -> None:
    """What Ctrl-C prints: checkpoints and finished runs are kept, the same command resumes."""
    print("interrupted; rerun the same command to resume", file=sys.stderr)
    sys.exit(130)


def entry() -> None:
    """``python -m bablate`` / ``python launch.py``: parses the flags and runs."""
    sys.modules["__main__"].__doc__ = usage()  # absl's --help prints it
    try:
        app.run(main, flags_parser=_parse_flags)
    except KeyboardInterrupt:
        interrupted()


if __name__ == "__main__":
    entry()
