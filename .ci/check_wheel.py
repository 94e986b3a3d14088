"""Checks a non-editable install of bablate (from the built wheel) works outside the clone.

    python check_wheel.py <path of the clone>

Run by ``.ci/run`` with the interpreter of a fresh virtual environment into which only the
wheel (and its dependencies) was installed, from a temporary directory, so that nothing of the
clone is importable. The clone is read only for what the install must reproduce: the list of
modules and data files, and the README's library example. Prints one line per check; exits
non-zero with a one-line reason at the first failure.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.resources
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def relative_files(root, pattern: str) -> set[str]:
    """Relative paths of the files under ``root`` (a Path or an importlib Traversable)."""
    root = Path(str(root))
    return {p.relative_to(root).as_posix() for p in root.rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts}


def check_installed_copy(clone: Path):
    import bablate

    installed = Path(bablate.__file__).resolve().parent
    if clone.resolve() in installed.parents or not installed.is_relative_to(sys.prefix):
        fail(f"bablate was imported from {installed}, not from this environment ({sys.prefix})")
    dist = importlib.metadata.distribution("bablate")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        fail("bablate is installed editable; the wheel check needs a plain install")
    if dist.version != bablate.__version__:
        fail(f"metadata version {dist.version} != bablate.__version__ {bablate.__version__}")
    licenses = {Path(str(f)).name for f in dist.files or ()}
    if not {"LICENSE", "NOTICE"} <= licenses:
        fail(f"the wheel's metadata lacks LICENSE/NOTICE (has {sorted(licenses)})")
    print(f"ok  bablate {bablate.__version__} from {installed} (not editable; LICENSE, NOTICE)")
    return bablate, installed


def check_modules(clone: Path, bablate, installed: Path) -> None:
    expected = relative_files(clone / "bablate", "*.py")
    missing = expected - relative_files(installed, "*.py")
    if missing:
        fail(f"modules missing from the wheel: {sorted(missing)}")
    names = sorted(m.name for m in pkgutil.walk_packages(bablate.__path__, "bablate."))
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # report which module, not a traceback
            fail(f"import {name} failed in the installed package: {type(e).__name__}: {e}")
    subpackages = [n for n in names if (installed / n.split(".", 1)[1]).is_dir()]
    print(f"ok  {len(expected)} modules shipped, {len(names)} imported "
          f"(subpackages: {', '.join(subpackages)})")


def check_data(clone: Path) -> None:
    expected = relative_files(clone / "bablate" / "data", "*")
    if not expected:
        fail(f"no data files found in {clone / 'bablate' / 'data'}; is the clone path right?")
    data = importlib.resources.files("bablate").joinpath("data")
    shipped = relative_files(data, "*") if data.is_dir() else set()
    if expected - shipped:
        fail(f"data files missing from the wheel: {sorted(expected - shipped)} (add their "
             f"pattern to [tool.setuptools.package-data] in pyproject.toml)")
    for name in sorted(expected):
        if data.joinpath(name).read_bytes() != (clone / "bablate" / "data" / name).read_bytes():
            fail(f"installed bablate/data/{name} differs from the clone's")
    print(f"ok  data files shipped and identical: {', '.join(sorted(expected))}")


def check_readme_example(clone: Path) -> None:
    text = (clone / "README.md").read_text()
    section = text.split("## Library API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    lines = out.getvalue().strip().splitlines()
    if not any("distributedness" in line for line in lines) or "MCMC vs exact" not in lines[-1]:
        fail(f"the README example printed something unexpected: {lines}")
    gap = float(lines[-1].split()[-1])
    if not gap < 0.05:
        fail(f"README example: MCMC and exact marginals differ by {gap} (>= 0.05)")
    print(f"ok  README library example runs from {Path.cwd()} (MCMC vs exact {gap})")


def check_cli(installed: Path) -> None:
    """``python -m bablate`` from the installed package: a study by name (its config file ships
    with the package), a refused variant, and a small end-to-end run with its report."""
    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bablate", *args], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ,
                                                               "BABLATE_PROGRESS": "0"})

    proc = run("--config=toy_superposition:no_such_variant")
    if proc.returncode != 2 or "unknown variant 'no_such_variant'" not in proc.stderr:
        fail(f"python -m bablate --config=toy_superposition:no_such_variant: exit "
             f"{proc.returncode}, stderr {proc.stderr.strip()[-300:]!r}")
    workdir = Path.cwd() / "tiny-toy"
    proc = run("--config=toy_superposition:quick", "--config.densities=1,0.1",
               "--config.train.steps=250", "--config.control.num_seeds=0",
               "--config.ablation.mcmc_check.enabled=False", "--config.geometry.num_samples=512",
               "--config.ablation.num_positive=32", "--config.ablation.num_negative=32",
               f"--workdir={workdir}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        fail(f"python -m bablate (a small toy_superposition run) exited {proc.returncode}: {last}")
    results = json.loads((workdir / "results.json").read_text())
    figures = sorted(p.name for p in (workdir / "figures").glob("*.png"))
    if not results or not figures or not (workdir / "report.md").is_file():
        fail(f"the small toy run left results {sorted(results)[:5]}, figures {figures}")
    print(f"ok  python -m bablate --config=toy_superposition:quick (small overrides): "
          f"{len(results)} results, {len(figures)} figures, report.md")


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: python check_wheel.py <path of the clone>")
    clone = Path(sys.argv[1]).resolve()
    if Path.cwd().resolve() == clone or clone in Path.cwd().resolve().parents:
        fail(f"run this from a directory outside the clone, not {Path.cwd()}")
    bablate, installed = check_installed_copy(clone)
    check_modules(clone, bablate, installed)
    check_data(clone)
    check_readme_example(clone)
    check_cli(installed)


if __name__ == "__main__":
    main()
