"""Run directories: one study run = one directory with its config, numbers, figures and report.

A run directory holds::

    config.json       the resolved config, written when the run starts
    log.txt           everything ``ctx.log`` printed, appended line by line
    figures/*.png     every figure passed to ``ctx.figure``
    state/*.msgpack   checkpoints from ``ctx.save_state`` (so an interrupted run resumes)
    report.md         title, config, the study's text and figures in call order
    run.json          the config's and the results' SHA-256, written just before results.json
    results.json      the study's numbers, written LAST: a run is finished when it parses and
                      run.json binds it to this config
    .lock             held (``fcntl.flock``) by the one process working in the directory

Every file except the append-only log is written atomically (temp file in the same directory,
fsync, ``os.replace``, fsync of the directory), so a run killed at any moment never leaves a
half-written file behind and never looks finished unless it is. Rerunning with the same config
skips a finished run and resumes an unfinished one; a different config is refused unless
``overwrite=True``.

Nothing in a run directory is trusted blindly: checkpoints are msgpack data (numbers, strings,
arrays and containers; loading one cannot run code) stamped with the config's hash, never
loaded for another config and checked against what the run saves (``load_state(like=...)``),
and a ``results.json`` that does not parse, or does not match ``run.json``, makes the run
unfinished.

These hashes are checksums against accidents, not signatures: whoever can write the directory
can rewrite ``results.json`` with its hash in ``run.json``, or a checkpoint under its stamp, and
is not detected. A signature would need a secret outside the directory that every process
resuming the run can read (so the same account's writer could read it too), and would tie run
directories to one machine (copied elsewhere, finished runs would be redone); README.md,
"Trust boundaries", says what to do instead.

Errors meant for the user (bad config values, an unusable or locked directory, a full disk, a
corrupt checkpoint) are `RunError`; launch.py prints them as one line. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from bablate.errors import RunError
from bablate.io import to_jsonable

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
REPORT_FILE = "report.md"
LOG_FILE = "log.txt"
LOCK_FILE = ".lock"
FIGURES_DIR = "figures"
SWEEP_MARKER = "sweep.json"  # bablate.runner.sweeps.SWEEP_FILE: a sweep's directory, not a run's
STATE_DIR = "state"
STATE_SUFFIX = ".msgpack"
# What a run directory holds: files, and directories (checked before a run touches it).
RUN_FILES = (CONFIG_FILE, RESULTS_FILE, RUN_FILE, REPORT_FILE, LOG_FILE, LOCK_FILE)
RUN_DIRS = (FIGURES_DIR, STATE_DIR)


def remove_stale_temps(workdir: Path) -> list[Path]:
    """Deletes the temporary files an atomic write killed mid-way left in a run directory.

    Only names `atomic_write_bytes` makes (``.<name>.<random>.tmp``) are removed, in the run
    directory, figures/ and state/. Call it while holding the run's lock.
    """
    removed = []
    for d in (workdir, workdir / FIGURES_DIR, workdir / STATE_DIR):
        if not d.is_dir():
            continue
        for p in d.glob(".*.tmp"):
            if p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """The resolved config as a JSON-normal dict (what ``config.json`` holds)."""
    return json.loads(json.dumps(to_jsonable(config.to_dict(), "config")))


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Flattens nested dicts to dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: Mapping, new: Mapping) -> list[str]:
    """Human-readable differences between two config dicts, one entry per dotted key."""
    a, b = flatten(old), flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            diffs.append(f"{key} (only in the old config)")
        elif key not in a:
            diffs.append(f"{key} (only in the new config)")
        elif a[key] != b[key]:
            diffs.append(f"{key}: {a[key]!r} -> {b[key]!r}")
    return diffs


def _canonical(obj: Any) -> Any:
    """A config value in the form its hash is taken of: ``1.0`` and ``1`` compare equal in a
    config diff, so they hash the same too."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def config_hash(config: Mapping | ml_collections.ConfigDict) -> str:
    """SHA-256 (hex) of a resolved config: the identity of a run's checkpoints and results."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config_to_dict(config)
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"),
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_workdir(workdir: Path, files: tuple[str, ...] = RUN_FILES,
                  dirs: tuple[str, ...] = RUN_DIRS) -> None:
    """Refuses a workdir (or any parent of it) that exists but is not a directory, and one where
    one of the ``files`` it writes exists as a directory (or anything but a file), or one of
    the ``dirs`` as a file: one line naming the path, before anything is touched."""
    for p in [workdir, *workdir.parents]:
        if p.exists() and not p.is_dir():
            raise RunError(f"workdir {str(workdir)!r} cannot be used: {str(p)!r} is a file; "
                           "pass --workdir=<a directory path>")
    for names, fits, what in ((files, Path.is_file, "a file"), (dirs, Path.is_dir,
                                                                "a directory")):
        for name in names:
            p = workdir / name
            if p.exists() and not fits(p):
                got = ("a directory" if p.is_dir() else "a file" if p.is_file()
                       else "neither a file nor a directory")
                raise RunError(f"workdir {str(workdir)!r} cannot be used: {str(p)!r} is {got} "
                               f"where bablate keeps {what}; move or remove it")


def sha256(data: bytes) -> str:
    """The SHA-256 (hex) of ``data``, as run.json records it."""
    return hashlib.sha256(data).hexdigest()


def _results_problem(workdir: Path, chash: str) -> str | None:
    """Why the results in ``workdir`` do not make a finished run of config ``chash`` (None: they
    do). ``results.json`` must exist, parse as a JSON object and match ``run.json``."""
    results_path = workdir / RESULTS_FILE
    if not results_path.exists():
        return f"no {RESULTS_FILE}"
    try:
        raw = results_path.read_bytes()
        results = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{RESULTS_FILE} is unreadable or not valid JSON ({type(e).__name__})"
    if not isinstance(results, dict):
        return f"{RESULTS_FILE} holds a {type(results).__name__}, not the run's numbers"
    try:
        stamp = json.loads((workdir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{RESULTS_FILE} has no valid {RUN_FILE} beside it (older bablate or tampered)"
    if not isinstance(stamp, dict) or stamp.get("config_sha256") != chash:
        return f"{RUN_FILE} was written for another config"
    if stamp.get("results_sha256") != sha256(raw):
        return f"{RESULTS_FILE} does not match the checksum in {RUN_FILE}"
    return None


def run_status(config: Mapping, workdir: Path) -> tuple[str, list[str]]:
    """Compares a resolved config with what ``workdir`` holds.

    Returns:
      ``(status, notes)`` with status ``"new"`` (no config.json), ``"finished"`` (same config,
      and results.json parses and matches run.json), ``"unfinished"`` (same config, no valid
      results; ``notes`` says what is wrong with results that exist) or ``"different"``
      (config.json differs or is not a config; ``notes`` names the differing keys).
    """
    path = workdir / CONFIG_FILE
    if not path.exists():
        stale = [n for n in (RESULTS_FILE, STATE_DIR) if (workdir / n).exists()]
        return "new", ([f"removing the {' and '.join(stale)} left without {CONFIG_FILE}"]
                       if stale else [])
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "different", [f"{CONFIG_FILE} is not valid JSON"]
    except OSError as e:
        return "different", [f"{CONFIG_FILE} cannot be read ({e.strerror})"]
    if not isinstance(old, dict):
        return "different", [f"{CONFIG_FILE} holds {json.dumps(old)[:40]} instead of a config"]
    diffs = config_diff(old, config)
    if diffs:
        return "different", diffs
    problem = _results_problem(workdir, config_hash(config))
    if problem is None:
        return "finished", []
    return "unfinished", ([] if problem == f"no {RESULTS_FILE}" else
                          [f"redoing: {problem}"])


def is_finished(config: Mapping, workdir: Path) -> bool:
    """Whether ``workdir`` holds a finished run of ``config`` (see `run_status`)."""
    return run_status(config, workdir)[0] == "finished"


def clear_run(workdir: Path) -> None:
    """Removes a run's outputs, results.json first so the directory never looks finished."""
    for name in (RESULTS_FILE, RUN_FILE, REPORT_FILE, CONFIG_FILE, LOG_FILE):
        with contextlib.suppress(OSError):
            (workdir / name).unlink()
    for name in (FIGURES_DIR, STATE_DIR):
        shutil.rmtree(workdir / name, ignore_errors=True)
    remove_stale_temps(workdir)


