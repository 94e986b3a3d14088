"""Run directories, atomic writes, resume and sweep expansion (in process, with the fake study)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bablate import errors
from bablate import io as bbio
from bablate.runner import context, rundir, runs, sweeps

# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    bbio.atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def broken_fsync(fd):  # the disk fails after part of the new bytes were written
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        bbio.atomic_write_json(path, {"a": 2, "big": list(range(10_000))})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_write_json_unserialisable_value_writes_nothing(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(TypeError, match=r"value\['bad'\]"):
        bbio.atomic_write_json(path, {"ok": 1, "bad": object()})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- JSON conversion


def test_to_jsonable_converts_arrays_scalars_and_non_finite():
    out = bbio.to_jsonable({
        "np": np.arange(4).reshape(2, 2), "jax": jnp.array([0.5, 1.5]), "f32": np.float32(0.25),
        "i64": np.int64(7), "bool": np.bool_(True), "tuple": (1, 2.0), "nan": float("nan"),
        "arr_nan": np.array([1.0, np.nan, np.inf]), 3: "int key"})
    assert out == {"np": [[0, 1], [2, 3]], "jax": [0.5, 1.5], "f32": 0.25, "i64": 7, "bool": True,
                   "tuple": [1, 2.0], "nan": None, "arr_nan": [1.0, None, None], "3": "int key"}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    with pytest.raises(TypeError, match=r"results\['nested'\]\[1\]"):
        bbio.to_jsonable({"nested": [1, {2, 3}]}, "results")


def test_config_diff_names_changed_added_and_removed_keys():
    old = {"seed": 0, "model": {"width": 3, "depth": 1}, "gone": 1}
    new = {"seed": 1, "model": {"width": 3, "depth": 2}, "extra": True}
    assert rundir.config_diff(old, new) == [
        "extra (only in the new config)", "gone (only in the old config)",
        "model.depth: 1 -> 2", "seed: 0 -> 1"]
    assert rundir.config_diff(old, old) == []


# ----------------------------------------------------------------------------- one run


def test_run_writes_the_run_directory(fake_config, workdir):
    assert runs.run_one(fake_config("quick"), workdir) == "ran"
    names = sorted(p.name for p in workdir.iterdir())
    assert names == [".lock", "config.json", "figures", "log.txt", "report.md", "results.json",
                     "run.json", "state"]
    assert sorted(p.name for p in (workdir / "state").iterdir()) == ["progress.msgpack"]
    config = json.loads((workdir / "config.json").read_text())
    assert config["study"] == "tests.fake_study" and config["model"] == {"width": 3, "name": "tiny"}
    results = json.loads((workdir / "results.json").read_text())
    # Independent recomputation of the fake study's numbers.
    expected = sum(np.random.default_rng([0, s]).normal(size=3) for s in range(4))
    np.testing.assert_allclose(results["sums"], expected, rtol=1e-12)
    assert results["undefined"] is None and results["steps"] == 4
    report = (workdir / "report.md").read_text()
    # Title, then the study's text and figure in call order, figure linked relatively.
    order = [report.index(s) for s in ("# tests.fake_study: quick", "## Accumulated sums",
                                       "![sums](figures/sums.png)",
                                       "*Figure 1: The three accumulated sums.*",
                                       "Closing remarks.", "<summary>Config</summary>")]
    assert order == sorted(order)
    assert (workdir / "figures" / "sums.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "step 4/4" in (workdir / "log.txt").read_text()


def test_finished_run_is_skipped_different_config_refused_overwrite_redoes(
        fake_config, workdir, capsys):
    runs.run_one(fake_config("quick"), workdir)
    first = (workdir / "results.json").read_text()
    assert runs.run_one(fake_config("quick"), workdir) == "skipped"
    assert "skipping" in capsys.readouterr().err

    other = fake_config("quick")
    other.seed = 5
    other.model.width = 4
    with pytest.raises(errors.RunError, match=r"model\.width: 3 -> 4; seed: 0 -> 5.*--overwrite"):
        runs.run_one(other, workdir)
    assert (workdir / "results.json").read_text() == first  # refusal touched nothing

    assert runs.run_one(other, workdir, overwrite=True) == "ran"
    assert json.loads((workdir / "config.json").read_text())["seed"] == 5
    assert (workdir / "results.json").read_text() != first
    assert "resumed" not in (workdir / "log.txt").read_text()  # old checkpoints were cleared


def test_crashed_run_resumes_from_its_checkpoint_and_matches_a_fresh_run(
        fake_config, tmp_path, monkeypatch):
    crashed, fresh = tmp_path / "crashed", tmp_path / "fresh"
    monkeypatch.setenv("FAKE_STUDY_FAIL_AT_STEP", "2")
    with pytest.raises(RuntimeError, match="planned failure at step 2"):
        runs.run_one(fake_config("quick"), crashed)
    assert (crashed / "config.json").exists() and not (crashed / "results.json").exists()
    config = rundir.config_to_dict(fake_config("quick"))
    assert rundir.run_status(config, crashed)[0] == "unfinished"
    assert "planned failure" in (crashed / "log.txt").read_text()

    monkeypatch.delenv("FAKE_STUDY_FAIL_AT_STEP")
    assert runs.run_one(fake_config("quick"), crashed) == "ran"
    assert "resumed at step 2" in (crashed / "log.txt").read_text()
    runs.run_one(fake_config("quick"), fresh)
    # Same config + seed => byte-identical results, whether resumed or not.
    assert (crashed / "results.json").read_bytes() == (fresh / "results.json").read_bytes()


def test_workdir_that_is_a_file_is_refused(fake_config, tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(errors.RunError, match="is a file"):
            runs.run_one(fake_config("quick"), bad)


def test_unknown_study_is_refused_without_creating_the_workdir(fake_config, workdir):
    config = fake_config("quick")
    config.study = "no_such_study"
    with pytest.raises(errors.RunError, match="bablate.studies.no_such_study"):
        runs.run_one(config, workdir)
    assert not workdir.exists()


def test_state_round_trip_and_bad_inputs(tmp_path):
    ctx = context.RunContext(workdir=tmp_path)
    assert ctx.load_state("params") is None
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "layers": [np.ones(2), (1, "a")], "step": 3}
    ctx.save_state("params", tree)
    back = ctx.load_state("params")
    assert isinstance(back["w"], np.ndarray)
    np.testing.assert_array_equal(back["w"], np.arange(6.0).reshape(2, 3))
    assert back["layers"][1] == (1, "a") and back["step"] == 3
    with pytest.raises(TypeError, match="key_data"):
        ctx.save_state("key", {"k": jax.random.key(0)})
    with pytest.raises(ValueError, match="file name"):
        ctx.save_state("../escape", tree)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["params.msgpack"]


def test_a_runs_checkpoint_is_read_with_read_checkpoint(fake_config, workdir):
    """bb.read_checkpoint reads what the study saved, stamped with the hash in run.json; a
    damaged file is one line naming it."""
    import bablate as bb
    from bablate import statefile

    runs.run_one(fake_config("quick"), workdir)
    path = workdir / "state" / "progress.msgpack"
    tree, config_hash = bb.read_checkpoint(path)
    results = json.loads((workdir / "results.json").read_text())
    assert tree["step"] == 4
    np.testing.assert_array_equal(tree["acc"], results["sums"])
    assert config_hash == json.loads((workdir / "run.json").read_text())["config_sha256"]
    bad = workdir / "bad.msgpack"
    bad.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(statefile.StateFormatError) as err:
        bb.read_checkpoint(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        bb.read_checkpoint(workdir / "none.msgpack")



def test_state_keeps_the_order_of_dict_keys(tmp_path):
    """A resumed run reads its checkpoint in the order a fresh run built it, so the results it
    writes are the same bytes (jax.tree.map would have sorted the keys)."""
    ctx = context.RunContext(workdir=tmp_path)
    tree = {"xavier": {"norms": jnp.ones(2), "count": 3}, "all_represented": {"z": 1, "a": 2}}
    ctx.save_state("control", tree)
    back = ctx.load_state("control")
    assert list(back) == ["xavier", "all_represented"]
    assert list(back["all_represented"]) == ["z", "a"]
    assert isinstance(back["xavier"]["norms"], np.ndarray)


# ----------------------------------------------------------------------------- sweeps


def test_member_names_are_predictable_and_file_safe():
    assert sweeps.member_name({"seed": 1, "density": 0.1}) == "seed=1,density=0.1"
    assert sweeps.member_name({"model.act": "relu/tanh x", "on": True}) == \
        "model.act=relu_tanh_x,on=true"
    assert sweeps.member_name({"sizes": (2, 3), "note": "a,b"}) == "sizes=2-3,note=a_b"
    assert sweeps.member_name({}) == "base"
    long_a = sweeps.member_name({"name": "a" * 200 + "x"})
    long_b = sweeps.member_name({"name": "a" * 200 + "y"})
    assert len(long_a) <= 120 and long_a != long_b


def test_expand_applies_overrides_to_copies_and_rejects_bad_sweeps(fake_config):
    base = fake_config("quick")
    members = sweeps.expand(base, [{"seed": 1, "model.width": 8}, {"scale": 3}])
    assert [m.name for m in members] == ["seed=1,model.width=8", "scale=3"]
    assert (members[0].config.seed, members[0].config.model.width) == (1, 8)
    assert members[1].config.scale == 3.0 and members[1].config.seed == 0
    assert (base.seed, base.model.width) == (0, 3)  # the base config is untouched

    for bad, match in [([{"sed": 1}], "unknown config key 'sed'"),
                       ([{"model.depth": 1}], "'model.depth' not found"),
                       ([{"seed.x": 1}], "'seed.x' not found"),
                       ([{"seed": "one"}], "does not accept"),
                       ([{"seed": 1}, {"seed": 1}], "both map to directory"),
                       ([], "non-empty list"), ({"seed": 1}, "non-empty list"),
                       ([3], "not a dict")]:
        with pytest.raises(errors.RunError, match=match):
            sweeps.expand(base, bad)


def test_sweep_resumes_only_unfinished_members(fake_config, tmp_path):
    base = fake_config("quick")
    members = sweeps.expand(base, [{"seed": s} for s in range(3)])
    out = sweeps.run_sweep(members, tmp_path)
    assert out == {"ran": ["seed=0", "seed=1", "seed=2"], "skipped": [], "failed": {}}
    before = {m.name: (tmp_path / m.name / "results.json").read_bytes() for m in members}
    assert before["seed=0"] != before["seed=1"]
    # What a kill leaves: config.json written, results.json not yet.
    (tmp_path / "seed=1" / "results.json").unlink()
    out = sweeps.run_sweep(members, tmp_path)
    assert out == {"ran": ["seed=1"], "skipped": ["seed=0", "seed=2"], "failed": {}}
    after = {m.name: (tmp_path / m.name / "results.json").read_bytes() for m in members}
    assert after == before
    index = (tmp_path / "sweep.md").read_text()
    assert "[done](seed=1/report.md)" in index
    assert json.loads((tmp_path / "sweep.json").read_text())["members"][2] == {
        "name": "seed=2", "overrides": {"seed": 2}}


def test_sweep_reports_a_failing_member_and_runs_the_rest(fake_config, tmp_path, monkeypatch):
    base = fake_config("quick")
    base.steps = 3
    members = sweeps.expand(base, [{"seed": 0}, {"seed": 1, "steps": 2}])
    monkeypatch.setenv("FAKE_STUDY_FAIL_AT_STEP", "2")  # only the 3-step member reaches step 2
    out = sweeps.run_sweep(members, tmp_path)
    assert out["ran"] == ["seed=1,steps=2"]
    assert out["failed"] == {"seed=0": "RuntimeError: planned failure at step 2"}
    assert "| `seed=0` | failed |" in (tmp_path / "sweep.md").read_text()


def test_study_gets_a_locked_copy_of_the_config(fake_config, workdir, monkeypatch):
    seen = {}

    def study(config, ctx):
        seen["locked"] = config.is_locked
        config.seed = 99
        return {"seed_seen": config.seed}

    monkeypatch.setattr(runs, "load_study", lambda name: study)
    config = fake_config("quick")
    runs.run_one(config, workdir)
    assert seen["locked"] and config.seed == 0
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0
    assert json.loads((workdir / "results.json").read_text()) == {"seed_seen": 99}


def test_load_or_compute_computes_once_then_reads_the_checkpoint(tmp_path):
    ctx = context.RunContext(workdir=tmp_path, config_hash="h" * 64)
    calls = []

    def compute():
        calls.append(1)
        return {"w": np.arange(3.0)}

    tree, reused = ctx.load_or_compute("w", compute, like={"w": np.ones(3)})
    assert not reused and calls == [1]
    again, reused = ctx.load_or_compute("w", compute, like={"w": np.ones(3)})
    assert reused and calls == [1]
    np.testing.assert_array_equal(again["w"], tree["w"])
