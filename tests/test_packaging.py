"""Ready to be cited and reused: license, citation, one version, an install that ships everything.

The end-to-end install check (build the wheel, install it non-editable into a fresh environment,
run the README example from outside the clone) is a stage of ``.ci/run``; these tests check the
sources that stage relies on.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

import bablate

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The papers the method and the studies reproduce (README "Citing", CITATION.cff references).
ARXIV_IDS = {"2505.13742", "2209.10652", "2502.01803", "2505.11576", "2401.17975", "2411.03993",
             "2402.03855"}


def load_citation(path: Path = REPO / "CITATION.cff") -> dict:
    from ruamel.yaml import YAML  # installed with cffconvert (dev extra)

    return YAML(typ="safe", pure=True).load(path.read_text())


def cffconvert_validate(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cffconvert")
    assert exe.exists(), f"{exe} not found: install the dev extra (pip install -e '.[dev]')"
    return subprocess.run([str(exe), "--validate", "-i", str(path)], capture_output=True,
                          text=True, timeout=120)


def test_version_has_one_source():
    assert "version" not in PYPROJECT["project"], "pyproject.toml must not repeat the version"
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bablate.__version__"}
    assert bablate.__version__ == importlib.metadata.version("bablate")
    assert re.fullmatch(r"\d+\.\d+\.\d+", bablate.__version__)


def test_license_is_the_apache_2_text_and_metadata_agrees():
    license_text = (REPO / "LICENSE").read_text()
    # Compare with the Apache-2.0 text shipped by an independent package (jax, a dependency).
    jax_license = next(f for f in importlib.metadata.distribution("jax").files
                       if f.name in ("LICENSE", "LICENSE.txt"))
    reference = jax_license.read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in reference
    assert license_text == reference
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    assert "Copyright 2026 The bablate authors" in (REPO / "NOTICE").read_text()
    assert load_citation()["license"] == "Apache-2.0"


def test_citation_cff_validates_with_cffconvert():
    proc = cffconvert_validate(REPO / "CITATION.cff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid according to schema version 1.2.0" in proc.stdout


def test_cffconvert_rejects_a_broken_citation(tmp_path):
    # The validator can fail: a CITATION.cff without its required authors does not pass.
    text = (REPO / "CITATION.cff").read_text()
    broken = re.sub(r"^authors:\n  - name: .*\n", "", text, count=1, flags=re.M)
    assert broken != text
    (tmp_path / "CITATION.cff").write_text(broken)
    proc = cffconvert_validate(tmp_path / "CITATION.cff")
    assert proc.returncode != 0


def test_citation_lists_the_papers_and_the_current_version():
    cff = load_citation()
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == bablate.__version__
    cited = {}
    for ref in cff["references"]:
        arxiv = re.fullmatch(r"https://arxiv\.org/abs/(\d{4}\.\d{5})", ref["url"]).group(1)
        assert ref["doi"] == f"10.48550/arXiv.{arxiv}"
        assert ref["authors"] and all(a.get("family-names") for a in ref["authors"])
        cited[arxiv] = ref
    assert set(cited) == ARXIV_IDS
    # The first authors the README and the study docstrings name.
    first = {k: v["authors"][0]["family-names"] for k, v in cited.items()}
    assert first == {"2505.13742": "Nam", "2209.10652": "Elhage", "2502.01803": "Wu",
                     "2505.11576": "Wu", "2401.17975": "Marshall", "2411.03993": "Colin",
                     "2402.03855": "Golechha"}


def test_readme_citing_section_lists_every_paper():
    text = (REPO / "README.md").read_text()
    assert "\n## Citing\n" in text
    section = text.split("\n## Citing\n", 1)[1].split("\n## ", 1)[0]
    assert "CITATION.cff" in section
    assert set(re.findall(r"\b\d{4}\.\d{5}\b", section)) == ARXIV_IDS
    for name in ("Nam", "Elhage", "Wu", "Marshall", "Kirchner", "Colin", "Golechha", "Dao"):
        assert name in section
    for study in ("toy_superposition", "rnn_chunks", "llm_concepts", "basis_comparison"):
        assert study in section


def test_changelog_starts_with_unreleased():
    text = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings and headings[0] == "[Unreleased]"


def test_package_config_ships_every_subpackage_and_data_file():
    """What setuptools will put in the wheel, computed from pyproject.toml as setuptools does."""
    setuptools_cfg = PYPROJECT["tool"]["setuptools"]
    found = set(find_namespace_packages(str(REPO), **setuptools_cfg["packages"]["find"]))
    with_code = {".".join(p.parent.relative_to(REPO).parts)
                 for p in (REPO / "bablate").rglob("*.py") if "__pycache__" not in p.parts}
    assert {"bablate.inference", "bablate.models", "bablate.chunks", "bablate.studies"} <= with_code
    assert with_code <= found, f"packages the wheel would miss: {sorted(with_code - found)}"
    assert not {p for p in found if not p.startswith("bablate")}, "only bablate is packaged"

    patterns = setuptools_cfg["package-data"]["bablate"]
    assert {"data/*.json", "data/*.txt"} <= set(patterns)
    data = [p.relative_to(REPO / "bablate").as_posix()
            for p in (REPO / "bablate" / "data").iterdir() if p.is_file()]
    assert "data/concepts.json" in data
    unshipped = [f for f in data if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not unshipped, f"add a package-data pattern for {unshipped} in pyproject.toml"

