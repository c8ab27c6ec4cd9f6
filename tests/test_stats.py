"""The stats block: a C++ writer thread read concurrently, without tearing."""

from __future__ import annotations

import math

import pytest

from mxrc._native import _core
from mxrc.bus import private_stats
from mxrc.rt._perf import read_stats
from mxrc.rt._state import RtState

bus = _core.bus


def test_rt_state_values_match_the_core() -> None:
    assert [s.value for s in RtState] == list(range(7))
    assert RtState(4) is RtState.SAFE_MODE


def test_private_block_starts_zeroed_and_named() -> None:
    slot = private_stats("axis-1")
    assert slot.name == "axis-1"
    s = read_stats(slot)
    assert s.name == "axis-1"
    assert s.state is RtState.INIT
    assert s.cycle_count == 0
    assert s.wake_latency.count == 0
    assert s.wake_latency.min_ns == 0
    assert s.jitter_ns == 0.0
    assert s.deadline_miss_rate == 0.0
    assert not s.torn


def test_private_block_name_too_long() -> None:
    with pytest.raises(ValueError, match="longer than 63"):
        private_stats("x" * 64)


def test_writer_totals_and_moments() -> None:
    n = 10_000
    slot = private_stats("main")
    bus._start_test_writer(slot, n).join()
    s = read_stats(slot)
    assert not s.torn
    assert s.state is RtState.SHUTDOWN
    assert s.period_ns == 1000
    assert s.cycle_count == n
    for h, k in (
        (s.wake_latency, 1),
        (s.body_start_latency, 2),
        (s.exec_time, 3),
        (s.gil_wait, 4),
    ):
        assert h.count == n
        assert int(h.counts.sum()) == n
        assert h.sum_ns == k * n * (n + 1) // 2
        assert h.min_ns == k
        assert h.max_ns == k * n
    assert s.deadline_miss_count == n // 7
    assert s.deadline_miss_rate == pytest.approx((n // 7) / n)
    assert s.max_consecutive_misses == 1
    assert s.consecutive_misses == (1 if n % 7 == 0 else 0)
    # wake latency i = 1..n: mean (n+1)/2, population variance (n^2-1)/12
    assert s.wake_latency_mean_ns == pytest.approx((n + 1) / 2)
    assert s.jitter_ns == pytest.approx(math.sqrt((n * n - 1) / 12), rel=1e-9)
    assert s.heartbeat_ns == n * 1000 + n  # wake of the last sample
    # GIL waits 4i ns > 100 µs for i > 25 000: none here
    assert s.gil_contended_cycles == 0


def test_gil_contended_cycles_count_waits_above_100us() -> None:
    n = 30_000
    slot = private_stats("main")
    bus._start_test_writer(slot, n).join()
    assert read_stats(slot).gil_contended_cycles == n - bus.GIL_CONTENDED_NS // 4


def test_concurrent_reads_are_never_inconsistent() -> None:
    slot = private_stats("main")
    # The writer records back to back (~50 ns a cycle), far harder than a
    # real loop: some reads may exhaust their retries (torn), none may see
    # a half-written block.
    writer = bus._start_test_writer(slot, 3_000_000)
    result = bus._check_test_writer(slot, reads=20_000)
    writer.join()
    assert result["inconsistent"] == 0
    assert result["regressions"] == 0
    assert result["consistent"] + result["torn"] == 20_000


def test_concurrent_reads_with_a_paced_writer_settle() -> None:
    slot = private_stats("main")
    writer = bus._start_test_writer(slot, 5_000, pause_ns=20_000)
    result = bus._check_test_writer(slot, reads=20_000)
    writer.join()
    assert result["inconsistent"] == 0
    assert result["regressions"] == 0
    assert result["changes"] > 2  # consistent snapshots taken while the writer ran


def test_python_reads_during_a_run_are_consistent() -> None:
    slot = private_stats("main")
    writer = bus._start_test_writer(slot, 5_000, pause_ns=10_000)
    seen = []
    while not writer.done:
        s = read_stats(slot)
        if not s.torn:
            c = s.cycle_count
            assert s.wake_latency.count == c
            assert int(s.wake_latency.counts.sum()) == c
            assert s.exec_time.sum_ns == 3 * c * (c + 1) // 2
            seen.append(c)
    writer.join()
    assert seen == sorted(seen)
    assert len(seen) > 1


def test_torn_only_when_retries_are_exhausted() -> None:
    slot = private_stats("main")
    writer = bus._start_test_writer(slot, 200_000)
    snaps = [read_stats(slot, max_retries=0) for _ in range(200)]
    writer.join()
    for s in snaps:
        assert s.retries == 0
    final = read_stats(slot, max_retries=0)
    assert not final.torn
    assert final.cycle_count == 200_000
