"""PerfMonitor and its report: values, sources, JSON and text renderings."""

from __future__ import annotations

import json

import pytest

from mxrc._native import _core
from mxrc.bus import Segment, private_stats
from mxrc.rt._perf import CycleStats, PerfMonitor, PerfReport, read_stats
from mxrc.rt._state import RtState

bus = _core.bus
PERIOD = 1_000_000  # 1 ms


def _fill(slot: _core.bus.StatsSlot) -> None:
    """1000 cycles: wake latency 12 µs (900), 300 µs (90), 3 ms (10, missed)."""
    w = bus._StatsWriter(slot)
    w.begin(PERIOD, PERIOD, 1234, 0)
    w.set_state(int(RtState.RUNNING))
    for k in range(1000):
        release = k * PERIOD
        late = 12_000 if k < 900 else 300_000 if k < 990 else 3_000_000
        wake = release + late
        start = wake + 5_000
        w.record(release, wake, start, start + 50_000, 3_000, late > PERIOD)
    w.add_skipped_releases(3)
    w.add_body_error()
    w.sample_rusage()


@pytest.fixture
def slot() -> _core.bus.StatsSlot:
    s = private_stats("main")
    _fill(s)
    return s


def test_cycle_stats(slot: _core.bus.StatsSlot) -> None:
    s = read_stats(slot)
    assert s.state is RtState.RUNNING
    assert s.tid == 1234
    assert s.cycle_count == 1000
    assert s.deadline_miss_count == 10
    assert s.deadline_miss_rate == pytest.approx(0.01)
    assert s.max_consecutive_misses == 10
    assert s.skipped_release_count == 3
    assert s.body_error_count == 1
    assert s.minor_faults > 0  # this thread's faults since it started
    assert s.heartbeat_ns == 999 * PERIOD + 3_000_000
    values = [12_000] * 900 + [300_000] * 90 + [3_000_000] * 10
    mean = sum(values) / 1000
    std = (sum((v - mean) ** 2 for v in values) / 1000) ** 0.5
    assert s.wake_latency_mean_ns == pytest.approx(mean)
    assert s.jitter_ns == pytest.approx(std)
    with pytest.raises(AttributeError):
        s.cycle_count = 1  # type: ignore[misc]


def test_report_fields(slot: _core.bus.StatsSlot) -> None:
    r = PerfMonitor(slot).report(late_thresholds_periods=(0.5,))
    assert isinstance(r, PerfReport)
    assert r.cycle_count == 1000
    assert r.deadline_miss_rate == pytest.approx(0.01)
    wake = r.wake_latency_us
    assert set(wake) == {"min", "avg", "p50", "p99", "p999", "max"}
    assert wake["min"] == pytest.approx(12.0)
    assert wake["max"] == pytest.approx(3000.0)
    assert 12.0 <= wake["p50"] <= 12.0 * 1.032
    assert 300.0 <= wake["p99"] <= 300.0 * 1.032
    assert 3000.0 <= wake["p999"] <= 3000.0 * 1.032
    assert r.body_start_latency_us["min"] == pytest.approx(17.0)
    assert r.exec_time_us["avg"] == pytest.approx(50.0)
    assert r.gil_wait_us["max"] == pytest.approx(3.0)
    assert r.gil_wait_count == 1000
    assert r.late_share == pytest.approx({"100us": 0.10, "1000us": 0.01, "0.5period": 0.01})
    assert r.jitter_us == pytest.approx(read_stats(slot).jitter_ns / 1e3)


def test_report_json_has_the_issue_fields(slot: _core.bus.StatsSlot) -> None:
    d = json.loads(PerfMonitor(slot).report().to_json())
    for key in ("cycle_count", "deadline_miss_count", "deadline_miss_rate", "jitter_us"):
        assert key in d
    for key in ("wake_latency_us", "body_start_latency_us", "exec_time_us"):
        assert set(d[key]) == {"min", "avg", "p50", "p99", "p999", "max"}
    assert d["late_share"] == pytest.approx({"100us": 0.10, "1000us": 0.01})
    assert d["deadline_miss_rate"] <= 1.0


def test_report_text(slot: _core.bus.StatsSlot) -> None:
    text = PerfMonitor(slot).report().to_text()
    assert 'cycle thread "main" (RUNNING): 1000 cycles, period 1000 us' in text
    assert "deadline misses: 10 (rate 0.010000)" in text
    assert "wake-up latency histogram (us):" in text
    rows = {
        line.split()[0]: int(line.split()[3])
        for line in text.splitlines()
        if line.startswith("  ") and " .. " in line
    }
    assert rows["10"] == 900  # 10..20 µs
    assert rows["200"] == 90  # 200..500 µs
    assert rows["2000"] == 10
    assert sum(rows.values()) == 1000
    assert "histogram" not in PerfMonitor(slot).report().to_text(histogram=False)


def test_empty_report_renders() -> None:
    r = PerfMonitor(private_stats("idle")).report()
    assert r.cycle_count == 0
    assert r.deadline_miss_rate == 0.0
    assert r.wake_latency_us["p99"] == 0.0
    assert "(no samples)" in r.to_text()
    json.loads(r.to_json())


def test_sources(instance: str, slot: _core.bus.StatsSlot) -> None:
    class Source:
        def stats(self) -> CycleStats:
            return read_stats(slot)

    assert PerfMonitor(Source()).report().cycle_count == 1000
    with Segment.create(instance) as seg:
        claimed = seg.claim_stats("axis")
        _fill(claimed)
        assert PerfMonitor(seg, "axis").report().cycle_count == 1000
        assert PerfMonitor(seg).stats().name == "axis"
        assert PerfMonitor(claimed).report().deadline_miss_count == 10
    with pytest.raises(TypeError, match="PerfMonitor source"):
        PerfMonitor(42)
