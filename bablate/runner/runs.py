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
import copy
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from bablate import io as bbio
from bablate import markdown as md
from bablate import statefile
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
# Write failures that are the disk's or the user's (not a bug): reported as one line. EISDIR
# and ENOTDIR: a directory where a file is written (figures/<name>.png, say), or the reverse.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EIO, errno.EISDIR, errno.ENOTDIR})

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunInterrupted(RunError):
    """Ctrl-C (SIGINT) stopped the run; what it checkpointed is kept for a resume."""


# Atomic writes and JSON conversion live in bablate.io; these names stay for callers of runs.
atomic_write_bytes = bbio.atomic_write_bytes
atomic_write_text = bbio.atomic_write_text
atomic_write_json = bbio.atomic_write_json


# ----------------------------------------------------------------------------- temp files


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


# ----------------------------------------------------------------------------- run context


@dataclasses.dataclass
class RunContext:
    """What a study's ``run(config, ctx)`` uses to write into its run directory.

    Attributes:
      workdir: the run directory.
      writer: False on every process but the first in a multi-host job, where all processes
        compute the same run and only process 0 writes files.
      config_hash: `config_hash` of the run's config; checkpoints are stamped with it and a
        checkpoint stamped with another hash is never loaded.
    """

    workdir: Path
    writer: bool = True
    config_hash: str | None = None
    _items: list[tuple[str, str, str]] = dataclasses.field(default_factory=list, repr=False)
    _warnings: list[str] = dataclasses.field(default_factory=list, repr=False)

    def log(self, msg: str, console: bool = True) -> None:
        """Prints a timestamped line to stderr (unless ``console=False``) and appends it to
        ``log.txt``."""
        line = f"[{datetime.datetime.now():%H:%M:%S}] {msg}"
        if console:
            from tqdm.auto import tqdm  # writes above any active progress bar

            tqdm.write(line, file=sys.stderr)
        if self.writer:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.workdir / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def warning(self, message: str, category: str = "UserWarning", where: str = "") -> None:
        """Records a warning: a ``warning:`` line in ``log.txt`` (and on stderr) and an entry
        of report.md's Warnings section. Every warning a run issues through Python's
        ``warnings`` arrives here (see `run_one`); a study may also call it directly."""
        text = " ".join(str(message).split())  # one line, whatever the message's layout
        entry = f"{category}: {text}" + (f" (at {where})" if where else "")
        self._warnings.append(entry)
        self.log(f"warning: {entry}")

    @contextlib.contextmanager
    def recording_warnings(self):
        """Within it, every warning shown (the filters decide which, as outside) goes to
        :meth:`warning` instead of stderr's two-line form, with the line it names."""
        def show(message, category, filename, lineno, file=None, line=None):
            self.warning(str(message), category.__name__, f"{_short_path(filename)}:{lineno}")

        with warnings.catch_warnings():  # restores showwarning (and the filters) on exit
            warnings.showwarning = show
            yield

    def text(self, markdown: str) -> None:
        """Appends a markdown paragraph or section to ``report.md`` (in order of calls)."""
        self._items.append(("text", markdown.strip(), ""))

    def figure(self, fig, name: str, caption: str) -> Path:
        """Saves a matplotlib figure as ``figures/<name>.png``, closes it, adds it to the report.

        Args:
          fig: a ``matplotlib.figure.Figure``.
          name: file stem, letters, digits, ``_ . -`` only; unique within the run.
          caption: one or two sentences on what the figure shows (goes under it in report.md).

        Returns:
          The path of the PNG file.
        """
        _check_name(name, "figure name")
        if any(kind == "figure" and n == name for kind, n, _ in self._items):
            raise ValueError(f"figure {name!r} was already saved in this run; use another name")
        path = self.workdir / FIGURES_DIR / f"{name}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        if self.writer:
            bbio.atomic_write_bytes(path, buf.getvalue())
        self._items.append(("figure", name, caption.strip()))
        return path

    def save_state(self, name: str, pytree: Any) -> None:
        """Atomically checkpoints a pytree (e.g. trained params) as ``state/<name>.msgpack``.

        The tree may hold arrays (numpy or jax; saved as numpy), numbers, strings, None and
        dicts / lists / tuples of them. The file is data only (see `statefile`) and is
        stamped with the run's config hash. PRNG key arrays cannot be stored directly: save
        ``jax.random.key_data(key)`` instead.
        """
        _check_name(name, "state name")
        jax = sys.modules.get("jax")  # without jax loaded the tree holds no jax arrays
        # The tree is checked, not rebuilt: jax.tree.map would sort every dict's keys, and a
        # resumed run would then write its results in another order than a fresh one.
        if jax is not None and any(
                isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                for x in jax.tree.leaves(pytree)):
            raise TypeError(f"state {name!r}: PRNG keys cannot be saved; save "
                            "jax.random.key_data(key) and rebuild the key with "
                            "jax.random.wrap_key_data")
        data = statefile.dumps(pytree, self.config_hash, f"state {name!r}")
        if self.writer:
            bbio.atomic_write_bytes(self.state_path(name), data)

    def state_path(self, name: str) -> Path:
        """Where ``save_state(name, ...)`` writes."""
        return self.workdir / STATE_DIR / f"{name}{STATE_SUFFIX}"

    def load_state(self, name: str, like: Any = None) -> Any | None:
        """The pytree saved by ``save_state(name, ...)`` (numpy leaves), or None if none was.

        A checkpoint stamped with another config's hash is ignored (None, with a log line).
        Pickled checkpoints of older versions (``state/<name>.pkl``) are never read.

        Args:
          name: the name given to ``save_state``.
          like: what the checkpoint must hold (see `bablate.statefile.mismatch`), e.g.
            ``{"params": initial_params, "history": dict}``: the same keys, arrays of the same
            shapes and kinds, finite floats, and no all-zero array where ``like``'s is
            nonzero. None loads whatever the file holds.

        Raises:
          RunError: the checkpoint exists but is not a valid state file, or does not hold what
            ``like`` describes (names the file, what is wrong and suggests ``--overwrite``).
        """
        _check_name(name, "state name")
        path = self.state_path(name)
        if not path.exists():
            if (self.workdir / STATE_DIR / f"{name}.pkl").exists():
                self.log(f"ignoring {STATE_DIR}/{name}.pkl: pickle checkpoints are never "
                         "loaded (they can run code); recomputing")
            return None
        try:
            if not path.is_file():
                raise statefile.StateFormatError("it is not a file")
            tree, stamp = statefile.loads(path.read_bytes())
        except statefile.StateFormatError as e:
            raise RunError(_refusal(path, f"is corrupt ({e})")) from e
        if stamp != self.config_hash:
            self.log(f"ignoring {STATE_DIR}/{path.name}: it was saved by a run of another config")
            return None
        problem = None if like is None else statefile.mismatch(tree, like)
        if problem is not None:
            raise RunError(_refusal(path, f"does not hold what this run saves ({problem})"))
        return tree

    def render_report(self, title: str, config: Mapping, results: Mapping, footer: str = "") -> str:
        """The report.md text: title, key numbers, the study's sections and figures, config."""
        lines = [f"# {title}", ""]
        scalars = {k: v for k, v in results.items()
                   if v is None or isinstance(v, (bool, int, float, str))}
        if scalars:
            lines += ["| result | value |", "|---|---|"]
            lines += [md.row([k, _fmt_cell(v)]) for k, v in list(scalars.items())[:30]]
            lines += ["", f"All numbers: [{RESULTS_FILE}]({RESULTS_FILE}).", ""]
        if self._warnings:
            lines += ["## Warnings", "", f"The run issued {len(self._warnings)} warning(s) "
                      f"(also in [{LOG_FILE}]({LOG_FILE})):", ""]
            lines += [f"- {md.cell(w)}" for w in self._warnings] + [""]
        n_fig = 0
        for kind, a, b in self._items:
            if kind == "text":
                lines += [a, ""]
            else:
                n_fig += 1
                lines += [f"![{a}]({FIGURES_DIR}/{a}.png)", "",
                          f"*Figure {n_fig}: {b}*", ""]
        lines += ["<details><summary>Config</summary>", "", "| key | value |", "|---|---|"]
        lines += [md.row([f"`{k}`", _fmt_cell(v)]) for k, v in flatten(config).items()]
        lines += ["", "</details>", ""]
        if footer:
            lines += [footer, ""]
        return "\n".join(lines)


