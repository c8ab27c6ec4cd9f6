"""``mxrc status``: what a running instance's cycle threads are doing, read from another process.

The command attaches to the instance's shared-memory segment
(``/dev/shm/mxrc-<instance>``, :meth:`mxrc.bus.Segment.attach`) and copies each
stats block out with the bounded seqlock read the cycle thread never waits
for; the thread's current CPU, allowed CPUs, policy and priority come from
``/proc/<pid>/task/<tid>/{stat,status}``. The agent's heartbeat words and each
cycle thread's ring counters (records waiting, dropped) come from the segment
too. Nothing here touches the RT process beyond those reads.

Exit codes: 0 the instance is running (or several were listed), 1 no such
instance, or its owner is gone (a stale segment, shown anyway), 2 usage error,
3 the segment cannot be read (not an mxrc segment, another layout version,
permission denied).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from mxrc.rt._cpulist import format_cpulist
from mxrc.rt._placement import ThreadPlacement, pid_alive, thread_placement
from mxrc.rt._state import RtState

if TYPE_CHECKING:
    from mxrc.bus import AgentHeartbeat, RingCounters, Segment
    from mxrc.rt._perf import CycleStats, PerfReport

__all__ = [
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "InstanceStatus",
    "StatusOptions",
    "ThreadPlacement",
    "ThreadStatus",
    "attach_instance",
    "default_instance",
    "list_instances",
    "read_status",
    "run_status",
    "thread_placement",
]

EXIT_OK = 0
EXIT_NOT_RUNNING = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3

SHM_DIR = "/dev/shm"
_PREFIX = "mxrc-"
LATE_THRESHOLDS_US = (100.0, 1000.0)
_ACTIVE = (RtState.READY, RtState.RUNNING, RtState.PAUSED, RtState.SAFE_MODE)
_CLEAR = "\x1b[H\x1b[2J"


def list_instances(shm_dir: str = SHM_DIR) -> list[str]:
    """Names of the instances that have a segment (``/dev/shm/mxrc-*``), sorted.

    A listed segment may belong to a dead owner (see :attr:`InstanceStatus.owner_alive`).
    """
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return []
    return sorted(n[len(_PREFIX) :] for n in names if n.startswith(_PREFIX) and len(n) > 5)


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class ThreadStatus:
    """One cycle thread (stats block) of an instance."""

    name: str
    slot_state: str
    """``claimed`` (its executive holds it) or ``released`` (the executive is gone)."""
    pid: int
    """The process that claimed the stats block."""
    stats: CycleStats
    report: PerfReport
    placement: ThreadPlacement | None
    heartbeat_age_s: float | None
    """Seconds since the cycle thread's last heartbeat (None before its first)."""
    window_s: float | None = None
    """Length of the window of :attr:`window_miss_rate` (watch mode), seconds."""
    window_miss_rate: float | None = None
    """Deadline misses per cycle since the previous refresh (watch mode)."""
    rings: dict[str, RingCounters] | None = None
    """Counters of the thread's rings by name (None: no ring set)."""
    critical_overflow: bool = False
    """Sticky: the thread's critical ring dropped an event."""

    @property
    def ring_drops(self) -> int:
        """Records dropped by all of the thread's rings."""
        return sum(c.dropped for c in (self.rings or {}).values())

    @property
    def simulated_clock(self) -> bool:
        """The loop runs on the simulated clock: its times are virtual (``start_ns`` 0)."""
        return self.stats.start_ns == 0 and self.stats.heartbeat_ns > 0

    @property
    def stalled(self) -> bool:
        """An active state but no heartbeat for max(1 s, 10 periods): the loop is stuck."""
        if self.stats.state not in _ACTIVE or self.heartbeat_age_s is None:
            return False
        return self.heartbeat_age_s > max(1.0, 10 * self.stats.period_ns / 1e9)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "slot_state": self.slot_state,
            "pid": self.pid,
            "tid": self.stats.tid,
            "placement": None if self.placement is None else self.placement.to_dict(),
            "heartbeat_age_s": self.heartbeat_age_s,
            "simulated_clock": self.simulated_clock,
            "stalled": self.stalled,
            "window_s": self.window_s,
            "window_deadline_miss_rate": self.window_miss_rate,
            "rings": None
            if self.rings is None
            else {n: _ring_dict(c) for n, c in self.rings.items()},
            "ring_drops": self.ring_drops,
            "critical_overflow": self.critical_overflow,
        }
        data.update(self.report.to_dict())
        return data


