"""The ring under ThreadSanitizer: tests/native/ring_tsan.cpp built with -fsanitize=thread.

The program runs producer, consumer and monitor threads over mxrc's SPSC rings
(csrc/src/ring.cpp compiled into it) and checks every record; TSan checks
that every shared word is accessed as an atomic with the right ordering. A
second build commits a deliberate data race, proving TSan is really watching.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tsan_helpers as tsan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tsan.build_pair(tmp_path_factory.mktemp("ring_tsan"), "ring_tsan.cpp", ["ring.cpp"])


def test_rings_are_race_free_and_correct_under_tsan(builds: tuple[Path, Path]) -> None:
    clean, _ = builds
    proc = tsan.run(clean, "2")
    tsan.assert_clean(proc)
    # every scenario ran: three SPSC runs, the ring set, the locked producers
    assert proc.stdout.count("spsc capacity") == 3
    assert "ring set:" in proc.stdout and "locked producers:" in proc.stdout


def test_tsan_reports_a_deliberate_race(builds: tuple[Path, Path]) -> None:
    _, racy = builds
    proc = tsan.run(racy, "1")
    tsan.assert_race_reported(proc)
    assert "plain_counter" in proc.stderr or "deliberate_race" in proc.stderr
