"""A catalogue of bad inputs to launch.py and to run directories, each answered with one line.

Most cases call launch.py's flag parser and ``main`` in this process (seconds for the whole
catalogue); a few start real processes (a held lock, Ctrl-C, kill -9). Every case checks the
exit code, that the error is one ``error: ...`` line without escapes, and that nothing looks
finished afterwards.
"""

import errno
import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from absl import flags

from bablate import io as bbio
from bablate import statefile
from bablate.runner import cli as bcli
from bablate.runner import config_file, rundir, runs, sweeps

REPO = Path(__file__).resolve().parents[1]
FAKE = str(REPO / "tests" / "fake_study" / "config.py")
TOY = str(REPO / "experiments" / "toy_superposition.py")
RNN = str(REPO / "experiments" / "rnn_chunks.py")
LLM = str(REPO / "experiments" / "llm_concepts.py")
BASIS = str(REPO / "experiments" / "basis_comparison.py")
FAKE_IMPORT = "from tests.fake_study.config import get_config  # noqa: F401\n"


def _reset_flags() -> None:
    """Forgets the last parse: the per-override flags ml_collections defined, all values, and
    the loaded config module (ml_collections reuses it by name, keeping stale functions)."""
    for name in list(flags.FLAGS):
        if name.startswith("config."):
            delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    sys.modules.pop("config_config", None)


