"""bablate.markdown: table cells escape '|' so a row keeps its number of cells."""

import re

from bablate import markdown as md


def _cells(line: str) -> list[str]:
    """The cells a markdown renderer sees: split on '|' not preceded by a backslash."""
    return re.split(r"(?<!\\)\|", line)[1:-1]


def test_a_cell_holding_pipes_stays_one_cell():
    line = md.row(["|x|", "a|b", 3, "two\nlines"])
    assert len(_cells(line)) == 4
    assert [c.strip() for c in _cells(line)] == ["\\|x\\|", "a\\|b", "3", "two lines"]


def test_header_and_separator_have_the_same_number_of_cells():
    head, sep = md.header(["task", "|x| (bits)"])
    assert len(_cells(head)) == len(_cells(sep)) == 2
    assert sep == "|---|---|"
