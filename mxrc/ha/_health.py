"""Health status of an instance, computed from real signals in its segment.

:class:`HealthMonitor` reads the instance's :class:`~mxrc.bus.Segment` (never
asks the RT process): every claimed stats block's heartbeat (the last wake of
the cycle thread), state, deadline-miss counters (turned into a rate over a
sliding window, never a cumulative count), the sticky CRITICAL-ring overflow
flag, plus CPU and memory of the RT process (the slot's claimer) and of this
process (the agent) through psutil, and what the supervisor and checkpoint
writer publish through a :class:`HaProvider`. It produces the bodies of
upstream's health contract (``docs/openapi/health.yaml``, ``docs/health.md``).

Status rules (worst of every cycle thread wins):

- no claimed stats block yet: STARTING; only released ones: STOPPED;
- the claimer process is gone, the thread is in ERROR, the heartbeat is older
  than period + ``failure_threshold`` × ``health_check_interval_ms`` (a hung
  loop: its process may well be alive), the CRITICAL ring overflowed, or the
  supervisor reports MANUAL_INTERVENTION: UNHEALTHY;
- the heartbeat is older than period + ``health_check_timeout_ms``
  (``response_time_ms``), the windowed miss rate is above
  ``perf_monitor.json`` ``rt.thresholds.max_deadline_miss_rate`` (and until
  it falls to :data:`MISS_RATE_CLEAR_RATIO` × that limit), SAFE_MODE or
  PAUSED, CPU above ``cpu_percent_limit`` or memory above
  ``memory_mb_limit`` (fixed: no config key, upstream neither): DEGRADED;
- INIT/READY: STARTING; SHUTDOWN: STOPPING (STOPPED once released).
"""

from __future__ import annotations

import datetime as _dt
import enum
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mxrc.rt._perf import CycleStats
from mxrc.rt._placement import pid_alive, thread_placement
from mxrc.rt._state import RtState

if TYPE_CHECKING:
    from mxrc.bus import Segment
    from mxrc.config import MxrcConfig

__all__ = [
    "MISS_RATE_CLEAR_RATIO",
    "CheckpointInfo",
    "HaProvider",
    "HealthMonitor",
    "HealthReport",
    "HealthStatus",
    "HealthThresholds",
    "MissRateTracker",
    "StaticHaProvider",
]


MISS_RATE_CLEAR_RATIO = 0.8
"""A cycle thread DEGRADED by its miss rate clears only at or below this share of the limit.

Hysteresis: a rate hovering at the limit (0.000106, 0.000172 against 0.0001) flapped the
HA state NORMAL -> DEGRADED -> NORMAL within seconds, a systemd STATUS line each time."""


class HealthStatus(enum.Enum):
    """Upstream's ProcessHealthStatus.status; ``code`` is the Prometheus encoding."""

    STOPPED = 0
    STARTING = 1
    HEALTHY = 2
    DEGRADED = 3
    UNHEALTHY = 4
    STOPPING = 5

    @property
    def code(self) -> int:
        """``mxrc_process_health_status`` value (0 STOPPED … 5 STOPPING)."""
        return int(self.value)

    @property
    def serving(self) -> bool:
        """``/health`` answers 200 (HEALTHY, DEGRADED) rather than 503."""
        return self in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)


# Which of two statuses wins when several cycle threads disagree.
_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.STARTING: 2,
    HealthStatus.STOPPING: 3,
    HealthStatus.STOPPED: 4,
    HealthStatus.UNHEALTHY: 5,
}


@dataclass(frozen=True)
class CheckpointInfo:
    """The newest checkpoint, as the checkpoint writer reports it."""

    path: str
    created_unix: float
    """Wall-clock time (seconds since the epoch) the checkpoint was written."""
    size_bytes: int


