"""The data store under ThreadSanitizer: tests/native/datastore_tsan.cpp, -fsanitize=thread.

The program runs an RT writer (try_write, service_snapshot), an agent writer
(retrying write and a write scope), readers and a snapshot reader over one
data store (csrc/src/datastore.cpp compiled into it) and checks every copy;
TSan checks that every shared word is accessed as an atomic. A second build
commits a deliberate data race, proving TSan is really watching.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tsan_helpers as tsan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("datastore_tsan")
    return tsan.build_pair(tmp, "datastore_tsan.cpp", ["datastore.cpp"])


def test_data_store_is_race_free_and_consistent_under_tsan(builds: tuple[Path, Path]) -> None:
    clean, _ = builds
    lines = tsan.assert_clean(tsan.run(clean, "20000"))
    assert lines[0].startswith("cycles 20000, rt busy ")


def test_tsan_reports_a_deliberate_race(builds: tuple[Path, Path]) -> None:
    _, racy = builds
    proc = tsan.run(racy, "100")
    tsan.assert_race_reported(proc)
    assert "deliberate_race" in proc.stderr
