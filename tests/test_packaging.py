"""What installing the package puts on a user's machine: no demo tools, no `handlers` package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import setuptools

ROOT = Path(__file__).parent.parent


def test_the_wheel_holds_no_top_level_handlers_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert "orchestrator" in packages
    assert not [p for p in packages if p.split(".")[0] != "orchestrator"]


def test_installed_library_registers_no_tools_and_has_no_handlers(tmp_path: Path) -> None:
    # From a directory other than the repository's: what a user's service sees.
    code = (
        "import importlib.util, orchestrator, orchestrator.cli\n"
        "from orchestrator import Config, tools\n"
        "assert importlib.util.find_spec('handlers') is None, 'handlers is installed'\n"
        "assert Config().tools.modules == ()\n"
        "print(len(tools.default_registry))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_ci_runs_lint_and_tests() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in script
    assert "make test" in script
