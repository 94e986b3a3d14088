"""``--launcher=slurm`` against a real single-node SLURM cluster that the test starts.

The fixture writes a minimal slurm.conf (this host as the one node, private ports, state and
spool in a temporary directory), starts a private munged (its own key and socket) and
slurmctld/slurmd, and waits until the node is idle. It needs Debian's slurmctld, slurmd,
slurm-client and munge packages (``.ci/run`` installs them) and root (slurmd runs jobs as their
user); without them the test is skipped, saying why. The daemons are stopped afterwards.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE = str(REPO / "tests" / "fake_study" / "config.py")
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel"]
NAMES = ["seed=0", "seed=1,scale=2.0"]  # the fake study's quick sweep


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _skip(reason: str):
    print(f"SLURM test skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


def _tail(path: Path, n: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return f"(no {path.name})"


SLURM_CONF = """\
ClusterName=bablatetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/sock/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node SLURM cluster: yields the environment that reaches it."""
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        _skip(f"SLURM/munge not installed (missing {', '.join(missing)}); apt-get install "
              "slurmctld slurmd munge slurm-client")
    if os.geteuid() != 0:
        _skip("starting slurmd needs root (it runs jobs as their owner)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        _skip("submitit is not installed; pip install -e '.[dev]'")
    root = Path(tempfile.mkdtemp(prefix="bablate-slurm-"))
    os.chmod(root, 0o755)  # munged wants its socket's directories searchable by all
    for d, mode in (("munge", 0o700), ("sock", 0o755), ("state", 0o755), ("spool", 0o755)):
        (root / d).mkdir()
        os.chmod(root / d, mode)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    (root / "plugstack.conf").write_text("")
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True,
                          check=True).stdout.strip()
    cpus = len(os.sched_getaffinity(0))
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, root=root, cpus=cpus, ctld_port=ctld_port,
                                      slurmd_port=slurmd_port))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pid_files = [root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"]
    start = time.monotonic()
    try:
        daemons = [
            ([_which("munged"), f"--socket={root}/sock/munge.sock", f"--key-file={key}",
              f"--log-file={root}/munge/munged.log", f"--pid-file={pid_files[2]}",
              f"--seed-file={root}/munge/munged.seed"], root / "munge" / "munged.log"),
            ([_which("slurmctld"), "-c", "-f", str(conf)], root / "slurmctld.log"),
            ([_which("slurmd"), "-f", str(conf)], root / "slurmd.log"),
        ]
        for cmd, log in daemons:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                _skip(f"{Path(cmd[0]).name} could not start (exit {proc.returncode}: "
                      f"{(proc.stderr or proc.stdout).strip()[:300]}; log: {_tail(log)})")
        state = ""
        while time.monotonic() - start < 60:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                 text=True, timeout=30)
            state = out.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the SLURM node is not idle after 60 s (sinfo: {state!r}); "
                        f"slurmctld: {_tail(root / 'slurmctld.log')}; "
                        f"slurmd: {_tail(root / 'slurmd.log')}")
        print(f"SLURM up in {time.monotonic() - start:.1f} s ({root})", file=sys.stderr)
        yield env
    finally:
        # Jobs a failed test left behind end before their daemons do (no stray steps).
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True,
                       timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "-h"], env=env, capture_output=True, text=True,
                timeout=30).stdout.strip():
            time.sleep(0.5)
        _stop_daemons(pid_files)
        shutil.rmtree(root, ignore_errors=True)


def _stop_daemons(pid_files: list[Path]) -> None:
    """Stops the daemons this fixture started, by the pids they wrote."""
    pids = []
    for f in pid_files:
        try:
            pids.append(int(f.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _sweep_command(workdir: Path) -> list[str]:
    return [sys.executable, str(REPO / "launch.py"), f"--config={FAKE}", "--config.steps=2",
            "--sweep", "--launcher=slurm", "--slurm_time=10", "--slurm_cpus_per_task=1",
            f"--workdir={workdir}"]


def _job_processes(job_id: str, env: dict) -> tuple[int, list[int]]:
    """submitit's Python process running the array task ``job_id`` (``<array>_<task>``) of
    the cluster that ``env`` reaches, and its descendants (the member). Not the ``srun`` that
    launched it, whose command line also names submitit. (Each xdist worker starts its own
    cluster, and their job ids coincide: the cluster's SLURM_CONF tells them apart.)"""
    array, task = job_id.split("_")
    want = {f"SLURM_ARRAY_JOB_ID={array}".encode(), f"SLURM_ARRAY_TASK_ID={task}".encode(),
            f"SLURM_CONF={env['SLURM_CONF']}".encode()}
    parents, found = {}, None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if (argv[1:4] == [b"-u", b"-m", b"submitit.core._submit"]
                and Path(os.fsdecode(argv[0])).name.startswith("python") and want <= environ):
            found = int(proc.name)
    if found is None:
        raise AssertionError(f"no submitit process for SLURM job {job_id}")
    tree, grew = {found}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return found, sorted(tree - {found})


def _kill_job_processes(job_id: str, env: dict) -> None:
    """SIGKILLs submitit's process of ``job_id`` and its member, with no window in which
    either could record an exit: submitit is stopped first. (Killing one of them alone is
    racy: submitit records a dead member's exit as a result, and a member whose parent dies
    escapes proctrack/linuxproc and goes on running. Nor will scancel do: SLURM sends SIGTERM
    first, which submitit survives, recording the member's exit -15.)"""
    submitit_pid, member = _job_processes(job_id, env)
    os.kill(submitit_pid, signal.SIGSTOP)
    for pid in [*member, submitit_pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _job_ids(log: str, name: str) -> list[str]:
    return re.findall(rf"^\[[\d:]+\] {re.escape(name)}: submitted as SLURM job (\d+(?:_\d+)?) ",
                      log, flags=re.M)


def _held_sweep(env: dict, workdir: Path, pause: Path, end_job) -> tuple[subprocess.Popen, str,
                                                                      str]:
    """Runs the fake study's sweep under SLURM with seed=1 held after its first step (while
    ``pause`` exists), calls ``end_job(job id)`` on seed=1's job once it is held, and waits
    for the sweep: (the finished process, its stderr, seed=1's job id)."""
    pause.write_text("1 1")
    t0 = time.monotonic()
    proc = subprocess.Popen(_sweep_command(workdir), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, "FAKE_STUDY_PAUSE_FILE": str(pause)})
    try:
        held = workdir / NAMES[1] / "log.txt"
        while "step 1/2" not in (held.read_text() if held.exists() else ""):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 120, "seed=1 never reached step 1 under SLURM"
            time.sleep(0.2)
        jobs = _job_ids((workdir / "sweep_log.txt").read_text(), NAMES[1])
        assert len(jobs) == 1
        end_job(jobs[0])
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, err, jobs[0]


@pytest.mark.slow
def test_sweep_members_run_as_slurm_jobs_fail_visibly_and_resume(slurm_cluster, tmp_path):
    """Run 1: both members are submitted; seed=1 is held after its first step and its job is
    killed, so the sweep reports it failed (naming its job and log). Run 2 resubmits only
    seed=1, which resumes from its checkpoint and finishes. Run 3 submits nothing."""
    env, workdir = slurm_cluster, tmp_path / "sweep"
    pause = tmp_path / "pause"  # the fake study holds seed 1 after step 1 while it exists
    t0 = time.monotonic()
    # As the kernel's OOM killer does to a job's cgroup: submitit's process and the member it
    # runs die at once, so no result is written and only SLURM (squeue; this cluster keeps no
    # accounting for sacct) can tell that the job ended.
    proc, err, killed = _held_sweep(env, workdir, pause,
                                    lambda job: _kill_job_processes(job, env))
    t1 = time.monotonic()
    assert proc.returncode == 1, err
    log1 = (workdir / "sweep_log.txt").read_text()
    first = {name: _job_ids(log1, name) for name in NAMES}
    assert all(len(ids) == 1 for ids in first.values()), log1
    assert f"{NAMES[0]}: done (SLURM job {first[NAMES[0]][0]})" in log1
    assert re.search(rf"{re.escape(NAMES[1])}: failed: SLURM job {killed} ended "
                     r"(FAILED|CANCELLED) before the run finished; (it was cancelled [^;]*; )?"
                     r"see \S+slurm/\S+_log\.err",
                     log1), log1
    assert f"1 sweep run(s) failed: {NAMES[1]}" in err.strip().splitlines()[-1]
    assert (workdir / NAMES[0] / "results.json").exists()
    assert not (workdir / NAMES[1] / "results.json").exists()
    # submitit's files for each job are in <sweep>/slurm/.
    for job in (first[NAMES[0]][0], killed):
        assert (workdir / "slurm" / f"{job}_submitted.pkl").exists(), job
    assert (workdir / "slurm" / f"{first[NAMES[0]][0]}_0_result.pkl").exists()
    # The member ran inside its SLURM job: submitit read the job id from SLURM's environment.
    job = first[NAMES[0]][0]
    assert f"JobEnvironment(job_id={job}," in (workdir / "slurm" / f"{job}_0_log.out").read_text()

    pause.unlink()
    proc = subprocess.run(_sweep_command(workdir), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    t2 = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    assert "1 already finished, 1 to run" in proc.stderr
    assert "1 ran, 1 skipped, 0 failed" in proc.stderr
    log2 = (workdir / "sweep_log.txt").read_text()[len(log1):]
    assert _job_ids(log2, NAMES[0]) == []
    second = _job_ids(log2, NAMES[1])
    assert len(second) == 1 and second != [killed], log2
    assert f"{NAMES[1]}: done (SLURM job {second[0]})" in log2
    member_log = (workdir / NAMES[1] / "log.txt").read_text()
    assert "resumed at step 1" in member_log, member_log  # its checkpoint, not a fresh start
    for name in NAMES:
        assert (workdir / name / "results.json").exists(), name
    sweep_md = (workdir / "sweep.md").read_text()
    assert sweep_md.count("[done](") == 2, sweep_md

    proc = subprocess.run(_sweep_command(workdir), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    t3 = time.monotonic()
    assert proc.returncode == 0, proc.stderr
    assert "2 already finished, 0 to run" in proc.stderr
    assert "submitted as SLURM job" not in (workdir / "sweep_log.txt").read_text()[
        len(log1) + len(log2):]
    assert sorted(p.name for p in (workdir / "slurm").glob("*_submitted.pkl")) == sorted(
        f"{j}_submitted.pkl" for j in (*first[NAMES[0]], killed, *second))
    print(f"SLURM sweep: run 1 (submit 2, kill 1) {t1 - t0:.1f} s, run 2 (resubmit 1) "
          f"{t2 - t1:.1f} s, run 3 (nothing to submit) {t3 - t2:.1f} s", file=sys.stderr)


@pytest.mark.slow
def test_a_cancelled_member_is_reported_cancelled(slurm_cluster, tmp_path):
    """scancel on a running member: SLURM sends SIGTERM, which submitit's process survives
    while the member dies of it, so a result (exit -15) may come before squeue says
    CANCELLED. Either way the sweep reports the job cancelled, not merely a signal."""
    env, workdir = slurm_cluster, tmp_path / "sweep"
    proc, err, job = _held_sweep(env, workdir, tmp_path / "pause", lambda job: subprocess.run(
        ["scancel", job], env=env, check=True, capture_output=True, timeout=30))
    assert proc.returncode == 1, err
    log = (workdir / "sweep_log.txt").read_text()
    assert re.search(rf"{re.escape(NAMES[1])}: failed: SLURM job {job} ended CANCELLED before "
                     r"the run finished( \(its run was killed by SIGTERM\))?; it was cancelled "
                     r"\(scancel, or by an administrator\); see \S+_log\.err", log), log
    assert f"{NAMES[0]}: done" in log


@pytest.mark.slow
def test_a_member_out_of_time_names_the_time_limit(slurm_cluster, tmp_path):
    """A held member under a 1-minute limit: submitit's process is signalled 90 s before the
    limit (so at once here), gives up on the job as timed-out and writes that as its result;
    the sweep says so and names --slurm_time."""
    pause = tmp_path / "pause"
    pause.write_text("1 1")
    workdir = tmp_path / "sweep"
    command = [c if not c.startswith("--slurm_time=") else "--slurm_time=1"
               for c in _sweep_command(workdir)]
    proc = subprocess.run(command, cwd=REPO, text=True, capture_output=True, timeout=400,
                          env={**slurm_cluster, "FAKE_STUDY_PAUSE_FILE": str(pause)})
    assert proc.returncode == 1, proc.stderr
    log = (workdir / "sweep_log.txt").read_text()
    assert f"{NAMES[0]}: done" in log
    assert re.search(rf"{re.escape(NAMES[1])}: failed: SLURM job \d+_1 ended without finishing "
                     r"\(\S*UncompletedJobError: Job not requeued because: timed-out and not "
                     r"checkpointable\.\); raise --slurm_time \(minutes; rerun the sweep to "
                     r"resume the run\); see \S+_log\.err", log), log


def _fake_job(folder: Path, outcome: tuple | None = None):
    """A stand-in for a submitit job whose result file holds ``outcome`` (None: no file)."""
    import pickle
    from types import SimpleNamespace

    folder.mkdir(parents=True, exist_ok=True)
    paths = SimpleNamespace(folder=folder, stderr=folder / "7_0_log.err",
                            result_pickle=folder / "7_0_result.pkl")
    if outcome is not None:
        paths.result_pickle.write_bytes(pickle.dumps(outcome))
    return SimpleNamespace(job_id="7_0", paths=paths)


def test_a_job_that_slurm_ended_early_names_the_state_and_the_fix(tmp_path, monkeypatch):
    """Without a cluster: `_outcome` turns what the job's result file and squeue say into
    the sweep's verdict: the member's exit, or the SLURM state that ended it with the fix."""
    from bablate.runner import slurm

    asked = []

    def squeue(ids, state):
        asked.append(list(ids))
        return {ids[0]: state} if state != "GONE" else {}

    # No result and squeue says TIMEOUT: the state, the fix and the log.
    code, why = slurm._outcome(_fake_job(tmp_path / "a"), "TIMEOUT")
    assert code is None and why == (
        f"SLURM job 7_0 ended TIMEOUT before the run finished; raise --slurm_time (minutes; "
        f"rerun the sweep to resume the run); see {tmp_path / 'a' / '7_0_log.err'}")
    # A result of -15 while squeue says CANCELLED: cancelled, not just "killed by SIGTERM".
    monkeypatch.setattr(slurm, "queue_states", lambda ids: squeue(ids, "CANCELLED"))
    killed = _fake_job(tmp_path / "b", ("success", -15))
    code, why = slurm._outcome(killed, None)
    assert code is None and why.startswith(
        "SLURM job 7_0 ended CANCELLED before the run finished (its run was killed by "
        "SIGTERM); it was cancelled (scancel, or by an administrator); see ")
    # squeue has forgotten the job: nothing more is known than the member's own exit.
    monkeypatch.setattr(slurm, "queue_states", lambda ids: squeue(ids, "GONE"))
    assert slurm._outcome(killed, None) == (-15, "SLURM job 7_0")
    # Still completing after the wait: the member's exit, after polling squeue a while.
    monkeypatch.setattr(slurm, "queue_states", lambda ids: squeue(ids, "COMPLETING"))
    monkeypatch.setattr(slurm, "_SETTLE_S", 0.05)
    monkeypatch.setattr(slurm, "_SETTLE_POLL_S", 0.01)
    asked.clear()
    assert slurm._outcome(killed, None) == (-15, "SLURM job 7_0")
    assert len(asked) >= 2
    # A member that exits by itself is never second-guessed: squeue is not asked.
    asked.clear()
    assert slurm._outcome(_fake_job(tmp_path / "c", ("success", 3)), "COMPLETED") == (
        3, "SLURM job 7_0")
    assert asked == []
    # submitit gave up near the time limit (its SIGUSR2 handler): its trace's last line.
    trace = ("Traceback (most recent call last):\n  ...\nsubmitit.core.utils."
             "UncompletedJobError: Job not requeued because: timed-out and not checkpointable.\n")
    code, why = slurm._outcome(_fake_job(tmp_path / "d", ("error", trace)), None)
    assert code is None and why.startswith(
        "SLURM job 7_0 ended without finishing (submitit.core.utils.UncompletedJobError: Job "
        "not requeued because: timed-out and not checkpointable.); raise --slurm_time")
    # A job that ended without a result file, after waiting for a slow file system.
    monkeypatch.setattr(slurm, "_RESULT_WAIT_S", 0.05)
    code, why = slurm._outcome(_fake_job(tmp_path / "e"), "COMPLETED")
    assert code is None and why.startswith("SLURM job 7_0 ended without writing its result; see")


class _Touch:
    """Unpickling this touches a file: what a planted pickle could do (run code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_result_file_is_read_as_plain_data_only(tmp_path):
    """A result file is decoded, never unpickled: one naming a callable is refused before
    anything runs, and so are lists, dicts and broken files; submitit's own (plain tuples) are
    read."""
    import pickle

    from bablate.runner import slurm

    planted = tmp_path / "ran"
    job = _fake_job(tmp_path / "job")
    job.paths.result_pickle.write_bytes(pickle.dumps(("success", _Touch(planted))))
    assert pickle.loads(job.paths.result_pickle.read_bytes()) and planted.exists()  # it would
    planted.unlink()
    code, why = slurm._outcome(job, None)
    assert code is None and not planted.exists()
    assert why.startswith(f"SLURM job 7_0's result file {job.paths.result_pickle} is "
                          "unreadable (ValueError: it holds opcode STACK_GLOBAL, not plain data")
    cut = _fake_job(tmp_path / "cut")
    cut.paths.result_pickle.write_bytes(pickle.dumps(("success", 0))[:-3])  # cut short
    code, why = slurm._outcome(cut, None)
    assert code is None and "is unreadable (ValueError: " in why
    for bad, match in ((("success", [1]), "opcode EMPTY_LIST"), ({"a": 1}, "opcode EMPTY_DICT"),
                       ([1, 2], "opcode EMPTY_LIST"), (3, "holds a int, not submitit's")):
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad))
        with pytest.raises(ValueError, match=match):
            slurm.read_result(tmp_path / "bad.pkl")
    with pytest.raises(ValueError, match="malformed"):
        slurm.plain_pickle(b"\x80\x05h\x00.")  # reads a memo entry never stored
    with pytest.raises(FileNotFoundError):
        slurm.read_result(tmp_path / "none.pkl", wait_s=0.0)
    # Plain values round-trip as pickle itself reads them, in every protocol.
    values = [("success", 0), ("success", -15), ("success", 2**70), ("error", "trace\n" * 80),
              ("error", "é ✓ " * 100), (None, True, False, 1.5, -2**31, 255, 65535, ()),
              ((("nested",), ("x", "x")),)]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        for v in values:
            data = pickle.dumps(v, protocol=protocol)
            assert slurm.plain_pickle(data) == pickle.loads(data) == v, (protocol, v)
    submitit = pytest.importorskip("submitit")
    submitit.core.utils.cloudpickle_dump(("success", 0), tmp_path / "ok.pkl")
    assert slurm.read_result(tmp_path / "ok.pkl") == ("success", 0)


@pytest.mark.parametrize("flag,why", [
    ("--slurm_partition=nosuch", "Invalid partition name specified"),
    # This cluster has no GPUs: the request reaches sbatch, which refuses it.
    ("--slurm_gpus_per_node=1", "Invalid generic resource (gres) specification"),
])
def test_what_the_cluster_cannot_give_is_one_line(flag, why, slurm_cluster, tmp_path):
    """sbatch's refusal becomes the usual one-line error (exit 2); nothing is submitted."""
    workdir = tmp_path / "sweep"
    proc = subprocess.run([*_sweep_command(workdir), flag], cwd=REPO,
                          env=slurm_cluster, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # The sweep's first log line, then the error as one line.
    assert len(lines) == 2 and "0 already finished, 2 to run" in lines[0], lines
    assert lines[1].startswith("error: sbatch refused the sweep's jobs ("), lines
    assert lines[1].endswith(f"{why}); check the --slurm_* flags against the cluster (sinfo "
                             "lists its partitions)"), lines
    assert not list((workdir / "slurm").glob("*_submitted.pkl"))


def test_run_sweep_books_what_a_launcher_reports(tmp_path, fake_config):
    """Without a cluster: run_sweep hands the pending members to the launcher and books each
    reported end as a local sweep would (done, failed with the member's last line, or failed
    with the launcher's reason); a second sweep hands it only the unfinished member."""
    from bablate.runner import runs, sweeps

    base = fake_config("quick")
    base.steps = 2
    members = sweeps.expand(base, [{"seed": 0}, {"seed": 1}, {"seed": 2}])
    handed = []

    def launcher(pending, workdir, command_for, log):
        handed.append([m.name for m in pending])
        for m in pending:
            assert command_for(m, workdir / m.name)[-1] == str(workdir / m.name)
            if m.name == "seed=0":
                runs.run_one(m.config, workdir / m.name)
                yield m, 0, "job 1"
            elif m.name == "seed=1":
                (workdir / m.name).mkdir(exist_ok=True)
                (workdir / m.name / "console.txt").write_text("ValueError: boom\n")
                yield m, 1, "job 2"
            else:
                yield m, None, "job 3 ended TIMEOUT before the run finished; see job3.err"

    command_for = lambda m, d: ["run", str(d)]
    out = sweeps.run_sweep(members, tmp_path, command_for=command_for, launcher=launcher)
    assert out == {"ran": ["seed=0"], "skipped": [], "failed": {
        "seed=1": "ValueError: boom",
        "seed=2": "job 3 ended TIMEOUT before the run finished; see job3.err"}}
    log = (tmp_path / sweeps.SWEEP_LOG).read_text()
    assert "seed=0: done (job 1)" in log
    assert "seed=1: failed (job 2) (exit 1): ValueError: boom; see " in log
    assert "seed=2: failed: job 3 ended TIMEOUT" in log
    index = (tmp_path / sweeps.SWEEP_INDEX).read_text()
    assert "| `seed=0` | [done](seed=0/report.md) |" in index
    assert index.count("| failed |") == 2
    with pytest.raises(ValueError, match="needs command_for"):
        sweeps.run_sweep(members, tmp_path, launcher=launcher)

    out = sweeps.run_sweep(members, tmp_path, command_for=command_for, launcher=launcher)
    assert handed == [["seed=0", "seed=1", "seed=2"], ["seed=1", "seed=2"]]
    assert out["skipped"] == ["seed=0"]
