"""The README's library examples run as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bablate as bb

README = Path(__file__).resolve().parents[1] / "README.md"


def _library_blocks() -> list[str]:
    section = README.read_text().split("## Library API", 1)[1].split("\n## ", 1)[0]
    # A block inside a list item is indented with the item's text.
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", section, re.S)]


def test_readme_library_example_runs(capsys, tmp_path, monkeypatch):
    blocks = _library_blocks()
    namespace = {"__name__": "readme_example"}
    monkeypatch.chdir(tmp_path)  # it writes class2.npz, importance.png and amd_report/
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "distributedness" in out and "tasks per unit" in out
    gap = float(out.strip().splitlines()[-1].split()[-1])
    assert gap < 0.05  # MCMC and exact enumeration agree
    # One class against the rest, saved and read back equal.
    post2 = namespace["post2"]
    assert post2.task == "class 2 vs rest" and 0 < post2.marginals.min()
    assert f"{post2!r}" in out
    back = bb.load_posterior(tmp_path / "class2.npz")
    np.testing.assert_array_equal(back.log_probs, post2.log_probs)

    # The second block (diagnostics and figures) continues the first.
    pytest.importorskip("arviz", reason="the README's arviz example needs arviz "
                        "(pip install 'bablate[arviz]')")
    assert len(blocks) >= 2
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "(4, 2000, 8)" in out and "r_hat" in out and "ess_bulk" in out
    assert "'Dense_0:input': (4, 8)" in out and "'hidden': (4, 8)" in out
    assert namespace["post_relu"].num_units == 8
    assert (tmp_path / "importance.png").read_bytes()[:4] == b"\x89PNG"
    report = tmp_path / "amd_report" / "report.md"
    assert out.strip().splitlines()[-1] == "amd_report/report.md" and report.is_file()
    assert "figures/trace_0.png" in report.read_text()


def test_readme_checkpoint_example_reads_a_runs_checkpoint(capsys, tmp_path, monkeypatch):
    """The third block reads the toy study's trained models from its run directory; here the
    checkpoint is written as that study writes it (ctx.save_state("params", ...)) with the
    shapes of the quick variant's 20 models of 5 features in 2 dimensions."""
    from bablate.runner import context

    block = _library_blocks()[2]
    assert "read_checkpoint" in block
    monkeypatch.chdir(tmp_path)
    ctx = context.RunContext(workdir=tmp_path / "runs" / "toy_superposition" / "quick",
                          config_hash="f" * 64)
    ctx.save_state("params", {"params": {"W": np.zeros((20, 2, 5), np.float32),
                                         "b": np.zeros((20, 5), np.float32)},
                              "loss": np.zeros(20, np.float32)})
    namespace = {"__name__": "readme_example"}
    exec(compile(block, "README.md", "exec"), namespace)
    assert capsys.readouterr().out.strip() == "['loss', 'params'] (20, 2, 5)"
    assert namespace["config_hash"] == "f" * 64
