"""launch.py end to end in subprocesses: overrides, workdirs, refusals, sweeps, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bablate.runner import runs, sweeps

FAKE = str(Path(__file__).resolve().parent / "fake_study" / "config.py")


def _results(path):
    return json.loads((path / "results.json").read_text())


BAD_INPUTS = [
    (["--config=experiments/no_such_study.py"], "config file 'experiments/no_such_study.py' "
     "does not exist"),
    ([f"--config={FAKE}:bogus"], "unknown variant 'bogus'; choose from: quick, slow"),
    ([f"--config={FAKE}", "--config.no_such_key=1"], "'--config.no_such_key' overrides a key"),
    ([f"--config={FAKE}", "--config.model.depth=2"], "'--config.model.depth' overrides a key"),
    ([f"--config={FAKE}", "--config.seed=abc"], "--config.seed=abc"),
    ([f"--config={FAKE}", "--jobs=0"], "--jobs must be at least 1"),
    ([f"--config={FAKE}", "--workdir={file}"], "is a file; pass --workdir"),
    (["--config={nosweep}", "--sweep"], "defines no get_sweep(arg)"),
    ([f"--config={FAKE}", "--cpu_devices=0"], "--cpu_devices must be at least 1"),
]


# Two cases in the fast tier; each case is a process (tests/test_bad_inputs_cli.py runs
# the command line in-process).
@pytest.mark.parametrize("args,message", [
    *BAD_INPUTS[:2], *(pytest.param(*case, marks=pytest.mark.slow) for case in BAD_INPUTS[2:])],
    ids=lambda v: str(v)[:40])
def test_bad_input_gives_one_line_error(args, message, launch, tmp_path):
    file = tmp_path / "a_file"
    file.write_text("not a directory")
    nosweep = tmp_path / "nosweep.py"
    nosweep.write_text("from tests.fake_study.config import get_config  # noqa: F401\n")
    workdir = tmp_path / "run"
    args = [a.format(file=file, nosweep=nosweep) for a in args]
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={workdir}")
    proc = launch(*args, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err
    assert not (workdir / "results.json").exists() and not (workdir / "config.json").exists()


@pytest.mark.slow
def test_run_override_default_workdir_skip_refuse_overwrite(launch, tmp_path, fake_config):
    proc = launch(f"--config={FAKE}", "--config.seed=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "fake_study" / "quick"
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    # The same config in this process gives the same numbers (determinism across processes).
    config = fake_config("quick")
    config.seed = 3
    runs.run_one(config, tmp_path / "here")
    assert _results(run) == _results(tmp_path / "here")

    proc = launch(f"--config={FAKE}", "--config.seed=3", cwd=tmp_path)
    assert proc.returncode == 0 and "skipping" in proc.stderr

    proc = launch(f"--config={FAKE}", "--config.seed=4", "--config.model.name=big", cwd=tmp_path)
    assert proc.returncode == 2
    assert "model.name: 'tiny' -> 'big'; seed: 3 -> 4" in proc.stderr
    assert "--overwrite" in proc.stderr
    assert json.loads((run / "config.json").read_text())["seed"] == 3

    proc = launch(f"--config={FAKE}", "--config.seed=4", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["seed"] == 4
    assert _results(run) != _results(tmp_path / "here")


@pytest.mark.slow
def test_sweep_in_parallel_jobs_then_resume(launch, tmp_path, fake_config):
    proc = launch(f"--config={FAKE}", "--config.steps=2", "--sweep", "--jobs=2",
                  f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    names = ["seed=0", "seed=1,scale=2.0"]
    for name, (seed, scale) in zip(names, [(0, 1.0), (1, 2.0)], strict=True):
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert (config["steps"], config["seed"], config["scale"]) == (2, seed, scale)
    # A member run in a subprocess equals the same member run here.
    base = fake_config("quick")
    base.steps = 2
    member = sweeps.expand(base, [{"seed": 1, "scale": 2.0}])[0]
    runs.run_one(member.config, tmp_path / "here")
    assert _results(tmp_path / "seed=1,scale=2.0") == _results(tmp_path / "here")

    (tmp_path / names[1] / "results.json").unlink()  # as if killed while running
    proc = launch(f"--config={FAKE}", "--config.steps=2", "--sweep", "--jobs=2",
                  f"--workdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "1 already finished, 1 to run" in proc.stderr
    assert "1 ran, 1 skipped, 0 failed" in proc.stderr
    for name in names:
        starts = (tmp_path / name / "log.txt").read_text().count(" in ")
        assert starts == (4 if name == names[1] else 2), name  # start+finish lines per attempt


@pytest.mark.parametrize("flag,xla_count,expected", [
    (None, None, "cores"),   # default: one CPU device per core
    pytest.param(None, 3, 3, marks=pytest.mark.slow),  # a count forced in XLA_FLAGS is kept
    (2, 3, 2),               # an explicit --cpu_devices wins
    pytest.param(1, None, 1, marks=pytest.mark.slow),
])
def test_cpu_devices_flag_sets_the_jax_device_count(flag, xla_count, expected):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_count is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={xla_count}"
    code = (f"from bablate.runner import cli; cli.setup_cpu_devices({flag}); import jax; "
            "print(jax.device_count())")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    cores = len(os.sched_getaffinity(0))
    assert int(out.stdout.split()[-1]) == (cores if expected == "cores" else expected)


@pytest.mark.slow
def test_python_m_bablate_runs_a_study_by_name_or_path(tmp_path, fake_config):
    """``python -m bablate`` is launch.py: a config path works, and a bare study name resolves
    to the study's own config file (a wrong name lists the studies)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = lambda *a: subprocess.run([sys.executable, "-m", "bablate", *a], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120, env=env)
    proc = run(f"--config={FAKE}", "--config.seed=5", f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "w" / "config.json").read_text())["seed"] == 5
    proc = run("--config=toy_superposition:no_such_variant")
    assert proc.returncode == 2
    assert "unknown variant 'no_such_variant'" in proc.stderr, proc.stderr
    proc = run("--config=no_such_study")
    assert proc.returncode == 2
    assert "names no study" in proc.stderr and "toy_superposition" in proc.stderr, proc.stderr


