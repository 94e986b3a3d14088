"""The README's library examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _library_blocks() -> list[str]:
    section = README.read_text().split("## Library API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_library_example_runs(capsys, tmp_path, monkeypatch):
    blocks = _library_blocks()
    namespace = {"__name__": "readme_example"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "distributedness" in out and "tasks per unit" in out
    gap = float(out.strip().splitlines()[-1].split()[-1])
    assert gap < 0.05  # MCMC and exact enumeration agree

    # The second block (diagnostics and figures) continues the first.
    pytest.importorskip("arviz", reason="the README's arviz example needs arviz "
                        "(pip install 'bablate[arviz]')")
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # it writes importance.png and amd_report/
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "(4, 2000, 8)" in out and "r_hat" in out and "ess_bulk" in out
    assert "'Dense_0:input': (4, 8)" in out and "'hidden': (4, 8)" in out
    assert namespace["post_relu"].num_units == 8
    assert (tmp_path / "importance.png").read_bytes()[:4] == b"\x89PNG"
    report = tmp_path / "amd_report" / "report.md"
    assert out.strip().splitlines()[-1] == "amd_report/report.md" and report.is_file()
    assert "figures/trace_0.png" in report.read_text()
