"""Sweep members as SLURM jobs, through submitit (the optional extra ``bablate[slurm]``).

Each pending member becomes one job (the members of a sweep are one job array) that runs the
member's own command line, the one ``--jobs`` would run in a subprocess, with its output in
``<member>/console.txt``. A member's run directory, resume and failure semantics are therefore
those of a local sweep; the sweep directory must be on a file system the compute nodes share.
submitit's own files (submission scripts, pickles, job logs) go to ``<sweep dir>/slurm/``.

A job that ends without its result (cancelled, timed out, killed for memory) is noticed through
``squeue``, so sweeps also finish on clusters that keep no accounting database (``sacct``), and
is reported with SLURM's state and what to change. A job's result file (a pickle submitit
writes into the sweep directory) is decoded as plain data, never unpickled (`read_result`):
nothing in the sweep directory runs code when the sweep reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import logging
import pickletools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from absl import flags

from bablate import errors, progress
from bablate.runner import sweeps

LOG_DIR = "slurm"

PARTITION = flags.DEFINE_string("slurm_partition", None, "SLURM partition of the members' jobs "
                                "(default: the cluster's).")
TIME = flags.DEFINE_integer("slurm_time", 60, "Time limit of each member's SLURM job, in minutes.")
GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs for each member's SLURM job (0: "
                            "none).")
CPUS = flags.DEFINE_integer("slurm_cpus_per_task", None, "CPU cores for each member's SLURM job "
                            "(default: the cluster's).")
MEM = flags.DEFINE_float("slurm_mem_gb", None, "Memory of each member's SLURM job in GB "
                         "(default: the cluster's).")
PARALLEL = flags.DEFINE_integer("slurm_array_parallelism", None, "How many members' SLURM jobs "
                                "run at once (default: all).")
FLAGS = (PARTITION, TIME, GPUS, CPUS, MEM, PARALLEL)
# Job states after which a job will not run again (squeue's long names). PREEMPTED is left out:
# a preempted job may be requeued.
_ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
          "BOOT_FAIL", "DEADLINE"}


def missing_requirement() -> str | None:
    """Why this process cannot submit to SLURM (submitit or SLURM's commands missing), as the
    end of a sentence naming the fix; None when it can."""
    # find_spec, not import: submitit configures logging when imported.
    if importlib.util.find_spec("submitit") is None:
        return ("--launcher=slurm needs submitit; install it with pip install 'bablate[slurm]' "
                "(or pip install submitit)")
    for command in ("sbatch", "srun", "squeue"):
        if shutil.which(command) is None:
            return (f"--launcher=slurm needs SLURM's {command} on PATH; run the sweep on a "
                    "machine that submits to the cluster (a login node) or use --launcher=local")
    return None


def launcher_from_flags() -> SlurmLauncher | None:
    """The launcher ``--launcher=slurm`` and the ``--slurm_*`` flags describe (None with
    ``--launcher=local``).

    Raises:
      ConfigError: a flag that does not apply or is out of range, or SLURM cannot be used here.
    """
    f = flags.FLAGS
    if f.launcher != "slurm":
        given = [f"--{flag.name}" for flag in FLAGS if f[flag.name].present]
        if given:
            raise errors.ConfigError(f"{given[0]} only applies with --launcher=slurm; add it or "
                                     f"drop {given[0]}")
        return None
    if not f.sweep:
        raise errors.ConfigError(
            "--launcher=slurm submits the members of a sweep; add --sweep (a single run is "
            "submitted with your own sbatch script running python -m bablate)")
    if f.jobs > 1:
        raise errors.ConfigError("--jobs applies to --launcher=local; with --launcher=slurm use "
                                 "--slurm_array_parallelism to bound how many members run at once")
    for flag, least in ((TIME, 1), (GPUS, 0), (CPUS, 1), (PARALLEL, 1)):
        if flag.value is not None and flag.value < least:
            raise errors.ConfigError(f"--{flag.name} must be at least {least} (got {flag.value})")
    if MEM.value is not None and not MEM.value > 0:
        raise errors.ConfigError(f"--slurm_mem_gb must be a positive number of GB (got "
                                 f"{MEM.value})")
    missing = missing_requirement()
    if missing:
        raise errors.ConfigError(missing)
    return SlurmLauncher(partition=PARTITION.value, time_min=TIME.value,
                         gpus_per_node=GPUS.value, cpus_per_task=CPUS.value, mem_gb=MEM.value,
                         array_parallelism=PARALLEL.value)


@dataclasses.dataclass(frozen=True)
class SlurmLauncher:
    """Runs sweep members as SLURM jobs; pass it to `sweeps.run_sweep` as ``launcher``.

    Attributes:
      partition: the partition to submit to (None: the cluster's default).
      time_min: each member's time limit in minutes.
      gpus_per_node: GPUs per member (0: none requested).
      cpus_per_task: CPU cores per member (None: the cluster's default).
      mem_gb: memory per member in GB (None: the cluster's default).
      array_parallelism: how many members run at once (None: all of them).
      poll_s: seconds between checks for finished jobs.
      queue_poll_s: seconds between ``squeue`` calls.
    """

    partition: str | None = None
    time_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    poll_s: float = 1.0
    queue_poll_s: float = 5.0

    def executor(self, folder: Path, name: str):
        """A submitit executor with these resources, writing its files to ``folder``."""
        import submitit

        # submitit logs every sacct call; without accounting each one warns. Our log says what
        # matters (submitted, done, failed).
        logging.getLogger("submitit").setLevel(logging.ERROR)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"name": name, "timeout_min": self.time_min,
                  # A member's progress goes to its console.txt as lines with an ETA.
                  "slurm_setup": [f"export BABLATE_PROGRESS={progress.child_setting()}"]}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.array_parallelism is not None:
            params["slurm_array_parallelism"] = self.array_parallelism
        executor.update_parameters(**params)
        return executor

    def __call__(self, pending: Sequence, workdir: Path,
                 command_for: Callable[[object, Path], list[str]],
                 log: Callable[[str], None]) -> Iterator[tuple[object, int | None, str]]:
        """Submits ``pending`` members and yields ``(member, exit code, message)`` as each job
        ends: the member command's exit code (message: the job id), or None when the job ended
        without running it to the end (message: why, with the job's log file)."""
        import submitit

        if not pending:
            return
        workdir = Path(workdir).resolve()
        executor = self.executor(workdir / LOG_DIR, f"bablate-{workdir.name}")
        jobs = {}
        try:
            submitted = []
            try:
                # One sbatch call (a job array). submitit prints sbatch's complaint to stderr
                # before raising; it is kept for the one-line error instead.
                with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                    for m in pending:
                        mdir = workdir / m.name
                        mdir.mkdir(parents=True, exist_ok=True)
                        submitted.append((m, executor.submit(subprocess.call, job_command(
                            command_for(m, mdir), mdir / "console.txt"))))
            except submitit.core.utils.UncompletedJobError as e:

                lines = [ln.strip(" '\"") for ln in str(e).splitlines() if ln.strip(" '\"")]
                why = lines[-1].removeprefix("sbatch: error: ") if lines else type(e).__name__
                raise errors.RunError(
                    f"sbatch refused the sweep's jobs ({why}); check "
                    "the --slurm_* flags against the cluster (sinfo lists its partitions)") from e
            jobs = {m.name: (m, job) for m, job in submitted}
            for m, job in jobs.values():
                log(f"{m.name}: submitted as SLURM job {job.job_id} (log: {job.paths.stdout})")
            last_queue = 0.0
            while jobs:
                time.sleep(self.poll_s)
                states = None  # None: squeue not asked (or no answer) this round
                if time.monotonic() - last_queue >= self.queue_poll_s:
                    last_queue = time.monotonic()
                    states = queue_states([job.job_id for _, job in jobs.values()])
                for name, (m, job) in list(jobs.items()):
                    # A job squeue no longer lists has ended (and been forgotten).
                    state = None if states is None else states.get(job.job_id, "GONE")
                    if not (_has_result(job) or state in _ENDED or state == "GONE"):
                        continue
                    del jobs[name]
                    yield (m, *_outcome(job, state))
        finally:
            for _, job in jobs.values():  # interrupted: cancel what is still queued or running
                job.cancel(check=False)


def job_command(command: list[str], console: Path) -> list[str]:
    """``command`` with its output to ``console`` (as a local subprocess member's)."""
    return ["/bin/sh", "-c", 'exec "$@" >"$0" 2>&1', str(console), *command]


def queue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """``{job id: state}`` from ``squeue`` for the jobs (``123`` or array tasks ``123_4``) that
    SLURM still lists; None when squeue gives no answer (then nothing is concluded)."""
    bases = sorted({str(j).split("_")[0] for j in job_ids})
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T",
                               "-j", ",".join(bases)], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # Jobs that ended long ago are forgotten: squeue calls their ids invalid.
        return {} if "Invalid job id" in proc.stderr else None
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _has_result(job) -> bool:
    """Whether the job wrote its result (as submitit's ``done``, without its sacct call)."""
    _refresh(job.paths.folder)
    return job.paths.result_pickle.exists()


def _refresh(folder: Path) -> None:
    """Refreshes a network file system's view of ``folder`` (a no-op chmod)."""
    try:
        folder.chmod(folder.stat().st_mode)
    except OSError:
        pass


def _outcome(job, state: str | None) -> tuple[int | None, str]:
    """A finished job's member exit code and a message naming the job (and its log);
    ``state`` is squeue's last word on it, if any."""
    where = f"SLURM job {job.job_id}"
    if state not in (None, "COMPLETED", "GONE") and not _has_result(job):
        # Killed by SLURM (cancelled, out of time or memory): no result will come.
        return None, _ended_early(where, state, "", job)
    try:
        status, value = read_result(job.paths.result_pickle)
    except FileNotFoundError:
        return None, f"{where} ended without writing its result; see {job.paths.stderr}"
    except Exception as e:  # a truncated or corrupt file can raise almost any error
        return None, (f"{where}'s result file {job.paths.result_pickle} is unreadable "
                      f"({type(e).__name__}: {e}); see {job.paths.stderr}")
    if status != "success" or not isinstance(value, int):
        # submitit's trace of what went wrong in the job; its last line says what.
        last = next((ln.strip() for ln in reversed(str(value).splitlines()) if ln.strip()),
                    status)
        # submitit gives up on a job near its time limit (SIGUSR2) with "timed-out".
        fix = _FIXES["TIMEOUT"] if "timed-out" in last else ""
        return None, f"{where} ended without finishing ({last}); {fix}see {job.paths.stderr}"
    code = value
    if code < 0:
        # SLURM ends a cancelled or timed-out job with SIGTERM, which submitit's process
        # survives: the member's death by that signal comes back as a result. squeue says why.
        ended = _final_state(job.job_id, state)
        if ended not in (None, "COMPLETED", "GONE"):
            how = f" (its run was killed by {sweeps.signal_name(-code)})"
            return None, _ended_early(where, ended, how, job)
    return code, where


# How long a result file a job has finished writing may take to appear on a network file system.
_RESULT_WAIT_S = 30.0


def read_result(path: Path, wait_s: float | None = None) -> tuple[str, object]:
    """submitit's ``(outcome, value)`` from a job's result file: ``("success", the member's
    exit code)`` or ``("error", submitit's trace)``. Nothing is unpickled: the pickle's opcodes
    are decoded (`plain_pickle`) and only plain data is accepted, so a file planted in the
    sweep directory cannot run code (submitit's own reader unpickles anything). Waits up to
    ``wait_s`` (default ``_RESULT_WAIT_S``) for the file to appear.

    Raises:
      FileNotFoundError: no file after the wait.
      ValueError: the file is not a pickle of submitit's plain ``(outcome, value)``.
    """
    path = Path(path)
    deadline = time.monotonic() + (_RESULT_WAIT_S if wait_s is None else wait_s)
    while not path.exists():
        if time.monotonic() > deadline:
            raise FileNotFoundError(path)
        time.sleep(0.5)
        _refresh(path.parent)
    out = plain_pickle(path.read_bytes())
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], str)):
        raise ValueError(f"it holds a {type(out).__name__}, not submitit's (outcome, value)")
    return out


# The opcodes of tuples, strings, numbers, booleans and None, and the framing around them.
_SCALARS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
            "BINFLOAT", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_TUPLES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def plain_pickle(data: bytes) -> object:
    """The value of a pickle made only of tuples, strings, numbers, booleans and None,
    decoded from its opcodes (`pickletools.genops`) without unpickling; any other opcode (a
    class or function to call, a list, a dict) raises ValueError naming it."""
    try:
        return _decode(data)
    except (IndexError, KeyError) as e:  # a pop or memo read the opcodes do not back
        raise ValueError(f"a malformed pickle ({type(e).__name__})") from e


def _decode(data: bytes) -> object:
    stack: list = []
    marks: list[int] = []
    memo: dict[int, object] = {}
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name in _SCALARS:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name == "MARK":
            marks.append(len(stack))
        elif name in _TUPLES or name == "TUPLE":
            start = marks.pop() if name == "TUPLE" else len(stack) - _TUPLES[name]
            if start < 0:
                raise ValueError("a tuple of more items than the pickle holds")
            stack[start:] = [tuple(stack[start:])]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[_memo_index(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[_memo_index(arg)])
        elif name == "STOP":
            if len(stack) != 1 or marks:
                raise ValueError("a malformed pickle")
            return stack[0]
        else:
            raise ValueError(f"it holds opcode {name}, not plain data (tuples, strings, "
                             "numbers)")
    raise ValueError("a pickle without its end")


def _memo_index(arg: object) -> int:
    """The memo slot a PUT or GET opcode names (pickletools gives an int, or decimal text)."""
    if not isinstance(arg, int | str):
        raise ValueError("a malformed pickle (a memo opcode without its slot)")
    return int(arg)


# What to change when SLURM ended a job early, by its state.
_FIXES = {"TIMEOUT": "raise --slurm_time (minutes; rerun the sweep to resume the run); ",
          "OUT_OF_MEMORY": "raise --slurm_mem_gb; ",
          "CANCELLED": "it was cancelled (scancel, or by an administrator); "}


def _ended_early(where: str, state: str, how: str, job) -> str:
    """Why a job ended before its run finished, what to change, and where its log is."""
    return (f"{where} ended {state} before the run finished{how}; {_FIXES.get(state, '')}"
            f"see {job.paths.stderr}")


# How long a job that squeue still shows as completing may take to reach its final state.
_SETTLE_S, _SETTLE_POLL_S = 10.0, 0.5


def _final_state(job_id: str, state: str | None) -> str | None:
    """squeue's state for ``job_id`` once it has ended (None: squeue gives no answer, or the
    job is still completing after ``_SETTLE_S``); ``state`` is what squeue last said."""
    deadline = time.monotonic() + _SETTLE_S
    while state not in _ENDED and state != "GONE":
        if time.monotonic() > deadline:
            return None
        states = queue_states([job_id])
        state = None if states is None else states.get(job_id, "GONE")
        if state not in _ENDED and state != "GONE":
            time.sleep(_SETTLE_POLL_S)
    return state
