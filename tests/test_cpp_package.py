"""The core builds alone, installs a find_package(mxrc) package, and a C++ program uses it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cmake_helpers import build_example, core_package, key_values, run

from mxrc.rt._cpulist import format_cpulist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def core_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return core_package(tmp_path_factory)


def test_core_package_and_example(core_prefix: Path, tmp_path: Path) -> None:
    assert (core_prefix / "include" / "mxrc" / "system.hpp").is_file()
    assert any(core_prefix.glob("lib*/cmake/mxrc/mxrcConfig.cmake"))

    example = build_example(
        "cpp_affinity", tmp_path / "example", f"-DCMAKE_PREFIX_PATH={core_prefix}"
    )
    out = run([str(example / "cpp_affinity")])

    allowed = sorted(os.sched_getaffinity(0))
    lines = key_values(out)
    assert lines["allowed"] == format_cpulist(allowed)
    assert lines["pinned"] == str(allowed[-1])
    # SCHED_OTHER main thread: the 1 ns slack set by apply_thread_setup sticks.
    assert lines["timer slack"] == "1 ns"