@runtime_checkable
class HaProvider(Protocol):
    """What the supervisor and the checkpoint writer tell the health server.

    Every method must be cheap and thread-safe (called per request).
    """

    def restart_count(self) -> int:
        """RT process restarts since the supervisor started."""
        ...

    def ha_state(self) -> str | None:
        """The HA state (NORMAL, DEGRADED, SAFE_MODE, RECOVERY_IN_PROGRESS,
        MANUAL_INTERVENTION, SHUTDOWN) or None when unknown."""
        ...

    def last_checkpoint(self) -> CheckpointInfo | None:
        """The newest valid checkpoint, None when there is none."""
        ...


@dataclass
class StaticHaProvider:
    """A :class:`HaProvider` holding plain values (default: 0 restarts, no state, no
    checkpoint); whoever knows better assigns the attributes."""

    restarts: int = 0
    state: str | None = None
    checkpoint: CheckpointInfo | None = None

    def restart_count(self) -> int:
        return self.restarts

    def ha_state(self) -> str | None:
        return self.state

    def last_checkpoint(self) -> CheckpointInfo | None:
        return self.checkpoint


@dataclass(frozen=True)
class HealthThresholds:
    """When a cycle thread counts as DEGRADED or UNHEALTHY (see the module doc)."""

    response_timeout_ms: float = 500.0
    """Heartbeat age beyond the period that makes it DEGRADED (``health_check_timeout_ms``)."""
    stall_ms: float = 3000.0
    """Heartbeat age beyond the period that makes it UNHEALTHY (``failure_threshold`` ×
    ``health_check_interval_ms``)."""
    max_deadline_miss_rate: float = 0.0001
    """Windowed miss rate (0..1) above which it is DEGRADED."""
    window_s: float = 60.0
    """Sliding window of the miss rate, seconds."""
    min_window_cycles: int = 100
    """Fewer cycles than this in the window give no verdict on the miss rate (noise)."""
    cpu_percent_limit: float = 90.0
    """CPU use (% of one CPU) of the RT or agent process above which it is DEGRADED
    (upstream's ProcessMonitorConfig default; no config file sets it)."""
    memory_mb_limit: float = 2048.0
    """Resident memory (MiB) of the RT or agent process above which it is DEGRADED
    (upstream's ProcessMonitorConfig default; no config file sets it)."""

    def __post_init__(self) -> None:
        for name in (
            "response_timeout_ms",
            "stall_ms",
            "window_s",
            "cpu_percent_limit",
            "memory_mb_limit",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"HealthThresholds.{name} must be a number > 0, got {value!r}")
        if (
            isinstance(self.min_window_cycles, bool)
            or not isinstance(self.min_window_cycles, int)
            or self.min_window_cycles < 1
        ):
            raise ValueError(
                "HealthThresholds.min_window_cycles must be an int >= 1, got "
                f"{self.min_window_cycles!r}"
            )
        rate = self.max_deadline_miss_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(
                f"HealthThresholds.max_deadline_miss_rate must be a ratio within [0, 1], "
                f"got {rate!r}"
            )

    @classmethod
    def from_config(cls, config: MxrcConfig) -> HealthThresholds:
        """From ``failover_policy.json`` ``rt`` and ``perf_monitor.json`` ``rt``.

        ``cpu_percent_limit`` and ``memory_mb_limit`` keep their defaults: neither
        mxrc's config files nor upstream's have a key for them."""
        fo = config.failover_policy.rt
        perf = config.perf_monitor.rt
        return cls(
            response_timeout_ms=float(fo.health_check_timeout_ms),
            stall_ms=float(fo.failure_threshold * fo.health_check_interval_ms),
            max_deadline_miss_rate=float(perf.thresholds.max_deadline_miss_rate),
            window_s=float(perf.window_s),
        )


@dataclass(frozen=True)
class _Sample:
    t: float
    cycles: int
    misses: int


