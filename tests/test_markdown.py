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


def test_run_report_escapes_a_pipe_once(tmp_path):
    """A result and a config value holding '|' stay one cell each in report.md (escaped once:
    '\\\\|' would be an escaped backslash followed by a column separator)."""
    from bablate.runner.context import RunContext

    text = RunContext(tmp_path).render_report("t", {"task": "a|b"}, {"acc_|x|": "c|d"})
    rows = [line for line in text.splitlines() if "acc_" in line or "`task`" in line]
    assert len(rows) == 2
    for line in rows:
        assert len(_cells(line)) == 2 and "\\\\" not in line, line
