"""Pure functions of the latency harness (ARCHITECTURE §6): distributions,
percentiles from histograms, late shares, paired bootstrap intervals, the
cyclictest histogram parser, the interpreter's name, the Markdown table.

No I/O, no timing: unit-tested by tests/test_bench_harness.py.
"""

from __future__ import annotations

import math
import os
import platform
import random
import re
import statistics
import sys
import sysconfig
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LATE_THRESHOLDS_US",
    "CyclictestResult",
    "Distribution",
    "Interval",
    "RunMetrics",
    "bootstrap_diff",
    "bootstrap_ratio",
    "interpreter_info",
    "markdown_table",
    "parse_cyclictest",
    "run_metrics",
]


@dataclass(frozen=True)
class Distribution:
    """A latency distribution as sorted, non-overlapping buckets.

    ``buckets`` holds ``(lower_ns, upper_ns, count)`` with ``lower <= value <
    upper`` for every value counted; ``overflow`` values were above the last
    bucket (cyclictest's "Histogram Overflows") and lie in ``[overflow_from_ns,
    max_ns]``. Raw samples become 1 ns buckets, cyclictest's histogram 1 µs
    buckets, mxrc's log-linear histogram its own buckets (≈3 % wide).
    """

    buckets: tuple[tuple[int, int, int], ...]
    overflow: int = 0
    overflow_from_ns: int = 0
    max_ns: int | None = None
    min_ns: int | None = None

    def __post_init__(self) -> None:
        prev_upper = None
        for lower, upper, count in self.buckets:
            if upper <= lower or count < 0:
                raise ValueError(f"bad bucket ({lower}, {upper}, {count})")
            if prev_upper is not None and lower < prev_upper:
                raise ValueError("buckets must be sorted and must not overlap")
            prev_upper = upper
        if self.overflow < 0:
            raise ValueError("overflow must be >= 0")

    @property
    def count(self) -> int:
        """Number of values, overflow included."""
        return sum(c for _, _, c in self.buckets) + self.overflow

    @classmethod
    def from_samples(cls, samples_ns: Iterable[int]) -> Distribution:
        """Exact distribution of raw samples (one 1 ns bucket per distinct value)."""
        counts: dict[int, int] = {}
        for v in samples_ns:
            iv = int(v)
            counts[iv] = counts.get(iv, 0) + 1
        keys = sorted(counts)
        return cls(
            buckets=tuple((k, k + 1, counts[k]) for k in keys),
            min_ns=keys[0] if keys else None,
            max_ns=keys[-1] if keys else None,
        )

    @classmethod
    def from_buckets(
        cls,
        lowers_ns: Sequence[int],
        uppers_ns: Sequence[int],
        counts: Sequence[int],
        *,
        overflow: int = 0,
        overflow_from_ns: int = 0,
        min_ns: int | None = None,
        max_ns: int | None = None,
    ) -> Distribution:
        """From parallel bucket arrays (empty buckets are dropped)."""
        if not len(lowers_ns) == len(uppers_ns) == len(counts):
            raise ValueError("lowers, uppers and counts must have the same length")
        buckets = tuple(
            (int(lo), int(hi), int(c))
            for lo, hi, c in zip(lowers_ns, uppers_ns, counts, strict=True)
            if int(c) > 0
        )
        return cls(buckets, overflow, overflow_from_ns, max_ns, min_ns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``from_dict`` reads it back)."""
        return {
            "buckets": [list(b) for b in self.buckets],
            "overflow": self.overflow,
            "overflow_from_ns": self.overflow_from_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Distribution:
        """Inverse of :meth:`to_dict`."""
        return cls(
            buckets=tuple((int(a), int(b), int(c)) for a, b, c in d["buckets"]),
            overflow=int(d.get("overflow", 0)),
            overflow_from_ns=int(d.get("overflow_from_ns", 0)),
            max_ns=d.get("max_ns"),
            min_ns=d.get("min_ns"),
        )

    def percentile_ns(self, q: float) -> float:
        """Value at rank ``ceil(q·N)`` (nearest rank), interpolated linearly inside
        its bucket; ``q`` in 0..1. A rank inside the overflow gives ``max_ns``
        (or ``inf`` when unknown). ``nan`` for an empty distribution."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be within 0..1, got {q}")
        n = self.count
        if n == 0:
            return math.nan
        rank = max(1, math.ceil(q * n))
        cum = 0
        for lower, upper, count in self.buckets:
            if count and cum + count >= rank:
                if upper - lower == 1:
                    return float(lower)
                return lower + (upper - lower) * (rank - cum) / count
            cum += count
        return float(self.max_ns) if self.max_ns is not None else math.inf

    def share_above(self, threshold_ns: float) -> float:
        """Share (ratio 0..1) of values strictly above ``threshold_ns``; a bucket
        that straddles the threshold counts in proportion (uniform inside)."""
        n = self.count
        if n == 0:
            return math.nan
        above = 0.0
        for lower, upper, count in self.buckets:
            if lower > threshold_ns:
                above += count
            elif upper - 1 > threshold_ns:
                # values lower..upper-1 (integers); those > threshold
                n_values = upper - lower
                n_above = (upper - 1) - math.floor(threshold_ns)
                above += count * n_above / n_values
        if self.overflow:
            if self.overflow_from_ns > threshold_ns:
                above += self.overflow
            elif self.max_ns is not None and self.max_ns > threshold_ns:
                span = self.max_ns - self.overflow_from_ns + 1
                above += self.overflow * (self.max_ns - math.floor(threshold_ns)) / span
        return above / n

    def mean_ns(self) -> float:
        """Mean from bucket midpoints (overflow at ``max_ns``)."""
        n = self.count
        if n == 0:
            return math.nan
        total = sum(_mid(lo, hi) * c for lo, hi, c in self.buckets)
        if self.overflow:
            total += self.overflow * float(
                self.max_ns if self.max_ns is not None else self.overflow_from_ns
            )
        return total / n

    def stddev_ns(self) -> float:
        """Population standard deviation from bucket midpoints (overflow at ``max_ns``)."""
        n = self.count
        if n == 0:
            return math.nan
        mean = self.mean_ns()
        acc = sum(c * (_mid(lo, hi) - mean) ** 2 for lo, hi, c in self.buckets)
        if self.overflow:
            top = float(self.max_ns if self.max_ns is not None else self.overflow_from_ns)
            acc += self.overflow * (top - mean) ** 2
        return math.sqrt(acc / n)


