"""Run directories: one study run = one directory with its config, numbers, figures and report.

A run directory holds::

    config.json    the resolved config, written when the run starts
    log.txt        everything ``ctx.log`` printed, appended line by line
    figures/*.png  every figure passed to ``ctx.figure``
    state/*.pkl    checkpoints from ``ctx.save_state`` (so an interrupted run resumes)
    report.md      title, config, the study's text and figures in call order
    results.json   the study's numbers, written LAST: its presence marks the run finished

Every file except the append-only log is written atomically (temp file in the same directory,
then ``os.replace``), so a run killed at any moment never leaves a half-written file behind and
never looks finished unless it is. Rerunning with the same config skips a finished run and
resumes an unfinished one; a different config is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import importlib
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
LOG_FILE = "log.txt"
FIGURES_DIR = "figures"
STATE_DIR = "state"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunError(Exception):
    """A problem with the user's input or run directory, reported as one line without traceback."""


# ----------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or the new one.

    The bytes go to a temporary file in the same directory (same filesystem, so the final
    ``os.replace`` is atomic), are flushed and fsynced, then renamed over ``path``. If anything
    fails before the rename the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically writes UTF-8 text (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes ``to_jsonable(obj)`` as indented JSON."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- JSON conversion


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """Converts numbers, arrays and containers into plain JSON types.

    numpy / jax arrays become (nested) lists, numpy scalars become Python numbers, tuples
    become lists, dataclasses become dicts, mapping keys become strings. Non-finite floats
    (NaN, ±inf) become ``null``, because strict JSON has no such values.

    Args:
      obj: the value to convert.
      where: the name of ``obj`` used in error messages (e.g. ``"results"``).

    Returns:
      A value made only of dict, list, str, int, float, bool and None.

    Raises:
      TypeError: naming the path of the first value that has no JSON form.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), where)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, np.generic)):
                raise TypeError(f"{where}: key {k!r} must be a string or a number to store in JSON")
            out[str(k.item() if isinstance(k, np.generic) else k)] = to_jsonable(
                v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where)
    if hasattr(obj, "__array__"):  # numpy and jax arrays
        try:
            arr = np.asarray(obj)
        except Exception as e:  # e.g. typed PRNG key arrays
            raise TypeError(f"{where}: cannot convert {type(obj).__name__} "
                            f"to an array ({e})") from e
        if arr.dtype == object:
            raise TypeError(f"{where}: object arrays cannot be stored in JSON")
        return to_jsonable(arr.tolist(), where)
    raise TypeError(f"{where}: cannot store a {type(obj).__name__} in JSON; "
                    "convert it to numbers, strings, lists or dicts")


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


# ----------------------------------------------------------------------------- run context


@dataclasses.dataclass
class RunContext:
    """What a study's ``run(config, ctx)`` uses to write into its run directory.

    Attributes:
      workdir: the run directory.
      writer: False on every process but the first in a multi-host job, where all processes
        compute the same run and only process 0 writes files.
    """

    workdir: Path
    writer: bool = True
    _items: list[tuple[str, str, str]] = dataclasses.field(default_factory=list, repr=False)

    def log(self, msg: str) -> None:
        """Prints a timestamped line to stderr and appends it to ``log.txt``."""
        line = f"[{datetime.datetime.now():%H:%M:%S}] {msg}"
        from tqdm.auto import tqdm  # writes above any active progress bar

        tqdm.write(line, file=sys.stderr)
        if self.writer:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.workdir / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(line + "\n")

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
            atomic_write_bytes(path, buf.getvalue())
        self._items.append(("figure", name, caption.strip()))
        return path

    def save_state(self, name: str, pytree: Any) -> None:
        """Atomically checkpoints a pytree of arrays (e.g. trained params) as ``state/<name>.pkl``.

        Leaves are converted to numpy arrays first. PRNG key arrays cannot be stored directly:
        save ``jax.random.key_data(key)`` instead.
        """
        _check_name(name, "state name")
        jax = sys.modules.get("jax")  # without jax loaded the tree holds no jax arrays
        tree = pytree
        if jax is not None:

            def to_numpy(x):
                if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype,
                                                                      jax.dtypes.prng_key):
                    raise TypeError(f"state {name!r}: PRNG keys cannot be saved; save "
                                    "jax.random.key_data(key) and rebuild the key with "
                                    "jax.random.wrap_key_data")
                return np.asarray(x) if isinstance(x, jax.Array) else x

            tree = jax.tree.map(to_numpy, pytree)
        if self.writer:
            atomic_write_bytes(self.workdir / STATE_DIR / f"{name}.pkl",
                               pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL))

    def load_state(self, name: str) -> Any | None:
        """The pytree saved by ``save_state(name, ...)`` (numpy leaves), or None if none was."""
        _check_name(name, "state name")
        path = self.workdir / STATE_DIR / f"{name}.pkl"
        if not path.exists():
            return None
        with open(path, "rb") as f:
            return pickle.load(f)

    def render_report(self, title: str, config: Mapping, results: Mapping, footer: str = "") -> str:
        """The report.md text: title, key numbers, the study's sections and figures, config."""
        lines = [f"# {title}", ""]
        scalars = {k: v for k, v in results.items()
                   if v is None or isinstance(v, (bool, int, float, str))}
        if scalars:
            lines += ["| result | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt_cell(v)} |" for k, v in list(scalars.items())[:30]]
            lines += ["", f"All numbers: [{RESULTS_FILE}]({RESULTS_FILE}).", ""]
        n_fig = 0
        for kind, a, b in self._items:
            if kind == "text":
                lines += [a, ""]
            else:
                n_fig += 1
                lines += [f"![{a}]({FIGURES_DIR}/{a}.png)", "",
                          f"*Figure {n_fig}: {b}*", ""]
        lines += ["<details><summary>Config</summary>", "", "| key | value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt_cell(v)} |" for k, v in flatten(config).items()]
        lines += ["", "</details>", ""]
        if footer:
            lines += [footer, ""]
        return "\n".join(lines)


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} must be letters, digits, '_', '.' or '-' "
                         "(it becomes a file name)")