def _ring_dict(c: RingCounters) -> dict[str, Any]:
    from mxrc.bus import Priority

    return {
        "capacity": c.capacity,
        "size": c.size,
        "pushed": c.pushed,
        "dropped": c.dropped,
        "popped": c.popped,
        "dropped_by_priority": {
            p.name.lower(): n for p, n in zip(Priority, c.dropped_by_priority, strict=True)
        },
    }


@dataclass(frozen=True)
class InstanceStatus:
    """An instance's segment header and its cycle threads, read at one moment."""

    instance: str
    path: str
    header: dict[str, Any]
    owner_alive: bool
    threads: tuple[ThreadStatus, ...]
    read_monotonic_ns: int = field(default=0, repr=False)
    agent: AgentHeartbeat | None = None
    """The segment's agent heartbeat words (pid, generation, last beat)."""
    agent_alive: bool = False
    """The agent's pid names a live process."""

    @property
    def owner_pid(self) -> int:
        return int(self.header["owner_pid"])

    @property
    def agent_heartbeat_age_s(self) -> float | None:
        """Seconds since the agent's last beat (None: it never beat)."""
        if self.agent is None:
            return None
        age = self.agent.age_ns(self.read_monotonic_ns or None)
        return None if age is None else age / 1e9

    def _agent_dict(self) -> dict[str, Any] | None:
        if self.agent is None:
            return None
        return {
            "pid": self.agent.pid,
            "alive": self.agent_alive,
            "generation": self.agent.generation,
            "heartbeat_age_s": self.agent_heartbeat_age_s,
        }

    def to_dict(self) -> dict[str, Any]:
        created = int(self.header["created_realtime_ns"])
        return {
            "instance": self.instance,
            "path": self.path,
            "owner_pid": self.owner_pid,
            "owner_alive": self.owner_alive,
            "generation": int(self.header["generation"]),
            "layout_version": int(self.header["layout_version"]),
            "created": _iso(created) if created else None,
            "agent": self._agent_dict(),
            "critical_overflow": bool(self.header.get("critical_overflow", False)),
            "threads": [t.to_dict() for t in self.threads],
        }

    def to_text(self) -> str:
        return "\n".join(_instance_lines(self))


