"""sweep.md and sweep_results.json aggregate the members' numbers over seeds."""

from __future__ import annotations

import json

import numpy as np

from bablate import sweeps


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