def launch_in_process(monkeypatch, capsys):
    """``cli(*args) -> (exit code, stderr)``: launch.py run in this process (the ``cli``
    fixture of conftest.py, which every tests/test_bad_inputs_*.py uses)."""

    def run(*args: str) -> tuple[int, str]:
        argv = ["launch.py", *args]
        monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads overrides from sys.argv
        monkeypatch.setattr(bcli, "setup_cpu_devices", lambda n: None)  # JAX is up
        _reset_flags()
        capsys.readouterr()
        code = 0
        try:
            bcli.main(bcli._parse_flags(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            _reset_flags()
        return code, capsys.readouterr().err

    return run


def assert_one_line(err: str, message: str, *, whole: bool = True) -> str:
    """The error line: the whole of stderr (``whole``) or its last line, with ``message``."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    if whole:
        assert len(lines) == 1, err
    line = lines[-1]
    assert line.startswith("error: "), err
    assert message in line, line
    assert "\\n" not in line and "\\'" not in line, line  # no repr escapes
    return line


def assert_nothing_finished(*dirs: Path) -> None:
    for d in dirs:
        assert not (d / "results.json").exists(), d
        for sub in d.glob("*/results.json") if d.is_dir() else []:
            raise AssertionError(f"{sub} exists")


def _files(tmp: Path) -> dict[str, str]:
    """Config files with one defect each, written into ``tmp``."""
    texts = {
        "nosweep": FAKE_IMPORT,
        "noget": "x = 1\n",
        "nonecfg": "def get_config(arg=None):\n    return None\n",
        "syntax": "def get_config(arg=None):\n    return 1 +\n",
        "nostudy": "import ml_collections\n\n\ndef get_config(arg=None):\n"
                   "    return ml_collections.ConfigDict({'seed': 0})\n",
        "sweep_none": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n"
                      "    return [{'seed': 0}, {'seed': None}]\n",
        "sweep_nan": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n"
                     "    return [{'scale': float('nan')}]\n",
        "sweep_empty": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n    return []\n",
        "sweep_badkey": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n    return [{'sed': 1}]\n",
        "sweep_raises": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n"
                        "    raise KeyError('no such sweep')\n",
        "sweep_dup": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n"
                     "    return [{'seed': 1}, {'seed': 1}]\n",
        "sweep_badvalue": FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n"
                          "    return [{'steps': 0}]\n",
    }
    out = {}
    for name, text in texts.items():
        (tmp / f"{name}.py").write_text(text)
        out[name] = str(tmp / f"{name}.py")
    (tmp / "a_file").write_text("not a directory")
    out["file"] = str(tmp / "a_file")
    return out


# (id, arguments, message in the error line, exit code). {name} is a path from `_files`.
CLI_CASES = [
    ("missing-config-file", ["--config=experiments/no_such_study.py"],
     "config file 'experiments/no_such_study.py' does not exist", 2),
    ("unknown-variant", [f"--config={FAKE}:bogus"], "unknown variant 'bogus'; choose from", 2),
    ("unknown-override", [f"--config={FAKE}", "--config.no_such_key=1"],
     "'--config.no_such_key' overrides a key the config does not have ('no_such_key' not found "
     "at the top level; keys there: model, scale, seed, sleep, steps, study, variant)", 2),
    ("unknown-nested-override", [f"--config={FAKE}", "--config.model.depth=2"],
     "'--config.model.depth' overrides a key the config does not have ('depth' not found at "
     "model; keys there: name, width)", 2),
    ("override-into-a-value", [f"--config={FAKE}", "--config.seed.x=1"],
     "'--config.seed.x' overrides a key the config does not have ('x' not found at seed", 2),
    ("unknown-section-override", [f"--config={FAKE}", "--config.nokey.sub=1"],
     "'--config.nokey.sub' overrides a key", 2),
    ("int-field-given-text", [f"--config={FAKE}", "--config.seed=abc"], "--config.seed=abc", 2),
    ("int-field-given-float", [f"--config={FAKE}", "--config.steps=1.5"],
     "flag --config.steps=1.5: invalid literal for int()", 2),
    ("section-given-a-number", [f"--config={FAKE}", "--config.model=3"],
     "Failed to parse '3' as a ConfigDict", 2),
    ("config-without-get_config", ["--config={noget}"],
     "defines no get_config(arg); a config file needs get_config(arg=None)", 2),
    ("get_config-returns-None", ["--config={nonecfg}"],
     "returned NoneType; it must return an ml_collections.ConfigDict", 2),
    ("config-file-syntax-error", ["--config={syntax}"], "invalid syntax", 2),
    ("config-without-study", ["--config={nostudy}"], "the config has no 'study' field", 2),
    ("unknown-study-module", [f"--config={FAKE}", "--config.study=no_such_study"],
     "no study module 'bablate.studies.no_such_study'", 2),
    ("positional-argument", [f"--config={FAKE}", "stray"], "unexpected arguments ['stray']", 2),
    ("jobs-zero", [f"--config={FAKE}", "--jobs=0"], "--jobs must be at least 1", 2),
    ("jobs-without-sweep", [f"--config={FAKE}", "--jobs=2"], "--jobs only applies to sweeps", 2),
    ("cpu-devices-zero", [f"--config={FAKE}", "--cpu_devices=0"],
     "--cpu_devices must be at least 1", 2),
    ("multihost-sweep", [f"--config={FAKE}", "--multihost", "--sweep"],
     "--multihost runs one study across hosts", 2),
    ("launcher-slurm-without-sweep", [f"--config={FAKE}", "--launcher=slurm"],
     "--launcher=slurm submits the members of a sweep; add --sweep", 2),
    ("launcher-slurm-with-jobs", [f"--config={FAKE}", "--sweep", "--launcher=slurm", "--jobs=2"],
     "--jobs applies to --launcher=local; with --launcher=slurm use --slurm_array_parallelism",
     2),
    ("launcher-unknown", [f"--config={FAKE}", "--sweep", "--launcher=k8s"],
     "--launcher=k8s: value should be one of <local|slurm>", 2),
    ("slurm-flag-without-launcher", [f"--config={FAKE}", "--sweep", "--slurm_partition=gpu"],
     "--slurm_partition only applies with --launcher=slurm; add it or drop --slurm_partition",
     2),
    ("slurm-time-zero", [f"--config={FAKE}", "--sweep", "--launcher=slurm", "--slurm_time=0"],
     "--slurm_time must be at least 1 (got 0)", 2),
    ("slurm-gpus-negative", [f"--config={FAKE}", "--sweep", "--launcher=slurm",
                             "--slurm_gpus_per_node=-1"],
     "--slurm_gpus_per_node must be at least 0 (got -1)", 2),
    ("slurm-mem-zero", [f"--config={FAKE}", "--sweep", "--launcher=slurm", "--slurm_mem_gb=0"],
     "--slurm_mem_gb must be a positive number of GB (got 0.0)", 2),
    ("workdir-is-a-file", [f"--config={FAKE}", "--workdir={file}"], "is a file; pass --workdir",
     2),
    ("workdir-under-a-file", [f"--config={FAKE}", "--workdir={file}/run"], "is a file", 2),
    ("sweep-without-get_sweep", ["--config={nosweep}", "--sweep"], "defines no get_sweep(arg)",
     2),
    ("sweep-value-None-jobs-1", ["--config={sweep_none}", "--sweep"],
     "get_sweep item 1 sets seed=None; a sweep value must be", 2),
    ("sweep-value-None-jobs-2", ["--config={sweep_none}", "--sweep", "--jobs=2"],
     "get_sweep item 1 sets seed=None; a sweep value must be", 2),
    ("sweep-value-nan", ["--config={sweep_nan}", "--sweep"], "sweep values must be finite", 2),
    ("sweep-empty", ["--config={sweep_empty}", "--sweep"], "non-empty list of dicts", 2),
    ("sweep-unknown-key", ["--config={sweep_badkey}", "--sweep"],
     "sweep sets unknown config key 'sed'", 2),
    ("sweep-raises", ["--config={sweep_raises}", "--sweep"],
     "get_sweep(None) in", 2),
    ("sweep-duplicate-members", ["--config={sweep_dup}", "--sweep"], "both map to directory", 2),
    ("sweep-member-fails-validation", ["--config={sweep_badvalue}", "--sweep", "--jobs=2"],
     "sweep member steps=0: config.steps = 0 must be at least 1", 2),
    # The fake study's own validate(config).
    ("fake-steps-zero", [f"--config={FAKE}", "--config.steps=0"],
     "config.steps = 0 must be at least 1; fix it in the config file or with --config.steps=",
     2),
    ("fake-scale-nan", [f"--config={FAKE}", "--config.scale=nan"],
     "config.scale = nan is not a finite number", 2),
    ("fake-empty-name", [f"--config={FAKE}", "--config.model.name="],
     "config.model.name = '' is empty", 2),
    # The real studies' validate(config): refused before any training.
    ("toy-method-exct", [f"--config={TOY}", "--config.ablation.method=exct"],
     "config.ablation.method = 'exct' is not one of 'exact', 'mcmc'", 2),
    ("toy-steps-zero", [f"--config={TOY}", "--config.train.steps=0"],
     "config.train.steps = 0 must be at least 1", 2),
    ("toy-m_hidden-zero", [f"--config={TOY}", "--config.m_hidden=0"],
     "config.m_hidden = 0 must be at least 1", 2),
    ("toy-importance-geometrik", [f"--config={TOY}", "--config.importance.kind=geometrik"],
     "config.importance.kind = 'geometrik' is not one of 'geometric', 'loglinear'", 2),
    ("toy-epsilon-nan", [f"--config={TOY}", "--config.ablation.epsilon=nan"],
     "config.ablation.epsilon = nan is not a finite number", 2),
    ("toy-density-above-one", [f"--config={TOY}", "--config.densities=2,0.1"],
     "config.densities = [2, 0.1] has item 0 = 2 that must be at most 1", 2),
    ("toy-no-densities", [f"--config={TOY}", "--config.densities=[]"],
     "config.densities is empty and config.density_grid.num is 0", 2),
    ("toy-exact-too-wide", [f"--config={TOY}", "--config.m_hidden=24"],
     "exact ablation needs m_hidden <= 20 (got 24)", 2),
    ("rnn-unknown-cell", [f"--config={RNN}", "--config.model.cell=lstm"],
     "config.model.cell = 'lstm' is not one of 'linear', 'tanh', 'gru'", 2),
    ("rnn-unknown-rule", [f"--config={RNN}", "--config.ablation.rules=('top2',)"],
     "config.ablation.rules = ('top2',) has item 0 = 'top2' that is not one of", 2),
    ("rnn-unknown-family", [f"--config={RNN}", "--config.family=bogus"],
     "config.family = 'bogus' is not one of", 2),
    ("llm-unknown-concept", [f"--config={LLM}", "--config.concepts=cheese,gouda"],
     "config.concepts names unknown concepts ['gouda']", 2),
    ("llm-layer-out-of-range", [f"--config={LLM}", "--config.neuron_layer=30"],
     "config.neuron_layer = 30 must be at most 29", 2),
    ("basis-no-network", [f"--config={BASIS}", "--config.toy.enabled=false",
                          "--config.rnn.enabled=false"], "no network enabled", 2),
    ("basis-unknown-dictionary", [f"--config={BASIS}", "--config.toy.dictionary.methods=pca"],
     "invalid config: unknown dictionary method 'pca'", 2),
]


@pytest.mark.parametrize("case,args,message,code", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, args, message, code, cli, tmp_path):
    paths = _files(tmp_path)
    workdir = tmp_path / "run"
    args = [a.format(**paths) for a in args]
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={workdir}")
    got, err = cli(*args)
    assert got == code, err
    assert_one_line(err, message)
    # Refused before any work: no run directory at all (or, for a sweep, no member ran).
    assert not (workdir / "config.json").exists()
    assert_nothing_finished(workdir)


def test_a_config_file_of_any_suffix_gives_its_sweep_too(cli, tmp_path):
    """absl reads --config whatever the file's suffix; --sweep reads get_sweep from that file
    the same way (here a sweep it refuses, so nothing runs)."""
    config = tmp_path / "dup.cfg"
    config.write_text(FAKE_IMPORT + "\n\ndef get_sweep(arg=None):\n"
                      "    return [{'seed': 1}, {'seed': 1}]\n")
    code, err = cli(f"--config={config}", "--sweep", f"--workdir={tmp_path / 'run'}")
    assert code == 2, err
    assert_one_line(err, "sweep items 0 and 1 both map to directory 'seed=1'")
    assert_nothing_finished(tmp_path / "run")


def test_slurm_launcher_without_submitit_or_sbatch_is_one_line(cli, monkeypatch, tmp_path):
    """--launcher=slurm names the missing piece and its fix before anything is submitted."""
    workdir = tmp_path / "sweep"
    args = (f"--config={FAKE}", "--sweep", "--launcher=slurm", f"--workdir={workdir}")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "submitit", None)  # as if not installed: find_spec gives None
        code, err = cli(*args)
    assert code == 2
    assert_one_line(err, "--launcher=slurm needs submitit; install it with pip install "
                    "'bablate[slurm]'")
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit is not installed; the sbatch check comes after it")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, srun or squeue
    code, err = cli(*args)
    assert code == 2
    assert_one_line(err, "--launcher=slurm needs SLURM's sbatch on PATH; run the sweep on a "
                    "machine that submits to the cluster (a login node) or use --launcher=local")
    assert not workdir.exists()


def test_list_and_tuple_fields_are_overridable(cli, tmp_path):
    for text in ("1,0.1", "(1,0.1)", "[1, 0.1]"):
        _reset_flags()
        argv = ["launch.py", f"--config={TOY}", f"--config.densities={text}"]
        old = sys.argv
        sys.argv = argv
        try:
            bcli._parse_flags(argv)
            assert bcli._CONFIG.value.densities == [1, 0.1], text
        finally:
            sys.argv = old
            _reset_flags()
    parser = config_file._ListParser()
    assert parser.parse("0.5") == [0.5] and parser.parse("a,b") == ["a", "b"]
    assert parser.parse("") == [] and parser.parse("['x', 2]") == ["x", 2]
    # A sweep member's list value travels to --jobs subprocesses as text and back unchanged.
    assert parser.parse(sweeps.format_value([1.0, 0.1])) == [1.0, 0.1]


# ----------------------------------------------------------------------------- run directories


def _fake_run(cli, workdir: Path, *extra: str) -> tuple[int, str]:
    return cli(f"--config={FAKE}", f"--workdir={workdir}", *extra)


def _fresh_results(cli, tmp_path: Path, *extra: str) -> bytes:
    code, err = _fake_run(cli, tmp_path / "fresh", *extra)
    assert code == 0, err
    return (tmp_path / "fresh" / "results.json").read_bytes()


@pytest.mark.parametrize("content", ["null", "[]", "{\"study\": ", "\"x\""],
                         ids=["null", "empty-list", "truncated", "string"])
def test_config_json_that_is_not_a_config_is_refused(content, cli, workdir):
    workdir.mkdir()
    (workdir / "config.json").write_text(content)
    code, err = _fake_run(cli, workdir)
    assert code == 2
    assert_one_line(err, "holds a run with a different config (config.json")
    assert "--overwrite" in err
    assert (workdir / "config.json").read_text() == content  # refusal touched nothing
    assert_nothing_finished(workdir)
    code, err = _fake_run(cli, workdir, "--overwrite")
    assert code == 0, err


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-dict", "no-run-json",
                                    "other-config-stamp", "edited-numbers"])
def test_results_that_do_not_check_out_are_redone(damage, cli, workdir, tmp_path):
    code, _ = _fake_run(cli, workdir)
    assert code == 0
    good = (workdir / "results.json").read_bytes()
    if damage == "truncated":
        (workdir / "results.json").write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        (workdir / "results.json").write_bytes(b"")
    elif damage == "not-a-dict":
        (workdir / "results.json").write_text("[1, 2]")
    elif damage == "no-run-json":
        (workdir / "run.json").unlink()
    elif damage == "other-config-stamp":
        stamp = json.loads((workdir / "run.json").read_text())
        (workdir / "run.json").write_text(json.dumps({**stamp, "config_sha256": "0" * 64}))
    else:
        (workdir / "results.json").write_bytes(good.replace(b'"steps": 4', b'"steps": 5'))
    config = rundir.config_to_dict(flags_free_fake_config())
    assert rundir.run_status(config, workdir)[0] == "unfinished"  # nothing looks finished
    code, err = _fake_run(cli, workdir)
    assert code == 0, err
    assert "note: redoing:" in (workdir / "log.txt").read_text()
    assert (workdir / "results.json").read_bytes() == good  # redone, same numbers
    assert rundir.run_status(config, workdir)[0] == "finished"


def flags_free_fake_config():
    from tests.fake_study.config import get_config

    return get_config("quick")


def test_stale_state_without_config_json_is_cleared(cli, tmp_path):
    """A seed-0 checkpoint left without config.json must not become seed 1's training."""
    workdir = tmp_path / "run"
    code, _ = _fake_run(cli, workdir, "--config.seed=0")
    assert code == 0
    (workdir / "config.json").unlink()
    (workdir / "results.json").unlink()
    code, err = _fake_run(cli, workdir, "--config.seed=1")
    assert code == 0, err
    log = (workdir / "log.txt").read_text()
    assert "resumed" not in log
    assert (workdir / "results.json").read_bytes() == _fresh_results(cli, tmp_path,
                                                                     "--config.seed=1")


def test_state_of_another_config_is_never_loaded(cli, tmp_path):
    workdir = tmp_path / "run"
    code, _ = _fake_run(cli, workdir, "--config.seed=0")
    assert code == 0
    planted = (workdir / "state" / "progress.msgpack").read_bytes()
    code, _ = _fake_run(cli, workdir, "--config.seed=1", "--overwrite")
    assert code == 0
    (workdir / "results.json").unlink()  # seed 1 unfinished, with seed 0's checkpoint planted
    (workdir / "state" / "progress.msgpack").write_bytes(planted)
    code, err = _fake_run(cli, workdir, "--config.seed=1")
    assert code == 0, err
    log = (workdir / "log.txt").read_text()
    assert "ignoring state/progress.msgpack: it was saved by a run of another config" in log
    assert (workdir / "results.json").read_bytes() == _fresh_results(cli, tmp_path,
                                                                     "--config.seed=1")


def _crash_at_step(monkeypatch, cli, workdir: Path, step: int) -> None:
    monkeypatch.setenv("FAKE_STUDY_FAIL_AT_STEP", str(step))
    with pytest.raises(RuntimeError, match="planned failure"):  # a bug keeps its traceback
        _fake_run(cli, workdir)
    monkeypatch.delenv("FAKE_STUDY_FAIL_AT_STEP")


class _Evil:
    """Unpickling this calls os.system: what a planted pickle checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_checkpoint_cannot_run_code(cli, monkeypatch, tmp_path):
    workdir, marker = tmp_path / "run", tmp_path / "pwned"
    _crash_at_step(monkeypatch, cli, workdir, 2)
    (workdir / "state" / "progress.msgpack").unlink()
    (workdir / "state" / "progress.pkl").write_bytes(pickle.dumps(_Evil(marker)))
    code, err = _fake_run(cli, workdir)
    assert code == 0, err
    assert not marker.exists()
    assert "ignoring state/progress.pkl: pickle checkpoints are never loaded" in (
        workdir / "log.txt").read_text()
    assert (workdir / "results.json").read_bytes() == _fresh_results(cli, tmp_path)


@pytest.mark.parametrize("payload", ["pickle", "garbage", "truncated", "object-dtype",
                                     "unknown-ext", "wrong-size"])
def test_planted_or_corrupt_checkpoint_is_refused_in_one_line(payload, cli, monkeypatch,
                                                              tmp_path):
    workdir, marker = tmp_path / "run", tmp_path / "pwned"
    _crash_at_step(monkeypatch, cli, workdir, 2)
    path = workdir / "state" / "progress.msgpack"
    good = path.read_bytes()
    bad = {
        "pickle": pickle.dumps(_Evil(marker)),
        "garbage": b"\x00" * 64,
        "truncated": good[: len(good) - 7],
        "object-dtype": statefile.MAGIC + msgpack.packb(
            {"format": 1, "config_hash": None, "tree": msgpack.ExtType(
                1, msgpack.packb(["|O", [1], b"\x00" * 8]))}),
        "unknown-ext": statefile.MAGIC + msgpack.packb(
            {"format": 1, "config_hash": None, "tree": msgpack.ExtType(42, b"os.system")}),
        "wrong-size": statefile.MAGIC + msgpack.packb(
            {"format": 1, "config_hash": None, "tree": msgpack.ExtType(
                1, msgpack.packb(["<f8", [3], b"\x00" * 8]))}),
    }[payload]
    path.write_bytes(statefile.MAGIC + bad if payload == "pickle" else bad)
    code, err = _fake_run(cli, workdir)
    assert code == 2
    line = assert_one_line(err, f"checkpoint {str(path)!r} is corrupt", whole=False)
    assert "rerun with --overwrite" in line
    assert not marker.exists()
    assert_nothing_finished(workdir)
    assert "run failed: checkpoint" in (workdir / "log.txt").read_text()
    code, err = _fake_run(cli, workdir, "--overwrite")
    assert code == 0, err


def test_second_launch_on_a_locked_workdir_is_refused(cli, workdir):
    with rundir.run_lock(workdir):
        code, err = _fake_run(cli, workdir)
    assert code == 2
    assert_one_line(err, f"is in use by another launch (pid {os.getpid()}); wait for it")
    assert not (workdir / "config.json").exists()
    code, err = _fake_run(cli, workdir)  # the lock went with its holder
    assert code == 0, err


def test_second_sweep_on_a_locked_sweep_dir_is_refused(cli, tmp_path):
    with rundir.run_lock(tmp_path / "sweep"):
        code, err = cli(f"--config={FAKE}", "--sweep", f"--workdir={tmp_path / 'sweep'}")
    assert code == 2
    assert_one_line(err, "is in use by another launch (pid")
    assert_nothing_finished(tmp_path / "sweep")


def test_unwritable_workdir_is_one_line(cli, monkeypatch, workdir):
    real_mkdir = Path.mkdir

    def refuse(self, *a, **k):
        if self == workdir:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, err = _fake_run(cli, workdir)
    assert code == 2
    assert_one_line(err, f"cannot use workdir {str(workdir)!r}: Permission denied; choose a "
                    "writable --workdir")
    assert not workdir.exists()


def test_workdir_on_a_pseudo_filesystem_is_one_line(cli):
    code, err = _fake_run(cli, Path("/proc/bablate-no-such-dir/run"))
    assert code == 2
    assert_one_line(err, "cannot use workdir '/proc/bablate-no-such-dir/run'")


@pytest.mark.parametrize("target", ["results.json", "progress.msgpack", "config.json"])
def test_disk_full_is_one_line_logged_and_resumable(target, cli, monkeypatch, tmp_path):
    workdir = tmp_path / "run"
    real = bbio.atomic_write_bytes

    def full(path, data):
        if Path(path).name == target:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(bbio, "atomic_write_bytes", full)
    code, err = _fake_run(cli, workdir)
    assert code == 2
    line = assert_one_line(err, "No space left on device", whole=target == "config.json")
    assert "free some disk space" in line and "rerun the same command to resume" in line
    assert_nothing_finished(workdir)
    assert "run failed: cannot write in" in (workdir / "log.txt").read_text()
    monkeypatch.setattr(bbio, "atomic_write_bytes", real)
    code, err = _fake_run(cli, workdir)
    assert code == 0, err
    assert (workdir / "results.json").read_bytes() == _fresh_results(cli, tmp_path)


def test_ctrl_c_prints_one_line_and_the_run_resumes(cli, monkeypatch, tmp_path):
    workdir = tmp_path / "run"
    real_study = runs.load_study("tests.fake_study")

    def interrupted_study(config, ctx):
        ctx.save_state("progress", {"step": 2, "acc": np.zeros(3)})
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "load_study", lambda name: interrupted_study)
    code, err = _fake_run(cli, workdir)
    assert code == 130
    lines = err.strip().splitlines()
    assert lines[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err
    assert_nothing_finished(workdir)
    assert "interrupted; rerun the same command to resume" in (workdir / "log.txt").read_text()
    monkeypatch.setattr(runs, "load_study", lambda name: real_study)
    code, err = _fake_run(cli, workdir)
    assert code == 0, err
    assert "resumed at step 2" in (workdir / "log.txt").read_text()


def test_bug_in_a_study_keeps_its_traceback(cli, monkeypatch, workdir):
    """Only user errors are one line: a study's own bug must still show where it is."""

    def buggy(config, ctx):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runs, "load_study", lambda name: buggy)
    with pytest.raises(ZeroDivisionError):
        _fake_run(cli, workdir)
    assert "Traceback" in (workdir / "log.txt").read_text()


# ----------------------------------------------------------------------------- real processes


def _default_sigint() -> None:
    # A test runner started in the background by a shell without job control inherits SIGINT
    # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt; the launch under test
    # must see Ctrl-C as a user's terminal would send it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _launch(*args: str, pause: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "BABLATE_PROGRESS": "0"}
    if pause is not None:
        env["FAKE_STUDY_PAUSE_FILE"] = str(pause)
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def _wait_for(path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.slow
def test_processes_lock_and_ctrl_c(tmp_path):
    """A second process is refused while the first runs; Ctrl-C ends the first in one line and
    the same command resumes it to the numbers of an uninterrupted run."""
    workdir, pause = tmp_path / "run", tmp_path / "pause"
    args = [f"--config={FAKE}", f"--workdir={workdir}"]
    pause.touch()
    first = _launch(*args, pause=pause)
    try:
        _wait_for(workdir / "log.txt", "step 1/4")  # first is held after its first checkpoint
        second = _run(*args)
        assert second.returncode == 2
        assert_one_line(second.stderr, f"is in use by another launch (pid {first.pid})")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err
    assert_nothing_finished(workdir)
    pause.unlink()
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    assert "resumed at step 1" in (workdir / "log.txt").read_text()
    runs.run_one(flags_free_fake_config(), tmp_path / "fresh")
    assert (workdir / "results.json").read_bytes() == (
        tmp_path / "fresh" / "results.json").read_bytes()


@pytest.mark.slow
def test_kill_9_mid_sweep_resumes_byte_identical(tmp_path):
    sweep, pause = tmp_path / "sweep", tmp_path / "pause"
    args = [f"--config={FAKE}", "--sweep", f"--workdir={sweep}"]
    pause.write_text("1 2")  # hold the second member after its second checkpoint
    proc = _launch(*args, pause=pause)
    try:
        _wait_for(sweep / "seed=1,scale=2.0" / "log.txt", "step 2/4")
    finally:
        proc.kill()  # SIGKILL: no cleanup at all
        proc.communicate(timeout=180)
    assert (sweep / "seed=0" / "results.json").exists()
    assert not (sweep / "seed=1,scale=2.0" / "results.json").exists()
    pause.unlink()
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    assert "1 ran, 1 skipped, 0 failed" in done.stderr
    assert "resumed at step 2" in (sweep / "seed=1,scale=2.0" / "log.txt").read_text()
    members = sweeps.expand(flags_free_fake_config(), [{"seed": 0}, {"seed": 1, "scale": 2.0}])
    sweeps.run_sweep(members, tmp_path / "clean")
    for m in members:
        assert (sweep / m.name / "results.json").read_bytes() == (
            tmp_path / "clean" / m.name / "results.json").read_bytes()
        assert not list((sweep / m.name).rglob("*.tmp"))


def test_config_build_by_keyword():
    """config_checks.build: nested dataclasses by keyword; unknown keys and missing fields
    raise one line naming the dotted path."""
    import dataclasses

    import ml_collections

    from bablate.runner import config_checks as cc

    @dataclasses.dataclass(frozen=True)
    class Inner:
        steps: int
        rate: float = 0.1

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner
        names: tuple[str, ...]
        seed: int = 0
        extra: int | None = None

    node = ml_collections.ConfigDict({"inner": {"steps": 3.0}, "names": ["a", "b"],
                                      "seed": 2, "study": "x"})
    built = cc.build(Outer, node, skip=("study",))
    assert built == Outer(Inner(3, 0.1), ("a", "b"), 2, None)
    assert isinstance(built.inner.steps, int)
    assert cc.build(Outer, node, skip=("study",), seed=7).seed == 7
    node.inner.stpes = 1
    with pytest.raises(TypeError, match=r"config\.inner\.stpes is not a field of Inner"):
        cc.build(Outer, node, skip=("study",))
    with pytest.raises(TypeError, match=r"config: .*missing.*'inner'"):
        cc.build(Outer, ml_collections.ConfigDict({"names": []}))
