"""Assertions on cycle statistics for jitter tests, with failure messages that explain.

Use them on the :class:`~mxrc.rt.CycleStats` of a run (the ``mxrc_cycles``
pytest fixture, :meth:`mxrc.Executive.run`, ``Executive.stats()``) or on an
Executive itself::

    from mxrc.testing import assert_late_share, assert_percentile

    stats = mxrc_cycles(body, cycles=2000, period_us=1000)
    assert_late_share(stats, above_us=100, at_most=0.01)
    assert_percentile(stats, "wake_latency", q=99, at_most_us=250)

Each raises :class:`AssertionError` naming the measured value, the bound and
a summary of the run, so a failure in CI says what was late and by how much.
Rates and shares are ratios 0..1; times are µs. Percentiles come from the
stats block's log-linear histograms: a percentile is the upper bound of its
bucket (at most ~3 % above the true value, never below), so a check errs on
the strict side. Never bound the maximum on a virtual machine: the host's
pauses set it, not the code under test (docs/jitter-tests.md).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from mxrc.rt._perf import CycleStats, LatencyHistogram, StatsSource

__all__ = [
    "Metric",
    "assert_jitter",
    "assert_late_share",
    "assert_miss_rate",
    "assert_percentile",
]

Metric = Literal["wake_latency", "body_start_latency", "exec_time", "gil_wait"]
"""A latency histogram of :class:`~mxrc.rt.CycleStats` (ARCHITECTURE §1 definitions)."""

_LABELS: dict[str, str] = {
    "wake_latency": "wake-up latency",
    "body_start_latency": "body-start latency",
    "exec_time": "execution time",
    "gil_wait": "GIL wait",
}
# what one histogram sample is: GIL waits are counted per Python call, the rest per cycle
_SAMPLES: dict[str, str] = {"gil_wait": "Python body calls"}


def assert_late_share(
    stats: CycleStats | StatsSource,
    *,
    at_most: float,
    above_us: float | None = None,
    above_periods: float | None = None,
    metric: Metric = "wake_latency",
) -> None:
    """Assert that at most a share ``at_most`` (0..1) of the samples of ``metric`` exceed a bound.

    The bound is ``above_us`` (µs) or ``above_periods`` (a multiple of the
    period, e.g. ``0.1``): give exactly one. The default metric is the
    wake-up latency, the measurement protocol's "share of cycles later than
    100 µs / 1 ms". Inside the histogram bucket that straddles the bound,
    samples are taken as evenly spread (error below one bucket, ~3 %).
    """
    __tracebackhide__ = True
    st = _snapshot(stats)
    _check_ratio("at_most", at_most)
    if (above_us is None) == (above_periods is None):
        raise TypeError("assert_late_share needs exactly one of above_us= or above_periods=")
    if above_us is not None:
        _check_non_negative("above_us", above_us)
        bound_ns = above_us * 1e3
        bound = f"{above_us:g} us"
    else:
        assert above_periods is not None
        _check_non_negative("above_periods", above_periods)
        bound_ns = above_periods * st.period_ns
        bound = f"{above_periods:g} period ({bound_ns / 1e3:g} us)"
    h = _histogram(st, metric)
    share = h.share_above(bound_ns)
    if share <= at_most:
        return
    samples = _SAMPLES.get(metric, "cycles")
    raise AssertionError(
        f"{_LABELS[metric]} above {bound}: {round(share * h.count)} of {h.count} {samples} "
        f"({_percent(share)}); allowed at most {_percent(at_most)} "
        f"({_allowed(at_most, h.count, samples)})\n" + _context(st, metric)
    )


def assert_percentile(
    stats: CycleStats | StatsSource,
    metric: Metric = "wake_latency",
    *,
    q: float,
    at_most_us: float,
) -> None:
    """Assert that the ``q``-th percentile of ``metric`` is at most ``at_most_us`` µs.

    ``q`` is in percent: 50 (median), 99, 99.9; 100 is the maximum (not a
    target on a virtual machine). Values below 1 are refused because they
    are nearly always a ratio meant as a percentile (0.99 for 99).
    """
    __tracebackhide__ = True
    st = _snapshot(stats)
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 1 <= q <= 100:
        hint = f"; did you mean q={q * 100:g}?" if isinstance(q, float) and 0 < q < 1 else ""
        raise ValueError(
            f"q is a percentile in percent within 1..100 (99 for p99), got {q!r}{hint}"
        )
    _check_non_negative("at_most_us", at_most_us)
    h = _histogram(st, metric)
    value_us = h.percentile(q / 100) / 1e3
    if value_us <= at_most_us:
        return
    raise AssertionError(
        f"{_LABELS[metric]} p{q:g} is {value_us:.1f} us over {h.count} "
        f"{_SAMPLES.get(metric, 'cycles')}; allowed at most {at_most_us:g} us\n"
        + _context(st, metric)
        + "\n  (percentiles are histogram bucket upper bounds: at most ~3 % above the true value)"
    )


def assert_miss_rate(stats: CycleStats | StatsSource, *, at_most: float) -> None:
    """Assert that at most a share ``at_most`` (0..1) of cycles missed their deadline.

    A deadline miss is a cycle whose body ended after release + deadline;
    ``at_most=0`` asserts no miss at all.
    """
    __tracebackhide__ = True
    st = _snapshot(stats)
    _check_ratio("at_most", at_most)
    _require_cycles(st)
    rate = st.deadline_miss_rate
    if rate <= at_most:
        return
    raise AssertionError(
        f"deadline misses: {st.deadline_miss_count} of {st.cycle_count} cycles "
        f"({_percent(rate)}) ended after their deadline of {st.deadline_ns / 1e3:g} us; "
        f"allowed at most {_percent(at_most)} ({_allowed(at_most, st.cycle_count)}), "
        f"max consecutive {st.max_consecutive_misses}\n" + _context(st, "exec_time")
    )


def assert_jitter(stats: CycleStats | StatsSource, *, at_most_us: float) -> None:
    """Assert that the jitter (standard deviation of the wake-up latency) is at most ``at_most_us``.

    One host pause of a few ms moves a standard deviation a lot on a short
    run: prefer :func:`assert_late_share` and :func:`assert_percentile` on a
    virtual machine.
    """
    __tracebackhide__ = True
    st = _snapshot(stats)
    _check_non_negative("at_most_us", at_most_us)
    _require_cycles(st)
    jitter_us = st.jitter_ns / 1e3
    if jitter_us <= at_most_us:
        return
    raise AssertionError(
        f"jitter (standard deviation of wake-up latency) is {jitter_us:.1f} us over "
        f"{st.wake_latency.count} cycles; allowed at most {at_most_us:g} us\n"
        + _context(st, "wake_latency")
    )


# ------------------------------------------------------------ helpers


def _snapshot(stats: object) -> CycleStats:
    if isinstance(stats, CycleStats):
        return stats
    if isinstance(stats, StatsSource):
        return stats.stats()
    raise TypeError(
        "expected CycleStats (the result of mxrc_cycles(...) or Executive.run()) or an object "
        f"with a stats() method such as an Executive; got {type(stats).__name__}"
    )


def _histogram(st: CycleStats, metric: str) -> LatencyHistogram:
    __tracebackhide__ = True
    if metric not in _LABELS:
        raise ValueError(f"metric must be one of {', '.join(get_args(Metric))}; got {metric!r}")
    h: LatencyHistogram = getattr(st, metric)
    if h.count == 0:
        why = " (only Python bodies record it)" if metric == "gil_wait" else ""
        raise AssertionError(
            f"{_LABELS[metric]}: no samples in the stats of executive {st.name!r} "
            f"({st.cycle_count} cycles){why}; nothing to check"
        )
    return h


def _require_cycles(st: CycleStats) -> None:
    __tracebackhide__ = True
    if st.cycle_count == 0:
        raise AssertionError(f"executive {st.name!r} ran no cycle; nothing to check")


def _check_ratio(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} is a ratio within 0..1 (0.01 = 1 %), got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _allowed(share: float, total: int, what: str = "cycles") -> str:
    """How many of ``total`` samples a share allows, e.g. "20 cycles"."""
    n = math.floor(share * total + 1e-9)  # 0.29 * 100 is 28.999...
    return f"{n} {what[:-1]}" if n == 1 else f"{n} {what}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.3g} %"


def _distribution(label: str, h: LatencyHistogram) -> str:
    s = h.summary_us()
    return (
        f"  {label} (us): min {s['min']:.1f}  p50 {s['p50']:.1f}  p99 {s['p99']:.1f}  "
        f"p99.9 {s['p999']:.1f}  max {s['max']:.1f}"
    )


def _context(st: CycleStats, metric: str) -> str:
    """A few lines on the run, so a failure shows what the loop looked like."""
    lines = [
        f"  executive {st.name!r} ({st.state.name}): {st.cycle_count} cycles, "
        f"period {st.period_ns / 1e3:g} us, deadline {st.deadline_ns / 1e3:g} us",
        _distribution(_LABELS["wake_latency"], st.wake_latency),
    ]
    if metric != "wake_latency":
        lines.append(_distribution(_LABELS[metric], getattr(st, metric)))
    lines.append(
        f"  jitter {st.jitter_ns / 1e3:.1f} us; deadline misses {st.deadline_miss_count} "
        f"(rate {st.deadline_miss_rate:.4g}); skipped releases {st.skipped_release_count}"
    )
    if st.torn:
        lines.append("  warning: the stats kept changing while read (torn snapshot)")
    return "\n".join(lines)