@dataclass
class _Window:
    """Counter samples of one cycle thread, for the windowed miss rate."""

    start_ns: int
    seen: deque[_Sample] = field(default_factory=lambda: deque(maxlen=4096))
    over: bool = False
    """Latched: the rate went above the limit and has not yet fallen to the clear level."""

    def add(self, now: _Sample, window_s: float) -> None:
        last = self.seen[-1] if self.seen else None
        if last is not None and (now.cycles < last.cycles or now.misses < last.misses):
            self.seen.clear()
        self.seen.append(now)
        while len(self.seen) > 2 and self.seen[1].t <= now.t - window_s:
            self.seen.popleft()

    def rate(self, min_cycles: int = 1) -> float | None:
        """Misses per cycle between the oldest kept sample and the newest; None before
        ``min_cycles`` cycles lie between them."""
        if len(self.seen) < 2:
            return None
        first, last = self.seen[0], self.seen[-1]
        cycles = last.cycles - first.cycles
        if cycles < max(1, min_cycles):
            return None
        return (last.misses - first.misses) / cycles


def _ratio(value: float) -> str:
    """A small ratio without an exponent or float noise (0.0001 × 0.8 -> ``0.00008``)."""
    return f"{value:.12f}".rstrip("0").rstrip(".") or "0"


class MissRateTracker:
    """Windowed deadline-miss rate of cycle threads, judged against
    :class:`HealthThresholds` — one rule for the health server's DEGRADED and the
    supervisor's HA state DEGRADED (never a cumulative count).

    Feed it every stats block read (:meth:`add`); a new ``start_ns`` (a new
    cycle thread in the slot) starts a new window. With hysteresis: a thread
    counts as missing deadlines once its rate is above
    ``max_deadline_miss_rate`` and until the rate falls to :attr:`clear_rate`
    (or the window has no verdict).
    """

    def __init__(self, thresholds: HealthThresholds) -> None:
        self.thresholds = thresholds
        self._windows: dict[object, _Window] = {}

    @property
    def clear_rate(self) -> float:
        """The rate at or below which a thread over the limit counts as fine again."""
        return self.thresholds.max_deadline_miss_rate * MISS_RATE_CLEAR_RATIO

    def add(self, key: object, stats: CycleStats, now_s: float) -> None:
        """One sample of ``stats`` (``now_s``: a monotonic clock, seconds)."""
        window = self._windows.get(key)
        if window is None or window.start_ns != stats.start_ns:
            window = self._windows[key] = _Window(stats.start_ns)
        th = self.thresholds
        window.add(_Sample(now_s, stats.cycle_count, stats.deadline_miss_count), th.window_s)
        rate = window.rate(th.min_window_cycles)
        if rate is None or rate <= self.clear_rate:
            window.over = False
        elif rate > th.max_deadline_miss_rate:
            window.over = True
        # in between (the hysteresis band): the verdict stays as it was

    def rate(self, key: object) -> float | None:
        """Misses per cycle over the window; None before ``min_window_cycles`` cycles."""
        window = self._windows.get(key)
        return None if window is None else window.rate(self.thresholds.min_window_cycles)

    def exceeded(self, key: object) -> float | None:
        """The rate while the thread counts as missing deadlines (above
        ``max_deadline_miss_rate``, then until at or below :attr:`clear_rate`), else None."""
        window = self._windows.get(key)
        return self.rate(key) if window is not None and window.over else None

    def reason(self, name: str, rate: float) -> str:
        """``cycle thread 'NAME' misses deadlines: rate R over the last W s (limit L)``,
        plus ``, clears at C`` while R is back under the limit but not yet at C."""
        th = self.thresholds
        text = (
            f"cycle thread {name!r} misses deadlines: rate {rate:.6f} over the last "
            f"{th.window_s:g} s (limit {th.max_deadline_miss_rate:g})"
        )
        if rate <= th.max_deadline_miss_rate:
            text += f", clears at {_ratio(self.clear_rate)}"
        return text

    def cleared(self, name: str, rate: float | None) -> str:
        """Why a thread no longer misses deadlines: ``cycle thread 'NAME' deadline-miss rate
        R over the last W s (limit L), cleared at or below C`` (R: ``no verdict yet``)."""
        th = self.thresholds
        shown = "no verdict yet" if rate is None else f"{rate:.6f}"
        return (
            f"cycle thread {name!r} deadline-miss rate {shown} over the last {th.window_s:g} s "
            f"(limit {th.max_deadline_miss_rate:g}), cleared at or below {_ratio(self.clear_rate)}"
        )

    def retain(self, keys: set[object]) -> None:
        """Forget the windows of every other key (threads that are gone)."""
        for key in set(self._windows) - keys:
            del self._windows[key]


