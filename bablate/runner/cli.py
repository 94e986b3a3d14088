"""The command line: runs a bablate study, or a sweep of them, into a run directory.

    python -m bablate --config=rnn_chunks:quick --config.seed=3
    python -m bablate --config=toy_superposition:quick --sweep --jobs 2

``launch.py`` at the top of a clone is the same program. ``--config``: a study's name or a
config file (`bablate.runner.config_file`); the sweep flags: `bablate.runner.sweep_spec`; the
SLURM flags: `bablate.runner.slurm`. Each run writes config.json, log.txt, figures/, report.md
and results.json into --workdir (default runs/<study>/<variant>, or
runs/<study>/<variant>-sweep for a sweep); see README.md, "Sweeps and run directories".
On CPU, --cpu_devices (default: one per core; one forced in XLA_FLAGS is kept unless it is
given) splits the CPU into that many JAX devices (`bablate.sharding.setup_cpu_devices`).
"""

import errno
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # runs write PNGs; never open windows

from absl import app, flags  # noqa: E402

from bablate.runner import config_file, slurm, sweep_spec  # noqa: E402
from bablate.runner.config_file import resolve_config, resolved_argv  # noqa: E402, F401

_die, _parse_flags = config_file.die, config_file.parse_flags

_CONFIG = config_file.define_flag(
    "A study, or a config file <path>.py[:variant] (default: toy_superposition:quick); "
    "--config.<field>=<value> sets a field.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<study>/<variant>; "
                                "runs/<study>/<variant>-sweep with --sweep).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Redo finished runs and replace other configs.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "JAX CPU devices for masks and chains (default: one per core; 1: one "
    "device).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first "
                               "(one process per host of a multi-host job).")
_OWN_FLAGS = ("config", "workdir", "sweep", "jobs", "launcher", "overwrite", "cpu_devices",
              "multihost", *(f.name for f in slurm.FLAGS))
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
            f"{', '.join(config_file.study_names())}. Details: README.md, \"Sweeps and run "
            "directories\".\n")


def main(argv: list[str]) -> None:
    from bablate import errors  # with runs below, after the flag checks

    if len(argv) > 1:
        _die(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    problem = sweep_spec.flag_problem()
    if problem:
        _die(problem)
    if _MULTIHOST.value and sweep_spec.SWEEP.value:
        _die("--multihost runs one study across hosts; launch each sweep member as its own job")
    try:
        launcher = slurm.launcher_from_flags()
    except errors.ConfigError as e:
        _die(str(e))
    if _CPU_DEVICES.value is not None and _CPU_DEVICES.value < 1:
        _die(f"--cpu_devices must be at least 1 (got {_CPU_DEVICES.value}); leave it out for one "
             "device per core")
    try:
        setup_cpu_devices(_CPU_DEVICES.value)
    except RuntimeError as e:  # the config file already started JAX
        if _CPU_DEVICES.value is not None:
            _die(f"--cpu_devices={_CPU_DEVICES.value} cannot apply: {e}")
        print(f"warning: keeping JAX's devices ({e})", file=sys.stderr)
    from bablate.runner import runs, sweeps  # after the flag checks, so bad input fails fast

    config = config_file.read(_CONFIG)
    study, variant = config.study, config.get("variant", None) or "default"
    # A sweep gets a directory of its own, so it never mixes with a single run of the variant.
    sweep = sweep_spec.SWEEP.value
    default = Path("runs") / study.rsplit(".", 1)[-1] / (f"{variant}-sweep" if sweep
                                                         else str(variant))
    workdir = Path(_WORKDIR.value or default)
    writer = True
    if _MULTIHOST.value:
        import jax

        jax.distributed.initialize()
        writer = jax.process_index() == 0
    # User errors (RunError, a refused write) are one line and exit 2; anything else is a bug
    # and keeps its traceback.
    try:
        if not sweep:
            runs.run_one(config, workdir, overwrite=_OVERWRITE.value, writer=writer)
            return
        out = sweeps.run_sweep(sweep_spec.members(config), workdir, jobs=sweep_spec.JOBS.value,
                               overwrite=_OVERWRITE.value, command_for=sweep_spec.member_command,
                               launcher=launcher)
    except errors.RunError as e:
        _die(config_file.one_line(e))
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


def setup_cpu_devices(n: int | None) -> int | None:
    """`bablate.sharding.setup_cpu_devices` (imported when called: JAX loads with it)."""
    from bablate import sharding  # on use: importing it loads JAX, which must start after this

    return sharding.setup_cpu_devices(n)


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
