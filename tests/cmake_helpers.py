"""CMake builds for the C++ tests: the core package once per session, examples per test.

The core (``-DMXRC_BUILD_PYTHON=OFF``, warnings as errors) is configured,
built and installed into a prefix once per test session and shared by every
test module that builds a C++ program against ``find_package(mxrc)``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import require_tool

PROJECT_ROOT = Path(__file__).parent.parent
EXAMPLES = PROJECT_ROOT / "docs" / "examples"

# install prefix of the core, per session base temp directory
_core_prefixes: dict[Path, Path] = {}


def require_cmake() -> str:
    """The cmake executable; skips the test without it (fails under CI, which installs it)."""
    return require_tool("cmake", "cmake")


def generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def run(
    args: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> str:
    """Run a command; assert it succeeded (showing its output); return its stdout."""
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def core_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install mxrc's C++ core package (once per session); its install prefix."""
    key = tmp_path_factory.getbasetemp()
    if key in _core_prefixes:
        return _core_prefixes[key]
    cmake = require_cmake()
    root = tmp_path_factory.mktemp("mxrc-core")
    build, prefix = root / "build", root / "prefix"
    run(
        [
            cmake,
            "-S",
            str(PROJECT_ROOT),
            "-B",
            str(build),
            *generator(),
            "-DMXRC_BUILD_PYTHON=OFF",
            "-DMXRC_WARNINGS_AS_ERRORS=ON",
        ]
    )
    run([cmake, "--build", str(build), "--parallel"])
    run([cmake, "--install", str(build), "--prefix", str(prefix)])
    _core_prefixes[key] = prefix
    return prefix


def build_example(name: str, build: Path, *defines: str) -> Path:
    """Configure and build ``docs/examples/<name>`` in ``build``; the build directory.

    ``defines``: extra ``-D...`` arguments (e.g. ``-DCMAKE_PREFIX_PATH=...``).
    """
    cmake = require_cmake()
    run(
        [
            cmake,
            "-S",
            str(EXAMPLES / name),
            "-B",
            str(build),
            *generator(),
            *defines,
        ]
    )
    run([cmake, "--build", str(build)])
    return build


def key_values(output: str) -> dict[str, str]:
    """The ``key: value`` lines of a program's output."""
    pairs = (line.split(": ", 1) for line in output.strip().splitlines() if ": " in line)
    return {k: v for k, v in pairs}
