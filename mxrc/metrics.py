"""Prometheus metrics over the cycle stats: a ``prometheus_client`` collector.

:class:`RtCollector` reads stats blocks (never the cycle thread's time: a
stats read is a bounded seqlock copy) of executives in this process and/or
of an attached :class:`~mxrc.bus.Segment` (another process's instance) and
turns them into the contract metrics (upstream-facts §5, ARCHITECTURE
"Metrics"): counters ``mxrc_rt_cycle_count_total`` and
``mxrc_rt_deadline_miss_count_total``, the **windowed** gauge
``mxrc_rt_deadline_miss_rate`` (0..1), histograms ``mxrc_rt_cycle_time_us``
(execution time) and ``mxrc_rt_wake_latency_us``, ``mxrc_rt_jitter_us``,
``mxrc_cpu_affinity_info``, ``mxrc_cpu_current_core``, ``mxrc_numa_node`` and
``mxrc_numa_local_memory_percent``. Every series has a ``process`` label;
per-cycle-thread series also an ``executive`` label (the stats block's name).
Cycle threads with a ring set (in a segment) add ``mxrc_bus_ring_*`` series
(label ``ring``: pushed, dropped, popped, depth, capacity, admission drops by
priority, the sticky critical overflow), and a segment source the agent's
heartbeat age, pid and attaches (``mxrc_bus_agent_*``, ``docs/agent.md``).

Everything is computed when Prometheus scrapes (``collect()``), on the
scraping thread. Serve it from a process without a Python cycle body (the
agent, attaching the segment): a scrape holds the GIL for milliseconds.
See ``docs/metrics.md``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client import start_http_server as _prom_start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

from mxrc.bus import AgentHeartbeat, BusCounters, Priority, Segment, StatsSlot
from mxrc.rt._cgroup import cpuset_info
from mxrc.rt._isolation import isolated_cpus
from mxrc.rt._perf import CycleStats, LatencyHistogram, StatsSource, read_stats
from mxrc.rt._placement import ThreadPlacement, thread_placement
from mxrc.rt._residency import sample_page_residency
from mxrc.rt._state import RtState
from mxrc.rt._topology import NumaTopology, numa_topology

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from mxrc.config import MxrcConfig

__all__ = [
    "DEFAULT_BUCKETS_US",
    "DEFAULT_BUS_PROCESS_LABEL",
    "DEFAULT_PROCESS_LABEL",
    "DEFAULT_RESIDENCY_INTERVAL_S",
    "DEFAULT_WINDOW_S",
    "BusCollector",
    "MetricsServer",
    "RtCollector",
    "Units",
    "start_http_server",
]

_log = logging.getLogger("mxrc.metrics")

Units = Literal["us", "seconds"]

DEFAULT_BUCKETS_US: tuple[float, ...] = tuple(
    m * 10.0**e for e in range(7) for m in (1.0, 2.0, 5.0) if m * 10.0**e <= 1e6
)
"""Histogram bucket bounds in µs: 1-2-5 steps from 1 µs to 1 s."""

DEFAULT_PROCESS_LABEL = "rt"
"""Default ``process`` label: the role that runs the cycle threads."""

DEFAULT_WINDOW_S = 60.0
"""Sliding window of ``mxrc_rt_deadline_miss_rate`` (``perf_monitor.json`` ``rt.window_s``)."""

DEFAULT_RESIDENCY_INTERVAL_S = 60.0
"""How often ``numa_maps`` is read on a multi-node host (``residency.sample_interval_s``)."""

_LABELS = ("process", "executive")
# prometheus_client's own rendering of a bound ("1e+06", as Go prints it).
_float_to_go = cast(Callable[[float], str], _untyped_float_to_go)
_UPPER_NS = LatencyHistogram.empty().upper_ns
_MAX_OBSERVATIONS = 4096  # per cycle thread, for the miss-rate window
# isolcpus and cpuset partitions change at boot or by an admin: probing them
# costs more than the rest of a scrape, so a result is kept this long.
_ISOLATION_TTL_S = 60.0
_ISOLATION_MODES = ("NONE", "ISOLCPUS", "CGROUPS", "HYBRID")
# A finished or not yet started thread has no CPU to report.
_NO_THREAD_STATES = frozenset({RtState.INIT, RtState.SHUTDOWN})


# ---------------------------------------------------------------- /proc readers


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Thread:
    """One cycle thread's snapshot, the process running it (None: unknown or ended)."""

    process: str
    stats: CycleStats
    pid: int | None
    rings: Any = None
    """The thread's ring set (``_core.bus.RingSet``), None for a private stats block."""


@dataclass(frozen=True)
class _Source:
    obj: object
    process: str
    read: Callable[[], list[_Thread]]
    agent: Callable[[], AgentHeartbeat] | None = None
    """The segment's agent heartbeat words (segment sources)."""


def _segment_reader(seg: Segment, process: str) -> Callable[[], list[_Thread]]:
    def read() -> list[_Thread]:
        # A claimed slot's claimer runs the thread; a released one has ended.
        pids: dict[str, int] = {}
        for slot in seg.slots():
            if slot["state"] == "claimed":
                pids.setdefault(slot["name"], int(slot["claimer_pid"]))
        return [
            _Thread(process, stats, pids.get(name), _segment_rings(seg, name))
            for name, stats in seg.stats_all().items()
        ]

    return read


