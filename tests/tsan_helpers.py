"""ThreadSanitizer builds of the C++ stress programs in tests/native/.

One program is compiled twice with ``-fsanitize=thread``: clean, and with
``-DMXRC_TSAN_SELF_CHECK`` (a deliberate data race proving TSan is watching).
TSan halts on the first report with exit code :data:`TSAN_EXIT_CODE`.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).parent.parent
NATIVE_DIR = Path(__file__).parent / "native"
INCLUDE_DIRS = (PROJECT_ROOT / "csrc" / "include", PROJECT_ROOT / "mxrc" / "include")

TSAN_EXIT_CODE = 66
TSAN_OPTIONS = f"halt_on_error=1 exitcode={TSAN_EXIT_CODE} second_deadlock_stack=1"


def compiler() -> str:
    """The C++ compiler ($CXX, else g++ or c++); skips the test without one."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (CI installs g++)")
    return cxx


def build(out: Path, program: str, core_sources: list[str], *defines: str) -> Path:
    """Compile tests/native/``program`` with csrc/src/``core_sources`` into ``out``."""
    cmd = [
        compiler(),
        "-std=c++17",
        "-fsanitize=thread",
        "-O1",
        "-g",
        "-pthread",
        "-Wall",
        "-Wextra",
        *defines,
        *(f"-I{d}" for d in INCLUDE_DIRS),
        str(NATIVE_DIR / program),
        *(str(PROJECT_ROOT / "csrc" / "src" / s) for s in core_sources),
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (
        f"building {out.name} with -fsanitize=thread failed:\n{proc.stderr}"
    )
    return out


def build_pair(tmp: Path, program: str, core_sources: list[str]) -> tuple[Path, Path]:
    """(clean build, build with the deliberate race) of tests/native/``program``."""
    stem = Path(program).stem
    return (
        build(tmp / stem, program, core_sources),
        build(tmp / f"{stem}_race", program, core_sources, "-DMXRC_TSAN_SELF_CHECK"),
    )


def run(program: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a TSan build with :data:`TSAN_OPTIONS` (retried without ASLR where needed)."""
    env = {**os.environ, "TSAN_OPTIONS": TSAN_OPTIONS}
    cmd = [str(program), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    if "unexpected memory mapping" in proc.stderr and shutil.which("setarch"):
        # Older TSan runtimes cannot map their shadow with high ASLR entropy.
        cmd = ["setarch", platform.machine(), "-R", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, env=env, check=False
        )
    return proc


def assert_clean(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The clean build passed without a TSan report; returns its stdout lines."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "ok"
    return lines


def assert_race_reported(proc: subprocess.CompletedProcess[str]) -> None:
    """The self-check build made TSan report its deliberate data race."""
    assert proc.returncode == TSAN_EXIT_CODE, proc.stdout + proc.stderr
    assert "WARNING: ThreadSanitizer: data race" in proc.stderr
