"""Checkpoint files that hold data only: loading one can never run code.

A state file is a short magic line followed by one msgpack document::

    {"format": 1, "config_hash": "<sha256 of the run's config>", "tree": <the pytree>}

The tree is made of dicts (string or integer keys), lists, tuples, ``None``, bools, ints,
floats, strings, bytes and numpy arrays / scalars of numeric, bool or string dtype. Tuples and
arrays travel as msgpack extension types whose payload is again plain data; decoding builds
arrays with ``np.frombuffer`` from a whitelisted dtype, so there is no path from the file's bytes
to an import or a call (unlike pickle, which can call any function it names).

:func:`read_checkpoint` reads a run's checkpoint (``<run dir>/state/<name>.msgpack``) outside
the run, e.g. a study's trained parameters in a notebook.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

MAGIC = b"bablate-state\n"
FORMAT = 1
_EXT_ARRAY, _EXT_TUPLE, _EXT_SCALAR = 1, 2, 3
_NUMPY_KINDS = frozenset("biufcUS")  # bool, ints, floats, complex, strings: no objects or voids


class StateFormatError(ValueError):
    """A state file is not a valid bablate checkpoint (truncated, foreign or tampered with)."""


def _ml_dtypes() -> dict[str, np.dtype]:
    """Extra array dtypes JAX uses (bfloat16, float8...), by name."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with jax
        return {}
    names = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3b11fnuz",
             "float8_e4m3fnuz", "float8_e5m2fnuz", "int4", "uint4")
    return {n: np.dtype(getattr(ml_dtypes, n)) for n in names if hasattr(ml_dtypes, n)}


def _dtype_name(dtype: np.dtype, where: str) -> str:
    for name, extra in _ml_dtypes().items():
        if dtype == extra:
            return name
    if dtype.kind not in _NUMPY_KINDS:
        raise TypeError(f"{where}: arrays of dtype {dtype} cannot be saved as state; use numbers, "
                        "bools or strings")
    return dtype.newbyteorder("<").str if dtype.byteorder not in "|" else dtype.str


def _dtype_from_name(name: Any) -> np.dtype:
    if not isinstance(name, str):
        raise StateFormatError(f"array dtype {name!r} is not a string")
    extra = _ml_dtypes()
    if name in extra:
        return extra[name]
    try:
        dtype = np.dtype(name)
    except TypeError as e:
        raise StateFormatError(f"unknown array dtype {name!r}") from e
    if dtype.kind not in _NUMPY_KINDS or dtype.hasobject:
        raise StateFormatError(f"array dtype {name!r} is not allowed in a state file")
    return dtype


def _pack_array(arr: np.ndarray, where: str) -> bytes:
    name = _dtype_name(arr.dtype, where)
    little = np.ascontiguousarray(arr, dtype=_dtype_from_name(name))
    return msgpack.packb([name, list(arr.shape), little.tobytes()], use_bin_type=True)


def _encode(obj: Any, where: str) -> Any:
    """``obj`` as msgpack-native values and extension types (see the module docstring)."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float, and stays np
        return msgpack.ExtType(_EXT_SCALAR, _pack_array(np.asarray(obj), where))
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        if isinstance(obj, int) and not isinstance(obj, bool) and not -2**63 <= obj < 2**64:
            raise TypeError(f"{where}: integer {obj} is too large to save as state")
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where}: key {k!r} must be a string or an int to save as state")
            out[k] = _encode(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return msgpack.ExtType(_EXT_TUPLE, msgpack.packb(items, use_bin_type=True))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _encode(dataclasses.asdict(obj), where)
    if hasattr(obj, "__array__"):  # numpy and jax arrays
        arr = np.asarray(obj)
        return msgpack.ExtType(_EXT_ARRAY, _pack_array(arr, where))
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be saved as state; use arrays, "
                    "numbers, strings, lists, tuples or dicts")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code not in (_EXT_ARRAY, _EXT_SCALAR):
        raise StateFormatError(f"unknown extension type {code}")
    parts = _unpack(data)
    if (not isinstance(parts, list) or len(parts) != 3 or not isinstance(parts[1], list)
            or not isinstance(parts[2], bytes)):
        raise StateFormatError("malformed array record")
    name, shape, raw = parts
    dtype = _dtype_from_name(name)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise StateFormatError(f"malformed array shape {shape!r}")
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise StateFormatError(f"array of shape {tuple(shape)} and dtype {name} has "
                               f"{len(raw)} bytes")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()  # copy: writable, owns its data
    return arr[()] if code == _EXT_SCALAR else arr


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                           use_list=True)


def dumps(tree: Any, config_hash: str | None, where: str = "state") -> bytes:
    """The bytes of a state file holding ``tree``, stamped with ``config_hash``.

    Raises:
      TypeError: naming the path of the first value that cannot be stored.
    """
    doc = {"format": FORMAT, "config_hash": config_hash, "tree": _encode(tree, where)}
    return MAGIC + msgpack.packb(doc, use_bin_type=True)


def loads(data: bytes) -> tuple[Any, str | None]:
    """``(tree, config_hash)`` of a state file's bytes.

    Raises:
      StateFormatError: the bytes are not a complete state file of this format.
    """
    if not data.startswith(MAGIC):
        raise StateFormatError("it does not start with the bablate state header")
    try:
        doc = _unpack(data[len(MAGIC):])
    except StateFormatError:
        raise
    except Exception as e:  # msgpack's errors for truncated or garbled bytes vary by version
        raise StateFormatError(f"it is not valid msgpack ({type(e).__name__})") from e
    if (not isinstance(doc, dict) or doc.get("format") != FORMAT or "tree" not in doc
            or not isinstance(doc.get("config_hash"), (str, type(None)))):
        raise StateFormatError(f"unexpected contents (format {FORMAT} expected)")
    return doc["tree"], doc["config_hash"]


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, str | None]:
    """A run's checkpoint (``<run dir>/state/<name>.msgpack``, written by ``ctx.save_state``).

    Reading it cannot run code (see the module docstring).

    Returns:
      ``(tree, config_hash)``: the saved pytree (dicts, lists, tuples, numbers, strings and
      numpy arrays) and the SHA-256 of the config of the run that saved it (the run's
      ``run.json`` holds the same hash as ``config_sha256``).

    Raises:
      StateFormatError: the file is not a complete bablate checkpoint; one line naming it.
      OSError: the file cannot be read (e.g. it does not exist).
    """
    path = Path(path)
    try:
        return loads(path.read_bytes())
    except StateFormatError as e:
        raise StateFormatError(f"{path} is not a readable bablate checkpoint: {e}") from None



def _is_array(x: Any) -> bool:
    """Arrays and array specs (numpy, jax, ``jax.ShapeDtypeStruct``): a shape and a dtype."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, type)


