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


def _from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of ``from X import ...`` inside ``package`` (relative imports too)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, package)
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


# ---- the import graph: no cycles, no upward imports, commented local imports, small files ----

# Layers, bottom to top: a module imports its own layer and those below, never one above.
# Keyed by the first name under the package (``bablate.<name>...``); the package itself is the
# library's public face (layer 2).
LAYERS = {
    **dict.fromkeys(("errors", "io", "markdown", "progress", "sharding", "callsite",
                     "statefile"), 0),
    **dict.fromkeys(("sites", "rules", "models", "hooked_sites", "flax_sites", "nnx_sites"), 1),
    **dict.fromkeys(("programs", "tasks", "taskset", "amd", "inference", "metrics", "geometry",
                     "dictionary", "chunks", "plot", "chain_plots", "llm", ""), 2),
    "testbeds": 3,
    **dict.fromkeys(("runner", "__main__"), 4),
    "studies": 5,
}
MAX_MODULE_LINES = 450


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package at ``root``."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = f
    return out


def _import_nodes(path: Path, modules: dict[str, Path]):
    """(node, imported module names in the package, is_local) for every import of ``path``."""
    root_pkg = next(iter(modules)).split(".")[0]
    me = next(m for m, f in modules.items() if f == path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    top |= {id(n) for t in tree.body if isinstance(t, ast.Try | ast.If)
            for n in ast.walk(t) if isinstance(n, ast.Import | ast.ImportFrom)}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [resolve(a.name) for a in node.names if a.name.split(".")[0] == root_pkg]
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, package)
            if mod.split(".")[0] != root_pkg:
                continue
            names = [resolve(f"{mod}.{a.name}") for a in node.names]
        else:
            continue
        found = {n for n in names if n and n != me and not me.startswith(n + ".")}
        if found:
            yield node, found, id(node) not in top


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, module-level and function-local alike."""
    modules = _modules(root)
    return {m: {n for _, names, _ in _import_nodes(f, modules) for n in names}
            for m, f in modules.items()}


def import_cycles(root: Path) -> list[list[str]]:
    """The strongly connected components of more than one module (each is a cycle)."""
    graph, index, low, stack, on, out = import_graph(root), {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer_of(module: str, layers: dict[str, int]) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    assert key in layers, f"{module} is in no layer: add {key!r} to LAYERS in tests/test_layout.py"
    return layers[key]


def upward_imports(root: Path, layers: dict[str, int]) -> list[str]:
    """``"a -> b"`` for every import of a module from a higher layer."""
    return [f"{m} -> {n}" for m, names in sorted(import_graph(root).items()) for n in sorted(names)
            if layer_of(n, layers) > layer_of(m, layers)]


def uncommented_local_imports(root: Path) -> list[str]:
    """``file:line`` of each function-local import of a package module with no comment on its
    line or the line before (the comment says why it is not at the top)."""
    modules, out = _modules(root), []
    for f in modules.values():
        lines = f.read_text().splitlines()
        for node, _, local in _import_nodes(f, modules):
            before = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if local and "#" not in lines[node.lineno - 1] and not before.startswith("#"):
                out.append(f"{f.relative_to(root.parent)}:{node.lineno}")
    return out


def long_modules(root: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    return [str(f.relative_to(root.parent)) for f in sorted(root.rglob("*.py"))
            if len(f.read_text().splitlines()) > limit]


def bad_benchmark_imports(bench: Path, pkg: str = "bablate") -> list[str]:
    """Imports of a study, of the runner or of a private name (module or attribute) of the
    package by the scripts in ``bench``."""
    out = []
    for f in sorted(bench.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != pkg:
                    continue
                if (len(parts) > 1 and parts[1] in ("studies", "runner")) or any(
                        p.startswith("_") and not p.startswith("__") for p in parts):
                    out.append(f"{f.name}:{node.lineno}: {name}")
    return out


def test_the_package_has_no_import_cycles():
    assert import_cycles(PKG) == []


def test_no_module_imports_a_higher_layer():
    assert upward_imports(PKG, LAYERS) == []


def test_function_local_imports_of_the_package_say_why():
    assert uncommented_local_imports(PKG) == []


def test_no_module_is_over_the_line_limit():
    long = sorted(long_modules(PKG))
    assert not long, f"split these along a natural seam: {long}"


def test_benchmarks_import_no_study_runner_or_private_name():
    assert bad_benchmark_imports(REPO / "benchmarks") == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_each_check_finds_a_planted_violation(tmp_path):
    """The checks above pass because the code is clean, not because they cannot fail."""
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg import high\n    return high\n",  # cycle, local
        "pkg/high.py": "from pkg import low\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/a.py": "from . import b\n",  # relative cycle inside a subpackage
        "pkg/sub/b.py": "import pkg.sub.a\n",
        "pkg/ok.py": "def f():\n    # on use: heavy\n    from pkg import low\n    return low\n",
        "pkg/long.py": "x = 1\n" * 5,
    })
    assert sorted(import_cycles(pkg)) == [["pkg.high", "pkg.low"], ["pkg.sub.a", "pkg.sub.b"]]
    layers = {"": 0, "low": 0, "high": 1, "sub": 0, "ok": 0, "long": 0}
    assert upward_imports(pkg, layers) == ["pkg.low -> pkg.high"]
    assert uncommented_local_imports(pkg) == ["pkg/low.py:2"]
    assert long_modules(pkg, limit=4) == ["pkg/long.py"]
    bench = _write(tmp_path / "bench", {
        "study.py": "from bablate.studies.toy_superposition import config\n",
        "runner.py": "import bablate.runner.runs\n",
        "private.py": "from bablate.metrics import _entropy\nfrom bablate.llm._sites import x\n",
        "fine.py": "import bablate as bb\nfrom bablate.testbeds import llama\n",
    }).parent
    assert bad_benchmark_imports(bench) == [
        "private.py:1: bablate.metrics._entropy", "private.py:2: bablate.llm._sites",
        "private.py:2: bablate.llm._sites.x", "runner.py:1: bablate.runner.runs",
        "study.py:1: bablate.studies.toy_superposition",
        "study.py:1: bablate.studies.toy_superposition.config"]