# The fix for saved state a run cannot resume from (a corrupt checkpoint, say).
RESTART_FIX = "rerun with --overwrite to start this run afresh"


def _refusal(path: Path, what: str) -> str:
    """The one-line refusal of a checkpoint that cannot be resumed from."""
    return f"checkpoint {str(path)!r} {what}; {RESTART_FIX}"


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} must be letters, digits, '_', '.' or '-' "
                         "(it becomes a file name)")


def _short_path(filename: str) -> str:
    """A warning's file as a reader finds it: relative to the directory holding the bablate
    package (``bablate/studies/...``) or to the working directory, else as given."""
    path = Path(filename)
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        with contextlib.suppress(ValueError, OSError):
            return str(path.resolve().relative_to(base))
    return filename


def _fmt_cell(v: Any) -> str:
    """A value's text for a report table (md.row escapes it)."""
    return f"{v:.6g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v


# ----------------------------------------------------------------------------- running


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


def _sha256(data: bytes) -> str:
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
    if stamp.get("results_sha256") != _sha256(raw):
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
                                           "results_sha256": _sha256(data)})
    bbio.atomic_write_bytes(workdir / RESULTS_FILE, data)


def _log_quietly(ctx: RunContext, msg: str) -> None:
    """Logs where possible: the failure being logged may be the disk refusing writes."""
    try:
        ctx.log(msg, console=False)  # the caller reports it (launch.py: one line, or traceback)
    except OSError:
        pass