def _where(path: str) -> str:
    return path or "the top level"


def _child(path: str, key: Any) -> str:
    """The path of an item: ``params['W']``, ``history[0]`` (the top level's keys bare)."""
    return f"{path}[{key!r}]" if path else (key if isinstance(key, str) else f"item {key!r}")


def mismatch(tree: Any, like: Any, path: str = "") -> str | None:
    """The first way a loaded ``tree`` differs from ``like``, as a phrase, or None.

    ``like`` describes what a checkpoint should hold, as the target of a restore does in flax:
    dicts must have the same keys and lists and tuples the same length; an array (or a
    ``jax.ShapeDtypeStruct``) wants an array of that shape and kind of dtype (bool, int, float,
    complex or string), with finite values if floating; a type (``int``, ``dict``...) wants any
    value of that type (e.g. a history of variable length); any other value wants an equal one.
    A floating array of ``like`` that holds a nonzero value, such as a network's initial weights,
    must not come back all zeros: training from a nonzero start never lands on exactly zero
    everywhere, while a zero-filled file does.
    """
    if isinstance(like, type):
        return None if isinstance(tree, like) else (
            f"{_where(path)} is a {type(tree).__name__}, not a {like.__name__}")
    if isinstance(like, Mapping):
        if not isinstance(tree, Mapping):
            return f"{_where(path)} is a {type(tree).__name__}, not a dict"
        missing = [k for k in like if k not in tree]
        extra = [k for k in tree if k not in like]
        if missing or extra:
            return (f"{_where(path)} has keys {sorted(map(str, tree))}, expected "
                    f"{sorted(map(str, like))}")
        return next((m for k in like if (m := mismatch(tree[k], like[k], _child(path, k)))),
                    None)
    if isinstance(like, (list, tuple)):
        if type(tree) is not type(like) or len(tree) != len(like):
            got = f"a {type(tree).__name__}" + (f" of {len(tree)}" if isinstance(
                tree, (list, tuple)) else "")
            return f"{_where(path)} is {got}, expected a {type(like).__name__} of {len(like)}"
        return next((m for i, (t, lk) in enumerate(zip(tree, like, strict=True))
                     if (m := mismatch(t, lk, _child(path, i)))), None)
    if _is_array(like):
        return _array_mismatch(tree, like, _where(path))
    if type(tree) is not type(like) or tree != like:
        return f"{_where(path)} is {tree!r:.40}, expected {like!r:.40}"
    return None


def _array_mismatch(tree: Any, like: Any, where: str) -> str | None:
    if not isinstance(tree, (np.ndarray, np.generic)):
        return f"{where} is a {type(tree).__name__}, not an array"
    want = np.dtype(like.dtype)
    if tuple(tree.shape) != tuple(like.shape):
        return f"{where} has shape {tuple(tree.shape)}, expected {tuple(like.shape)}"
    if _kind(tree.dtype) != _kind(want):
        return f"{where} has dtype {tree.dtype}, expected {want}"
    if _kind(want) in "fc":
        values = np.asarray(tree, np.complex128 if want.kind == "c" else np.float64)
        bad = int(np.sum(~np.isfinite(values)))
        if bad:
            return f"{where} holds {bad} NaN/inf values"
        if values.size and not values.any() and hasattr(like, "__array__") and np.any(like):
            return f"{where} is all zeros"
    return None


def _kind(dtype: np.dtype) -> str:
    """numpy's dtype kind, with JAX's extra floats (bfloat16, float8: kind 'V') as 'f'."""
    extra = {d: name for name, d in _ml_dtypes().items()}
    return "f" if extra.get(dtype, "").startswith(("bfloat", "float")) else dtype.kind