def _segment_rings(seg: Segment, name: str) -> Any:
    try:
        return seg.rings(name).core
    except LookupError:  # released and reused between the two reads
        return None


def _local_reader(
    read_one: Callable[[], CycleStats], process: str, slot: Any = None
) -> Callable[[], list[_Thread]]:
    pid = os.getpid()
    rings = getattr(slot, "rings", None)
    return lambda: [_Thread(process, read_one(), pid, rings)]


# ---------------------------------------------------------------- the window


@dataclass(frozen=True)
class _Observation:
    t: float
    cycles: int
    misses: int


@dataclass
class _MissWindow:
    """Observations of one cycle thread's counters, for the windowed miss rate."""

    start_ns: int
    seen: deque[_Observation] = field(default_factory=lambda: deque(maxlen=_MAX_OBSERVATIONS))

    def rate(self, now: _Observation, window_s: float) -> float:
        last = self.seen[-1] if self.seen else None
        if last is not None and (now.cycles < last.cycles or now.misses < last.misses):
            self.seen.clear()  # counters went back: a new run in a reused slot
        first = not self.seen
        self.seen.append(now)
        # Keep the newest observation at least window_s old as the baseline.
        while len(self.seen) > 2 and self.seen[1].t <= now.t - window_s:
            self.seen.popleft()
        # The first look has no history: the thread's whole run (from zero).
        base = _Observation(now.t, 0, 0) if first else self.seen[0]
        cycles = now.cycles - base.cycles
        return (now.misses - base.misses) / cycles if cycles > 0 else 0.0


@dataclass
class _ResidencyCache:
    t: float
    node: int | None
    percent: float | None


# ---------------------------------------------------------------- the collector


@dataclass
class _Families:
    """The metric families of one collection."""

    counters: dict[str, CounterMetricFamily]
    gauges: dict[str, GaugeMetricFamily]
    histograms: dict[str, HistogramMetricFamily]
    state: GaugeMetricFamily
    affinity: GaugeMetricFamily
    residency: GaugeMetricFamily

    def all(self) -> Iterator[Metric]:
        yield from self.counters.values()
        yield from self.gauges.values()
        yield from self.histograms.values()
        yield self.state
        yield self.affinity
        yield self.residency


def _time_name(base: str, units: Units) -> str:
    return f"{base}_{'us' if units == 'us' else 'seconds'}"


_COUNTERS = {
    "cycles": ("mxrc_rt_cycle_count_total", "Cycles run (bodies executed) by the cycle thread."),
    "misses": (
        "mxrc_rt_deadline_miss_count_total",
        "Cycles whose body finished after release + deadline.",
    ),
    "skipped": (
        "mxrc_rt_skipped_release_count_total",
        "Releases skipped after overruns (overrun policy skip).",
    ),
    "errors": (
        "mxrc_rt_body_error_count_total",
        "Body calls that failed (raised or returned != 0).",
    ),
    "faults": (
        "mxrc_rt_minor_faults_total",
        "Minor page faults of the cycle thread (getrusage, sampled every ~100 cycles).",
    ),
    "ctxsw": (
        "mxrc_rt_involuntary_context_switches_total",
        "Involuntary context switches of the cycle thread (sampled every ~100 cycles).",
    ),
}

_HISTOGRAMS = {
    "exec": ("mxrc_rt_cycle_time", "Execution time of the cycle's bodies (body end - body start)."),
    "wake": ("mxrc_rt_wake_latency", "Wake-up latency: actual wake - scheduled release."),
    "start": (
        "mxrc_rt_body_start_latency",
        "Body-start latency: body start - release (includes taking the GIL).",
    ),
    "gil": ("mxrc_rt_gil_wait", "Time a Python body waited for the GIL (Python tier only)."),
}


