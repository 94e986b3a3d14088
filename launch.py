"""Runs a bablate study, or a sweep of them, into a run directory.

    python launch.py                                   # the quick toy-superposition study
    python launch.py --config=experiments/rnn_chunks.py:quick --config.seed=3
    python launch.py --config=experiments/toy_superposition.py:quick --sweep --jobs 2

Each run writes config.json, log.txt, figures/, report.md and results.json into --workdir
(default runs/<study>/<variant>); see README.md, "Sweeps and run directories".

On CPU, --cpu_devices (default: one per core) splits the CPU into that many JAX devices, so
masks and MCMC chains are evaluated on all cores (XLA:CPU runs most of one device's work on a
single thread); results equal one device's up to float rounding (MCMC draws are identical).
--cpu_devices=1 keeps JAX's default.
A device count forced in XLA_FLAGS (--xla_force_host_platform_device_count) is kept unless
--cpu_devices is given.
"""

import os
import re
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # runs write PNGs; never open windows

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_DEFAULT = str(Path(__file__).resolve().parent / "experiments" / "toy_superposition.py") + ":quick"
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT, "Study config file[:variant]; override fields with --config.a.b=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<study>/<variant>).")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run the sweep the config file's get_sweep declares.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Sweep members run at once (in subprocesses when > 1).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Redo finished runs and replace other configs.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "JAX CPU devices to split masks and MCMC chains over (default: one per "
    "core, or the count XLA_FLAGS forces); 1 = a single device. Results do not depend on it "
    "beyond float rounding.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first "
                               "(one process per host of a TPU pod or multi-GPU job).")


def _die(msg: str):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors instead of tracebacks and usage text."""
    spec = _DEFAULT
    for i, a in enumerate(argv[1:], 1):
        if a.startswith(("--config=", "-config=")):
            spec = a.split("=", 1)[1]
        elif a in ("--config", "-config") and i + 1 < len(argv):
            spec = argv[i + 1]
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        _die(f"config file {path!r} does not exist; pass --config=experiments/<study>.py[:variant]"
             " (the files in experiments/ are the available studies)")
    try:
        return flags.FLAGS(argv)
    except AttributeError as e:  # ml_collections: an override names a key the config lacks
        key = str(e).strip("\"'")
        bad = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")
               and key in re.split(r"[.=]", a.split("=", 1)[0])[1:]]
        _die(f"{bad[0] if bad else key!r} overrides a key the config does not have ({key!r}); "
             f"check the field names in {path}")
    except Exception as e:  # flags.Error, or get_config raising (e.g. an unknown variant)
        last = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        _die(f"{last[-1].strip() if last else type(e).__name__}"
             f" (while reading --config={spec} and its overrides)")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _die(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    if _JOBS.value < 1:
        _die(f"--jobs must be at least 1 (got {_JOBS.value}): it is how many sweep runs go at once")
    if _JOBS.value > 1 and not _SWEEP.value:
        _die("--jobs only applies to sweeps; add --sweep or drop --jobs")
    if _MULTIHOST.value and _SWEEP.value:
        _die("--multihost runs one study across hosts; launch each sweep member as its own job")
    if _CPU_DEVICES.value is not None and _CPU_DEVICES.value < 1:
        _die(f"--cpu_devices must be at least 1 (got {_CPU_DEVICES.value}); leave it out for one "
             "device per core")
    try:
        setup_cpu_devices(_CPU_DEVICES.value)
    except RuntimeError as e:  # the config file already started JAX
        if _CPU_DEVICES.value is not None:
            _die(f"--cpu_devices={_CPU_DEVICES.value} cannot apply: {e}")
        print(f"warning: keeping JAX's devices ({e})", file=sys.stderr)
    from bablate import runs, sweeps  # after the flag checks, so bad input fails fast

    try:
        config = _CONFIG.value
        study, variant = config.study, config.get("variant", None) or "default"
    except OSError as e:
        _die(f"could not load the config: {str(e).splitlines()[-1]}")
    except AttributeError:
        _die("the config has no 'study' field; every config needs 'study', 'variant' and 'seed'")
    workdir = Path(_WORKDIR.value or Path("runs") / study.rsplit(".", 1)[-1] / variant)
    writer = True
    if _MULTIHOST.value:
        import jax

        jax.distributed.initialize()
        writer = jax.process_index() == 0
    try:
        if not _SWEEP.value:
            runs.run_one(config, workdir, overwrite=_OVERWRITE.value, writer=writer)
            return
        out = sweeps.run_sweep(_sweep_members(config), workdir, jobs=_JOBS.value,
                               overwrite=_OVERWRITE.value, command_for=_member_command)
    except runs.RunError as e:
        _die(str(e))
    if out["failed"]:
        print(f"error: {len(out['failed'])} sweep run(s) failed: {', '.join(out['failed'])}; "
              "see their log.txt / console.txt", file=sys.stderr)
        sys.exit(1)


def setup_cpu_devices(n: int | None) -> int | None:
    """Splits the CPU into ``n`` JAX devices (None: one per core, unless XLA_FLAGS forces a
    count); must run before JAX starts. Returns the count set, or None when left as it was."""
    from bablate import sharding

    if n is None:
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            return None
        n = sharding.cpu_cores()
    return sharding.use_cpu_devices(n)


def _sweep_members(config) -> list:
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    path, _, arg = spec.partition(":")
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("bablate_sweep_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_sweep", None)):
        _die(f"{path} defines no get_sweep(arg); add one returning a list of override dicts "
             "such as [{'seed': 0}, {'seed': 1}], or drop --sweep")
    try:
        sweep = module.get_sweep(arg or None)
    except Exception as e:
        _die(f"get_sweep({arg or None!r}) in {path} failed: {type(e).__name__}: {e}")
    from bablate import sweeps

    return sweeps.expand(config, sweep)


def _member_command(member, member_workdir: Path) -> list[str]:
    """launch.py again, with this run's overrides on top of the command line's."""
    from bablate import sweeps

    overrides = {**config_flags.get_override_values(flags.FLAGS["config"]), **member.overrides}
    cmd = [sys.executable, str(Path(__file__).resolve()),
           f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}"]
    cmd += [f"--config.{k}={sweeps.format_value(v)}" for k, v in overrides.items()]
    cmd += [f"--workdir={member_workdir}"] + (["--overwrite"] if _OVERWRITE.value else [])
    if _CPU_DEVICES.value is not None:
        cmd.append(f"--cpu_devices={_CPU_DEVICES.value}")
    return cmd


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
