"""bablate.io: atomic writes and JSON conversion, and who depends on it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bablate import io as bbio
from bablate.runner import runs


def test_atomic_write_json_round_trips_numpy_values(tmp_path):
    path = tmp_path / "sub" / "r.json"  # the directory is made on the way
    bbio.atomic_write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": (1, np.nan)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": [1, None]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left


def test_atomic_write_text_and_bytes_replace_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    bbio.atomic_write_text(path, "old")
    bbio.atomic_write_bytes(path, "né".encode())
    assert path.read_text(encoding="utf-8") == "né"


def test_the_runner_does_not_re_export_io():
    # One implementation, reached by one name: bablate.io's.
    assert not any(hasattr(runs, n) for n in ("atomic_write_bytes", "atomic_write_json"))


def test_to_jsonable_names_the_bad_value():
    with pytest.raises(TypeError, match=r"results\['x'\]\[1\]"):
        bbio.to_jsonable({"x": [1, object()]}, "results")


def test_the_library_does_not_import_the_runner():
    code = ("import sys, bablate, bablate.inference.posterior, bablate.testbeds.toy; "
            "print(any(m.startswith('bablate.runner') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
