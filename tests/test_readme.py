"""The README's two commands are the project's contract with a fresh machine."""

from __future__ import annotations

import re
from pathlib import Path


def _readme_commands(root: Path) -> list[str]:
    text = (root / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md must start with a ```sh block holding the two commands"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_readme_has_run_and_test_commands(project_root: Path) -> None:
    commands = _readme_commands(project_root)
    assert len(commands) == 2
    run, test = commands
    assert "mxrc" in run and "pip install" in run
    assert "pytest" in test and "pip install" in test


def test_ci_runs_exactly_the_readme_test_command(project_root: Path) -> None:
    _, test_command = _readme_commands(project_root)
    ci_lines = [line.strip() for line in (project_root / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_versions_agree(project_root: Path) -> None:
    """pyproject.toml, CMakeLists.txt, mxrc.__version__ and the compiled core name one version."""
    import mxrc
    from mxrc._native import _core

    pyproject = re.search(
        r'^version = "([^"]+)"', (project_root / "pyproject.toml").read_text(), re.M
    )
    cmake = re.search(
        r"project\(mxrc VERSION ([0-9.]+)", (project_root / "CMakeLists.txt").read_text()
    )
    assert pyproject and cmake
    assert pyproject.group(1) == cmake.group(1) == mxrc.__version__ == _core.__version__
