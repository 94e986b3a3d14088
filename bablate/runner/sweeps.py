"""Sweeps: the runs a config file declares with ``get_sweep(arg) -> list[dict]``.

Each dict maps dotted config keys to values (``{"seed": 1, "model.hidden": 24}``; its members,
their names and overrides: `bablate.runner.sweep_spec`). A member runs in ``<workdir>/<name>``
where the name is made from its overrides (``seed=1,model.hidden=24``), so rerunning a sweep
finds the same directories: finished members are skipped, unfinished ones are redone (see
`bablate.runner.runs`). Members run one after another in this process, ``jobs`` at
a time in subprocesses, or as jobs of a cluster (`bablate.runner.slurm`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import ml_collections

from bablate import errors, progress
from bablate import io as bbio
from bablate import markdown as md
from bablate.runner import rundir, runs
from bablate.runner.sweep_spec import (  # noqa: F401 -- the sweep API, re-exported
    Member,
    apply_overrides,
    expand,
    format_value,
    member_name,
)

SWEEP_FILE = rundir.SWEEP_MARKER
SWEEP_INDEX = "sweep.md"
SWEEP_RESULTS = "sweep_results.json"
SWEEP_LOG = "sweep_log.txt"
CONSOLE_FILE = "console.txt"


class SweepOutcome(TypedDict):
    """What :func:`run_sweep` did: the members that ran, those skipped (already finished), and
    each failed member's one-line message."""

    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]


