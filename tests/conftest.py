"""Shared test setup: quiet progress bars, the repository root importable, run helpers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_CONFIG = REPO / "tests" / "fake_study" / "config.py"

# Set before any test imports bablate: bars off in tests and in every subprocess they start.
os.environ["BABLATE_PROGRESS"] = "0"
os.environ.setdefault("MPLBACKEND", "Agg")
if str(REPO) not in sys.path:  # tests.fake_study must import however pytest was started
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def reflection_net():
    """(RNNConfig, variables, held-out windows): a 12-unit RNN briefly trained on the
    reflection family (tests/test_rnn.py and the RNN testbed's tests)."""
    import jax

    from bablate.models import rnn
    from bablate.testbeds import sequences

    seq = sequences.reflection(0, n_repeats=300)
    test = sequences.reflection(1, n_repeats=100)
    cfg = rnn.RNNConfig(num_symbols=seq.num_symbols, hidden=12)
    tc = rnn.TrainConfig(steps=300, batch=8, chunk=100, eval_every=0)
    variables, _ = rnn.train(cfg, tc, seq.tokens, jax.random.key(0))
    return cfg, variables, rnn.windows(test.tokens, 200)


@pytest.fixture(scope="session")
def head_task_set():
    """The sum and diff heads of the 8-unit MLP of core_models as one TaskSet."""
    from core_models import head_rule, trained_mlp  # tests/ is on sys.path: one cache

    import bablate as bb

    model, variables, x, ys = trained_mlp(hidden=8)
    site = bb.flax_site(model, variables, "Dense_0", x)
    return bb.TaskSet.build(site, x, {h: head_rule(ys, h) for h in ("sum", "diff")})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh, not yet existing run directory."""
    return tmp_path / "run"


@pytest.fixture
def fake_config():
    """Returns ``get_config(variant) -> ConfigDict`` of the test-only fake study."""
    from tests.fake_study.config import get_config

    return get_config


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args) -> (exit code, stderr)``: launch.py run in this process."""
    from tests.test_bad_inputs_cli import launch_in_process

    return launch_in_process(monkeypatch, capsys)


@pytest.fixture
def launch():
    """Runs ``python launch.py *args`` in a subprocess; returns the CompletedProcess."""

    def _launch(*args: str, cwd: Path = REPO, timeout: float = 120, env: dict | None = None):
        return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})

    return _launch
