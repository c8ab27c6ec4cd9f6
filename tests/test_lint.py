"""ruff and mypy are part of the test suite: the code stays clean in every commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    "args",
    [["check", "mxrc", "tests"], ["format", "--check", "mxrc", "tests"]],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff(project_root: Path, args: list[str]) -> None:
    result = _run([sys.executable, "-m", "ruff", *args], project_root)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict(project_root: Path) -> None:
    result = _run([sys.executable, "-m", "mypy"], project_root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_clang_format(project_root: Path) -> None:
    sources = sorted(
        str(p.relative_to(project_root))
        for pattern in ("csrc/**/*.cpp", "csrc/**/*.hpp", "docs/examples/**/*.cpp")
        for p in project_root.glob(pattern)
    )
    assert sources, "no C++ sources found"
    result = _run(["clang-format", "--dry-run", "-Werror", *sources], project_root)
    assert result.returncode == 0, result.stdout + result.stderr
