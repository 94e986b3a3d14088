"""Progress for long loops (training, sampling, enumeration, sweeps), readable in a terminal and
in a log file.

One place decides how progress is shown, so a study never prints by hand:

* on a terminal (stderr is a tty): tqdm bars with rate and ETA. A bar opened while another is
  open (an MCMC run inside a loop over tasks) is drawn below it and removed when it finishes,
  so one bar per stage stays on screen;
* elsewhere (a log file, CI): no cursor escapes, only plain lines. The outermost loop writes
  a line every ``BABLATE_PROGRESS_INTERVAL`` seconds (default 30) and one when it ends; an
  inner loop writes only if it runs longer than that interval;
* ``BABLATE_PROGRESS=0`` silences all of it (tests); ``BABLATE_PROGRESS=lines`` writes plain
  lines even on a terminal. Sweep members (their ``console.txt``) and SLURM jobs (their logs)
  run with ``lines`` (:func:`child_setting`), so a long job shows a line with an ETA at every
  interval instead of bars or silence.

:func:`quiet_jax_backend_probe` hides JAX's "Unable to initialize backend 'tpu'" line, which
every run on a machine without a TPU prints when logging is at INFO (as under absl).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

DEFAULT_INTERVAL = 30.0
# Bars open right now (a bar opened while another is open is nested).
_open_bars: list = []


def enabled() -> bool:
    """Whether progress is shown (env ``BABLATE_PROGRESS``, default on)."""
    return os.environ.get("BABLATE_PROGRESS", "1") not in ("0", "false", "False", "")


def lines_only() -> bool:
    """Whether progress is plain lines wherever it goes (``BABLATE_PROGRESS=lines``)."""
    return os.environ.get("BABLATE_PROGRESS", "") == "lines"


def child_setting() -> str:
    """``BABLATE_PROGRESS`` for a process whose output goes to a file (a sweep member, a SLURM
    job): plain lines, or "0" when this process shows no progress."""
    return "lines" if enabled() else "0"


def interval() -> float:
    """Seconds between progress lines in non-terminal output (``BABLATE_PROGRESS_INTERVAL``)."""
    raw = os.environ.get("BABLATE_PROGRESS_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"BABLATE_PROGRESS_INTERVAL={raw!r} is not a number of seconds; "
                         "set it to e.g. 30 or unset it.") from None
    return max(value, 0.0)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def on_terminal() -> bool:
    """Whether progress goes to a terminal (stderr is a tty), where bars may redraw."""
    return _is_tty(sys.stderr)


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return (f"{h}:" if h else "") + f"{rest // 60:02d}:{rest % 60:02d}"


class LineProgress:
    """A tqdm-like progress counter that writes plain, periodic lines (for logs).

    Supports what the library's loops use: ``update``, ``set_postfix``, ``close``, ``n``,
    ``total``, ``disable`` and use as a context manager.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, nested: bool = False, every: float | None = None,
                 file=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.initial = initial
        self.nested = nested
        self.every = interval() if every is None else every
        self.file = file
        self.disable = False
        self._clock = clock
        self._start = self._last = clock()
        self._postfix = ""
        self._lines = 0
        self._closed = False

    def _write(self, line: str) -> None:
        print(line, file=self.file or sys.stderr, flush=True)
        self._lines += 1

    def _status(self) -> str:
        elapsed = self._clock() - self._start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else float("nan")
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        out = f"{self.desc}: {count} {self.unit}{pct}, {_fmt_time(elapsed)} elapsed"
        if done > 0 and elapsed > 0:
            out += f", {rate:.3g} {self.unit}/s"
            if self.total and self.n < self.total:
                out += f", ETA {_fmt_time((self.total - self.n) / rate)}"
        return out + (f", {self._postfix}" if self._postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self._write(self._status())

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in items.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The outermost loop always says it ended; an inner one only if it said anything.
        if not self.nested or self._lines:
            self._write(self._status().replace(f"{self.desc}: ", f"{self.desc}: done ", 1))

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Tracked:
    """Registers a bar as open for its lifetime, so bars opened inside it know they nest."""

    def __init__(self, inner):
        self.inner = inner
        _open_bars.append(self)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def close(self) -> None:
        self.inner.close()
        if self in _open_bars:
            _open_bars.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs):
    """A progress counter: a tqdm bar on a terminal, periodic plain lines elsewhere, nothing
    when progress is switched off. Use it as a context manager; call ``update(n)``."""
    if not enabled():
        return tqdm(total=total, desc=desc, unit=unit, disable=True, **kwargs)
    depth = len(_open_bars)
    if on_terminal() and not lines_only():
        inner = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5,
                     leave=depth == 0, position=depth, **kwargs)
    else:
        inner = LineProgress(total=total, desc=desc, unit=unit, nested=depth > 0,
                             initial=kwargs.get("initial", 0))
    return _Tracked(inner)


def track(iterable: Iterable[T], total: int | None = None, desc: str = "",
          unit: str = "it") -> Iterator[T]:
    """Iterate with progress (the total defaults to ``len(iterable)`` when it has one)."""
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    with bar(total=total, desc=desc, unit=unit) as b:
        for item in iterable:
            yield item
            b.update(1)


class _DropTpuProbe(logging.Filter):
    """Drops JAX's INFO record that no TPU backend could be started (expected off-TPU)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to initialize backend 'tpu'")


_TPU_FILTER = _DropTpuProbe()


def quiet_jax_backend_probe() -> None:
    """Hides JAX's "Unable to initialize backend 'tpu'" log line (idempotent).

    JAX probes every platform it knows at start-up and logs, at INFO, each one it could not
    start; without a TPU that line is noise. Only that record is filtered: a GPU backend that
    fails to start is still reported, and nothing about how JAX chooses devices changes.
    """
    logger = logging.getLogger("jax._src.xla_bridge")
    if _TPU_FILTER not in logger.filters:
        logger.addFilter(_TPU_FILTER)
