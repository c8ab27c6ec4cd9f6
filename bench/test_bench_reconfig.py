"""Per-operation costs of live re-configuration (pytest-benchmark).

Run: python -m pytest bench/test_bench_reconfig.py --benchmark-only
(not part of the test command). ``ConfigWatcher.poll`` without a change is
what the watcher thread does every ``interval_s`` while holding the GIL;
``reconfigure`` is one re-pin of a running cycle thread from outside.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxrc.rt import BuiltinBody, ConfigWatcher, Executive, allowed_cpus


@pytest.fixture
def loop() -> Iterator[Executive]:
    ex = Executive(BuiltinBody(), period_us=1000)
    ex.start()
    try:
        yield ex
    finally:
        ex.stop()


@pytest.mark.benchmark(group="reconfig")
@pytest.mark.parametrize("files", [0, 1, 2], ids=["no-file", "one-file", "both-files"])
def test_watcher_poll_without_change(
    benchmark, loop: Executive, tmp_path: Path, files: int
) -> None:  # type: ignore[no-untyped-def]
    """One look at cpu_affinity.json and numa_binding.json (stat each), nothing changed."""
    for name in ("cpu_affinity.json", "numa_binding.json")[:files]:
        (tmp_path / name).write_text(json.dumps({"rt": {}}))
    watcher = ConfigWatcher(loop, tmp_path)
    assert benchmark(watcher.poll) == []


@pytest.mark.benchmark(group="reconfig")
def test_repin_a_running_thread(benchmark, loop: Executive) -> None:  # type: ignore[no-untyped-def]
    """reconfigure(cpus=...) alternating between two masks (read, apply, read back)."""
    cpus = sorted(allowed_cpus())
    masks = [frozenset(cpus), frozenset(cpus[-1:])]
    state = {"i": 0}

    def repin() -> None:
        state["i"] ^= 1
        loop.reconfigure(cpus=masks[state["i"]])

    benchmark(repin)


@pytest.mark.benchmark(group="reconfig")
def test_validate_a_change(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """load_config of a directory (warm): what the watcher runs once per change."""
    from mxrc.config import load_config

    (tmp_path / "cpu_affinity.json").write_text(json.dumps({"rt": {"priority": 45}}))
    load_config(tmp_path)
    benchmark(load_config, tmp_path)
