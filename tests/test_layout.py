"""The layout a forker relies on: studies are packages that import the library and testbeds,
never each other; the library never imports a study; files stay small; tests mirror the
package; public functions of testbeds are typed."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "bablate"
STUDIES = sorted(p for p in (PKG / "studies").iterdir() if (p / "__init__.py").is_file())
TESTBEDS = sorted(p for p in (PKG / "testbeds").glob("*.py") if p.name != "__init__.py")
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_there_are_studies_and_testbeds():
    assert {p.name for p in STUDIES} >= {"toy_superposition", "rnn_chunks", "llm_concepts",
                                         "basis_comparison"}
    assert {p.stem for p in TESTBEDS} >= {"toy", "rnn", "llama"}
    flat = [p.name for p in (PKG / "studies").glob("*.py") if p.name != "__init__.py"]
    assert not flat, f"study modules outside a study package: {flat}"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_a_study_imports_no_other_study(study):
    for path in study.rglob("*.py"):
        for name in _imports(path):
            if name.startswith("bablate.studies."):
                assert name.split(".")[2] == study.name, (
                    f"{path.relative_to(REPO)} imports {name}: studies import the library and "
                    "testbeds, never each other (move what both need into bablate/testbeds/)")


def test_the_library_and_testbeds_import_no_study():
    for path in PKG.rglob("*.py"):
        if "studies" in path.relative_to(PKG).parts or path.name in ("cli.py", "__main__.py"):
            continue
        bad = [n for n in _imports(path) if n.startswith("bablate.studies")]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_inference_layer_does_not_import_the_run_directory_module():
    for path in (PKG / "inference").glob("*.py"):
        assert not any(n.startswith("bablate.runner.runs") for n in _imports(path)), path.name


@pytest.mark.parametrize("path", sorted([*(PKG / "studies").rglob("*.py"), *TESTBEDS]),
                         ids=lambda p: str(p.relative_to(PKG)))
def test_study_and_testbed_files_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines; split it by step"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_a_study_package_has_run_validate_config_and_its_tests(study):
    tree = ast.parse((study / "__init__.py").read_text())
    bound = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    bound |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
              for a in n.names}
    assert {"run", "validate"} <= bound, f"{study.name}/__init__.py must define run and validate"
    assert (study / "config.py").is_file()
    assert (REPO / "tests" / "studies" / f"test_{study.name}.py").is_file()


@pytest.mark.parametrize("path", TESTBEDS, ids=lambda p: p.stem)
def test_a_testbed_is_typed_and_tested(path):
    assert (REPO / "tests" / "testbeds" / f"test_testbed_{path.stem}.py").is_file()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            args = [a for a in node.args.args + node.args.kwonlyargs if a.arg != "self"]
            untyped = [a.arg for a in args if a.annotation is None]
            assert not untyped and node.returns is not None, (
                f"{path.name}: {node.name} needs type hints ({untyped or 'return'})")


def test_tests_mirror_the_core_modules():
    for name in ("tasks", "metrics", "sites", "runs", "sweeps", "dictionary", "geometry"):
        assert (REPO / "tests" / f"test_{name}.py").is_file(), name
