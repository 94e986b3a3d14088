"""The study template (examples/study_template/) runs end to end as an external package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bablate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "study_template" / "config.py"


@pytest.mark.slow
def test_the_template_runs_from_outside_the_repository(tmp_path):
    # As a study of one's own: run from another directory, its package importable through
    # PYTHONPATH (the folder above it), bablate installed.
    env = {**os.environ, "PYTHONPATH": str(REPO), "BABLATE_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "bablate", f"--config={CONFIG}:quick",
                           f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["method"] == "exact" and results["num_units"] == 8
    assert results["accuracy"] >= 0.95
    q = np.asarray(results["marginals"])
    assert q.shape == (8,) and np.all((q > 0) & (q < 1))
    # Units the task uses are kept more often than the prior (0.5); some are.
    assert q.max() > 0.6 and 0 < results["task_information"] < 8
    assert 0 <= results["distributedness"] <= 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## The AMD of the sign task" in report and "figures/marginals.png" in report
    assert (tmp_path / "run" / "figures" / "marginals.png").is_file()


def test_the_template_config_is_typed_and_checked():
    from examples.study_template import config  # the repository root is on sys.path (conftest)

    cfg = config.from_config(config.get_config("wide"))
    assert cfg.model.hidden == 24 and cfg.inference.method == "auto"
    bad = config.get_config("quick")
    bad.inference.method = "gibbs"
    with pytest.raises(ConfigError, match=r"inference\.method") as err:
        config.validate(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown variant 'huge'; choose from: quick, wide"):
        config.get_config("huge")
