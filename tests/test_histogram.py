"""The log-linear histogram: bucket math (property tests), record, percentiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxrc._native import _core
from mxrc.rt._perf import LatencyHistogram

bus = _core.bus
MAX = bus.MAX_TRACKABLE_NS
values = st.integers(min_value=0, max_value=MAX)


def _hist(samples: list[int] | np.ndarray) -> LatencyHistogram:
    h = bus.Histogram()
    h.record_many(np.asarray(samples, dtype=np.uint64))
    return LatencyHistogram._from_core(h.snapshot())


def test_range_covers_1ns_to_2_pow_40() -> None:
    assert MAX >= 2**40
    assert bus.bucket_index(0) == 0
    assert bus.bucket_index(1) == 1
    assert bus.bucket_index(MAX) == bus.BUCKET_COUNT - 1
    with pytest.raises(ValueError):
        bus.bucket_index(MAX + 1)
    with pytest.raises(IndexError):
        bus.bucket_lower(bus.BUCKET_COUNT)


@given(values)
def test_value_lies_within_its_bucket(v: int) -> None:
    i = bus.bucket_index(v)
    assert bus.bucket_lower(i) <= v <= bus.bucket_upper(i)


@given(values)
def test_relative_precision_is_about_3_percent(v: int) -> None:
    i = bus.bucket_index(v)
    width = bus.bucket_upper(i) - bus.bucket_lower(i) + 1
    if v < 64:
        assert width == 1
    else:
        assert width / v <= 1 / 32


@given(values, values)
def test_index_is_monotonic(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    assert bus.bucket_index(lo) <= bus.bucket_index(hi)


def test_buckets_tile_the_range_without_gaps() -> None:
    lower, upper = bus.bucket_bounds()
    assert lower[0] == 0
    assert upper[-1] == MAX
    assert np.all(lower[1:] == upper[:-1] + 1)
    assert np.all(upper >= lower)
    for i in (0, 63, 64, 65, 500, bus.BUCKET_COUNT - 1):
        assert bus.bucket_lower(i) == lower[i]
        assert bus.bucket_upper(i) == upper[i]
        assert bus.bucket_index(int(lower[i])) == i
        assert bus.bucket_index(int(upper[i])) == i


def test_record_keeps_exact_count_sum_min_max_and_overflow() -> None:
    h = bus.Histogram()
    for v in (5, 1_000, 123_456, MAX + 10):
        h.record(v)
    s = h.snapshot()
    assert s["count"] == 4
    assert s["sum"] == 5 + 1_000 + 123_456 + MAX + 10
    assert s["min"] == 5
    assert s["max"] == MAX + 10
    assert s["overflow"] == 1
    assert int(s["buckets"].sum()) == 3
    assert s["buckets"][bus.bucket_index(123_456)] == 1


def test_empty_histogram() -> None:
    h = _hist([])
    assert h.count == 0
    assert h.min_ns == 0
    assert h.percentile(0.99) == 0
    assert h.share_above(0) == 0.0
    assert h.mean_ns == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=500))
def test_percentile_is_within_one_bucket_above_the_exact_one(samples: list[int]) -> None:
    h = _hist(samples)
    ordered = sorted(samples)
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        exact = ordered[max(1, math.ceil(q * len(ordered))) - 1]
        got = h.percentile(q)
        assert exact <= got <= max(exact, 64) * (1 + 1 / 32) + 1
        assert h.min_ns <= got <= h.max_ns
    assert h.percentile(0) == ordered[0]
    assert h.percentile(1) == ordered[-1]


def test_percentile_rejects_percent() -> None:
    with pytest.raises(ValueError, match=r"0\.99 for p99"):
        _hist([1]).percentile(99)


def test_share_above() -> None:
    # 900 values of 10 µs, 90 of 200 µs, 10 of 2 ms
    h = _hist([10_000] * 900 + [200_000] * 90 + [2_000_000] * 10)
    assert h.share_above(100_000) == pytest.approx(0.10)
    assert h.share_above(1_000_000) == pytest.approx(0.01)
    assert h.share_above(5_000) == 1.0
    assert h.share_above(3_000_000) == 0.0
    assert h.mean_ns == pytest.approx((900 * 10_000 + 90 * 200_000 + 10 * 2_000_000) / 1000)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10**8), min_size=1, max_size=300),
    st.integers(min_value=0, max_value=10**8),
)
def test_share_above_is_close_to_exact(samples: list[int], threshold: int) -> None:
    h = _hist(samples)
    exact = sum(v > threshold for v in samples) / len(samples)
    # error bounded by the share in the one straddling bucket
    i = bus.bucket_index(threshold)
    in_bucket = sum(bus.bucket_index(v) == i for v in samples) / len(samples)
    assert abs(h.share_above(threshold) - exact) <= in_bucket + 1e-12
