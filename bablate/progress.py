"""Progress bars for long loops (training, sampling, enumeration, sweeps).

One place decides how progress is shown, so a study never prints by hand: bars go
to stderr with rate and ETA, and are silenced with ``BABLATE_PROGRESS=0`` (tests,
CI logs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    """Whether progress bars are shown (env ``BABLATE_PROGRESS``, default on)."""
    return os.environ.get("BABLATE_PROGRESS", "1") not in ("0", "false", "False", "")


def bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    """A tqdm bar with rate and ETA; disabled when progress is switched off."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), dynamic_ncols=True,
                mininterval=0.5, **kwargs)


def track(iterable: Iterable[T], total: int | None = None, desc: str = "",
          unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar (the total defaults to ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with bar(total=total, desc=desc, unit=unit) as b:
        for item in iterable:
            yield item
            b.update(1)