class _SweepLog:
    """Timestamped lines to stderr (above the progress bar) and to the sweep's log file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, msg: str) -> None:
        from tqdm.auto import tqdm

        line = f"[{datetime.datetime.now():%H:%M:%S}] {msg}"
        tqdm.write(line, file=sys.stderr)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_sweep(members: Sequence[Member], workdir: str | os.PathLike, *, jobs: int = 1,
              overwrite: bool = False,
              command_for: Callable[[Member, Path], list[str]] | None = None,
              launcher: Callable | None = None) -> SweepOutcome:
    """Runs every member of a sweep, skipping finished ones.

    Args:
      members: from `expand`.
      workdir: the sweep directory; member ``m`` runs in ``workdir / m.name``.
      jobs: how many members run at once. With 1 they run in this process; with more, each
        runs in a subprocess given by ``command_for(member, member_workdir)`` (its output goes
        to ``<member_workdir>/console.txt``).
      overwrite: redo every member from scratch.
      command_for: builds a member's subprocess command line; required when ``jobs > 1`` or
        with a ``launcher``.
      launcher: runs the members elsewhere instead (``jobs`` is then unused), e.g. a
        `slurm.SlurmLauncher`: called as ``launcher(pending, workdir, command_for, log)``,
        it yields ``(member, exit code or None, message)`` as each member's command ends.

    Returns:
      ``{"ran": [names], "skipped": [names], "failed": {name: message}}``.

    Raises:
      RunError: a member's config fails its study's ``validate`` (before anything runs), or
        another process holds the sweep directory's lock.
    """
    if jobs < 1:
        raise errors.RunError(f"jobs must be at least 1, got {jobs}")
    if (jobs > 1 or launcher is not None) and command_for is None:
        raise ValueError("run_sweep needs command_for to run members in subprocesses or jobs")
    workdir = Path(workdir)
    rundir.check_workdir(workdir, files=(SWEEP_FILE, SWEEP_INDEX, SWEEP_RESULTS, SWEEP_LOG,
                                       rundir.LOCK_FILE), dirs=tuple(m.name for m in members))
    for m in members:
        rundir.check_workdir(workdir / m.name, files=(*rundir.RUN_FILES, CONSOLE_FILE))
    single = [f for f in (rundir.CONFIG_FILE, rundir.RESULTS_FILE) if (workdir / f).exists()]
    if single:
        raise errors.RunError(f"workdir {str(workdir)!r} holds a single run ({single[0]}); a "
                              "sweep needs its own directory: pass another --workdir (launch.py's "
                              "default for a sweep is runs/<study>/<variant>-sweep)")
    for m in members:  # every member's config is checked before any of them runs
        runs.load_study(m.config.study)
        try:
            runs.validate_config(m.config)
        except errors.ConfigError as e:
            raise errors.ConfigError(f"sweep member {m.name}: {e}") from e
    with rundir.run_lock(workdir):  # one sweep per directory at a time
        return _run_sweep_locked(members, workdir, jobs, overwrite, command_for, launcher)


def _run_sweep_locked(members, workdir: Path, jobs: int, overwrite: bool, command_for,
                      launcher) -> SweepOutcome:
    bbio.atomic_write_json(workdir / SWEEP_FILE, {
        "members": [{"name": m.name, "overrides": m.overrides} for m in members]})
    log = _SweepLog(workdir / SWEEP_LOG)
    out: SweepOutcome = {"ran": [], "skipped": [], "failed": {}}

    pending = []
    for m in members:
        status, diffs = rundir.run_status(rundir.config_to_dict(m.config), workdir / m.name)
        if overwrite:
            pending.append(m)
        elif status == "finished":
            out["skipped"].append(m.name)
        elif status == "different":
            out["failed"][m.name] = rundir.mismatch_message(workdir / m.name, diffs)
        else:
            pending.append(m)
    log(f"sweep of {len(members)} runs in {workdir}: {len(out['skipped'])} already finished, "
        f"{len(pending)} to run" + (f" ({jobs} at a time)" if jobs > 1 and launcher is None
                                    else ""))
    for name, msg in out["failed"].items():
        log(f"{name}: {msg}")

    done_before = len(out["skipped"]) + len(out["failed"])
    with progress.bar(total=len(members), initial=done_before, desc="sweep", unit="run") as bar:
        if launcher is not None:
            for m, code, message in launcher(pending, workdir, command_for, log):
                _record_exit(m, code, message, workdir, out, log)
                bar.update(1)
        elif jobs == 1:
            for m in pending:
                log(f"{m.name}: running")
                try:
                    out["ran" if runs.run_one(m.config, workdir / m.name, overwrite=overwrite)
                        == "ran" else "skipped"].append(m.name)
                except errors.RunError as e:
                    out["failed"][m.name] = str(e)
                except Exception as e:  # the traceback is in the member's log.txt
                    out["failed"][m.name] = f"{type(e).__name__}: {e}"
                log(f"{m.name}: " + ("failed: " + out["failed"][m.name]
                                     if m.name in out["failed"] else "done"))
                bar.update(1)
        else:
            _run_parallel(pending, workdir, jobs, command_for, out, log, bar)

    _write_index(members, workdir, out)
    log(f"sweep finished: {len(out['ran'])} ran, {len(out['skipped'])} skipped, "
        f"{len(out['failed'])} failed; index: {workdir / SWEEP_INDEX}")
    return out


def core_slots(jobs: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """The CPU cores of each of ``jobs`` concurrent members: this process's cores split into
    ``jobs`` disjoint, contiguous sets as even as possible (with more jobs than cores, each
    job gets one core and cores are reused round-robin)."""
    if cores is None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = list(cores)
    if not cores:
        return [[] for _ in range(jobs)]
    if jobs >= len(cores):
        return [[cores[i % len(cores)]] for i in range(jobs)]
    base, extra = divmod(len(cores), jobs)
    slots, start = [], 0
    for j in range(jobs):
        size = base + (j < extra)
        slots.append(cores[start:start + size])
        start += size
    return slots


def pinned_command(command: list[str], cores: list[int]) -> list[str]:
    """``command`` restricted to ``cores``: a tiny Python launcher sets its affinity mask and
    execs the command, so every thread of the member inherits the mask from its start (a
    ``preexec_fn`` is unsafe in a process with threads). Unchanged where the OS has no masks."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return list(command)
    boot = ("import os, sys; os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]);"
            " os.execvp(sys.argv[2], sys.argv[2:])")
    return [sys.executable, "-c", boot, ",".join(map(str, cores)), *command]


