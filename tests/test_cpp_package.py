"""The core builds alone, installs a find_package(mxrc) package, and a C++ program uses it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mxrc.rt._cpulist import format_cpulist

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def test_core_package_and_example(project_root: Path, tmp_path: Path) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        if os.environ.get("CI"):
            pytest.fail("cmake is not installed; .ci/run installs it (apt package cmake)")
        pytest.skip("cmake is not installed")
    build, prefix, example = tmp_path / "build", tmp_path / "prefix", tmp_path / "example"
    _run(
        [
            cmake,
            "-S",
            str(project_root),
            "-B",
            str(build),
            *_generator(),
            "-DMXRC_BUILD_PYTHON=OFF",
            "-DMXRC_WARNINGS_AS_ERRORS=ON",
        ]
    )
    _run([cmake, "--build", str(build), "--parallel"])
    _run([cmake, "--install", str(build), "--prefix", str(prefix)])
    assert (prefix / "include" / "mxrc" / "system.hpp").is_file()
    assert any(prefix.glob("lib*/cmake/mxrc/mxrcConfig.cmake"))

    _run(
        [
            cmake,
            "-S",
            str(project_root / "docs" / "examples" / "cpp_affinity"),
            "-B",
            str(example),
            *_generator(),
            f"-DCMAKE_PREFIX_PATH={prefix}",
        ]
    )
    _run([cmake, "--build", str(example)])
    out = _run([str(example / "cpp_affinity")])

    allowed = sorted(os.sched_getaffinity(0))
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert lines["allowed"] == format_cpulist(allowed)
    assert lines["pinned"] == str(allowed[-1])
    # SCHED_OTHER main thread: the 1 ns slack set by apply_thread_setup sticks.
    assert lines["timer slack"] == "1 ns"