def _mid(lower: int, upper: int) -> float:
    return (lower + upper - 1) / 2.0


# --- cyclictest ---------------------------------------------------------------

_CT_BUCKET = re.compile(r"^(\d+)((?:\s+\d+)+)\s*$")
_CT_FIELD = re.compile(
    r"^#\s*(Total|Min Latencies|Avg Latencies|Max Latencies|Histogram Overflows)"
    r":\s*(.*)$"
)


@dataclass(frozen=True)
class CyclictestResult:
    """One cyclictest thread's histogram (``-h``/``--histogram``), in ns."""

    distribution: Distribution
    total: int
    min_ns: int
    avg_ns: int
    max_ns: int
    overflows: int


def parse_cyclictest(text: str, thread: int = 0) -> CyclictestResult:
    """Parse cyclictest's ``-h N`` output (µs buckets, one column per thread).

    Lines ``NNNNNN c0 c1 ...`` are the buckets (value in µs, counts per
    thread), then ``# Total:``, ``# Min/Avg/Max Latencies:``, ``# Histogram
    Overflows:`` with one column per thread. Values become nanoseconds; bucket
    ``k`` µs covers ``[k, k+1)`` µs. Raises ``ValueError`` on output without a
    histogram or without the thread.
    """
    lowers: list[int] = []
    counts: list[int] = []
    fields: dict[str, list[int]] = {}
    in_hist = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# Histogram") and not line.startswith("# Histogram Overflow"):
            in_hist = True
            continue
        m = _CT_FIELD.match(line)
        if m:
            fields[m.group(1)] = [int(x) for x in m.group(2).split() if x.isdigit()]
            continue
        if in_hist:
            mb = _CT_BUCKET.match(line)
            if mb:
                cols = mb.group(2).split()
                if thread >= len(cols):
                    raise ValueError(f"cyclictest output has no thread {thread}")
                lowers.append(int(mb.group(1)))
                counts.append(int(cols[thread]))
    if not lowers:
        raise ValueError("no histogram in the cyclictest output (run it with -h N)")
    for key in ("Total", "Min Latencies", "Avg Latencies", "Max Latencies"):
        if key not in fields or len(fields[key]) <= thread:
            raise ValueError(f"cyclictest output lacks '# {key}:' for thread {thread}")
    overflows = fields.get("Histogram Overflows", [0] * (thread + 1))
    overflow = overflows[thread] if thread < len(overflows) else 0
    us = 1000
    dist = Distribution.from_buckets(
        [lo * us for lo in lowers],
        [(lo + 1) * us for lo in lowers],
        counts,
        overflow=overflow,
        overflow_from_ns=(max(lowers) + 1) * us,
        min_ns=fields["Min Latencies"][thread] * us,
        max_ns=fields["Max Latencies"][thread] * us,
    )
    return CyclictestResult(
        distribution=dist,
        total=fields["Total"][thread],
        min_ns=fields["Min Latencies"][thread] * us,
        avg_ns=fields["Avg Latencies"][thread] * us,
        max_ns=fields["Max Latencies"][thread] * us,
        overflows=overflow,
    )


