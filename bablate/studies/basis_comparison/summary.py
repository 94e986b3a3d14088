"""The compared means in one row per (network, basis), and the headline scalars of results.json.

The figures and report draw these rows; the headline scalars are results values, so they are
computed here, not in the plotting or report code.
"""

from __future__ import annotations

COLUMNS = (  # (key in a row, header, format)
    ("num_units", "units", "{:d}"),
    ("informative_tasks", "tasks ≥0.1 bit", "{:d}"),
    ("effective_units_mean", "effective units", "{:.2f}"),
    ("distributedness_mean", "distributedness", "{:.3f}"),
    ("total_correlation_mean", "TC (bits)", "{:.2f}"),
    ("polysemanticity_mean", "tasks per unit", "{:.2f}"),
    ("polysemanticity_weighted", "tasks per unit (info-weighted)", "{:.2f}"),
    ("unit_task_mi_mean", "I(T;M_i) (bits)", "{:.3f}"),
    ("top1_share", "info in top-1", "{:.2f}"),
    ("top2_share", "info in top-2", "{:.2f}"),
    ("top16_share", "info in top-16", "{:.2f}"),
    ("top1_p_correct", "P(c) top-1 kept", "{:.2f}"),
    ("p_correct_ablated_mean", "P(c) all ablated", "{:.2f}"),
    ("fvu", "dict. FVU", "{:.3g}"),
    ("l0", "dict. L0", "{:.2f}"),
)


def networks(results: dict) -> list[tuple[str, str, dict]]:
    """(key, label, record with "bases" and optional "dictionaries") per network read."""
    out = []
    for inst in results.get("toy", {}).get("instances", []):
        out.append((f"toy_d{inst['density']:.3g}",
                    f"{results['toy']['network']}, 1−S = {inst['density']:.3g}", inst))
    for key in ("rnn", "llm"):
        rec = results.get(key)
        if rec and "bases" in rec:
            out.append((key, rec["network"], rec))
    return out


def table_rows(results: dict) -> list[dict]:
    """One row per (network, basis) with the compared means (NaN where undefined)."""
    rows = []
    for key, label, rec in networks(results):
        for basis, m in rec["bases"].items():
            row = {"network_key": key, "network": label, "basis": basis}
            for col, _, _ in COLUMNS:
                row[col] = m.get(col, float("nan"))
            rep = rec.get("dictionaries", {}).get(basis)
            row["fvu"] = rep["fvu"] if rep else float("nan")
            row["l0"] = rep["l0"] if rep else float("nan")
            row["per_task"] = {k: m[k] for k in ("task_information", "effective_units",
                                                 "unit_information")}
            rows.append(row)
    return rows


def headline(results: dict) -> dict:
    """Scalar numbers for the results table: per network and basis, the key means."""
    out = {}
    for r in table_rows(results):
        tag = f"{r['network_key']}_{r['basis']}"
        for key in ("polysemanticity_mean", "distributedness_mean", "total_correlation_mean",
                    "effective_units_mean"):
            out[f"{tag}_{key.removesuffix('_mean')}"] = r[key]
        if r["network_key"] == "llm":  # large site: the weighted and top-16 views too
            out[f"{tag}_polysemanticity_weighted"] = r["polysemanticity_weighted"]
            out[f"{tag}_top16_share"] = r["top16_share"]
    for inst in results.get("toy", {}).get("instances", []):
        for name, v in inst["recovery_mean"].items():
            out[f"toy_d{inst['density']:.3g}_{name}_recovery"] = v
    return out
