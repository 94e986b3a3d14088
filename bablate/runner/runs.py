"""Running one study: :func:`run_one` checks the config and the run directory, locks it, and
calls the study's ``run(config, ctx)`` with a :class:`~bablate.runner.context.RunContext`;
:func:`load_study` and :func:`validate_config` find a study and check its config.

The run directory (its files, how a finished run is recognised, the lock) is described in
:mod:`bablate.runner.rundir`. Errors meant for the user (bad config values, an unusable or
locked directory, a full disk, a corrupt checkpoint) are `RunError`; launch.py prints them as
one line. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

import ml_collections

from bablate import io as bbio
from bablate.errors import RunError
from bablate.io import to_jsonable
from bablate.runner.context import RunContext
from bablate.runner.rundir import (
    CONFIG_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SWEEP_MARKER,
    check_workdir,
    clear_run,
    clear_stale,
    config_hash,
    config_to_dict,
    disk_message,
    mismatch_message,
    remove_stale_temps,
    run_lock,
    run_status,
    sha256,
)

# Write failures that are the disk's or the user's (not a bug): reported as one line. EISDIR
# and ENOTDIR: a directory where a file is written (figures/<name>.png, say), or the reverse.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EIO, errno.EISDIR, errno.ENOTDIR})


class RunInterrupted(RunError):
    """Ctrl-C (SIGINT) stopped the run; what it checkpointed is kept for a resume."""


def _study_module(name: str):
    if not isinstance(name, str) or not name:
        raise RunError(f"config.study must be a non-empty module name, got {name!r}")
    module_name = name if "." in name else f"bablate.studies.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise RunError(f"no study module {module_name!r} (config.study = {name!r}); create "
                           f"it with a run(config, ctx) function or fix config.study") from e
        raise


def load_study(name: str) -> Callable:
    """The ``run`` function of study ``name``.

    A plain name (``"toy_superposition"``) is looked up as ``bablate.studies.<name>``; a dotted
    name (``"mypackage.my_study"``) is imported as given, so a study can live outside bablate.
    """
    module = _study_module(name)
    run = getattr(module, "run", None)
    if not callable(run):
        raise RunError(f"study module {module.__name__!r} has no run(config, ctx) function")
    return run


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Calls the study's ``validate(config)`` (if it defines one) on a locked copy.

    A study's ``validate`` checks every value before any work and raises `ConfigError` naming
    the key, the bad value and what would work; it must not train, load or write anything.
    """
    check = getattr(_study_module(config.study), "validate", None)
    if callable(check):
        frozen = copy.deepcopy(config)
        frozen.lock()
        check(frozen)


def _prepare(workdir: Path, status: str, overwrite: bool, resolved: dict) -> None:
    """Makes the directory ready to (re)run: clears what must not survive, writes config.json."""
    if overwrite or status == "different":
        clear_run(workdir)
    elif status == "new":
        clear_stale(workdir)  # a "new" run must not find checkpoints of some earlier config
    else:
        for name in (RESULTS_FILE, RUN_FILE):  # invalid results: never let the dir look finished
            with contextlib.suppress(FileNotFoundError):
                (workdir / name).unlink()
        remove_stale_temps(workdir)
    bbio.atomic_write_json(workdir / CONFIG_FILE, resolved)


