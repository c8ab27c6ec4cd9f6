"""Per-operation costs of the stats block and its histograms (pytest-benchmark).

Run: python -m pytest bench/test_bench_stats.py --benchmark-only
(not part of the test command). Per-item costs of the batched cases are the
reported time divided by the batch size (in ``extra_info``).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from mxrc._native import _core
from mxrc.bus import Segment, private_stats
from mxrc.rt._perf import PerfMonitor, read_stats

bus = _core.bus
BATCH = 100_000


@pytest.fixture(scope="module")
def filled() -> _core.bus.StatsSlot:
    slot = private_stats("main")
    bus._start_test_writer(slot, 1_000_000).join()
    return slot


@pytest.mark.benchmark(group="histogram-record")
def test_histogram_record_batch(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Histogram::record in C++, 100 000 log-uniform values per round."""
    rng = np.random.default_rng(1)
    values = np.exp(rng.uniform(0, np.log(1e7), BATCH)).astype(np.uint64)
    h = bus.Histogram()
    benchmark.extra_info["batch"] = BATCH
    benchmark(h.record_many, values)


@pytest.mark.benchmark(group="histogram-record")
def test_histogram_record_single_from_python(benchmark) -> None:  # type: ignore[no-untyped-def]
    """One record() through the binding (mostly call overhead)."""
    h = bus.Histogram()
    benchmark(h.record, 12_345)


@pytest.mark.benchmark(group="stats-write")
def test_stats_writer_record_batch(benchmark) -> None:  # type: ignore[no-untyped-def]
    """StatsWriter::record (4 histograms, counters, Welford, seqlock) x 100 000 on a C++ thread."""
    slot = private_stats("bench")
    benchmark.extra_info["batch"] = BATCH
    benchmark(lambda: bus._start_test_writer(slot, BATCH).join())


@pytest.mark.benchmark(group="stats-read")
def test_read_core_x1000(benchmark, filled) -> None:  # type: ignore[no-untyped-def]
    """read_stats() in C++ (whole-block copy), 1000 reads per round, no writer."""
    benchmark.extra_info["batch"] = 1000
    benchmark(bus._check_test_writer, filled, 1000)


@pytest.mark.benchmark(group="stats-read")
def test_read_dict(benchmark, filled) -> None:  # type: ignore[no-untyped-def]
    """StatsSlot.read(): copy into a dict with numpy bucket arrays."""
    benchmark(filled.read)


@pytest.mark.benchmark(group="stats-read")
def test_read_cycle_stats(benchmark, filled) -> None:  # type: ignore[no-untyped-def]
    """read_stats(slot) -> CycleStats."""
    benchmark(read_stats, filled)


@pytest.mark.benchmark(group="stats-read")
def test_read_from_segment(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Segment.stats(name): slot lookup by name + read."""
    with Segment.create(f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}") as seg:
        slot = seg.claim_stats("main")
        bus._start_test_writer(slot, 10_000).join()
        benchmark(seg.stats, "main")


@pytest.mark.benchmark(group="stats-report")
def test_report(benchmark, filled) -> None:  # type: ignore[no-untyped-def]
    """PerfMonitor.report(): read + percentiles + late shares."""
    monitor = PerfMonitor(filled)
    benchmark(monitor.report)
