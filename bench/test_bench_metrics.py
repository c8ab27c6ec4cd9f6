"""Cost of one Prometheus scrape of mxrc.metrics (pytest-benchmark).

Run: python -m pytest bench/test_bench_metrics.py --benchmark-only
(not part of the test command). A scrape = RtCollector.collect() plus the text
exposition, what the HTTP handler does per request; it holds the GIL
throughout, which is why it belongs in a process without a Python body.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import mxrc
from mxrc.bus import private_stats
from mxrc.metrics import RtCollector
from mxrc.rt import BuiltinBody

from mxrc._native import _core  # isort: skip


def _filled(name: str) -> _core.bus.StatsSlot:
    slot = private_stats(name)
    _core.bus._start_test_writer(slot, 100_000).join()
    return slot


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.benchmark(group="metrics-scrape")
def test_scrape_stats_blocks(benchmark, threads: int) -> None:  # type: ignore[no-untyped-def]
    """Stats blocks without a live thread (no /proc reads): histograms and counters only."""
    registry = CollectorRegistry()
    registry.register(RtCollector(*(_filled(f"t{i}") for i in range(threads))))
    benchmark.extra_info["threads"] = threads
    benchmark(generate_latest, registry)


@pytest.mark.benchmark(group="metrics-scrape")
def test_scrape_running_executive(benchmark) -> None:  # type: ignore[no-untyped-def]
    """One running executive: also /proc/<pid>/task/<tid> reads and the isolation probe."""
    ex = mxrc.Executive(BuiltinBody("noop"), period_us=1000)
    registry = CollectorRegistry()
    registry.register(RtCollector(ex))
    with ex:
        ex.wait(10)
        benchmark(generate_latest, registry)