class RtCollector:
    """A ``prometheus_client`` collector over cycle-thread stats blocks.

    ``sources``: :class:`~mxrc.rt.Executive` objects (or anything with a
    ``stats()`` method returning :class:`~mxrc.rt.CycleStats`, or a
    ``StatsSlot``) of this process, and/or :class:`~mxrc.bus.Segment` objects
    (every stats block in it; the cycle threads of the slot's claimer). More
    with :meth:`add`. ``process`` is the ``process`` label of every series
    (default ``"rt"``; per source with :meth:`add`).

    ``units``: ``"us"`` (default) gives the contract names
    (``mxrc_rt_cycle_time_us``, values in µs); ``"seconds"`` gives Prometheus
    base units (``mxrc_rt_cycle_time_seconds``, values in s), which
    ``promtool check metrics`` accepts without its "abbreviated units" lint.

    ``window_s``: sliding window of ``mxrc_rt_deadline_miss_rate``.
    ``buckets_us``: histogram bounds (µs, ascending; +Inf is added).
    ``isolation_mode``: the ``isolation_mode`` label of
    ``mxrc_cpu_affinity_info`` (the configured mode); None derives it from
    the host for each thread (``ISOLCPUS`` when all its CPUs are isolated by
    the kernel, ``CGROUPS`` when it sits in an exclusive cpuset partition,
    ``HYBRID`` for both, else ``NONE``). ``residency``: report
    ``mxrc_numa_local_memory_percent`` (default True); ``numa_maps`` is read
    at most every ``residency_interval_s`` (default 60 s) and never on a
    one-node host. ``config`` (an :class:`~mxrc.config.MxrcConfig`) supplies
    ``isolation_mode`` (``cpu_affinity.rt``), ``window_s``
    (``perf_monitor.rt``) and ``residency``/``residency_interval_s``
    (``numa_binding.rt.residency``) where those arguments are None.
    ``clock`` (seconds, monotonic), ``procfs_root`` and ``sysfs_root`` are
    for tests.
    """

    def __init__(
        self,
        *sources: object,
        process: str = DEFAULT_PROCESS_LABEL,
        units: Units = "us",
        window_s: float | None = None,
        buckets_us: Sequence[float] = DEFAULT_BUCKETS_US,
        isolation_mode: str | None = None,
        residency: bool | None = None,
        residency_interval_s: float | None = None,
        config: MxrcConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        procfs_root: str = "/proc",
        sysfs_root: str = "/sys",
    ) -> None:
        if units not in ("us", "seconds"):
            raise ValueError(f"units must be 'us' or 'seconds', got {units!r}")
        if config is not None:
            if window_s is None:
                window_s = config.perf_monitor.rt.window_s
            if isolation_mode is None:
                isolation_mode = config.cpu_affinity.rt.isolation_mode
            res = config.numa_binding.rt.residency
            if residency is None:
                residency = res.enabled
            if residency_interval_s is None:
                residency_interval_s = res.sample_interval_s
        if isolation_mode is not None and isolation_mode not in _ISOLATION_MODES:
            raise ValueError(
                f"isolation_mode must be one of {', '.join(_ISOLATION_MODES)} or None (derived "
                f"from the host), got {isolation_mode!r}"
            )
        window = DEFAULT_WINDOW_S if window_s is None else float(window_s)
        if not window > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
        interval = (
            DEFAULT_RESIDENCY_INTERVAL_S if residency_interval_s is None else residency_interval_s
        )
        if not interval > 0:
            raise ValueError(f"residency_interval_s must be > 0 seconds, got {interval!r}")
        self._units: Units = units
        self._scale = 1e-3 if units == "us" else 1e-9  # from ns
        self._bounds_us = _check_buckets(buckets_us)
        bounds_ns = np.asarray([round(b * 1e3) for b in self._bounds_us], dtype=np.uint64)
        # A bucket le=X counts the fine buckets lying wholly at or below X.
        self._fine_index = np.searchsorted(_UPPER_NS, bounds_ns, side="right").astype(np.int64) - 1
        unit_scale = 1.0 if units == "us" else 1e-6
        self._le = [_float_to_go(b * unit_scale) for b in self._bounds_us]
        self._window_s = window
        self._isolation_mode = isolation_mode
        self._residency_interval_s = interval if residency in (None, True) else None
        self._clock = clock
        self._procfs_root = procfs_root
        self._sysfs_root = sysfs_root
        self._default_process = process
        self._lock = threading.Lock()
        self._sources: list[_Source] = []
        self._windows: dict[tuple[str, str], _MissWindow] = {}
        self._residency: dict[int, _ResidencyCache] = {}
        self._topology: NumaTopology | None = None
        self._warned: set[tuple[str, str]] = set()
        self._isolation: dict[tuple[int | None, frozenset[int]], tuple[float, str]] = {}
        for source in sources:
            self.add(source)

    # ------------------------------------------------------------ sources

    @property
    def units(self) -> Units:
        """``"us"`` (contract names) or ``"seconds"`` (base units)."""
        return self._units

    @property
    def window_s(self) -> float:
        """Sliding window of the deadline-miss rate, seconds."""
        return self._window_s

    def add(self, source: object, *, process: str | None = None) -> None:
        """Collect from ``source`` too (see the class doc), labelled ``process``."""
        label = self._default_process if process is None else process
        agent: Callable[[], AgentHeartbeat] | None = None
        if isinstance(source, Segment):
            read = _segment_reader(source, label)
            agent = source.agent_heartbeat
        elif isinstance(source, StatsSource):
            read = _local_reader(source.stats, label, getattr(source, "stats_slot", None))
        elif isinstance(source, StatsSlot):
            slot = source
            read = _local_reader(lambda: read_stats(slot), label, slot)
        else:
            raise TypeError(
                "a metrics source must be an Executive (or have a stats() method), a StatsSlot "
                f"or an mxrc.bus.Segment; got {type(source).__name__}"
            )
        with self._lock:
            if any(s.obj is source for s in self._sources):
                raise ValueError(f"{source!r} is already a source of this collector")
            self._sources.append(_Source(source, label, read, agent))

    def remove(self, source: object) -> None:
        """Stop collecting from ``source``; ValueError when it is not a source."""
        with self._lock:
            for i, s in enumerate(self._sources):
                if s.obj is source:
                    del self._sources[i]
                    return
        raise ValueError(f"{source!r} is not a source of this collector")

    @property
    def sources(self) -> list[object]:
        """The sources, in the order added."""
        with self._lock:
            return [s.obj for s in self._sources]

    # ------------------------------------------------------------ prometheus_client API

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples (lets a registry check names up front)."""
        return itertools.chain(self._families().all(), _RingFamilies().all())

    def collect(self) -> Iterator[Metric]:
        """Read every source now and yield the metric families."""
        threads = self._read_threads()
        now = self._clock()
        fam = self._families()
        ring_fam = _RingFamilies()
        placements: dict[tuple[str, str], ThreadPlacement] = {}
        with self._lock:
            live: set[tuple[str, str]] = set()
            for th in threads:
                key = (th.process, th.stats.name)
                live.add(key)
                labels = [th.process, th.stats.name]
                if th.rings is not None:
                    ring_fam.add_rings(labels, th.rings)
                self._add_counters(fam, labels, th.stats)
                self._add_histograms(fam, labels, th.stats)
                self._add_gauges(fam, labels, th.stats, self._miss_rate(key, th.stats, now))
                placement = self._placement(th)
                if placement is not None:
                    placements[key] = placement
                    self._add_placement(fam, labels, th, placement)
            for key in set(self._windows) - live:
                del self._windows[key]
            self._add_residency(fam, threads, placements, now)
            sources = list(self._sources)
        for source in sources:
            if source.agent is not None:
                try:
                    ring_fam.add_agent(source.process, source.agent())
                except Exception as exc:  # one broken source must not fail the scrape
                    _log.warning("metrics: cannot read the agent words of %r: %s", source.obj, exc)
        return itertools.chain(fam.all(), ring_fam.all())

    # ------------------------------------------------------------ collection helpers

    def _read_threads(self) -> list[_Thread]:
        with self._lock:
            sources = list(self._sources)
        threads: list[_Thread] = []
        seen: set[tuple[str, str]] = set()
        for source in sources:
            try:
                found = source.read()
            except Exception as exc:  # one broken source must not fail the scrape
                _log.warning("metrics: cannot read %r: %s", source.obj, exc)
                continue
            for th in found:
                key = (th.process, th.stats.name)
                if key in seen:
                    if key not in self._warned:
                        self._warned.add(key)
                        _log.warning(
                            "metrics: two cycle threads labelled process=%r executive=%r; "
                            "only the first is reported (give the sources different process "
                            "labels or the executives different names)",
                            *key,
                        )
                    continue
                seen.add(key)
                threads.append(th)
        return threads

    def _families(self) -> _Families:
        u = self._units
        unit = "microseconds" if u == "us" else "seconds"
        counters = {
            k: CounterMetricFamily(name, doc, labels=_LABELS)
            for k, (name, doc) in _COUNTERS.items()
        }
        gauges = {
            "rate": GaugeMetricFamily(
                "mxrc_rt_deadline_miss_rate",
                f"Share (0..1) of the cycles in the last ~{self._window_s:g} s that missed "
                "their deadline (sliding window, not cumulative).",
                labels=_LABELS,
            ),
            "jitter": GaugeMetricFamily(
                _time_name("mxrc_rt_jitter", u),
                f"Standard deviation of the wake-up latency since the thread started, {unit}.",
                labels=_LABELS,
            ),
            "period": GaugeMetricFamily(
                _time_name("mxrc_rt_period", u), f"Cycle period, {unit}.", labels=_LABELS
            ),
            "deadline": GaugeMetricFamily(
                _time_name("mxrc_rt_deadline", u),
                f"Deadline after each release, {unit}.",
                labels=_LABELS,
            ),
            "core": GaugeMetricFamily(
                "mxrc_cpu_current_core",
                "CPU the cycle thread last ran on (/proc/<pid>/task/<tid>/stat).",
                labels=_LABELS,
            ),
            "node": GaugeMetricFamily(
                "mxrc_numa_node",
                "NUMA node of the CPU the cycle thread last ran on.",
                labels=_LABELS,
            ),
        }
        histograms = {
            k: HistogramMetricFamily(_time_name(base, u), f"{doc} In {unit}.", labels=_LABELS)
            for k, (base, doc) in _HISTOGRAMS.items()
        }
        return _Families(
            counters=counters,
            gauges=gauges,
            histograms=histograms,
            state=GaugeMetricFamily(
                "mxrc_rt_state",
                "1 for the cycle thread's current state (INIT, READY, RUNNING, PAUSED, "
                "SAFE_MODE, ERROR, SHUTDOWN), 0 for the others.",
                labels=[*_LABELS, "state"],
            ),
            affinity=GaugeMetricFamily(
                "mxrc_cpu_affinity_info",
                "1; configured_cores = the CPUs the cycle thread may run on, isolation_mode = "
                "NONE, ISOLCPUS, CGROUPS or HYBRID.",
                labels=[*_LABELS, "configured_cores", "isolation_mode"],
            ),
            residency=GaugeMetricFamily(
                "mxrc_numa_local_memory_percent",
                "Percent (0..100) of the process's resident memory on numa_node, the node of "
                "its cycle thread's CPUs (numa_maps, sampled rarely; 100 without reading on a "
                "one-node host).",
                labels=["process", "numa_node"],
            ),
        )

    def _add_counters(self, fam: _Families, labels: list[str], s: CycleStats) -> None:
        values = {
            "cycles": s.cycle_count,
            "misses": s.deadline_miss_count,
            "skipped": s.skipped_release_count,
            "errors": s.body_error_count,
            "faults": s.minor_faults,
            "ctxsw": s.involuntary_ctx_switches,
        }
        for key, value in values.items():
            fam.counters[key].add_metric(labels, float(value))

    def _add_histograms(self, fam: _Families, labels: list[str], s: CycleStats) -> None:
        hists = {
            "exec": s.exec_time,
            "wake": s.wake_latency,
            "start": s.body_start_latency,
            "gil": s.gil_wait,
        }
        for key, h in hists.items():
            fam.histograms[key].add_metric(labels, self._buckets(h), h.sum_ns * self._scale)

    def _buckets(self, h: LatencyHistogram) -> list[tuple[str, float]]:
        cumulative: npt.NDArray[np.uint64] = np.cumsum(h.counts, dtype=np.uint64)
        below = [int(cumulative[i]) if i >= 0 else 0 for i in self._fine_index]
        # count also holds the overflow (values above ~36 min) and is exact.
        total = max(h.count, int(cumulative[-1]) + h.overflow, below[-1])
        return [*zip(self._le, map(float, below), strict=True), ("+Inf", float(total))]

    def _add_gauges(self, fam: _Families, labels: list[str], s: CycleStats, rate: float) -> None:
        fam.gauges["rate"].add_metric(labels, rate)
        fam.gauges["jitter"].add_metric(labels, s.jitter_ns * self._scale)
        fam.gauges["period"].add_metric(labels, s.period_ns * self._scale)
        fam.gauges["deadline"].add_metric(labels, s.deadline_ns * self._scale)
        for state in RtState:
            fam.state.add_metric([*labels, state.name], 1.0 if s.state == state else 0.0)

    def _miss_rate(self, key: tuple[str, str], s: CycleStats, now: float) -> float:
        window = self._windows.get(key)
        if window is None or window.start_ns != s.start_ns:
            window = self._windows[key] = _MissWindow(s.start_ns)
        return window.rate(_Observation(now, s.cycle_count, s.deadline_miss_count), self._window_s)

    def _placement(self, th: _Thread) -> ThreadPlacement | None:
        s = th.stats
        if th.pid is None or s.tid <= 0 or s.state in _NO_THREAD_STATES:
            return None
        return thread_placement(th.pid, s.tid, procfs_root=self._procfs_root)

    def _topo(self) -> NumaTopology:
        if self._topology is None:
            self._topology = numa_topology(sysfs_root=self._sysfs_root)
        return self._topology

    def _add_placement(
        self, fam: _Families, labels: list[str], th: _Thread, placement: ThreadPlacement
    ) -> None:
        cores = ",".join(str(c) for c in sorted(placement.cpus_allowed))
        mode = self._isolation_mode or self._cached_isolation(placement.cpus_allowed, th.pid)
        fam.affinity.add_metric([*labels, cores, mode], 1.0)
        fam.gauges["core"].add_metric(labels, float(placement.cpu))
        node = self._topo().node_of_cpu(placement.cpu)
        if node is not None:
            fam.gauges["node"].add_metric(labels, float(node))

    def _cached_isolation(self, cpus: frozenset[int], pid: int | None) -> str:
        now = self._clock()
        cached = self._isolation.get((pid, cpus))
        if cached is None or now - cached[0] >= _ISOLATION_TTL_S:
            if len(self._isolation) > 256:  # threads come and go: forget old ones
                self._isolation.clear()
            cached = self._isolation[(pid, cpus)] = (now, self._observed_isolation(cpus, pid))
        return cached[1]

    def _observed_isolation(self, cpus: frozenset[int], pid: int | None) -> str:
        isolated = isolated_cpus(procfs_root=self._procfs_root, sysfs_root=self._sysfs_root)
        by_kernel = bool(cpus) and cpus <= isolated
        cpuset = (
            None
            if pid is None
            else cpuset_info(pid, procfs_root=self._procfs_root, sysfs_root=self._sysfs_root)
        )
        by_cgroup = (
            cpuset is not None and bool(cpuset.exclusive) and cpuset.cgroup_path not in ("", "/")
        )
        if by_kernel and by_cgroup:
            return "HYBRID"
        if by_kernel:
            return "ISOLCPUS"
        return "CGROUPS" if by_cgroup else "NONE"

    def _add_residency(
        self,
        fam: _Families,
        threads: Iterable[_Thread],
        placements: dict[tuple[str, str], ThreadPlacement],
        now: float,
    ) -> None:
        if self._residency_interval_s is None:
            return
        # One series per process label: the process of its first live cycle thread.
        targets: dict[str, tuple[int, ThreadPlacement]] = {}
        for th in threads:
            placement = placements.get((th.process, th.stats.name))
            if th.pid is not None and placement is not None:
                targets.setdefault(th.process, (th.pid, placement))
        topo = self._topo()
        for process, (pid, placement) in targets.items():
            if len(topo) < 2:
                # Every page is local; reading numa_maps would only take the mmap lock.
                fam.residency.add_metric([process, str(topo.node_ids[0])], 100.0)
                continue
            cached = self._residency.get(pid)
            if cached is None or now - cached.t >= self._residency_interval_s:
                cached = self._residency[pid] = self._sample_residency(pid, placement, now)
            if cached.percent is not None and cached.node is not None:
                fam.residency.add_metric([process, str(cached.node)], cached.percent)

    def _sample_residency(
        self, pid: int, placement: ThreadPlacement, now: float
    ) -> _ResidencyCache:
        cpus = placement.cpus_allowed or frozenset({placement.cpu})
        node = self._topo().node_of_cpu(min(cpus))
        sample = sample_page_residency(
            pid, node, procfs_root=self._procfs_root, sysfs_root=self._sysfs_root
        )
        if sample.residency is None:
            _log.info("metrics: no NUMA residency for pid %d: %s", pid, sample.reason)
            return _ResidencyCache(now, None, None)
        r = sample.residency
        return _ResidencyCache(now, r.local_node, 100.0 * r.local_ratio)


# ---------------------------------------------------------------- the segment's rings

_RING_LABELS = (*_LABELS, "ring")
_RING_COUNTERS = {
    "pushed": ("mxrc_bus_ring_pushed_total", "Records offered to the ring (accepted + dropped)."),
    "dropped": (
        "mxrc_bus_ring_dropped_total",
        "Records dropped: the ring was full, or over the admission threshold of their priority "
        "(the newest record is dropped; the producer never waits).",
    ),
    "popped": ("mxrc_bus_ring_popped_total", "Records taken out by the consumer."),
}


class _RingFamilies:
    """The ``mxrc_bus_ring_*`` and ``mxrc_bus_agent_*`` families of one collection:
    every ring of each cycle thread's ring set, and the segment's agent heartbeat."""

    def __init__(self) -> None:
        self.counters = {
            k: CounterMetricFamily(name, doc, labels=_RING_LABELS)
            for k, (name, doc) in _RING_COUNTERS.items()
        }
        self.by_priority = CounterMetricFamily(
            "mxrc_bus_ring_admission_dropped_total",
            "Records dropped by admission, by priority (low >= 80 % full, normal >= 90 %, "
            "high and critical when full).",
            labels=[*_RING_LABELS, "priority"],
        )
        self.depth = GaugeMetricFamily(
            "mxrc_bus_ring_depth", "Records waiting in the ring.", labels=_RING_LABELS
        )
        self.capacity = GaugeMetricFamily(
            "mxrc_bus_ring_capacity", "Records the ring holds.", labels=_RING_LABELS
        )
        self.overflow = GaugeMetricFamily(
            "mxrc_bus_ring_critical_overflow",
            "1 once the cycle thread's critical ring dropped a record (sticky; health UNHEALTHY).",
            labels=_LABELS,
        )
        self.agent_age = GaugeMetricFamily(
            "mxrc_bus_agent_heartbeat_age_seconds",
            "Seconds since the agent's last heartbeat in the segment (absent before its first).",
            labels=["process"],
        )
        self.agent_pid = GaugeMetricFamily(
            "mxrc_bus_agent_pid",
            "Pid of the agent attached to the segment; 0 = none (never attached, or stopped).",
            labels=["process"],
        )
        self.agent_attaches = CounterMetricFamily(
            "mxrc_bus_agent_attaches",
            "Agents attached to the segment so far (the agent generation).",
            labels=["process"],
        )

    def all(self) -> Iterator[Metric]:
        yield from self.counters.values()
        yield self.by_priority
        yield self.depth
        yield self.capacity
        yield self.overflow
        yield self.agent_age
        yield self.agent_pid
        yield self.agent_attaches

    def add_rings(self, labels: list[str], rings: Any) -> None:
        for ring, c in rings.counters().items():
            lbl = [*labels, ring]
            for key in _RING_COUNTERS:
                self.counters[key].add_metric(lbl, float(c[key]))
            for p in Priority:
                self.by_priority.add_metric(
                    [*lbl, p.name.lower()], float(c["dropped_by_priority"][p])
                )
            self.depth.add_metric(lbl, float(c["size"]))
            self.capacity.add_metric(lbl, float(c["capacity"]))
        self.overflow.add_metric(labels, 1.0 if rings.critical_overflow else 0.0)

    def add_agent(self, process: str, hb: AgentHeartbeat) -> None:
        age = hb.age_ns()
        if age is not None:
            self.agent_age.add_metric([process], age / 1e9)
        self.agent_pid.add_metric([process], float(hb.pid))
        self.agent_attaches.add_metric([process], float(hb.generation))


# ---------------------------------------------------------------- the event bus

DEFAULT_BUS_PROCESS_LABEL = "agent"
"""Default ``process`` label of :class:`BusCollector`: the role that runs the EventBus."""

_BUS_LABELS = ("process", "bus")
_BusFamily = CounterMetricFamily | GaugeMetricFamily
_BUS_COUNTERS = {
    "dispatched": (
        "mxrc_bus_events_dispatched_total",
        "Events taken off the queues and dispatched.",
    ),
    "delivered": ("mxrc_bus_events_delivered_total", "Handler calls that returned normally."),
    "handler_errors": (
        "mxrc_bus_handler_errors_total",
        "Handler or filter calls that raised (dispatch went on).",
    ),
    "observer_errors": ("mxrc_bus_observer_errors_total", "Observer hook calls that raised."),
    "unhandled": (
        "mxrc_bus_events_unhandled_total",
        "Events dispatched that no handler received and no transport forwarded.",
    ),
}
_BUS_TRANSPORT_COUNTERS = {
    "received": (
        "mxrc_bus_transport_received_total",
        "Records received from the transport and published into the bus (admission applies).",
    ),
    "decode_errors": (
        "mxrc_bus_transport_decode_errors_total",
        "Records received from the transport that were not valid events.",
    ),
    "forwarded": (
        "mxrc_bus_transport_forwarded_total",
        "Events sent to the transport and accepted by it.",
    ),
    "forward_dropped": (
        "mxrc_bus_transport_dropped_total",
        "Events the transport refused (ring full, admission) or whose send failed.",
    ),
}


class BusCollector:
    """A ``prometheus_client`` collector of :class:`~mxrc.bus.EventBus` counters.

    ``buses``: :class:`~mxrc.bus.EventBus` objects (or anything whose
    ``counters()`` returns :class:`~mxrc.bus.BusCounters`); more with
    :meth:`add`. Every series has the labels ``process`` (default
    ``"agent"``) and ``bus`` (the bus's name). Metrics: counters
    ``mxrc_bus_events_published_total`` and ``mxrc_bus_events_dropped_total``
    (label ``priority``: critical, high, normal, low),
    ``mxrc_bus_events_dispatched_total``, ``mxrc_bus_events_delivered_total``,
    ``mxrc_bus_handler_errors_total``, ``mxrc_bus_observer_errors_total``,
    ``mxrc_bus_events_unhandled_total``, per transport (label ``transport``)
    ``mxrc_bus_transport_{received,decode_errors,forwarded,dropped}_total``;
    gauges ``mxrc_bus_queue_depth`` and ``mxrc_bus_queue_capacity`` (label
    ``queue``: events, critical) and ``mxrc_bus_critical_overflow`` (sticky 0/1).
    See ``docs/eventbus.md``.
    """

    def __init__(self, *buses: object, process: str = DEFAULT_BUS_PROCESS_LABEL) -> None:
        self._default_process = process
        self._lock = threading.Lock()
        self._sources: list[tuple[object, str, Callable[[], BusCounters]]] = []
        self._warned: set[tuple[str, str]] = set()
        for bus in buses:
            self.add(bus)

    def add(self, bus: object, *, process: str | None = None) -> None:
        """Collect ``bus``'s counters too, labelled ``process``."""
        read = getattr(bus, "counters", None)
        if not callable(read):
            raise TypeError(
                "a bus metrics source must be an mxrc.bus.EventBus (or have a counters() method "
                f"returning BusCounters); got {type(bus).__name__}"
            )
        label = self._default_process if process is None else process
        with self._lock:
            if any(s[0] is bus for s in self._sources):
                raise ValueError(f"{bus!r} is already a source of this collector")
            self._sources.append((bus, label, cast(Callable[[], BusCounters], read)))

    def remove(self, bus: object) -> None:
        """Stop collecting ``bus``; ValueError when it is not a source."""
        with self._lock:
            for i, s in enumerate(self._sources):
                if s[0] is bus:
                    del self._sources[i]
                    return
        raise ValueError(f"{bus!r} is not a source of this collector")

    @property
    def sources(self) -> list[object]:
        """The buses, in the order added."""
        with self._lock:
            return [s[0] for s in self._sources]

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Read every bus's counters now and yield the metric families."""
        with self._lock:
            sources = list(self._sources)
        fam = self._families()
        seen: set[tuple[str, str]] = set()
        for obj, process, read in sources:
            try:
                c = read()
            except Exception as exc:  # one broken source must not fail the scrape
                _log.warning("metrics: cannot read bus %r: %s", obj, exc)
                continue
            key = (process, c.name)
            if key in seen:
                if key not in self._warned:
                    self._warned.add(key)
                    _log.warning(
                        "metrics: two event buses labelled process=%r bus=%r; only the first is "
                        "reported (give the buses different names)",
                        *key,
                    )
                continue
            seen.add(key)
            labels = [process, c.name]
            for p in Priority:
                prio = [*labels, p.name.lower()]
                fam["published"].add_metric(prio, float(c.published.get(p, 0)))
                fam["dropped"].add_metric(prio, float(c.dropped.get(p, 0)))
            for attr in _BUS_COUNTERS:
                fam[attr].add_metric(labels, float(getattr(c, attr)))
            for queue, depth, cap in (
                ("events", c.queue_depth, c.capacity),
                ("critical", c.critical_depth, c.critical_capacity),
            ):
                fam["depth"].add_metric([*labels, queue], float(depth))
                fam["capacity"].add_metric([*labels, queue], float(cap))
            fam["overflow"].add_metric(labels, 1.0 if c.critical_overflow else 0.0)
            for tname, t in c.transports.items():
                for attr in _BUS_TRANSPORT_COUNTERS:
                    fam[attr].add_metric([*labels, tname], float(getattr(t, attr)))
        return iter(fam.values())

    def _families(self) -> dict[str, _BusFamily]:
        prio = [*_BUS_LABELS, "priority"]
        queue = [*_BUS_LABELS, "queue"]
        transport = [*_BUS_LABELS, "transport"]
        fam: dict[str, _BusFamily] = {
            "published": CounterMetricFamily(
                "mxrc_bus_events_published_total",
                "Events admitted into the bus (published or received from a transport).",
                labels=prio,
            ),
            "dropped": CounterMetricFamily(
                "mxrc_bus_events_dropped_total",
                "Events refused: admission thresholds (low >= 80 %, normal >= 90 %, high at 100 "
                "% full), a full critical queue, or a closed bus.",
                labels=prio,
            ),
        }
        for attr, (name, doc) in _BUS_COUNTERS.items():
            fam[attr] = CounterMetricFamily(name, doc, labels=_BUS_LABELS)
        fam["depth"] = GaugeMetricFamily(
            "mxrc_bus_queue_depth", "Events waiting to be dispatched.", labels=queue
        )
        fam["capacity"] = GaugeMetricFamily(
            "mxrc_bus_queue_capacity", "Bound of the queue, events.", labels=queue
        )
        fam["overflow"] = GaugeMetricFamily(
            "mxrc_bus_critical_overflow",
            "1 once a CRITICAL event was dropped because the critical queue was full (sticky).",
            labels=_BUS_LABELS,
        )
        for attr, (name, doc) in _BUS_TRANSPORT_COUNTERS.items():
            fam[attr] = CounterMetricFamily(name, doc, labels=transport)
        return fam


def _check_buckets(buckets_us: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets_us)
    if not bounds:
        raise ValueError("buckets_us needs at least one bound (µs)")
    if any(not (b > 0 and np.isfinite(b)) for b in bounds):
        raise ValueError(f"buckets_us must be finite and > 0 µs, got {list(buckets_us)}")
    if any(b >= c for b, c in itertools.pairwise(bounds)):
        raise ValueError(f"buckets_us must be strictly ascending, got {list(buckets_us)}")
    return bounds


# ---------------------------------------------------------------- serving


class MetricsServer:
    """A running ``/metrics`` HTTP server (from :func:`start_http_server`).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        httpd: WSGIServer,
        thread: threading.Thread,
        collector: RtCollector,
        registry: CollectorRegistry,
    ) -> None:
        self._httpd = httpd
        self._thread = thread
        self.collector = collector
        """The collector it serves."""
        self.registry = registry
        """The registry it serves (holding :attr:`collector`)."""

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on; the port is the real one when 0 was asked."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.address[1]

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and join the server thread. Idempotent."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_http_server(
    *sources: object,
    port: int,
    addr: str = "127.0.0.1",
    collector: RtCollector | None = None,
    registry: CollectorRegistry | None = None,
    **options: Any,
) -> MetricsServer:
    """Serve the metrics of ``sources`` on ``http://addr:port/metrics`` (daemon thread).

    Makes an :class:`RtCollector` (``options`` are its keyword arguments) or
    adds ``sources`` to ``collector``, registers it in ``registry`` (default:
    a new registry holding only it) and starts ``prometheus_client``'s
    server. ``port=0`` picks a free port (see :attr:`MetricsServer.port`).

    The server is a Python thread: in a process whose executive runs a
    Python body every scrape delays that body (it waits for the GIL), so a
    warning is logged; serve from another process that attaches the segment.
    """
    if collector is None:
        collector = RtCollector(*sources, **options)
    else:
        if options:
            raise TypeError(f"pass collector options or a collector, not both: {sorted(options)}")
        for source in sources:
            collector.add(source)
    _warn_python_bodies(collector.sources)
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    try:
        httpd, thread = _prom_start_http_server(port, addr=addr, registry=registry)
    except BaseException:
        registry.unregister(collector)
        raise
    return MetricsServer(httpd, thread, collector, registry)


def _warn_python_bodies(sources: Iterable[object]) -> None:
    from mxrc.rt._executive import Executive

    python = [s.name for s in sources if isinstance(s, Executive) and s._python_tier()]
    if python:
        _log.warning(
            "metrics: serving HTTP in the process of executive(s) %s with a Python body: every "
            "scrape holds the GIL for milliseconds and delays the body; serve the metrics from "
            "another process attached to the instance's segment",
            ", ".join(repr(n) for n in python),
        )