@dataclass(frozen=True)
class ThreadHealth:
    """One cycle thread's verdict."""

    name: str
    pid: int
    status: HealthStatus
    reasons: tuple[str, ...]
    stats: CycleStats | None
    heartbeat_age_ms: float
    miss_rate: float | None
    advancing: bool = False
    """The loop advances: its process lives and its heartbeat is within the stall limit."""


@dataclass(frozen=True)
class HealthReport:
    """One evaluation: the bodies of the endpoints are built from it."""

    status: HealthStatus
    reasons: tuple[str, ...]
    threads: tuple[ThreadHealth, ...]
    rt_pid: int
    cpu_usage_percent: float
    memory_usage_mb: int
    restart_count: int
    ha_state: str | None
    checkpoint: CheckpointInfo | None
    critical_overflow: bool
    evaluated_unix: float


def _iso_ms(unix: float) -> str:
    """ISO-8601 UTC with milliseconds (``2025-11-21T10:30:45.123Z``)."""
    d = _dt.datetime.fromtimestamp(unix, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class _Proc:
    """psutil CPU/memory of one pid. CPU % is measured over at least ``min_interval_s``
    (a shorter interval is noise) and kept in between."""

    def __init__(self, pid: int, min_interval_s: float = 1.0) -> None:
        import psutil

        self.pid = pid
        self._proc: Any = psutil.Process(pid)
        self._min_interval_s = min_interval_s
        self._proc.cpu_percent(None)  # primes the CPU-time baseline
        self._cpu_at = time.monotonic()
        self._cpu = 0.0

    def sample(self) -> tuple[float, int] | None:
        import psutil

        try:
            with self._proc.oneshot():
                now = time.monotonic()
                if now - self._cpu_at >= self._min_interval_s:
                    self._cpu = float(self._proc.cpu_percent(None))
                    self._cpu_at = now
                rss = int(self._proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        return self._cpu, rss // (1024 * 1024)


class HealthMonitor:
    """Computes :class:`HealthReport` from an instance's segment.

    ``segment``: the attached segment; ``thresholds`` (default: from
    ``config``, else the defaults); ``provider``: a :class:`HaProvider`
    (default :class:`StaticHaProvider`: 0 restarts, no checkpoint).
    ``process_name`` names the RT process in the bodies (default
    ``failover_policy.json`` ``rt``… upstream's ``"mxrc-rt"``).

    Call :meth:`sample` regularly (the server does, every
    ``health_check_interval_ms``) so that the miss-rate window has samples;
    :meth:`evaluate` samples too. Thread-safe. ``clock`` (monotonic seconds)
    and ``monotonic_ns`` (CLOCK_MONOTONIC, the heartbeat's clock) are for
    tests.
    """

    def __init__(
        self,
        segment: Segment,
        *,
        config: MxrcConfig | None = None,
        thresholds: HealthThresholds | None = None,
        provider: HaProvider | None = None,
        process_name: str = "mxrc-rt",
        ready_check: Callable[[], dict[str, bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if thresholds is None:
            thresholds = (
                HealthThresholds() if config is None else HealthThresholds.from_config(config)
            )
        if provider is not None and not isinstance(provider, HaProvider):
            raise TypeError(
                "provider must implement restart_count(), ha_state() and last_checkpoint() "
                f"(mxrc.ha.HaProvider), got {type(provider).__name__}"
            )
        self._segment = segment
        self._config = config
        self.thresholds = thresholds
        self.provider: HaProvider = provider if provider is not None else StaticHaProvider()
        self.process_name = process_name
        self._ready_check = ready_check
        self._clock = clock
        self._mono_ns = monotonic_ns
        self._lock = threading.Lock()
        self._miss = MissRateTracker(thresholds)
        self._procs: dict[int, _Proc] = {}
        self._self_proc: _Proc | None = None
        self.start_unix = time.time()
        self._start_mono = clock()
        self._last_activity_unix: float | None = None
        self._residency: dict[int, tuple[float, float | None]] = {}
        res = None if config is None else config.numa_binding.rt.residency
        self._residency_interval_s = 60.0 if res is None else float(res.sample_interval_s)
        self._last_cycles: int | None = None

    @property
    def segment(self) -> Segment:
        return self._segment

    @property
    def uptime_seconds(self) -> float:
        """Seconds since this monitor (the agent's health server) started."""
        return max(0.0, self._clock() - self._start_mono)

    # ------------------------------------------------------------ sampling

    def _claimed(self) -> list[tuple[int, str, int, str]]:
        return [
            (int(s["index"]), str(s["name"]), int(s["claimer_pid"]), str(s["state"]))
            for s in self._segment.slots()
            if s["state"] in ("claimed", "released")
        ]

    def sample(self) -> list[tuple[tuple[int, str, int, str], CycleStats | None]]:
        """Read every stats block now and feed the miss-rate windows."""
        out: list[tuple[tuple[int, str, int, str], CycleStats | None]] = []
        now = self._clock()
        with self._lock:
            for slot in self._claimed():
                index, name, _, _ = slot
                try:
                    stats: CycleStats | None = self._segment.stats(name)
                except LookupError:
                    stats = None
                out.append((slot, stats))
                if stats is None:
                    continue
                self._miss.add((index, name), stats, now)
            total = sum(s.cycle_count for _, s in out if s is not None)
            if self._last_cycles is None or total != self._last_cycles:
                self._last_cycles = total
                self._last_activity_unix = time.time()
        return out

    def _proc_usage(self, pid: int) -> tuple[float, int] | None:
        with self._lock:
            proc = self._procs.get(pid)
            if proc is None:
                try:
                    proc = self._procs[pid] = _Proc(pid)
                except Exception:
                    return None
            return proc.sample()

    # ------------------------------------------------------------ evaluation

    def _thread(
        self, slot: tuple[int, str, int, str], stats: CycleStats | None, now_ns: int
    ) -> ThreadHealth:
        index, name, pid, state = slot
        reasons: list[str] = []
        if stats is None:
            return ThreadHealth(
                name, pid, HealthStatus.STOPPED, ("stats unreadable",), None, 0, None
            )
        age_ms = max(0.0, (now_ns - stats.heartbeat_ns) / 1e6) if stats.heartbeat_ns else 0.0
        rate = self._miss.rate((index, name))
        period_ms = stats.period_ns / 1e6
        th = self.thresholds
        status = HealthStatus.HEALTHY
        stalled = (pid > 0 and not pid_alive(pid)) or age_ms > period_ms + th.stall_ms
        if state == "released":
            status = HealthStatus.STOPPED
            reasons.append(f"cycle thread {name!r} ended")
        elif stats.state in (RtState.INIT, RtState.READY):
            status = HealthStatus.STARTING
            reasons.append(f"cycle thread {name!r} is {stats.state.name}")
        elif stats.state is RtState.SHUTDOWN:
            status = HealthStatus.STOPPING
            reasons.append(f"cycle thread {name!r} is shutting down")
        elif stats.state is RtState.ERROR:
            status = HealthStatus.UNHEALTHY
            reasons.append(f"cycle thread {name!r} is in ERROR")
        elif pid > 0 and not pid_alive(pid):
            status = HealthStatus.UNHEALTHY
            reasons.append(f"RT process pid {pid} of cycle thread {name!r} is gone")
        elif age_ms > period_ms + th.stall_ms:
            status = HealthStatus.UNHEALTHY
            reasons.append(
                f"cycle thread {name!r} stalled: no heartbeat for {age_ms:.0f} ms "
                f"(limit {period_ms + th.stall_ms:.0f} ms)"
            )
        else:
            if age_ms > period_ms + th.response_timeout_ms:
                status = HealthStatus.DEGRADED
                reasons.append(
                    f"cycle thread {name!r} responds slowly: heartbeat {age_ms:.0f} ms old "
                    f"(limit {period_ms + th.response_timeout_ms:.0f} ms)"
                )
            over = self._miss.exceeded((index, name))
            if over is not None:
                status = HealthStatus.DEGRADED
                reasons.append(self._miss.reason(name, over))
            if stats.state in (RtState.SAFE_MODE, RtState.PAUSED):
                status = HealthStatus.DEGRADED
                reasons.append(f"cycle thread {name!r} is in {stats.state.name}")
        advancing = state == "claimed" and not stalled
        return ThreadHealth(name, pid, status, tuple(reasons), stats, age_ms, rate, advancing)

    def evaluate(self) -> HealthReport:
        """Sample and judge now."""
        sampled = self.sample()
        now_ns = self._mono_ns()
        threads = [self._thread(slot, stats, now_ns) for slot, stats in sampled]
        reasons: list[str] = []
        for t in threads:
            reasons.extend(t.reasons)
        claimed = [
            t for t in threads if t.stats is not None and t.status is not HealthStatus.STOPPED
        ]
        if not threads:
            status = HealthStatus.STARTING
            reasons.append("no cycle thread has claimed a stats block yet")
        elif not claimed:
            status = HealthStatus.STOPPED
        else:
            # released blocks of earlier runs do not count once a live one exists
            status = max((t.status for t in claimed), key=_SEVERITY.__getitem__)
        rt_pid = next((t.pid for t in claimed if t.pid > 0), 0)
        cpu, mem = 0.0, 0
        usage = self._proc_usage(rt_pid) if rt_pid > 0 and pid_alive(rt_pid) else None
        if usage is not None:
            cpu, mem = usage
        own = self._proc_usage(os.getpid())
        th = self.thresholds
        for who, pid, u in (("RT", rt_pid, usage), ("agent", os.getpid(), own)):
            if u is None or status not in (HealthStatus.HEALTHY, HealthStatus.DEGRADED):
                continue
            if u[0] > th.cpu_percent_limit:
                status = HealthStatus.DEGRADED
                reasons.append(
                    f"{who} process pid {pid} uses {u[0]:.0f} % CPU (limit "
                    f"{th.cpu_percent_limit:g} %)"
                )
            if u[1] > th.memory_mb_limit:
                status = HealthStatus.DEGRADED
                reasons.append(
                    f"{who} process pid {pid} uses {u[1]} MiB (limit {th.memory_mb_limit:g} MiB)"
                )
        overflow = bool(self._segment.critical_overflow)
        if overflow:
            status = HealthStatus.UNHEALTHY
            reasons.append("the CRITICAL event ring overflowed (CRITICAL events were lost)")
        try:
            ha_state = self.provider.ha_state()
            restarts = int(self.provider.restart_count())
            checkpoint = self.provider.last_checkpoint()
        except Exception as exc:  # a provider bug must not take the health server down
            ha_state, restarts, checkpoint = None, 0, None
            reasons.append(f"HA provider failed: {type(exc).__name__}: {exc}")
        if ha_state == "MANUAL_INTERVENTION":
            status = HealthStatus.UNHEALTHY
            reasons.append("the supervisor gave up restarting: MANUAL_INTERVENTION")
        elif ha_state == "SAFE_MODE" and status is HealthStatus.HEALTHY:
            status = HealthStatus.DEGRADED
            reasons.append("HA state SAFE_MODE")
        return HealthReport(
            status=status,
            reasons=tuple(reasons),
            threads=tuple(threads),
            rt_pid=rt_pid,
            cpu_usage_percent=min(100.0, max(0.0, cpu)),
            memory_usage_mb=mem,
            restart_count=restarts,
            ha_state=ha_state,
            checkpoint=checkpoint,
            critical_overflow=overflow,
            evaluated_unix=time.time(),
        )

    # ------------------------------------------------------------ bodies

    def _heartbeat_unix(self, report: HealthReport) -> float:
        """Wall time of the newest heartbeat (the monitor's start when there is none)."""
        beats = [t.stats.heartbeat_ns for t in report.threads if t.stats and t.stats.heartbeat_ns]
        if not beats:
            return self.start_unix
        return time.time() - (self._mono_ns() - max(beats)) / 1e9

    def health_body(self, report: HealthReport) -> dict[str, Any]:
        """``/health``: upstream's ProcessHealthStatus."""
        live = [
            t
            for t in report.threads
            if t.stats is not None and t.status is not HealthStatus.STOPPED
        ]
        response_ms = max((t.heartbeat_age_ms for t in live), default=0.0)
        misses = sum(t.stats.deadline_miss_count for t in live if t.stats is not None)
        body: dict[str, Any] = {
            "process_name": self.process_name,
            "pid": report.rt_pid if report.rt_pid > 0 else os.getpid(),
            "status": report.status.name,
            "last_heartbeat": _iso_ms(min(self._heartbeat_unix(report), time.time())),
            "response_time_ms": round(response_ms, 3),
            "cpu_usage_percent": round(report.cpu_usage_percent, 2),
            "memory_usage_mb": report.memory_usage_mb,
            "deadline_miss_count": misses,
            "restart_count": report.restart_count,
        }
        if report.status is HealthStatus.UNHEALTHY or report.reasons:
            body["error_message"] = "; ".join(report.reasons) or report.status.name
        return body

    def ready_body(self, report: HealthReport) -> tuple[bool, dict[str, Any]]:
        """``/health/ready``: initialised and state restored."""
        details = {
            "eventbus_connected": bool(report.threads) and not self._segment.closed,
            "datastore_initialized": int(self._segment.datastore_region().size) > 0,
            "task_registry_loaded": any(
                t.stats is not None and t.stats.state not in (RtState.INIT,)
                for t in report.threads
                if t.status is not HealthStatus.STOPPED
            ),
        }
        if self._ready_check is not None:
            details.update({k: bool(v) for k, v in self._ready_check().items()})
        restoring = report.ha_state == "RECOVERY_IN_PROGRESS"
        ready = all(details.values()) and report.status.serving and not restoring
        if ready:
            message = f"ready ({report.status.name})"
        elif restoring:
            message = "state recovery in progress"
        else:
            missing = [k for k, v in details.items() if not v]
            message = f"not ready: status {report.status.name}" + (
                f"; missing {', '.join(missing)}" if missing else ""
            )
        return ready, {"ready": ready, "message": message, "details": details}

    def live_body(self, report: HealthReport) -> tuple[bool, dict[str, Any]]:
        """``/health/live``: the loop advances (a heartbeat within the stall limit)."""
        live = [
            t
            for t in report.threads
            if t.stats is not None and t.status is not HealthStatus.STOPPED
        ]
        alive = bool(live) and all(t.advancing for t in live)
        last = self._last_activity_unix or self.start_unix
        return alive, {
            "alive": alive,
            "uptime_seconds": round(self.uptime_seconds, 3),
            "last_activity": _iso_ms(last),
        }

    def _local_memory_percent(self, pid: int, node: int | None) -> float | None:
        """Share (%) of the RT process's resident memory on its NUMA node: 100 on a one-node
        host (numa_maps is not read there), sampled at most every
        ``numa_binding.json`` ``rt.residency.sample_interval_s`` (reading it takes the RT
        process's mmap lock), None when unknown."""
        if pid <= 0:
            return None
        now = self._clock()
        with self._lock:
            cached = self._residency.get(pid)
        if cached is not None and now - cached[0] < self._residency_interval_s:
            return cached[1]
        from mxrc.rt._residency import sample_page_residency
        from mxrc.rt._topology import numa_topology

        value: float | None
        try:
            if len(numa_topology()) < 2:
                value = 100.0
            else:
                sample = sample_page_residency(pid, node)
                value = None if sample.residency is None else sample.residency.local_ratio * 100
        except (OSError, ValueError):
            value = None
        with self._lock:
            self._residency = {pid: (now, value)}
        return value

    def details_body(self, report: HealthReport) -> dict[str, Any]:
        """``/health/details``."""
        cfg = self._config
        live = [
            t
            for t in report.threads
            if t.stats is not None and t.status is not HealthStatus.STOPPED
        ]
        main = live[0] if live else None
        cycles = sum(t.stats.cycle_count for t in live if t.stats is not None)
        misses = sum(t.stats.deadline_miss_count for t in live if t.stats is not None)
        rate_samples = [t.miss_rate for t in live if t.miss_rate is not None]
        rate = max(rate_samples) if rate_samples else (misses / cycles if cycles else 0.0)
        avg_us = max_us = jitter_us = 0.0
        if main is not None and main.stats is not None:
            ex = main.stats.exec_time
            avg_us, max_us = ex.mean_ns / 1e3, ex.max_ns / 1e3
            jitter_us = main.stats.jitter_ns / 1e3
        pid = report.rt_pid
        start_time = self.start_unix
        if pid > 0:
            try:
                import psutil

                start_time = float(psutil.Process(pid).create_time())
            except Exception:
                start_time = self.start_unix
        configured: list[int] = []
        isolation = "NONE"
        numa_node, policy = 0, "LOCAL"
        if cfg is not None:
            configured = [int(c) for c in (cfg.cpu_affinity.rt.cpu_cores or ())]
            isolation = str(cfg.cpu_affinity.rt.isolation_mode)
            nb = cfg.numa_binding.rt
            numa_node = int(getattr(nb, "numa_node", 0) or 0)
            policy = str(getattr(nb, "memory_policy", "LOCAL"))
        placement = (
            thread_placement(report.rt_pid, main.stats.tid)
            if main is not None and main.stats is not None
            else None
        )
        current_core = -1 if placement is None else placement.cpu
        local_percent = self._local_memory_percent(pid, numa_node if cfg is not None else None)
        ckpt = report.checkpoint
        return {
            "process_info": {
                "name": self.process_name,
                "pid": pid if pid > 0 else os.getpid(),
                "start_time": _iso_ms(start_time),
                "uptime_seconds": round(max(0.0, time.time() - start_time), 3),
            },
            "cpu_affinity": {
                "configured_cores": configured,
                "current_core": current_core,
                "isolation_mode": isolation,
            },
            "numa_binding": {
                "numa_node": numa_node,
                "memory_policy": policy,
                "local_memory_percent": local_percent,
            },
            "rt_performance": {
                "cycle_count": cycles,
                "deadline_miss_count": misses,
                "deadline_miss_rate": min(1.0, max(0.0, rate)),
                "avg_cycle_time_us": round(avg_us, 3),
                "max_cycle_time_us": round(max_us, 3),
                "jitter_us": round(jitter_us, 3),
            },
            "failover": {
                "restart_count": report.restart_count,
                "last_checkpoint": None if ckpt is None else _iso_ms(ckpt.created_unix),
                "checkpoint_age_seconds": (
                    None if ckpt is None else round(max(0.0, time.time() - ckpt.created_unix), 3)
                ),
            },
        }
