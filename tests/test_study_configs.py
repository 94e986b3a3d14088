"""Every variant of every study config passes its study's own validation (a variant that the
README names must not be refused before it starts), and its sweep expands."""

import importlib.util
from pathlib import Path

import pytest

from bablate.runner import runs, sweeps

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [(p, v) for p in sorted(EXPERIMENTS.glob("*.py")) for v in _module(p).VARIANTS]


@pytest.mark.parametrize("path,variant", CASES, ids=[f"{p.stem}:{v}" for p, v in CASES])
def test_every_variant_validates(path, variant):
    module = _module(path)
    config = module.get_config(variant)
    assert config.variant == variant
    runs.validate_config(config)  # raises ConfigError with the offending key
    members = sweeps.expand(config, module.get_sweep(variant))
    assert members, f"{path.stem}:{variant} declares an empty sweep"


def test_all_studies_are_covered():
    assert {p.stem for p, _ in CASES} == {"toy_superposition", "rnn_chunks", "llm_concepts",
                                           "basis_comparison"}
