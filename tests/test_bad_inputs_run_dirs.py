"""Run and sweep directories with a file where bablate keeps a directory, or a directory where it
writes a file: one line naming the path and the fix, exit 2, nothing touched and nothing that
looks finished."""

from pathlib import Path

import pytest

from tests.test_bad_inputs_cli import FAKE, assert_nothing_finished, assert_one_line


def _file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("the user's own file")


def _dir(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "keep.txt").write_text("the user's own file")


# (id, path in the run directory, make it, extra launch.py flags, kind found, kind expected)
CASES = [
    ("state-is-a-file", "state", _file, (), "a file", "a directory"),
    ("figures-is-a-file", "figures", _file, (), "a file", "a directory"),
    ("config-json-is-a-dir", "config.json", _dir, (), "a directory", "a file"),
    ("results-json-is-a-dir", "results.json", _dir, (), "a directory", "a file"),
    ("run-json-is-a-dir", "run.json", _dir, (), "a directory", "a file"),
    ("report-is-a-dir", "report.md", _dir, (), "a directory", "a file"),
    ("log-is-a-dir", "log.txt", _dir, (), "a directory", "a file"),
    ("lock-is-a-dir", ".lock", _dir, (), "a directory", "a file"),
    ("sweep-member-is-a-file", "seed=0", _file, ("--sweep",), "a file", "a directory"),
    ("sweep-json-is-a-dir", "sweep.json", _dir, ("--sweep",), "a directory", "a file"),
    ("sweep-index-is-a-dir", "sweep.md", _dir, ("--sweep",), "a directory", "a file"),
    ("sweep-results-is-a-dir", "sweep_results.json", _dir, ("--sweep",), "a directory",
     "a file"),
    ("sweep-log-is-a-dir", "sweep_log.txt", _dir, ("--sweep",), "a directory", "a file"),
    ("member-config-is-a-dir", "seed=0/config.json", _dir, ("--sweep",), "a directory",
     "a file"),
    ("member-console-is-a-dir", "seed=0/console.txt", _dir, ("--sweep", "--jobs=2"),
     "a directory", "a file"),
]


@pytest.mark.parametrize("case,name,make,extra,found,kept", CASES, ids=[c[0] for c in CASES])
def test_wrong_kind_of_path_in_a_run_directory_is_one_line(case, name, make, extra, found, kept,
                                                           cli, tmp_path):
    workdir = tmp_path / "run"
    blocker = workdir / name
    make(blocker)
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}", *extra)
    assert code == 2, err
    assert_one_line(err, f"workdir {str(blocker.parent)!r} cannot be used: {str(blocker)!r} is "
                    f"{found} where bablate keeps {kept}; move or remove it")
    assert not [p for p in workdir.rglob("results.json") if p.is_file()]
    # Refused before anything was written: the user's file or directory is as it was.
    assert (blocker / "keep.txt").is_file() if make is _dir else blocker.is_file()
    assert not (workdir / "config.json").is_file() and not (workdir / "sweep.json").is_file()


def test_directory_where_a_figure_is_written_is_one_line_and_resumable(cli, tmp_path):
    """Found only when the run gets there (figure names are the study's): one line naming the
    path; once it is moved away the same command resumes."""
    workdir = tmp_path / "run"
    png = workdir / "figures" / "sums.png"
    png.mkdir(parents=True)
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}")
    assert code == 2
    assert_one_line(err, f"cannot write in {str(workdir)!r}: Is a directory ({png}); move or "
                    "remove what stands in the way, then rerun the same command to resume",
                    whole=False)
    assert_nothing_finished(workdir)
    png.rmdir()
    code, err = cli(f"--config={FAKE}", f"--workdir={workdir}")
    assert code == 0, err
    assert "resumed at step 4" in (workdir / "log.txt").read_text()


def test_config_that_is_a_directory_is_one_line(cli, tmp_path):
    code, err = cli(f"--config={tmp_path}", f"--workdir={tmp_path / 'run'}")
    assert code == 2
    assert_one_line(err, f"config file {str(tmp_path)!r} is a directory; pass a config file in "
                    f"it (--config={tmp_path}/<name>.py[:variant]) or a study name (studies: ")
    assert not (tmp_path / "run").exists()