# --- per-run metrics ----------------------------------------------------------

LATE_THRESHOLDS_US = (100, 1000)


@dataclass(frozen=True)
class RunMetrics:
    """What the protocol keeps of one run of one latency distribution."""

    count: int
    p50_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    stddev_us: float
    late_share: dict[str, float] = field(default_factory=dict)  # {"100us": ratio, ...}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "count": self.count,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "mean_us": self.mean_us,
            "stddev_us": self.stddev_us,
            "late_share": dict(self.late_share),
        }


def run_metrics(
    dist: Distribution, thresholds_us: Sequence[int] = LATE_THRESHOLDS_US
) -> RunMetrics:
    """p50/p99/p99.9, mean, standard deviation and late shares of one run."""
    return RunMetrics(
        count=dist.count,
        p50_us=dist.percentile_ns(0.50) / 1e3,
        p99_us=dist.percentile_ns(0.99) / 1e3,
        p999_us=dist.percentile_ns(0.999) / 1e3,
        mean_us=dist.mean_ns() / 1e3,
        stddev_us=dist.stddev_ns() / 1e3,
        late_share={f"{t}us": dist.share_above(t * 1000) for t in thresholds_us},
    )


# --- paired bootstrap -----------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap 95 % interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {"value": self.value, "low": self.low, "high": self.high}


def _bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    combine: Callable[[float, float], float],
    *,
    n_boot: int,
    confidence: float,
    seed: int | None,
) -> Interval:
    if len(a) != len(b) or not a:
        raise ValueError("need the same number (>= 1) of candidate and baseline runs (pairs)")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be within 0..1 (exclusive)")
    point = combine(statistics.median(a), statistics.median(b))
    rng = random.Random(seed)
    n = len(a)
    stats: list[float] = []
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        stats.append(
            combine(statistics.median(a[i] for i in idx), statistics.median(b[i] for i in idx))
        )
    stats.sort()
    alpha = (1.0 - confidence) / 2.0
    lo = stats[min(n_boot - 1, max(0, math.floor(alpha * n_boot)))]
    hi = stats[min(n_boot - 1, max(0, math.ceil((1.0 - alpha) * n_boot) - 1))]
    return Interval(point, lo, hi)


def _ratio(x: float, y: float) -> float:
    if y == 0:
        return math.inf if x > 0 else (math.nan if x == 0 else -math.inf)
    return x / y


def bootstrap_ratio(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> Interval:
    """median(candidate) / median(baseline) with a paired percentile-bootstrap
    interval: pair ``i`` (run i of each, interleaved) is resampled as a unit."""
    return _bootstrap(candidate, baseline, _ratio, n_boot=n_boot, confidence=confidence, seed=seed)


def bootstrap_diff(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> Interval:
    """median(candidate) − median(baseline) with a paired percentile-bootstrap interval."""
    return _bootstrap(
        candidate, baseline, lambda x, y: x - y, n_boot=n_boot, confidence=confidence, seed=seed
    )


# --- interpreter, table ---------------------------------------------------------


def interpreter_info() -> dict[str, Any]:
    """Which Python ran this: path, version, and whether it is a PGO build.

    PGO is read from the build configuration: ``--enable-optimizations`` in
    ``CONFIG_ARGS``, or a Debian/Ubuntu distribution build (which is built with
    PGO and LTO by the distribution's own rules).
    """
    config_args = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    if "--enable-optimizations" in config_args:
        pgo, why = True, "configured with --enable-optimizations"
    elif sys.executable.startswith("/usr/bin/") and os.path.exists("/etc/debian_version"):
        pgo, why = True, "Debian build (PGO + LTO by the distribution's rules)"
    else:
        pgo, why = False, "configured without --enable-optimizations"
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": " ".join(platform.python_build()),
        "compiler": platform.python_compiler(),
        "pgo": pgo,
        "pgo_evidence": why,
    }


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats get 3 significant digits, None is "—"."""

    def cell(v: object) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            if math.isinf(v):
                return "∞" if v > 0 else "−∞"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