def _run_parallel(pending, workdir, jobs, command_for, out, log, bar) -> None:
    # Members' output goes to console.txt: progress there as lines with an ETA, never bars.
    env = dict(os.environ, BABLATE_PROGRESS=progress.child_setting())
    queue = list(pending)
    running: dict[subprocess.Popen[bytes], tuple[Member, list[int]]] = {}
    # Each member gets its own share of the cores (its affinity mask): JAX sizes its CPU devices
    # and XLA its thread pools from that mask, so members do not all fight over every core.
    free = core_slots(jobs)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                m = queue.pop(0)
                mdir = workdir / m.name
                mdir.mkdir(parents=True, exist_ok=True)
                slot = free.pop(0)
                with open(mdir / CONSOLE_FILE, "wb") as console:
                    proc = subprocess.Popen(pinned_command(command_for(m, mdir), slot),
                                            stdout=console, stderr=subprocess.STDOUT, env=env)
                running[proc] = (m, slot)
                cores = f", cores {','.join(map(str, slot))}" if slot else ""
                log(f"{m.name}: started (pid {proc.pid}{cores})")
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                m, slot = running.pop(proc)
                free.append(slot)
                _record_exit(m, proc.returncode, "", workdir, out, log)
                bar.update(1)
    finally:
        for proc in running:  # interrupted: do not leave orphans running
            proc.terminate()
        for proc in running:
            proc.wait()


def _record_exit(m: Member, code: int | None, where: str, workdir: Path, out: SweepOutcome,
                 log: Callable[[str], None]) -> None:
    """Books a member whose command ended with exit ``code`` (None: it did not run to the end;
    ``where`` then says why); ``where`` also names where it ran (e.g. a SLURM job)."""
    at = f" ({where})" if where and code is not None else ""
    if code == 0:
        ran = rundir.is_finished(rundir.config_to_dict(m.config), workdir / m.name)
        out["ran"].append(m.name) if ran else out["skipped"].append(m.name)
        log(f"{m.name}: done{at}")
    elif code is None:
        out["failed"][m.name] = where
        log(f"{m.name}: failed: {where}")
    else:
        console = workdir / m.name / CONSOLE_FILE
        # A killed member's last line is whatever it was doing; the signal says more.
        msg = (f"killed by {signal_name(-code)}" if code < 0 else None) or _last_line(
            console) or f"exit {code}"
        out["failed"][m.name] = msg
        log(f"{m.name}: failed{at} (exit {code}): {msg}; see {console}")


def signal_name(number: int) -> str:
    """The name of signal ``number`` (``SIGTERM``), or ``signal <n>`` for one Python does not
    know."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _is_seed_key(key: str) -> bool:
    """Whether an override key sets a random seed (``seed`` or ``<section>.seed``)."""
    return key.split(".")[-1] == "seed"


def numeric_results(results: Mapping, prefix: str = "") -> dict[str, float]:
    """The scalar numbers of a ``results.json`` by dotted key (bools, strings, lists and
    nulls left out: a mean of them means nothing)."""
    out = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_results(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _without_config_echo(numbers: dict[str, float], config: ml_collections.ConfigDict
                         ) -> dict[str, float]:
    """``numbers`` without the copy of the config a study may return under ``"config"``
    (``config.seed`` averaged over seeds is no result)."""
    echo = {f"config.{k}" for k in rundir.flatten(rundir.config_to_dict(config))}
    return {k: v for k, v in numbers.items() if k not in echo}


def aggregate(members: Sequence[Member], workdir: str | os.PathLike) -> list[dict]:
    """Every finished member's numeric results, grouped by their non-seed overrides.

    Members whose overrides differ only in seed keys (``seed``, ``*.seed``) form one group; for
    each number of their ``results.json`` the group gets the mean, the sample standard
    deviation (ddof 1; None for one value), the count and the per-member values (None where a
    member lacks it or it is not finite). Unfinished members are left out, and so is a copy
    of the config that a study returns among its results (``"config": {...}``).

    Returns:
      ``[{"overrides", "members", "seeds", "results": {key: {"mean", "sd", "n", "values"}}}]``
      in the order the groups first appear.
    """
    workdir = Path(workdir)
    groups: dict[str, dict] = {}
    for m in members:
        mdir = workdir / m.name
        if not rundir.is_finished(rundir.config_to_dict(m.config), mdir):
            continue
        results = json.loads((mdir / rundir.RESULTS_FILE).read_text())
        numbers = numeric_results(results) if isinstance(results, Mapping) else {}
        fixed = {k: v for k, v in m.overrides.items() if not _is_seed_key(k)}
        key = json.dumps(bbio.to_jsonable(fixed), sort_keys=True)
        group = groups.setdefault(key, {"overrides": fixed, "members": [], "seeds": [],
                                        "numbers": []})
        group["members"].append(m.name)
        group["seeds"].append({k: v for k, v in m.overrides.items() if _is_seed_key(k)})
        group["numbers"].append(_without_config_echo(numbers, m.config))
    out = []
    for group in groups.values():
        keys = list(dict.fromkeys(k for numbers in group["numbers"] for k in numbers))
        table = {}
        for k in keys:
            values = [n.get(k) for n in group["numbers"]]
            values = [v if v is not None and math.isfinite(v) else None for v in values]
            finite = [v for v in values if v is not None]
            mean = sum(finite) / len(finite) if finite else None
            sd = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
                  if len(finite) > 1 else None)
            table[k] = {"mean": mean, "sd": sd, "n": len(finite), "values": values}
        out.append({"overrides": group["overrides"], "members": group["members"],
                    "seeds": group["seeds"], "results": table})
    return out


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _aggregate_markdown(groups: list[dict]) -> list[str]:
    """sweep.md's results section: per group of seeds, mean ± sd and the per-seed values."""
    if not groups:
        return []
    lines = ["", "## Results", "",
             "Members that differ only in their seed are one group: mean ± sample standard "
             "deviation over the finished members, then each member's value in the order "
             "listed; a number with one value in every run of a group is in the line under "
             "its table. All numbers are in `sweep_results.json`."]
    for g in groups:
        title = ", ".join(f"{k}={format_value(v)}" for k, v in g["overrides"].items()) or "all"
        seeds = "; ".join(", ".join(f"{k}={format_value(v)}" for k, v in s.items()) or name
                          for s, name in zip(g["seeds"], g["members"], strict=True))
        lines += ["", f"### {md.cell(title)} ({len(g['members'])} run(s): {md.cell(seeds)})", ""]
        same = {k: r for k, r in g["results"].items() if _same_in_every_run(r)}
        varying = {k: r for k, r in g["results"].items() if k not in same}
        if varying:
            lines += ["| result | mean ± sd | per run |", "|---|---|---|"]
        for key, r in varying.items():
            spread = f"{_fmt(r['mean'])} ± {_fmt(r['sd'])}" if r["sd"] is not None else _fmt(
                r["mean"])
            lines.append(md.row([f"`{key}`", spread, ", ".join(_fmt(v) for v in r["values"])]))
        if same:
            lines += ["", "The same in every run of this group: "
                      + ", ".join(f"`{k}` = {_fmt(r['mean'])}" for k, r in same.items()) + "."]
    return lines


