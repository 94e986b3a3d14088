"""sweep.md and sweep_results.json aggregate the members' numbers over seeds."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from bablate import errors
from bablate.runner import runs, sweeps


def test_sweep_aggregates_numeric_results_over_seeds(fake_config, tmp_path):
    base = fake_config("quick")
    sweep = [{"seed": s, "scale": c} for c in (0.5, 2.0) for s in (0, 1, 2)]
    members = sweeps.expand(base, sweep)
    sweeps.run_sweep(members, tmp_path)
    results = {m.name: json.loads((tmp_path / m.name / "results.json").read_text())
               for m in members}
    data = json.loads((tmp_path / "sweep_results.json").read_text())
    groups = data["groups"]
    assert [g["overrides"] for g in groups] == [{"scale": 0.5}, {"scale": 2.0}]
    for g, scale in zip(groups, (0.5, 2.0), strict=True):
        names = [f"seed={s},scale={scale}" for s in (0, 1, 2)]
        assert g["members"] == names and g["seeds"] == [{"seed": s} for s in (0, 1, 2)]
        totals = np.array([results[n]["total"] for n in names])
        r = g["results"]["total"]
        assert r["values"] == totals.tolist() and r["n"] == 3
        assert np.isclose(r["mean"], totals.mean()) and np.isclose(r["sd"], totals.std(ddof=1))
        assert g["results"]["steps"] == {"mean": 4.0, "sd": 0.0, "n": 3, "values": [4.0] * 3}
        # Lists ("sums") and nulls ("undefined") have no mean and are left out.
        assert set(g["results"]) == {"total", "steps"}
    text = (tmp_path / "sweep.md").read_text()
    assert "### scale=0.5 (3 run(s): seed=0; seed=1; seed=2)" in text
    r = groups[1]["results"]["total"]
    row = (f"| `total` | {r['mean']:.4g} ± {r['sd']:.4g} | "
           + ", ".join(f"{v:.4g}" for v in r["values"]) + " |")
    assert row in text


def test_sweep_md_shows_the_swept_values_and_results_not_the_config(fake_config, tmp_path):
    """The config the study echoes among its results ("config": {...}) is no result: no
    "config.seed 1 ± 1" row; a number that is the same in every run is one line, not a row
    of "± 0"; the config values every run shares are one line, naming the swept keys."""
    members = sweeps.expand(fake_config("quick"), [{"seed": s, "scale": c}
                                                   for c in (0.5, 2.0) for s in (0, 1, 2)])
    sweeps.run_sweep(members, tmp_path)
    echo = json.loads((tmp_path / members[0].name / "results.json").read_text())["config"]
    assert echo["seed"] == 0  # the study does echo its config
    text = (tmp_path / "sweep.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    results_rows = [ln for ln in rows if not ln.startswith(("| `seed=", "| `base"))]
    assert [r.split("|")[1].strip() for r in results_rows] == ["`total`", "`total`"]
    assert "config." not in text and "± 0 |" not in text
    assert text.count("The same in every run of this group: `steps` = 4.") == 2
    (shared,) = [ln for ln in text.splitlines() if ln.startswith("Swept:")]
    assert shared.startswith("Swept: `seed`, `scale`. The same in every run: ")
    assert "`steps=4`" in shared and "`model.name=tiny`" in shared and "seed=" not in shared
    data = json.loads((tmp_path / "sweep_results.json").read_text())
    assert not any(k.startswith("config.") for g in data["groups"] for k in g["results"])


def test_unfinished_members_are_left_out_of_the_aggregate(fake_config, tmp_path):
    members = sweeps.expand(fake_config("quick"), [{"seed": 0}, {"seed": 1}])
    sweeps.run_sweep(members, tmp_path)
    (tmp_path / "seed=1" / "results.json").unlink()
    groups = sweeps.aggregate(members, tmp_path)
    assert groups[0]["members"] == ["seed=0"]
    total = groups[0]["results"]["total"]
    assert total["n"] == 1 and total["sd"] is None


def test_numeric_results_flatten_nested_sections():
    got = sweeps.numeric_results({"a": 1, "b": {"c": 2.5, "d": True, "e": "x"}, "f": [1, 2],
                                  "g": None})
    assert got == {"a": 1.0, "b.c": 2.5}


def test_a_sweep_and_a_single_run_never_share_a_directory(fake_config, tmp_path):
    config = fake_config("quick")
    runs.run_one(config, tmp_path / "single")
    members = sweeps.expand(config, [{"seed": 0}, {"seed": 1}])
    with pytest.raises(errors.RunError, match="holds a single run .config.json.; a sweep needs "
                       "its own directory"):
        sweeps.run_sweep(members, tmp_path / "single")
    assert not (tmp_path / "single" / "seed=0").exists()
    sweeps.run_sweep(members, tmp_path / "sweep")
    with pytest.raises(errors.RunError, match="holds a sweep .sweep.json.; a single run needs"):
        runs.run_one(config, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "config.json").exists()


def test_launch_puts_a_sweep_in_its_own_default_directory(launch, tmp_path):
    from conftest import FAKE_CONFIG

    assert launch(f"--config={FAKE_CONFIG}", cwd=tmp_path).returncode == 0
    proc = launch(f"--config={FAKE_CONFIG}", "--sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = tmp_path / "runs" / "fake_study"
    assert (study / "quick" / "results.json").is_file()
    assert not (study / "quick" / "sweep.json").exists()
    assert (study / "quick-sweep" / "sweep.json").is_file()
    assert (study / "quick-sweep" / "seed=0" / "results.json").is_file()


def test_core_slots_split_the_cores_evenly_and_disjointly():
    assert sweeps.core_slots(2, range(8)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sweeps.core_slots(3, range(8)) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert sweeps.core_slots(3, [0, 1]) == [[0], [1], [0]]  # more jobs than cores
    assert sweeps.core_slots(1, [5, 7]) == [[5, 7]]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity masks and at least 2 cores")
def test_parallel_members_each_get_their_own_cores(fake_config, tmp_path):
    members = sweeps.expand(fake_config("quick"), [{"seed": 0}, {"seed": 1}])
    probe = ("import os, pathlib, sys, time; time.sleep(0.5); pathlib.Path(sys.argv[1])"
             ".write_text(','.join(map(str, sorted(os.sched_getaffinity(0)))))")

    def command_for(member, mdir):
        return [sys.executable, "-c", probe, str(mdir / "cores.txt")]

    sweeps.run_sweep(members, tmp_path, jobs=2, command_for=command_for)
    got = [set(map(int, (tmp_path / m.name / "cores.txt").read_text().split(",")))
           for m in members]
    cores = sorted(os.sched_getaffinity(0))
    assert got[0].isdisjoint(got[1])
    assert got[0] | got[1] == set(cores)
    assert {len(g) for g in got} <= {len(cores) // 2, len(cores) - len(cores) // 2}


def test_a_result_key_holding_a_pipe_keeps_its_row_three_cells():
    import re

    groups = [{"overrides": {"task": "|x|"}, "seeds": [{"seed": 0}], "members": ["m0"],
               "results": {"acc_|x|": {"mean": 1.0, "sd": None, "n": 1, "values": [1.0]}}}]
    row = next(line for line in sweeps._aggregate_markdown(groups) if "acc_" in line)
    assert len(re.split(r"(?<!\\)\|", row)[1:-1]) == 3, row


@pytest.mark.slow
def test_parallel_members_write_progress_lines_with_an_eta(launch, tmp_path):
    """A member of a --jobs sweep (or a SLURM job) writes to its console.txt: progress goes
    there as plain lines with an ETA, not bars and not nothing."""
    from conftest import FAKE_CONFIG

    proc = launch(f"--config={FAKE_CONFIG}", "--sweep", "--jobs=2", f"--workdir={tmp_path}",
                  env={"BABLATE_PROGRESS": "1", "BABLATE_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr
    for member in ("seed=0", "seed=1,scale=2.0"):
        console = (tmp_path / member / "console.txt").read_text()
        steps = [ln for ln in console.splitlines() if ln.startswith("fake steps: ")]
        assert any("ETA" in ln for ln in steps) and "done 4/4 step" in steps[-1], console
        assert "\r" not in console and "\x1b" not in console


def test_progress_as_lines_and_what_children_get(monkeypatch, capsys):
    from bablate import progress

    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setenv("BABLATE_PROGRESS", "lines")
    with progress.bar(total=2, desc="x") as b:  # a terminal, but lines were asked for
        assert isinstance(b.inner, progress.LineProgress)
        b.update(2)
    assert capsys.readouterr().err.startswith("x: done 2/2")
    assert progress.child_setting() == "lines"
    monkeypatch.setenv("BABLATE_PROGRESS", "1")
    assert progress.child_setting() == "lines"
    monkeypatch.setenv("BABLATE_PROGRESS", "0")
    assert progress.child_setting() == "0"
