"""The ring under ThreadSanitizer: tests/native/ring_tsan.cpp built with -fsanitize=thread.

The program runs producer, consumer and monitor threads over mxrc's SPSC rings
(csrc/src/ring.cpp compiled into it) and checks every record; TSan checks
that every shared word is accessed as an atomic with the right ordering. A
second build commits a deliberate data race, proving TSan is really watching.
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

pytestmark = pytest.mark.slow

TSAN_OPTIONS = "halt_on_error=1 exitcode=66 second_deadlock_stack=1"


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (CI installs g++)")
    return cxx


def _build(out: Path, *defines: str) -> Path:
    cmd = [
        _compiler(),
        "-std=c++17",
        "-fsanitize=thread",
        "-O1",
        "-g",
        "-pthread",
        "-Wall",
        "-Wextra",
        *defines,
        f"-I{PROJECT_ROOT / 'csrc' / 'include'}",
        f"-I{PROJECT_ROOT / 'mxrc' / 'include'}",
        str(NATIVE_DIR / "ring_tsan.cpp"),
        str(PROJECT_ROOT / "csrc" / "src" / "ring.cpp"),
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (
        f"building {out.name} with -fsanitize=thread failed:\n{proc.stderr}"
    )
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ring_tsan")
    return _build(tmp / "ring_tsan"), _build(tmp / "ring_tsan_race", "-DMXRC_TSAN_SELF_CHECK")


def _run(program: Path, *args: str) -> subprocess.CompletedProcess[str]:
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


def test_rings_are_race_free_and_correct_under_tsan(builds: tuple[Path, Path]) -> None:
    clean, _ = builds
    proc = _run(clean, "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok"
    # every scenario ran: three SPSC runs, the ring set, the locked producers
    assert proc.stdout.count("spsc capacity") == 3
    assert "ring set:" in proc.stdout and "locked producers:" in proc.stdout


def test_tsan_reports_a_deliberate_race(builds: tuple[Path, Path]) -> None:
    _, racy = builds
    proc = _run(racy, "1")
    assert proc.returncode == 66, proc.stdout + proc.stderr
    assert "WARNING: ThreadSanitizer: data race" in proc.stderr
    assert "plain_counter" in proc.stderr or "deliberate_race" in proc.stderr
