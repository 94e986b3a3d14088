"""Progress output: tqdm on a terminal, plain periodic lines elsewhere, JAX's TPU probe hidden."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bablate import progress

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_lines_come_at_the_interval_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    p = progress.LineProgress(total=100, desc="mcmc t", unit="step", every=30, file=out,
                              clock=clock)
    for _ in range(10):  # 10 updates over 50 s: lines at 30 s only (and 60 s is not reached)
        clock.t += 5
        p.update(10)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("mcmc t: 60/100 step (60%), 00:30 elapsed, 2 step/s, ETA 00:20")
    assert lines[1].startswith("mcmc t: done 100/100 step (100%), 00:50 elapsed")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_short_inner_loop_writes_nothing():
    clock, out = FakeClock(), io.StringIO()
    with progress.LineProgress(total=5, desc="inner", nested=True, every=30, file=out,
                               clock=clock) as p:
        clock.t += 3
        p.update(5)
    assert out.getvalue() == ""
    with progress.LineProgress(total=5, desc="long inner", nested=True, every=30, file=out,
                               clock=clock) as p:
        clock.t += 31
        p.update(5)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["long inner"] * 2


def test_postfix_goes_into_the_line():
    clock, out = FakeClock(), io.StringIO()
    p = progress.LineProgress(total=4, desc="svi", every=0, file=out, clock=clock)
    p.set_postfix(loss=1.23456)
    clock.t += 1
    p.update(1)
    assert out.getvalue().rstrip().endswith("loss=1.23")


def test_bars_off_a_terminal_are_plain_and_nested_bars_are_quiet(monkeypatch, capsys):
    monkeypatch.setenv("BABLATE_PROGRESS", "1")
    monkeypatch.setenv("BABLATE_PROGRESS_INTERVAL", "3600")
    for _ in progress.track(range(3), desc="tasks", unit="task"):
        with progress.bar(total=7, desc="mcmc", unit="step") as inner:
            assert isinstance(inner.inner, progress.LineProgress) and inner.inner.nested
            inner.update(7)
    err = capsys.readouterr().err
    # 3 inner bars and one outer stage: one line, the stage's, and no cursor escapes.
    assert err.count("\n") == 1 and err.startswith("tasks: done 3/3 task (100%)")
    assert "\r" not in err and "\x1b" not in err
    assert progress._open_bars == []


def test_terminal_bars_nest_below_and_vanish(monkeypatch):
    monkeypatch.setenv("BABLATE_PROGRESS", "1")
    monkeypatch.setattr(progress, "_is_tty", lambda stream: True)
    with progress.bar(total=2, desc="outer") as outer, progress.bar(total=2, desc="in") as inner:
        assert outer.inner.leave and outer.inner.pos == 0
        assert not inner.inner.leave and abs(inner.inner.pos) == 1


def test_progress_off_is_silent(monkeypatch, capsys):
    monkeypatch.setenv("BABLATE_PROGRESS", "0")
    with progress.bar(total=3, desc="x") as b:
        assert b.disable
        b.update(3)
    assert capsys.readouterr().err == ""


def test_bad_interval_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("BABLATE_PROGRESS_INTERVAL", "often")
    with pytest.raises(ValueError, match="BABLATE_PROGRESS_INTERVAL='often' is not a number"):
        progress.interval()


def test_jax_tpu_probe_line_is_filtered_and_other_backend_errors_are_not(caplog):
    import bablate  # noqa: F401  (installs the filter)

    logger = logging.getLogger("jax._src.xla_bridge")
    with caplog.at_level(logging.INFO, logger="jax._src.xla_bridge"):
        logger.info("Unable to initialize backend 'tpu': INTERNAL: no TPU here")
        logger.info("Unable to initialize backend 'cuda': driver too old")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Unable to initialize backend 'cuda': driver too old"]


@pytest.mark.slow
def test_no_tpu_line_at_info_level_in_a_fresh_process():
    def stderr(imports: str) -> str:
        code = (f"import logging; logging.basicConfig(level=logging.INFO); import {imports}; "
                "jax.devices()")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True, cwd=REPO).stderr

    line = "Unable to initialize backend 'tpu'"
    if line not in stderr("jax"):
        pytest.skip("this JAX does not log a TPU probe line here (a TPU, or JAX_PLATFORMS set)")
    assert line not in stderr("bablate, jax")
