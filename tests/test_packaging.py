"""The wheel ships every package, the grammars and the prompts, and the `edit` console script.

The build runs on a copy of the files the wheel is made from (pyproject.toml, README, the package
folders), so it leaves no build/ or *.egg-info behind in the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def package_dirs() -> list[Path]:
    """Every folder under a top-level package that is a package itself (has __init__.py)."""
    tops = {name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]}
    return sorted(init.parent for top in tops for init in (REPO / top).rglob("__init__.py")
                  if "__pycache__" not in init.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")
    shutil.copy(REPO / "pyproject.toml", source)
    readme = PYPROJECT["project"].get("readme")
    if readme:
        assert (REPO / readme).is_file(), f"pyproject.toml names {readme} as the readme; it is missing"
        shutil.copy(REPO / readme, source)
    tops = {name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]}
    for top in tops:
        shutil.copytree(REPO / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(out), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [path] = out.glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_holds_every_grammar_and_prompt(wheel):
    names = set(wheel.namelist())
    for folder, suffix in (("grammars", ".lark"), ("prompts", ".txt")):
        shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).glob(f"*{suffix}"))
        assert shipped, f"no {folder}/*{suffix} in the repository"
        missing = [p for p in shipped if p not in names]
        assert not missing, f"not in the wheel: {missing}"


def test_wheel_holds_every_package_and_module(wheel):
    names = set(wheel.namelist())
    for folder in package_dirs():
        modules = [p.relative_to(REPO).as_posix() for p in folder.glob("*.py")]
        missing = [m for m in modules if m not in names]
        assert not missing, f"not in the wheel (list the package in pyproject.toml): {missing}"
    assert "editor/commands/apply.py" in names


def test_wheel_installs_the_edit_console_script(wheel):
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text and "edit = editor.cli:main" in text


def test_bench_apply_runs_from_an_installed_wheel(wheel, tmp_path):
    """`edit bench apply` from a non-editable install, run outside the checkout: the benchmarks are a
    package of the wheel, not scripts found beside the sources."""
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                           wheel.filename], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    program = ("import bench, editor; print(editor.__file__, bench.__file__)\n"
               "from editor.cli import main; main(['bench', 'apply', '--runs', '1'])")
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    imported_from = proc.stdout.splitlines()[0].split()
    assert all(path.startswith(str(site)) for path in imported_from), imported_from
    assert "| parse + apply + validate, in memory, first edit of the file" in proc.stdout
