"""The segment's rings: bounded SPSC rings of fixed-size records, one set per cycle thread.

Each stats slot of a segment has a :class:`RingSet`: ``log`` (256-byte
records), ``span`` (128), ``event`` (256, one ``mxrc_event``) and ``critical``
(256) carry records from the cycle thread to the agent; ``command`` (256)
carries commands and events from the agent to the cycle thread. A full ring
drops the newest record and counts it; the producer never waits. Priority
decides admission (LOW dropped at >= 80 % fill, NORMAL at >= 90 %, HIGH only
when full); CRITICAL events go to their own ring, whose overflow sets a sticky
flag. See ``docs/bus.md``.

Python pushes and pops are for the non-RT side (and tests): they serialise
with other Python producers (or consumers) of the same ring in any thread or
process. The cycle thread's C++ side is the single producer of its RT->agent
rings and the single consumer of its command ring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mxrc._native import _core

if TYPE_CHECKING:
    from mxrc._core.bus import CountersDict, StatsSlot

__all__ = [
    "RING_KINDS",
    "RING_RECORD_SIZES",
    "AgentHeartbeat",
    "Ring",
    "RingCounters",
    "RingSet",
    "ring_admits",
]

RING_KINDS: tuple[str, ...] = tuple(_core.bus.RING_KINDS)
"""Names of the rings of a set: log, span, event, critical, command."""

RING_RECORD_SIZES: dict[str, int] = dict(_core.bus.RING_RECORD_SIZES)
"""Record size (bytes) of each ring kind."""


def ring_admits(fill: int, capacity: int, priority: int) -> bool:
    """Whether a ring holding ``fill`` of ``capacity`` records admits a record of ``priority``.

    ``priority`` is an ``MXRC_PRIO_*`` value (0 CRITICAL, 1 HIGH, 2 NORMAL,
    3 LOW; :class:`mxrc.bus.Priority` values work): LOW below 80 % fill,
    NORMAL below 90 %, HIGH and CRITICAL below 100 %.
    """
    return _core.bus.ring_admits(fill, capacity, int(priority))


@dataclass(frozen=True)
class RingCounters:
    """A copy of one ring's counters.

    ``pushed`` counts every record offered (``accepted + dropped``);
    ``popped`` the records taken out; ``size`` the records waiting. The
    counters are separate atomics, so ``pushed == popped + dropped + size``
    holds exactly once the ring is quiet.
    """

    name: str
    capacity: int
    record_size: int
    pushed: int
    accepted: int
    dropped: int
    popped: int
    size: int
    dropped_by_priority: tuple[int, int, int, int]
    """Drops by admission, indexed by priority (CRITICAL, HIGH, NORMAL, LOW)."""
    overflowed: bool
    """Sticky: some record was dropped since the ring was made (or last cleared)."""

    @property
    def fill_ratio(self) -> float:
        """``size / capacity``, 0..1."""
        return self.size / self.capacity if self.capacity else 0.0

    @classmethod
    def _from(cls, name: str, d: CountersDict) -> RingCounters:
        p = d["dropped_by_priority"]
        return cls(
            name=name,
            capacity=d["capacity"],
            record_size=d["record_size"],
            pushed=d["pushed"],
            accepted=d["accepted"],
            dropped=d["dropped"],
            popped=d["popped"],
            size=d["size"],
            dropped_by_priority=(p[0], p[1], p[2], p[3]),
            overflowed=d["overflowed"],
        )


class Ring:
    """One ring of a segment (or a private one for tests): bytes in, bytes out."""

    __slots__ = ("_core",)

    def __init__(self, core_ring: _core.bus.Ring) -> None:
        """Wrap a ``_core.bus.Ring``; get rings from :class:`RingSet`."""
        self._core = core_ring

    @classmethod
    def private(cls, capacity: int, record_size: int) -> Ring:
        """A ring in this process's memory (tests, benchmarks).

        ``capacity``: records, a power of two in 2..2**24; ``record_size``:
        bytes, a multiple of 8. ValueError otherwise.
        """
        return cls(_core.bus._private_ring(capacity, record_size))

    @property
    def core(self) -> _core.bus.Ring:
        """The compiled handle (keeps the segment mapped)."""
        return self._core

    @property
    def name(self) -> str:
        """E.g. ``"event ring of stats slot 0"``."""
        return self._core.name

    @property
    def capacity(self) -> int:
        """Records the ring holds (a power of two)."""
        return self._core.capacity

    @property
    def record_size(self) -> int:
        """Largest record, bytes."""
        return self._core.record_size

    def size(self) -> int:
        """Records waiting."""
        return self._core.size()

    def push(self, data: bytes | bytearray | memoryview, priority: int | None = None) -> bool:
        """Copy one record in; False when it was dropped (ring full, or over the
        admission threshold of ``priority``: an ``MXRC_PRIO_*`` value, None = only
        when full).

        Raises ValueError when ``data`` is longer than :attr:`record_size` or
        ``priority`` is not 0..3, SegmentError when another process keeps the
        producer side busy for 2 s.
        """
        return self._core.push(data, None if priority is None else int(priority))

    def pop(self) -> bytes | None:
        """The oldest record, or None when the ring is empty."""
        return self._core.pop()

    def pop_many(self, max_records: int) -> list[bytes]:
        """Up to ``max_records`` records, oldest first."""
        return self._core.pop_many(max_records)

    def drain(self) -> list[bytes]:
        """Every record waiting now, oldest first."""
        return self._core.pop_many(max(self._core.capacity, 1))

    def counters(self) -> RingCounters:
        """A copy of the counters."""
        return RingCounters._from(self.name, self._core.counters())

    @property
    def overflowed(self) -> bool:
        """Sticky: a record was dropped (until :meth:`clear_overflow`)."""
        return self._core.overflowed

    def clear_overflow(self) -> None:
        """Clear the sticky overflow flag."""
        self._core.clear_overflow()

    def __repr__(self) -> str:
        return f"<Ring {self.name}: {self.size()}/{self.capacity} x {self.record_size} B>"


class RingSet:
    """The rings of one cycle thread (one stats slot of the segment)."""

    __slots__ = ("_core",)

    def __init__(self, core_set: _core.bus.RingSet) -> None:
        """Wrap a ``_core.bus.RingSet``; use :meth:`Segment.rings` or :meth:`of`."""
        self._core = core_set

    @classmethod
    def of(cls, slot: StatsSlot) -> RingSet | None:
        """The ring set of a claimed stats slot; None for a private stats block."""
        core_set = slot.rings
        return None if core_set is None else cls(core_set)

    @property
    def core(self) -> _core.bus.RingSet:
        """The compiled handle (what an executive takes; keeps the segment mapped)."""
        return self._core

    @property
    def slot_index(self) -> int:
        """Index of the stats slot this set belongs to."""
        return self._core.slot_index

    def ring(self, name: str) -> Ring:
        """The ring ``name`` (one of :data:`RING_KINDS`); KeyError otherwise."""
        return Ring(self._core.ring(name))

    @property
    def log(self) -> Ring:
        """RT -> agent log records (256 bytes)."""
        return Ring(self._core.log)

    @property
    def span(self) -> Ring:
        """RT -> agent span records (128 bytes)."""
        return Ring(self._core.span)

    @property
    def event(self) -> Ring:
        """RT -> agent events of priority HIGH, NORMAL and LOW (256 bytes)."""
        return Ring(self._core.event)

    @property
    def critical(self) -> Ring:
        """RT -> agent CRITICAL events (256 bytes); overflow sets :attr:`critical_overflow`."""
        return Ring(self._core.critical)

    @property
    def command(self) -> Ring:
        """Agent -> RT commands and events (256 bytes)."""
        return Ring(self._core.command)

    def publish_event(self, record: bytes | bytearray | memoryview, priority: int) -> bool:
        """Queue an RT -> agent event record as the cycle thread does.

        CRITICAL (0) goes to the critical ring (an overflow sets the sticky
        flags of this set and of the segment), other priorities to the event
        ring with admission. False when dropped.
        """
        return self._core.publish_event(record, int(priority))

    def poll_command(self) -> bytes | None:
        """Take the next agent -> RT record, or None."""
        return self._core.poll_command()

    @property
    def critical_overflow(self) -> bool:
        """Sticky: the critical ring dropped a record (health UNHEALTHY)."""
        return self._core.critical_overflow

    def clear_critical_overflow(self) -> None:
        """Clear this set's sticky flag (the segment's: :meth:`Segment.clear_critical_overflow`)."""
        self._core.clear_critical_overflow()

    def counters(self) -> dict[str, RingCounters]:
        """Counters of every ring, by ring name."""
        return {
            name: RingCounters._from(f"{name} ring of stats slot {self.slot_index}", d)
            for name, d in self._core.counters().items()
        }

    def __repr__(self) -> str:
        return f"<RingSet of stats slot {self.slot_index}>"


@dataclass(frozen=True)
class AgentHeartbeat:
    """The agent's heartbeat words of a segment, copied out."""

    heartbeat_ns: int
    """CLOCK_MONOTONIC of the last beat; 0 = the agent never beat."""
    pid: int
    """The attached agent's pid; 0 = none (never attached, or detached)."""
    generation: int
    """Agent attaches so far (+1 per :meth:`Segment.attach_agent`)."""

    def age_ns(self, now_ns: int | None = None) -> int | None:
        """Nanoseconds since the last beat (``now_ns`` default: CLOCK_MONOTONIC now);
        None when it never beat."""
        if self.heartbeat_ns == 0:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0, now - self.heartbeat_ns)

    def stale(self, timeout_ns: int, now_ns: int | None = None) -> bool:
        """True when the agent never beat or its last beat is older than ``timeout_ns``."""
        age = self.age_ns(now_ns)
        return age is None or age > timeout_ns
