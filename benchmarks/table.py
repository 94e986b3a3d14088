"""The headline table of benchmarks/README.md from ``masked_eval.py``'s JSON lines: one row per
case that the gate found quiet (``gate.quiet``), the loaded ones listed below it, never quoted.

    python benchmarks/masked_eval.py --cases toy_large,mlp512,rnn12,rnn128 > masked_eval.jsonl
    python benchmarks/table.py masked_eval.jsonl          # Markdown on stdout

Given several files (or a file with a case twice), a case's last quiet line is the one shown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BASELINES = {"hook": "hook loop", "repeat": "batch repeat", "cached": "cached repeat"}


def load(paths: list[str]) -> list[dict]:
    """The ``masked_eval`` case records of the files, in order."""
    records = []
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("bench") == "masked_eval" and "gate" in rec:
                        records.append(rec)
    return records


def _threads(entry_name: str) -> str:
    return entry_name.rsplit("_", 1)[-1]


def _cell(rec: dict, baseline: str) -> str:
    best = rec["best_threads"].get(baseline)
    if best is None:
        return "–"
    if "same_as" in rec["results"][best["wall"]]:  # an in-place site: nothing to cache
        return "= batch repeat"
    wall = rec["ratio"][f"bablate_vs_torch_{baseline}_best"]
    cpu = rec["ratio"][f"bablate_vs_torch_{baseline}_best_cpu"]
    return (f"**{wall:.2f}** ({_threads(best['wall'])}) / {cpu:.2f} ({_threads(best['cpu'])})")


def _peak_cell(rec: dict) -> str:
    res = rec["results"]
    parts = [f"{100 * res['bablate']['frac_of_matmul_peak']:.0f}"]
    for baseline in BASELINES:
        best = rec["best_threads"].get(baseline)
        parts.append(f"{100 * res[best['wall']]['frac_of_matmul_peak']:.0f}" if best else "–")
    return " / ".join(parts)


def render(records: list[dict]) -> str:
    """Markdown: the quiet cases' table, then the cases left out as loaded, then notes."""
    quiet, loaded = {}, {}
    for rec in records:
        (quiet if rec["gate"]["quiet"] else loaded)[rec["case"]] = rec
    loaded = {k: v for k, v in loaded.items() if k not in quiet}
    head = ["case", "d / N / M", "bablate, mask-examples/s"]
    head += [f"÷ {label}, wall / CPU" for label in BASELINES.values()]
    head += ["% of peak: bablate / hook / repeat / cached", "CPU idle, peak JAX / torch GFLOP/s",
             "command"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rec in quiet.items():
        s, peaks = rec["sizes"], rec["peaks"]["used"]
        peak = " / ".join(f"{peaks[k] / 1e9:.0f}" for k in ("jax", "torch") if k in peaks)
        row = [name, f"{s['units']} / {s['examples']} / {s['masks']}",
               f"{rec['throughput']:.3g}"]
        row += [_cell(rec, b) for b in BASELINES]
        row += [_peak_cell(rec), f"{100 * rec['gate']['cpu_idle']:.0f}%, {peak}",
                f"`{rec['command']}`"]
        lines.append("| " + " | ".join(row) + " |")
    if not quiet:
        lines.append("| (no case was measured on a quiet machine) |" + " |" * (len(head) - 1))
    out = "\n".join(lines) + "\n"
    if loaded:
        out += "\nLeft out as loaded (never quoted): " + "; ".join(
            f"{k} ({', '.join(v['gate']['reasons'])})" for k, v in loaded.items()) + ".\n"
    notes = {rec["note"] for rec in quiet.values() if rec.get("note")}
    for note in sorted(notes):
        out += f"\nRNN rows: {note}.\n"
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="masked_eval.py JSON-line files")
    args = p.parse_args(argv)
    missing = [path for path in args.paths if not os.path.isfile(path)]
    if missing:
        p.error(f"no such file: {', '.join(missing)}; give masked_eval.py's JSON-line output.")
    records = load(args.paths)
    if not records:
        p.error(f"no masked_eval case lines with a gate in {args.paths}; run "
                "benchmarks/masked_eval.py (this version) first.")
    sys.stdout.write(render(records))


if __name__ == "__main__":
    main()