def test_only_the_config_value_is_resolved_to_the_studys_file():
    """A study name after --config (either spelling) becomes its config file; another argument
    that happens to read the same is left alone."""
    from bablate.runner import cli

    path = cli.resolve_config("toy_superposition:quick")
    assert path.endswith("studies/toy_superposition/variants.py:quick")
    argv, spec, resolved = cli.resolved_argv(
        ["prog", "--config", "toy_superposition:quick", "--workdir", "toy_superposition:quick"])
    assert argv == ["prog", "--config", path, "--workdir", "toy_superposition:quick"]
    assert (spec, resolved) == ("toy_superposition:quick", path)
    argv, _, _ = cli.resolved_argv(["prog", "--workdir=toy_superposition:quick",
                                    "--config=toy_superposition:quick"])
    assert argv == ["prog", "--workdir=toy_superposition:quick", f"--config={path}"]
    assert cli.resolved_argv(["prog"])[0] == ["prog"]  # the flag's default is already a path


@pytest.mark.slow
def test_a_runs_warnings_reach_log_and_report_with_the_callers_line(tmp_path):
    """``python -m bablate``: a warning raised by the library inside a study, and one the study
    raises itself, are both in log.txt and report.md's Warnings section, each with the study's
    line (not a line inside bablate); stderr still shows them."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "FAKE_STUDY_WARN": "1"}
    proc = subprocess.run([sys.executable, "-m", "bablate", f"--config={FAKE}",
                           f"--workdir={tmp_path / 'w'}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    study = Path(__file__).resolve().parent / "fake_study" / "__init__.py"
    lines = study.read_text().splitlines()
    library_line = 1 + next(i for i, s in enumerate(lines) if "warn_if_intact_fails(" in s)
    own_line = 1 + next(i for i, s in enumerate(lines) if "the fake study's own warning" in s)
    expected = ["UserWarning: Task 'fake': the intact network already fails it",
                f"(at tests/fake_study/__init__.py:{library_line})",
                "RuntimeWarning: the fake study's own warning "
                f"(at tests/fake_study/__init__.py:{own_line})"]
    log = (tmp_path / "w" / "log.txt").read_text()
    report = (tmp_path / "w" / "report.md").read_text()
    warnings_section = report.split("## Warnings", 1)[1].split("\n## ", 1)[0]
    for text in expected:
        assert text in log and text in warnings_section and text in proc.stderr, text
    assert "The run issued 2 warning(s)" in warnings_section
    assert "bablate/tasks.py" not in log


@pytest.mark.slow
def test_help_lists_bablates_own_flags_one_line_each_with_examples(tmp_path):
    """``--help`` shows bablate's flags (not only absl's usage line) and exits as absl's does
    (status 1)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for cmd in ([sys.executable, "-m", "bablate"],
                [sys.executable, str(Path(__file__).resolve().parents[1] / "launch.py")]):
        proc = subprocess.run([*cmd, "--help"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=env)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        for name in ("config", "workdir", "sweep", "jobs", "launcher", "overwrite",
                     "cpu_devices", "slurm_time"):
            (line,) = [ln for ln in lines if ln.strip().startswith(f"--{name}")]
            assert len(line.split(None, 1)[1]) > 10, line  # the flag and its help, one line
        assert any(ln.strip().startswith("python -m bablate --config=") for ln in lines)
        assert "--launcher=local|slurm" in proc.stdout and "toy_superposition" in proc.stdout
        assert not (tmp_path / "runs").exists()  # --help runs nothing
