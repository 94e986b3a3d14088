"""Atomic file writes and the JSON form of numbers and arrays.

Every file a run or a saved posterior writes goes through :func:`atomic_write_bytes` (temp file
in the same directory, fsync, ``os.replace``, fsync of the directory), so a process killed at
any moment never leaves a half-written file behind. :func:`to_jsonable` turns numpy / jax
values into plain JSON types (non-finite floats become ``null``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    """Makes a rename in ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or the new one.

    The bytes go to a temporary file in the same directory (same filesystem, so the final
    ``os.replace`` is atomic), are flushed and fsynced, then renamed over ``path`` and the
    directory is fsynced. The file gets the mode ``open`` would give (0666 less the umask). If
    anything fails before the rename the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would ignore the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically writes UTF-8 text (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes ``to_jsonable(obj)`` as indented JSON."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- JSON conversion


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """Converts numbers, arrays and containers into plain JSON types.

    numpy / jax arrays become (nested) lists, numpy scalars become Python numbers, tuples
    become lists, dataclasses become dicts, mapping keys become strings. Non-finite floats
    (NaN, ±inf) become ``null``, because strict JSON has no such values.

    Args:
      obj: the value to convert.
      where: the name of ``obj`` used in error messages (e.g. ``"results"``).

    Returns:
      A value made only of dict, list, str, int, float, bool and None.

    Raises:
      TypeError: naming the path of the first value that has no JSON form.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), where)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, np.generic)):
                raise TypeError(f"{where}: key {k!r} must be a string or a number to store in JSON")
            out[str(k.item() if isinstance(k, np.generic) else k)] = to_jsonable(
                v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where)
    if hasattr(obj, "__array__"):  # numpy and jax arrays
        try:
            arr = np.asarray(obj)
        except Exception as e:  # e.g. typed PRNG key arrays
            raise TypeError(f"{where}: cannot convert {type(obj).__name__} "
                            f"to an array ({e})") from e
        if arr.dtype == object:
            raise TypeError(f"{where}: object arrays cannot be stored in JSON")
        return to_jsonable(arr.tolist(), where)
    raise TypeError(f"{where}: cannot store a {type(obj).__name__} in JSON; "
                    "convert it to numbers, strings, lists or dicts")