def _same_in_every_run(r: dict) -> bool:
    """Whether an aggregated number has one value in every run of a group of several."""
    values = r["values"]
    return len(values) > 1 and None not in values and len(set(values)) == 1


def _config_line(members: Sequence[Member]) -> list[str]:
    """sweep.md's line of the config values every member shares, naming the swept keys."""
    flat = [rundir.flatten(rundir.config_to_dict(m.config)) for m in members]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    shared = {k: flat[0][k] for k in keys
              if all(k in f and f[k] == flat[0][k] for f in flat)}
    given = dict.fromkeys(k for m in members for k in m.overrides)  # in get_sweep's order
    swept = [*given, *(k for k in keys if k not in shared and k not in given)]
    return ["", f"Swept: {', '.join(f'`{k}`' for k in swept) or 'nothing'}. The same in every "
            "run: " + ", ".join(f"`{k}={format_value(v)}`" for k, v in shared.items()) + "."]


def _write_index(members: Sequence[Member], workdir: Path, out: SweepOutcome) -> None:
    """sweep.md: a table of the members with links to their reports and the aggregated results
    (also written to ``sweep_results.json``)."""
    lines = ["# Sweep", *_config_line(members), "", "| run | status | overrides |",
             "|---|---|---|"]
    for m in members:
        if m.name in out["failed"]:
            status = "failed"
        elif rundir.is_finished(rundir.config_to_dict(m.config), workdir / m.name):
            status = f"[done]({m.name}/{rundir.REPORT_FILE})"
        else:
            status = "not finished"
        lines.append(md.row([f"`{m.name}`", status,
                             f"`{json.dumps(bbio.to_jsonable(m.overrides))}`"]))
    groups = aggregate(members, workdir)
    bbio.atomic_write_json(workdir / SWEEP_RESULTS, {"groups": groups})
    lines += _aggregate_markdown(groups)
    bbio.atomic_write_text(workdir / SWEEP_INDEX, "\n".join(lines) + "\n")