def run_one(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
            overwrite: bool = False, writer: bool = True) -> str:
    """Runs one study in ``workdir`` unless an identical finished run is already there.

    The study's ``validate(config)`` runs first, before the directory is touched. The
    directory is locked for the whole run.

    Args:
      config: the resolved config; ``config.study`` names the study module.
      workdir: the run directory (created if needed).
      overwrite: redo the run from scratch even if it is finished or its config differs.
      writer: whether this process writes files (False on non-zero multi-host processes).

    Returns:
      ``"skipped"`` when a finished run with the same config was found, else ``"ran"``.

    Raises:
      RunError: the config is invalid (`ConfigError`), the workdir is unusable, locked, full or
        holds a different config (without ``overwrite``), a checkpoint is corrupt, or the study
        cannot be found. Other exceptions raised by the study propagate after being logged.
    """
    workdir = Path(workdir)
    check_workdir(workdir)
    if (workdir / SWEEP_MARKER).exists():
        raise RunError(f"workdir {str(workdir)!r} holds a sweep ({SWEEP_MARKER}); a single run "
                       "needs its own directory: pass another --workdir")
    for key in ("study", "seed"):
        if key not in config:
            raise RunError(f"the config has no {key!r} field; every study config needs "
                           "'study', 'variant' and 'seed'")
    resolved = config_to_dict(config)
    study_run = load_study(config.study)  # before touching the directory: bad input leaves nothing
    validate_config(config)
    with run_lock(workdir) if writer else contextlib.nullcontext():
        return _run_locked(config, resolved, study_run, workdir, overwrite, writer)


def _run_locked(config, resolved, study_run, workdir: Path, overwrite: bool, writer: bool) -> str:
    status, notes = run_status(resolved, workdir)
    if status == "different" and not overwrite:
        raise RunError(mismatch_message(workdir, notes))
    if status == "finished" and not overwrite:
        print(f"skipping {workdir}: finished with the same config "
              f"({RESULTS_FILE} matches {RUN_FILE}; pass --overwrite to redo)", file=sys.stderr)
        return "skipped"
    chash = config_hash(resolved)
    ctx = RunContext(workdir=workdir, writer=writer, config_hash=chash)
    try:
        if writer:
            _prepare(workdir, status, overwrite, resolved)
        for note in notes if status in ("new", "unfinished") else []:
            ctx.log(f"note: {note}")
        resumed = status == "unfinished" and not overwrite
        ctx.log(f"{'resuming' if resumed else 'starting'} {config.study} "
                f"({config.get('variant', None)}) in {workdir}")
        start = time.perf_counter()
        study_config = copy.deepcopy(config)  # the study cannot change what config.json says
        study_config.lock()
        with ctx.recording_warnings():
            results = study_run(study_config, ctx)
            if not isinstance(results, Mapping):
                raise TypeError(f"{config.study}.run must return a dict of results, "
                                f"got {type(results).__name__}")
            results = to_jsonable(results, "results")
        seconds = time.perf_counter() - start
        if writer:
            _write_results(ctx, config, resolved, results, seconds, chash)
    except KeyboardInterrupt:
        _log_quietly(ctx, "interrupted; rerun the same command to resume")
        raise
    except RunError as e:
        _log_quietly(ctx, f"run failed: {e}")
        raise
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            _log_quietly(ctx, "run failed:\n" + traceback.format_exc().rstrip())
            raise
        msg = disk_message(e, workdir)
        _log_quietly(ctx, f"run failed: {msg}")
        raise RunError(msg) from e
    except BaseException:
        _log_quietly(ctx, "run failed:\n" + traceback.format_exc().rstrip())
        raise
    ctx.log(f"finished in {seconds:.1f} s; report: {workdir / REPORT_FILE}")
    return "ran"


def _write_results(ctx: RunContext, config, resolved: dict, results: dict, seconds: float,
                   chash: str) -> None:
    """report.md, run.json, then results.json (last: its arrival marks the run finished)."""
    workdir = ctx.workdir
    title = f"{config.study}: {config.get('variant', None)}"
    footer = f"Ran in {seconds:.1f} s (seed {config.seed})."
    report = ctx.render_report(title, resolved, results, footer)
    bbio.atomic_write_text(workdir / REPORT_FILE, report)
    data = (json.dumps(results, indent=2, allow_nan=False) + "\n").encode("utf-8")
    bbio.atomic_write_json(workdir / RUN_FILE, {"config_sha256": chash,
                                           "results_sha256": sha256(data)})
    bbio.atomic_write_bytes(workdir / RESULTS_FILE, data)


def _log_quietly(ctx: RunContext, msg: str) -> None:
    """Logs where possible: the failure being logged may be the disk refusing writes."""
    try:
        ctx.log(msg, console=False)  # the caller reports it (launch.py: one line, or traceback)
    except OSError:
        pass