def _fmt_cell(v: Any) -> str:
    s = f"{v:.6g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v
    return s.replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- running


def load_study(name: str) -> Callable:
    """The ``run`` function of study ``name``.

    A plain name (``"toy_superposition"``) is looked up as ``bablate.studies.<name>``; a dotted
    name (``"mypackage.my_study"``) is imported as given, so a study can live outside bablate.
    """
    if not isinstance(name, str) or not name:
        raise RunError(f"config.study must be a non-empty module name, got {name!r}")
    module_name = name if "." in name else f"bablate.studies.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise RunError(f"no study module {module_name!r} (config.study = {name!r}); create "
                           f"it with a run(config, ctx) function or fix config.study") from e
        raise
    run = getattr(module, "run", None)
    if not callable(run):
        raise RunError(f"study module {module_name!r} has no run(config, ctx) function")
    return run


def check_workdir(workdir: Path) -> None:
    """Refuses a workdir (or any parent of it) that exists but is not a directory."""
    for p in [workdir, *workdir.parents]:
        if p.exists() and not p.is_dir():
            raise RunError(f"workdir {str(workdir)!r} cannot be used: {str(p)!r} is a file; "
                           "pass --workdir=<a directory path>")


def run_status(config: Mapping, workdir: Path) -> tuple[str, list[str]]:
    """Compares a resolved config with what ``workdir`` holds.

    Returns:
      ``(status, diffs)`` with status ``"new"`` (no config.json), ``"finished"`` (same config and
      results.json present), ``"unfinished"`` (same config, no results.json) or ``"different"``
      (config.json differs; ``diffs`` names the differing keys).
    """
    path = workdir / CONFIG_FILE
    if not path.exists():
        return "new", []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "different", [f"{CONFIG_FILE} is not valid JSON"]
    diffs = config_diff(old, config)
    if diffs:
        return "different", diffs
    return ("finished" if (workdir / RESULTS_FILE).exists() else "unfinished"), []


def clear_run(workdir: Path) -> None:
    """Removes a run's outputs, results.json first so the directory never looks finished."""
    for name in (RESULTS_FILE, REPORT_FILE, CONFIG_FILE, LOG_FILE):
        with contextlib.suppress(OSError):
            (workdir / name).unlink()
    for name in (FIGURES_DIR, STATE_DIR):
        shutil.rmtree(workdir / name, ignore_errors=True)


def mismatch_message(workdir: Path, diffs: list[str]) -> str:
    """The one-line refusal for a workdir that holds a run of a different config."""
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    return (f"workdir {str(workdir)!r} holds a run with a different config ({shown}); "
            "pass --overwrite to replace it, or choose another --workdir")


def run_one(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
            overwrite: bool = False, writer: bool = True) -> str:
    """Runs one study in ``workdir`` unless an identical finished run is already there.

    Args:
      config: the resolved config; ``config.study`` names the study module.
      workdir: the run directory (created if needed).
      overwrite: redo the run from scratch even if it is finished or its config differs.
      writer: whether this process writes files (False on non-zero multi-host processes).

    Returns:
      ``"skipped"`` when a finished run with the same config was found, else ``"ran"``.

    Raises:
      RunError: the workdir is unusable, holds a different config (without ``overwrite``), or
        the study cannot be found. Exceptions raised by the study propagate after being logged.
    """
    workdir = Path(workdir)
    check_workdir(workdir)
    for key in ("study", "seed"):
        if key not in config:
            raise RunError(f"the config has no {key!r} field; every study config needs "
                           "'study', 'variant' and 'seed'")
    resolved = config_to_dict(config)
    status, diffs = run_status(resolved, workdir)
    if status == "different" and not overwrite:
        raise RunError(mismatch_message(workdir, diffs))
    if status == "finished" and not overwrite:
        print(f"skipping {workdir}: finished with the same config "
              f"({RESULTS_FILE} exists; pass --overwrite to redo)", file=sys.stderr)
        return "skipped"
    study_run = load_study(config.study)  # before touching the directory: bad names leave nothing
    if writer:
        if overwrite or status == "different":
            clear_run(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(workdir / CONFIG_FILE, resolved)
    ctx = RunContext(workdir=workdir, writer=writer)
    resumed = status == "unfinished" and not overwrite
    ctx.log(f"{'resuming' if resumed else 'starting'} {config.study} "
            f"({config.get('variant', None)}) in {workdir}")
    start = time.perf_counter()
    try:
        study_config = copy.deepcopy(config)  # the study cannot change what config.json says
        study_config.lock()
        results = study_run(study_config, ctx)
        if not isinstance(results, Mapping):
            raise TypeError(f"{config.study}.run must return a dict of results, "
                            f"got {type(results).__name__}")
        results = to_jsonable(results, "results")
    except BaseException:
        ctx.log("run failed:\n" + traceback.format_exc().rstrip())
        raise
    seconds = time.perf_counter() - start
    title = f"{config.study}: {config.get('variant', None)}"
    footer = f"Ran in {seconds:.1f} s (seed {config.seed})."
    if writer:
        report = ctx.render_report(title, resolved, results, footer)
        atomic_write_text(workdir / REPORT_FILE, report)
        atomic_write_json(workdir / RESULTS_FILE, results)  # last: marks the run finished
    ctx.log(f"finished in {seconds:.1f} s; report: {workdir / REPORT_FILE}")
    return "ran"