def clear_stale(workdir: Path) -> None:
    """Before a run starts where no config.json is: removes what an earlier run of unknown
    config may have left (results, checkpoints, temp files), and nothing else, since the
    directory may also hold the user's own files."""
    for name in (RESULTS_FILE, RUN_FILE):
        with contextlib.suppress(OSError):
            (workdir / name).unlink()
    state = workdir / STATE_DIR
    if state.is_dir():
        for p in [*state.glob(f"*{STATE_SUFFIX}"), *state.glob("*.pkl")]:
            with contextlib.suppress(OSError):
                p.unlink()
    remove_stale_temps(workdir)


def mismatch_message(workdir: Path, diffs: list[str]) -> str:
    """The one-line refusal for a workdir that holds a run of a different config."""
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    return (f"workdir {str(workdir)!r} holds a run with a different config ({shown}); "
            "pass --overwrite to replace it, or choose another --workdir")


def disk_message(e: OSError, workdir: Path) -> str:
    """One line for a write that the disk or the permissions refused."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space (or choose another --workdir)"
    elif e.errno == errno.EIO:
        fix = "check the disk"
    elif e.errno in (errno.EISDIR, errno.ENOTDIR):
        fix = "move or remove what stands in the way"
    else:
        fix = "make it writable or choose another --workdir"
    # os.replace names the temp file first and the file it replaces second.
    target = e.filename2 or e.filename
    where = f" ({target})" if target else ""
    return (f"cannot write in {str(workdir)!r}: {e.strerror or e}{where}; {fix}, then rerun the "
            "same command to resume")


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        if text:
            return str(int(text))
    return "unknown"


@contextlib.contextmanager
def run_lock(workdir: Path):
    """Holds an exclusive ``fcntl.flock`` on ``workdir/.lock`` (created with the directory).

    The holder's pid is written into the file, so a refused launch can name it. The lock goes
    with the process (even on kill -9), so it is never stale.

    Raises:
      RunError: another process holds the lock, or the directory cannot be created.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunError(f"cannot use workdir {str(workdir)!r}: {e.strerror or e}; choose a "
                       "writable --workdir") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"workdir {str(workdir)!r} is in use by another launch (pid "
                           f"{_read_pid(fd)}); wait for it to finish or choose another "
                           "--workdir") from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
