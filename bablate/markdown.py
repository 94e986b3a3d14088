"""Markdown table rows for the reports runs, sweeps and studies write.

A cell's text goes through :func:`cell`, which escapes ``|`` (a task named ``|x|`` would
otherwise split its cell and shift every later column) and folds newlines; :func:`row` joins
escaped cells into one table row.
"""

from __future__ import annotations

from collections.abc import Iterable


def cell(text: object) -> str:
    """``text`` as one markdown table cell: ``|`` escaped, newlines folded into spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def row(cells: Iterable[object]) -> str:
    """One markdown table row ``| a | b | ... |`` of the escaped ``cells``."""
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def header(names: Iterable[object]) -> list[str]:
    """The header row of ``names`` and its ``|---|`` separator row."""
    names = list(names)
    return [row(names), "|" + "---|" * len(names)]
