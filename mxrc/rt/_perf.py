"""Cycle statistics and the performance monitor: a Python view over a stats block.

A cycle thread writes its stats block (``csrc/include/mxrc/stats.hpp``): counts,
state, heartbeat and four HDR-style log-linear histograms (wake-up latency,
body-start latency, execution time, GIL wait; 32 sub-buckets per power of two,
so any value is known within ~3 %). :func:`read_stats` copies a block into a
frozen :class:`CycleStats`; :class:`PerfMonitor` turns that into a
:class:`PerfReport` (min/avg/p50/p99/p99.9/max, jitter, miss rate, late
shares) with text and JSON renderings.

Definitions (ARCHITECTURE §1): wake-up latency = actual wake − scheduled
release; body-start latency = body start − release (includes taking the GIL
for a Python body); execution time = body duration; a deadline miss = the body
finished after release + deadline. ``jitter`` is the standard deviation
(population) of the wake-up latency. Rates and shares are ratios 0..1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mxrc._native import _core
from mxrc.rt._state import RtState

if TYPE_CHECKING:
    from mxrc._core.bus import HistogramDict, SnapshotDict

__all__ = [
    "CycleStats",
    "LatencyHistogram",
    "PerfMonitor",
    "PerfReport",
    "StatsSource",
    "build_report",
    "read_stats",
    "text_histogram",
]

_LOWER, _UPPER = _core.bus.bucket_bounds()
_LOWER.setflags(write=False)
_UPPER.setflags(write=False)
DEFAULT_MAX_RETRIES = 64


@dataclass(frozen=True, eq=False)
class LatencyHistogram:
    """A copy of one log-linear histogram of nanosecond values.

    ``counts[i]`` values fell in ``[lower_ns[i], upper_ns[i]]`` (inclusive
    bounds); values above :attr:`max_trackable_ns` (~36 min) are only in
    ``overflow``. ``count``, ``sum_ns``, ``min_ns`` and ``max_ns`` are exact.
    """

    counts: npt.NDArray[np.uint64]
    count: int
    sum_ns: int
    min_ns: int
    max_ns: int
    overflow: int = 0

    @classmethod
    def empty(cls) -> LatencyHistogram:
        """A histogram with no values."""
        counts = np.zeros(_core.bus.BUCKET_COUNT, dtype=np.uint64)
        counts.setflags(write=False)
        return cls(counts=counts, count=0, sum_ns=0, min_ns=0, max_ns=0)

    @classmethod
    def _from_core(cls, d: HistogramDict) -> LatencyHistogram:
        counts = d["buckets"]
        counts.setflags(write=False)
        return cls(
            counts=counts,
            count=int(d["count"]),
            sum_ns=int(d["sum"]),
            min_ns=int(d["min"]),
            max_ns=int(d["max"]),
            overflow=int(d["overflow"]),
        )

    @property
    def max_trackable_ns(self) -> int:
        """Largest value kept in a bucket (2^41 - 1 ns); larger ones only count in ``overflow``."""
        return int(_core.bus.MAX_TRACKABLE_NS)

    @property
    def lower_ns(self) -> npt.NDArray[np.uint64]:
        """Smallest value of each bucket (read-only, shared by all histograms)."""
        return _LOWER

    @property
    def upper_ns(self) -> npt.NDArray[np.uint64]:
        """Largest value of each bucket, inclusive (read-only)."""
        return _UPPER

    @property
    def mean_ns(self) -> float:
        """Exact mean (0.0 when empty)."""
        return self.sum_ns / self.count if self.count else 0.0

    def percentile(self, q: float) -> int:
        """Value (ns) at quantile ``q`` in [0, 1] (0.99 = p99), 0 when empty.

        The upper bound of the bucket holding the ``ceil(q·count)``-th value,
        clamped to [min, max]: at most ~3 % above the true value, never below.
        ``q=0`` gives min, ``q=1`` gives max.
        """
        if not 0.0 <= q <= 1.0 or math.isnan(q):
            raise ValueError(f"quantile must be within [0, 1] (0.99 for p99), got {q!r}")
        if self.count == 0:
            return 0
        if q == 0.0:
            return self.min_ns
        if q == 1.0:
            return self.max_ns
        rank = max(1, math.ceil(q * self.count))
        cumulative = np.cumsum(self.counts, dtype=np.uint64)
        i = int(np.searchsorted(cumulative, rank, side="left"))
        if i >= len(cumulative):  # in the overflow
            return self.max_ns
        return min(max(int(_UPPER[i]), self.min_ns), self.max_ns)

    def share_above(self, ns: float) -> float:
        """Ratio (0..1) of values greater than ``ns``.

        Exact at bucket bounds; inside the bucket that straddles ``ns`` the
        values are assumed evenly spread (error below one bucket, ~3 %).
        """
        if self.count == 0:
            return 0.0
        if ns < self.min_ns:
            return 1.0
        if ns >= self.max_ns:
            return 0.0
        above = float(self.overflow) if ns < self.max_trackable_ns else 0.0
        counts = self.counts.astype(np.float64)
        full = ns < _LOWER
        above += float(counts[full].sum())
        straddle = (ns >= _LOWER) & (ns < _UPPER)
        if straddle.any():
            i = int(np.flatnonzero(straddle)[0])
            width = float(_UPPER[i]) - float(_LOWER[i]) + 1.0
            above += counts[i] * (float(_UPPER[i]) - math.floor(ns)) / width
        return min(1.0, above / self.count)

    def summary_us(self) -> dict[str, float]:
        """``{min, avg, p50, p99, p999, max}`` in µs (all 0.0 when empty)."""
        return {
            "min": self.min_ns / 1e3,
            "avg": self.mean_ns / 1e3,
            "p50": self.percentile(0.50) / 1e3,
            "p99": self.percentile(0.99) / 1e3,
            "p999": self.percentile(0.999) / 1e3,
            "max": self.max_ns / 1e3,
        }


@dataclass(frozen=True, eq=False)
class CycleStats:
    """A snapshot of one cycle thread's stats block (times in ns, CLOCK_MONOTONIC).

    ``torn`` is True when the block kept changing during every one of the
    bounded read attempts: counters and histograms may then disagree slightly.
    """

    name: str
    tid: int
    state: RtState
    period_ns: int
    deadline_ns: int
    start_ns: int
    heartbeat_ns: int
    cycle_count: int
    deadline_miss_count: int
    consecutive_misses: int
    max_consecutive_misses: int
    skipped_release_count: int
    body_error_count: int
    minor_faults: int
    involuntary_ctx_switches: int
    gil_contended_cycles: int
    wake_latency_mean_ns: float
    wake_latency_var_ns2: float
    wake_latency: LatencyHistogram
    body_start_latency: LatencyHistogram
    exec_time: LatencyHistogram
    gil_wait: LatencyHistogram
    torn: bool = False
    retries: int = 0

    @property
    def jitter_ns(self) -> float:
        """Standard deviation of the wake-up latency (ns)."""
        return math.sqrt(max(self.wake_latency_var_ns2, 0.0))

    @property
    def deadline_miss_rate(self) -> float:
        """Deadline misses per cycle (ratio 0..1; 0.0 before the first cycle)."""
        return self.deadline_miss_count / self.cycle_count if self.cycle_count else 0.0

    @classmethod
    def _from_core(cls, d: SnapshotDict) -> CycleStats:
        n = int(d["wake_latency_n"])
        try:
            state = RtState(int(d["state"]))
        except ValueError:
            state = RtState.ERROR
        return cls(
            name=d["name"],
            tid=int(d["tid"]),
            state=state,
            period_ns=int(d["period_ns"]),
            deadline_ns=int(d["deadline_ns"]),
            start_ns=int(d["start_ns"]),
            heartbeat_ns=int(d["heartbeat_ns"]),
            cycle_count=int(d["cycle_count"]),
            deadline_miss_count=int(d["deadline_miss_count"]),
            consecutive_misses=int(d["consecutive_misses"]),
            max_consecutive_misses=int(d["max_consecutive_misses"]),
            skipped_release_count=int(d["skipped_release_count"]),
            body_error_count=int(d["body_error_count"]),
            minor_faults=int(d["minor_faults"]),
            involuntary_ctx_switches=int(d["involuntary_ctx_switches"]),
            gil_contended_cycles=int(d["gil_contended_cycles"]),
            wake_latency_mean_ns=float(d["wake_latency_mean_ns"]),
            wake_latency_var_ns2=float(d["wake_latency_m2"]) / n if n else 0.0,
            wake_latency=LatencyHistogram._from_core(d["wake_latency"]),
            body_start_latency=LatencyHistogram._from_core(d["body_start_latency"]),
            exec_time=LatencyHistogram._from_core(d["exec_time"]),
            gil_wait=LatencyHistogram._from_core(d["gil_wait"]),
            torn=bool(d["torn"]),
            retries=int(d["retries"]),
        )


def read_stats(slot: _core.bus.StatsSlot, *, max_retries: int = DEFAULT_MAX_RETRIES) -> CycleStats:
    """Copy a stats block (``_core.bus.StatsSlot``) into a :class:`CycleStats`.

    Never disturbs the writer: the copy retries up to ``max_retries`` times
    while the writer is mid-update, then returns the last copy with
    ``torn=True``. The GIL is released while copying.
    """
    return CycleStats._from_core(slot.read(max_retries))


@runtime_checkable
class StatsSource(Protocol):
    """Anything with a ``stats()`` method returning :class:`CycleStats`."""

    def stats(self) -> CycleStats: ...


def _late_key_us(us: float) -> str:
    return f"{us:g}us"


def _late_key_periods(periods: float) -> str:
    return f"{periods:g}period"


@dataclass(frozen=True)
class PerfReport:
    """Latency report of one cycle thread (times in µs, rates and shares 0..1).

    ``late_share`` maps thresholds (``"100us"``, ``"1000us"``, or relative to
    the period, ``"0.5period"``) to the share of cycles whose wake-up latency
    exceeded them.
    """

    name: str
    state: str
    period_us: float
    deadline_us: float
    cycle_count: int
    deadline_miss_count: int
    deadline_miss_rate: float
    max_consecutive_misses: int
    skipped_release_count: int
    body_error_count: int
    jitter_us: float
    wake_latency_us: dict[str, float]
    body_start_latency_us: dict[str, float]
    exec_time_us: dict[str, float]
    gil_wait_us: dict[str, float]
    gil_wait_count: int
    gil_contended_cycles: int
    late_share: dict[str, float]
    minor_faults: int
    involuntary_ctx_switches: int
    torn: bool
    wake_latency_histogram: LatencyHistogram = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the histogram is left out)."""
        return {
            "name": self.name,
            "state": self.state,
            "period_us": self.period_us,
            "deadline_us": self.deadline_us,
            "cycle_count": self.cycle_count,
            "deadline_miss_count": self.deadline_miss_count,
            "deadline_miss_rate": self.deadline_miss_rate,
            "max_consecutive_misses": self.max_consecutive_misses,
            "skipped_release_count": self.skipped_release_count,
            "body_error_count": self.body_error_count,
            "jitter_us": self.jitter_us,
            "wake_latency_us": dict(self.wake_latency_us),
            "body_start_latency_us": dict(self.body_start_latency_us),
            "exec_time_us": dict(self.exec_time_us),
            "gil_wait_us": dict(self.gil_wait_us),
            "gil_wait_count": self.gil_wait_count,
            "gil_contended_cycles": self.gil_contended_cycles,
            "late_share": dict(self.late_share),
            "minor_faults": self.minor_faults,
            "involuntary_ctx_switches": self.involuntary_ctx_switches,
            "torn": self.torn,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The :meth:`to_dict` fields as JSON."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self, *, histogram: bool = True) -> str:
        """A readable report; with ``histogram``, a text histogram of wake-up latency."""
        lines = [
            f'cycle thread "{self.name}" ({self.state}): {self.cycle_count} cycles, '
            f"period {self.period_us:g} us, deadline {self.deadline_us:g} us",
            f"deadline misses: {self.deadline_miss_count} (rate {self.deadline_miss_rate:.6f}), "
            f"max consecutive {self.max_consecutive_misses}, "
            f"skipped releases {self.skipped_release_count}, "
            f"body errors {self.body_error_count}",
            f"jitter (stddev of wake-up latency): {self.jitter_us:.1f} us",
            "",
            f"{'(us)':<20}{'min':>10}{'avg':>10}{'p50':>10}{'p99':>10}{'p99.9':>10}{'max':>10}",
        ]
        rows = [
            ("wake-up latency", self.wake_latency_us),
            ("body-start latency", self.body_start_latency_us),
            ("execution time", self.exec_time_us),
        ]
        if self.gil_wait_count:
            rows.append(("GIL wait", self.gil_wait_us))
        for label, s in rows:
            cells = "".join(f"{s[k]:>10.1f}" for k in ("min", "avg", "p50", "p99", "p999", "max"))
            lines.append(f"{label:<20}{cells}")
        lines.append("")
        shares = ", ".join(f"> {k}: {v:.4f}" for k, v in self.late_share.items())
        lines.append(f"late wake-ups (share of cycles): {shares}")
        extra = (
            f"minor faults {self.minor_faults}, "
            f"involuntary context switches {self.involuntary_ctx_switches}"
        )
        if self.gil_wait_count:
            extra += f", GIL-contended cycles {self.gil_contended_cycles}"
        lines.append(extra)
        if self.torn:
            lines.append("warning: the stats kept changing while read (torn snapshot)")
        if histogram:
            lines.append("")
            lines.append("wake-up latency histogram (us):")
            lines.extend(text_histogram(self.wake_latency_histogram))
        return "\n".join(lines)


_EDGES_US: tuple[float, ...] = (
    0.0,
    *(m * 10.0**e for e in range(10) for m in (1.0, 2.0, 5.0)),
)


def text_histogram(h: LatencyHistogram, *, width: int = 40) -> list[str]:
    """Lines of a text histogram of ``h`` over 1-2-5 µs bins (bars scaled to the fullest bin).

    A bucket goes to the bin holding its midpoint, so a value within ~1.5 % of
    a bin edge may be shown in the neighbouring bin.
    """
    if h.count == 0:
        return ["  (no samples)"]
    edges_ns = np.asarray(_EDGES_US, dtype=np.float64) * 1e3
    mid = (_LOWER.astype(np.float64) + _UPPER.astype(np.float64)) / 2
    which = np.searchsorted(edges_ns, mid, side="right") - 1
    bins = np.bincount(which, weights=h.counts.astype(np.float64), minlength=len(edges_ns))
    bins[-1] += float(h.overflow)
    nonzero = np.flatnonzero(bins)
    first, last = int(nonzero[0]), int(nonzero[-1])
    peak = float(bins[first : last + 1].max())
    out = []
    for i in range(first, last + 1):
        lo = _EDGES_US[i]
        hi = f"{_EDGES_US[i + 1]:g}" if i + 1 < len(_EDGES_US) else "inf"
        n = int(bins[i])
        bar = "#" * (max(1, round(width * n / peak)) if n else 0)
        out.append(f"  {lo:>8g} .. {hi:<8} {n:>10}  {bar}".rstrip())
    return out


class PerfMonitor:
    """Latency and miss statistics of one cycle thread, from its stats block.

    ``source`` is a ``_core.bus.StatsSlot``, an :class:`mxrc.bus.Segment`
    (with ``name``: the stats block's name; default: the segment's only or
    ``"main"`` block), or anything with a ``stats()`` method returning
    :class:`CycleStats` (an Executive). Reading never perturbs the loop.
    """

    def __init__(self, source: object, name: str | None = None) -> None:
        from mxrc.bus import Segment

        self._source = source
        self._name = name
        self._read: Callable[[], CycleStats]
        if isinstance(source, Segment):
            seg = source
            self._read = lambda: seg.stats(name)
        elif isinstance(source, _core.bus.StatsSlot):
            slot = source
            self._read = lambda: read_stats(slot)
        elif isinstance(source, StatsSource):
            src = source
            self._read = src.stats
        else:
            raise TypeError(
                "PerfMonitor source must be a StatsSlot, a Segment (and a name) or have a "
                f"stats() method; got {type(source).__name__}"
            )

    def stats(self) -> CycleStats:
        """A fresh snapshot."""
        return self._read()

    def report(
        self,
        late_thresholds_us: Sequence[float] = (100, 1000),
        *,
        late_thresholds_periods: Sequence[float] = (),
        stats: CycleStats | None = None,
    ) -> PerfReport:
        """Summarise a fresh snapshot (or ``stats``) into a :class:`PerfReport`.

        ``late_thresholds_us`` and ``late_thresholds_periods`` (multiples of
        the period, e.g. ``0.1``) give the ``late_share`` entries.
        """
        return build_report(
            stats if stats is not None else self.stats(),
            late_thresholds_us=late_thresholds_us,
            late_thresholds_periods=late_thresholds_periods,
        )


def build_report(
    s: CycleStats,
    *,
    late_thresholds_us: Sequence[float] = (100, 1000),
    late_thresholds_periods: Sequence[float] = (),
) -> PerfReport:
    """The :class:`PerfReport` of a snapshot."""
    late: dict[str, float] = {}
    for us in late_thresholds_us:
        late[_late_key_us(us)] = s.wake_latency.share_above(us * 1e3)
    for p in late_thresholds_periods:
        late[_late_key_periods(p)] = s.wake_latency.share_above(p * s.period_ns)
    return PerfReport(
        name=s.name,
        state=s.state.name,
        period_us=s.period_ns / 1e3,
        deadline_us=s.deadline_ns / 1e3,
        cycle_count=s.cycle_count,
        deadline_miss_count=s.deadline_miss_count,
        deadline_miss_rate=s.deadline_miss_rate,
        max_consecutive_misses=s.max_consecutive_misses,
        skipped_release_count=s.skipped_release_count,
        body_error_count=s.body_error_count,
        jitter_us=s.jitter_ns / 1e3,
        wake_latency_us=s.wake_latency.summary_us(),
        body_start_latency_us=s.body_start_latency.summary_us(),
        exec_time_us=s.exec_time.summary_us(),
        gil_wait_us=s.gil_wait.summary_us(),
        gil_wait_count=s.gil_wait.count,
        gil_contended_cycles=s.gil_contended_cycles,
        late_share=late,
        minor_faults=s.minor_faults,
        involuntary_ctx_switches=s.involuntary_ctx_switches,
        torn=s.torn,
        wake_latency_histogram=s.wake_latency,
    )