def _iso(realtime_ns: int) -> str:
    when = datetime.fromtimestamp(realtime_ns / 1e9, tz=timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def read_status(segment: Segment, previous: InstanceStatus | None = None) -> InstanceStatus:
    """Snapshot an attached segment; with ``previous``, also the miss rate since then."""
    from mxrc.rt._perf import build_report

    now = time.monotonic_ns()
    header = dict(segment.header)
    slots: dict[str, tuple[str, int]] = {}
    for slot in segment.slots():
        if slot["state"] not in ("claimed", "released"):
            continue
        if slot["name"] not in slots or slot["state"] == "claimed":
            slots[slot["name"]] = (slot["state"], int(slot["claimer_pid"]))
    before = {} if previous is None else {t.name: t for t in previous.threads}
    threads: list[ThreadStatus] = []
    for name, (slot_state, pid) in slots.items():
        try:
            stats = segment.stats(name)
        except LookupError:  # released and reused between the two calls
            continue
        report = build_report(stats, late_thresholds_us=LATE_THRESHOLDS_US)
        # a simulated clock's heartbeat is virtual time (start_ns 0): no age then
        real = stats.start_ns > 0 and stats.heartbeat_ns > 0
        age = max(0, time.monotonic_ns() - stats.heartbeat_ns) / 1e9 if real else None
        placement = thread_placement(pid, stats.tid) if stats.state in _ACTIVE else None
        window_s = window_rate = None
        old = before.get(name)
        if previous is not None and old is not None and old.stats.start_ns == stats.start_ns:
            window_s = (now - previous.read_monotonic_ns) / 1e9
            cycles = stats.cycle_count - old.stats.cycle_count
            if cycles > 0:
                misses = stats.deadline_miss_count - old.stats.deadline_miss_count
                window_rate = misses / cycles
        rings, overflow = _rings_of(segment, name)
        threads.append(
            ThreadStatus(
                name,
                slot_state,
                pid,
                stats,
                report,
                placement,
                age,
                window_s,
                window_rate,
                rings,
                overflow,
            )
        )
    agent = segment.agent_heartbeat()
    return InstanceStatus(
        segment.instance,
        segment.path,
        header,
        segment.owner_alive(),
        tuple(threads),
        now,
        agent,
        agent.pid != 0 and pid_alive(agent.pid),
    )


def _rings_of(segment: Segment, name: str) -> tuple[dict[str, RingCounters] | None, bool]:
    try:
        rings = segment.rings(name)
    except LookupError:  # released and reused meanwhile
        return None, False
    return rings.counters(), rings.critical_overflow


# ---------------------------------------------------------------- text


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "no heartbeat yet"
    if seconds < 1.0:
        return f"heartbeat {seconds * 1e3:.1f} ms ago"
    return f"heartbeat {seconds:.1f} s ago"


def _placement_text(t: ThreadStatus) -> str:
    p = t.placement
    if p is None:
        return f"pid {t.pid}, tid {t.stats.tid}"
    return (
        f"pid {t.pid}, tid {t.stats.tid} on CPU {p.cpu} (allowed {format_cpulist(p.cpus_allowed)}),"
        f" {p.policy} {p.priority}"
    )


def _thread_lines(t: ThreadStatus) -> list[str]:
    r = t.report
    state = r.state + (" (stats block released)" if t.slot_state == "released" else "")
    lines = [f'cycle thread "{t.name}": {state}, {_placement_text(t)}']
    clock = "simulated clock (virtual times)" if t.simulated_clock else _age_text(t.heartbeat_age_s)
    lines.append(
        f"  cycles {r.cycle_count}, period {r.period_us:g} us, deadline {r.deadline_us:g} us, "
        f"{clock}"
    )
    rate = (
        f"deadline misses {r.deadline_miss_count}, miss rate {r.deadline_miss_rate:.6f} since start"
    )
    if t.window_miss_rate is not None and t.window_s is not None:
        rate += f" ({t.window_miss_rate:.6f} in the last {t.window_s:.1f} s)"
    lines.append("  " + rate)
    lines.append(
        f"  max consecutive misses {r.max_consecutive_misses}, skipped releases "
        f"{r.skipped_release_count}, body errors {r.body_error_count}"
    )
    shares = ", ".join(f"> {k} {v:.4f}" for k, v in r.late_share.items())
    lines.append(f"  late wake-ups (share of cycles): {shares}; jitter {r.jitter_us:.1f} us")
    lines.append(f"  {'(us)':<20}{'min':>9}{'avg':>9}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}")
    rows = [
        ("wake-up latency", r.wake_latency_us),
        ("body-start latency", r.body_start_latency_us),
        ("execution time", r.exec_time_us),
    ]
    if r.gil_wait_count:
        rows.append(("GIL wait", r.gil_wait_us))
    for label, s in rows:
        cells = "".join(f"{s[k]:>9.1f}" for k in ("min", "avg", "p50", "p99", "p999", "max"))
        lines.append(f"  {label:<20}{cells}")
    if t.rings is not None:
        cells = ", ".join(f"{n} {c.size}/{c.capacity} {c.dropped}" for n, c in t.rings.items())
        lines.append(f"  rings (waiting/capacity dropped): {cells}")
    if t.critical_overflow:
        lines.append(
            "  CRITICAL OVERFLOW: the critical ring was full and dropped an event (sticky; "
            "is the agent draining?)"
        )
    if t.stalled:
        lines.append(
            f"  WARNING: no heartbeat for {t.heartbeat_age_s:.1f} s although {r.state}: "
            "the loop is stuck (a body that does not return, or the process is stopped)"
        )
    if r.torn:
        lines.append("  warning: the stats kept changing while read (torn snapshot)")
    return lines


def _agent_text(st: InstanceStatus) -> str:
    a = st.agent
    if a is None or (a.generation == 0 and a.heartbeat_ns == 0):
        return "agent: none has attached yet"
    age = st.agent_heartbeat_age_s
    beat = _age_text(age).replace("heartbeat", "last heartbeat")
    if a.pid == 0:
        return f"agent: none attached (generation {a.generation} stopped; {beat})"
    alive = "" if st.agent_alive else ", GONE"
    return f"agent: pid {a.pid}{alive}, generation {a.generation}, {beat}"


def _instance_lines(st: InstanceStatus) -> list[str]:
    h = st.header
    alive = "alive" if st.owner_alive else "GONE: the instance is not running (stale segment)"
    created = int(h["created_realtime_ns"])
    lines = [
        f"instance {st.instance!r}: {st.path}",
        f"  owner pid {st.owner_pid} ({alive}), generation {int(h['generation'])}, "
        f"layout v{int(h['layout_version'])}" + (f", created {_iso(created)}" if created else ""),
    ]
    lines.append("  " + _agent_text(st))
    if not st.threads:
        lines.append("  no cycle thread has claimed a stats block yet")
    for t in st.threads:
        lines.append("")
        lines.extend(_thread_lines(t))
    return lines


# ---------------------------------------------------------------- command


@dataclass(frozen=True)
class StatusOptions:
    """What ``mxrc status`` was asked to do."""

    instance: str | None = None
    watch: bool = False
    interval_s: float = 1.0
    count: int | None = None
    """Watch mode: stop after this many refreshes (None: until Ctrl-C)."""
    json: bool = False

    def __post_init__(self) -> None:
        if not 0.05 <= self.interval_s <= 3600:
            raise ValueError(f"--interval must be within 0.05..3600 seconds, got {self.interval_s}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"--count must be >= 1, got {self.count}")


def _fail(err: TextIO, message: str, command: str = "status") -> None:
    print(f"mxrc {command}: {message}", file=err)


def _running_hint() -> str:
    names = list_instances()
    return f"; instances with a segment: {', '.join(names)}" if names else ""


def attach_instance(
    instance: str, err: TextIO, command: str = "status"
) -> tuple[Segment | None, int]:
    """The attached segment of ``instance``, or (None, exit code) after a message on ``err``."""
    from mxrc.bus import Segment, segment_path
    from mxrc.errors import SegmentError

    try:
        path = segment_path(instance)
    except ValueError as exc:
        _fail(err, str(exc), command)
        return None, EXIT_USAGE
    if not os.path.exists(path):
        _fail(
            err,
            f"no instance {instance!r} is running: {path} does not exist{_running_hint()}",
            command,
        )
        return None, EXIT_NOT_RUNNING
    try:
        return Segment.attach(instance), EXIT_OK
    except PermissionError as exc:
        _fail(
            err, f"cannot open {path}: {exc}; run as the instance's user or in its group", command
        )
        return None, EXIT_UNREADABLE
    except SegmentError as exc:
        text = str(exc)
        if "does not exist" in text:  # unlinked between the check and the attach
            _fail(err, f"{text}{_running_hint()}", command)
            return None, EXIT_NOT_RUNNING
        _fail(err, f"cannot read {path}: {text}", command)
        return None, EXIT_UNREADABLE
    except OSError as exc:
        _fail(err, f"cannot open {path}: {exc}", command)
        return None, EXIT_UNREADABLE


def default_instance(err: TextIO, command: str = "status") -> tuple[str | list[str] | None, int]:
    """The instance to use without ``--instance``.

    ``$MXRC_INSTANCE`` when set, else the only instance with a segment; the list
    of names when there are several; None and the exit code (after a message on
    ``err``) when the variable is invalid or nothing runs.
    """
    from mxrc._env import instance_from_env
    from mxrc.errors import ConfigError

    if os.environ.get("MXRC_INSTANCE"):
        try:
            return instance_from_env(), EXIT_OK
        except ConfigError as exc:
            _fail(err, str(exc), command)
            return None, EXIT_USAGE
    names = list_instances()
    if not names:
        _fail(err, f"no mxrc instance is running (nothing matches {SHM_DIR}/{_PREFIX}*)", command)
        return None, EXIT_NOT_RUNNING
    return (names[0] if len(names) == 1 else names), EXIT_OK


def _list(out: TextIO, err: TextIO, names: list[str], as_json: bool) -> int:
    """One line per instance (several segments and no --instance)."""
    from mxrc.bus import Segment
    from mxrc.errors import SegmentError

    rows: list[dict[str, Any]] = []
    for name in names:
        row: dict[str, Any] = {"instance": name, "error": None}
        try:
            with Segment.attach(name) as seg:
                st = read_status(seg)
            row.update(
                owner_pid=st.owner_pid,
                owner_alive=st.owner_alive,
                threads=[
                    {"name": t.name, "state": t.report.state, "cycle_count": t.report.cycle_count}
                    for t in st.threads
                ],
            )
        except (SegmentError, OSError) as exc:
            row["error"] = str(exc)
        rows.append(row)
    if as_json:
        json.dump({"instances": rows}, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return EXIT_OK
    out.write(f"{len(rows)} mxrc instances ({SHM_DIR}/{_PREFIX}*):\n")
    out.write(f"  {'INSTANCE':<24} {'OWNER PID':>9}  {'OWNER':<6} THREADS\n")
    for row in rows:
        if row["error"] is not None:
            out.write(f"  {row['instance']:<24} {'-':>9}  {'-':<6} unreadable: {row['error']}\n")
            continue
        threads = "; ".join(
            f"{t['name']} {t['state']} {t['cycle_count']} cycles" for t in row["threads"]
        )
        alive = "alive" if row["owner_alive"] else "gone"
        out.write(f"  {row['instance']:<24} {row['owner_pid']:>9}  {alive:<6} {threads or '-'}\n")
    out.write("show one with: mxrc status --instance NAME\n")
    return EXIT_OK


def run_status(
    opts: StatusOptions,
    out: TextIO,
    err: TextIO,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``mxrc status`` as described by ``opts``; return the exit code.

    Without ``--instance``: ``$MXRC_INSTANCE`` when set, else the only
    instance with a segment, else a one-line-per-instance list.
    """
    instance = opts.instance
    if instance is None:
        found, code = default_instance(err)
        if found is None:
            return code
        if isinstance(found, list):
            return _list(out, err, found, opts.json)
        instance = found
    segment, code = attach_instance(instance, err)
    if segment is None:
        return code
    with segment:
        try:
            return _show(segment, opts, out, err, sleep)
        except KeyboardInterrupt:  # Ctrl-C ends --watch normally
            if not opts.json:
                out.write("\n")
            return EXIT_OK


def _show(
    segment: Segment,
    opts: StatusOptions,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None],
) -> int:
    clear = opts.watch and not opts.json and out.isatty()
    previous: InstanceStatus | None = None
    shown = 0
    while True:
        status = read_status(segment, previous)
        if opts.json:
            indent = None if opts.watch else 2
            out.write(json.dumps(status.to_dict(), indent=indent, ensure_ascii=False) + "\n")
        else:
            text = status.to_text()
            if clear:
                out.write(_CLEAR)
            elif opts.watch and shown:
                out.write("\n")
            if opts.watch:
                stamp = datetime.now(tz=timezone.utc).isoformat(timespec="seconds")
                out.write(f"--- {stamp.replace('+00:00', 'Z')} (every {opts.interval_s:g} s, ")
                out.write("Ctrl-C to stop)\n")
            out.write(text + "\n")
        out.flush()
        shown += 1
        if not status.owner_alive:
            _fail(
                err,
                f"instance {status.instance!r} is not running: its owner (pid "
                f"{status.owner_pid}) is gone; the next `mxrc run --instance "
                f"{status.instance}` reclaims the segment",
            )
            return EXIT_NOT_RUNNING
        if not opts.watch or (opts.count is not None and shown >= opts.count):
            return EXIT_OK
        previous = status
        sleep(opts.interval_s)
