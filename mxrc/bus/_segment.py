"""The instance's shared-memory segment: versioned header, stats slots, rings, data store.

``/dev/shm/mxrc-<instance>`` (POSIX shm ``/mxrc-<instance>``, mode 0660) is
created and owned by the longest-lived process of an instance. The owner holds
``flock(LOCK_EX)`` on it for its whole life, so a segment whose lock is free
belongs to a dead owner and :meth:`Segment.create` reclaims it (generation + 1).
Other processes :meth:`Segment.attach` to read stats or claim stats slots.
Layout v2 adds a ring set per stats slot, a data store region and the agent's
heartbeat words (``docs/bus.md``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from mxrc._native import _core
from mxrc.bus._rings import AgentHeartbeat, RingSet
from mxrc.rt._perf import DEFAULT_MAX_RETRIES, CycleStats, read_stats

if TYPE_CHECKING:
    from mxrc._core.bus import HeaderDict, Region, SlotDict, StatsSlot
    from mxrc.config import MxrcConfig

__all__ = ["LAYOUT_VERSION", "Segment", "segment_path"]

LAYOUT_VERSION: int = _core.bus.LAYOUT_VERSION
"""Layout version of the segments this mxrc creates and reads."""


DEFAULT_DATASTORE_SLOTS = 256
DEFAULT_DATASTORE_BYTES = 65536


def datastore_region_bytes(slots: int, arena_bytes: int) -> int:
    """Bytes of a data store region for ``slots`` slots and ``arena_bytes`` of values
    (0 when ``arena_bytes`` is 0: no data store)."""
    if arena_bytes == 0:
        return 0
    return int(_core.datastore.region_bytes(slots, arena_bytes))


def segment_path(instance: str) -> str:
    """``/dev/shm/mxrc-<instance>``; ValueError unless instance matches [A-Za-z0-9_.-]{1,64}."""
    return _core.bus.Segment.path(instance)


class Segment:
    """An open segment: owner (from :meth:`create`) or attached (from :meth:`attach`).

    Closing the owner's segment unlinks its name; stats blocks claimed from it
    stay valid until their last handle is dropped. Use as a context manager.

    Availability: Linux (POSIX shared memory in /dev/shm, flock).
    """

    __slots__ = ("__weakref__", "_core_segment", "_finalizer")

    def __init__(self, core_segment: _core.bus.Segment) -> None:
        """Wrap a ``_core.bus.Segment``; use :meth:`create` or :meth:`attach`."""
        self._core_segment = core_segment
        # Closed (the owner's name unlinked) when collected or at interpreter exit.
        self._finalizer = weakref.finalize(self, core_segment.close)

    @classmethod
    def create(
        cls,
        instance: str,
        *,
        max_stats: int = 8,
        log_ring_capacity: int = 8192,
        span_ring_capacity: int = 4096,
        event_ring_capacity: int = 1024,
        critical_ring_capacity: int = 64,
        command_ring_capacity: int = 256,
        datastore_slots: int = DEFAULT_DATASTORE_SLOTS,
        datastore_bytes: int = DEFAULT_DATASTORE_BYTES,
    ) -> Segment:
        """Create (or reclaim from a dead owner) the segment of ``instance`` and own it.

        Every stats slot gets a ring set with these capacities (records,
        powers of two, 2..2**24); the data store region is sized for
        ``datastore_slots`` slots and ``datastore_bytes`` of values (0 = no
        data store). The defaults are the config defaults
        (:meth:`create_from_config`).

        Raises SegmentInUseError (with ``owner_pid``) when a live process owns
        it, ValueError for a bad instance name, ``max_stats`` outside 1..256
        or a capacity that is not a power of two.

        Availability: Linux (POSIX shared memory in /dev/shm, flock).
        """
        region = datastore_region_bytes(datastore_slots, datastore_bytes)
        return cls(
            _core.bus.Segment.create(
                instance,
                max_stats,
                log_ring_capacity,
                span_ring_capacity,
                event_ring_capacity,
                critical_ring_capacity,
                command_ring_capacity,
                region,
                datastore_slots,
            )
        )

    @classmethod
    def create_from_config(
        cls, instance: str, config: MxrcConfig, *, max_stats: int = 8
    ) -> Segment:
        """:meth:`create` with the capacities of a loaded configuration.

        ``logging.json`` ``ring_capacity`` (log ring), ``tracing_config.json``
        ``rt.span_ring_capacity``, ``perf_monitor.json`` ``rt.bus``
        (event, critical and command ring capacities, data store slots and
        bytes).

        Availability: Linux (POSIX shared memory in /dev/shm, flock).
        """
        bus = config.perf_monitor.rt.bus
        return cls.create(
            instance,
            max_stats=max_stats,
            log_ring_capacity=config.logging.ring_capacity,
            span_ring_capacity=config.tracing.rt.span_ring_capacity,
            event_ring_capacity=bus.event_ring_capacity,
            critical_ring_capacity=bus.critical_ring_capacity,
            command_ring_capacity=bus.command_ring_capacity,
            datastore_slots=bus.datastore_slots,
            datastore_bytes=bus.datastore_bytes,
        )

    @classmethod
    def attach(cls, instance: str) -> Segment:
        """Attach to the running instance's segment.

        Raises SegmentError when it does not exist, is not an mxrc segment, or
        has another layout version.

        Availability: Linux (POSIX shared memory in /dev/shm).
        """
        return cls(_core.bus.Segment.attach(instance))

    @staticmethod
    def remove(instance: str, *, force: bool = False) -> bool:
        """Unlink a leftover segment whose owner is gone; False if there was none.

        Raises SegmentInUseError when a live owner holds it, unless ``force``.

        Availability: Linux (POSIX shared memory in /dev/shm, flock).
        """
        return _core.bus.Segment.remove(instance, force)

    @property
    def instance(self) -> str:
        """The instance name."""
        return self._core_segment.instance

    @property
    def path(self) -> str:
        """``/dev/shm/mxrc-<instance>``."""
        return segment_path(self.instance)

    @property
    def is_owner(self) -> bool:
        """True for the creator (which unlinks the segment on close)."""
        return self._core_segment.is_owner

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._core_segment.closed

    @property
    def header(self) -> HeaderDict:
        """A copy of the header: magic, layout_version, generation, epoch, owner_pid, ..."""
        return self._core_segment.header()

    @property
    def generation(self) -> int:
        """1 at creation, +1 per reclaim and per :meth:`bump_generation`."""
        return int(self._core_segment.header()["generation"])

    def owner_alive(self) -> bool:
        """Whether a live process holds the owner's lock (always True for the owner)."""
        return self._core_segment.owner_alive()

    def refresh_wallclock_offset(self) -> None:
        """Owner only: republish CLOCK_REALTIME − CLOCK_MONOTONIC in the header."""
        self._core_segment.refresh_wallclock_offset()

    def bump_generation(self) -> int:
        """Announce a restarted writer; returns the new generation."""
        return self._core_segment.bump_generation()

    def claim_stats(self, name: str) -> StatsSlot:
        """Claim a stats slot for the cycle thread ``name`` (unique among claimed slots).

        The slot is released when the returned handle (and every copy the
        executive holds) is dropped; its stats stay readable until the slot
        is reused. Raises SegmentError when the name is taken or no slot is
        free.
        """
        return self._core_segment.claim_stats(name)

    def slots(self) -> list[SlotDict]:
        """State of every stats slot (index, state, name, claimer_pid, claim_count)."""
        return self._core_segment.slots()

    def stats_names(self) -> list[str]:
        """Names of the claimed and released stats blocks, in slot order."""
        return [s["name"] for s in self.slots() if s["state"] in ("claimed", "released")]

    def stats(
        self, name: str | None = None, *, max_retries: int = DEFAULT_MAX_RETRIES
    ) -> CycleStats:
        """Snapshot of the stats block ``name``.

        Without a name: the only block, else the one named ``"main"``. Raises
        LookupError when there is no such block.
        """
        if name is None:
            names = list(dict.fromkeys(self.stats_names()))
            if len(names) == 1:
                name = names[0]
            elif "main" in names:
                name = "main"
            else:
                raise LookupError(f"{self.path} has stats blocks {names or 'none'}: pass a name")
        slot = self._core_segment.stats_slot(name)
        if slot is None:
            raise LookupError(
                f"no stats block named {name!r} in {self.path}; have {self.stats_names()}"
            )
        return read_stats(slot, max_retries=max_retries)

    def stats_all(self, *, max_retries: int = DEFAULT_MAX_RETRIES) -> dict[str, CycleStats]:
        """Snapshots of every claimed or released stats block, by name."""
        return {
            n: self.stats(n, max_retries=max_retries) for n in dict.fromkeys(self.stats_names())
        }

    def rings(self, name: str) -> RingSet:
        """The ring set of the stats slot claimed (or released) under ``name``.

        Raises LookupError when no slot has that name.
        """
        core_set = self._core_segment.rings(name)
        if core_set is None:
            raise LookupError(
                f"no stats slot named {name!r} in {self.path}; have {self.stats_names()}"
            )
        return RingSet(core_set)

    def ring_set(self, slot_index: int) -> RingSet:
        """The ring set of stats slot ``slot_index`` (ValueError when out of range)."""
        return RingSet(self._core_segment.ring_set(slot_index))

    def datastore_region(self) -> Region:
        """The data store region: a writable buffer (``memoryview(region)``) that keeps the
        segment mapped; ``.address`` and ``.size`` (0 without a data store). Zero-filled
        at creation; :class:`mxrc.bus.DataStore` formats and reads it."""
        return self._core_segment.datastore_region()

    @property
    def critical_overflow(self) -> bool:
        """Sticky: some cycle thread's critical ring dropped a record (health UNHEALTHY)."""
        return self._core_segment.critical_overflow

    def clear_critical_overflow(self) -> None:
        """Clear the segment's sticky flag and every ring set's."""
        self._core_segment.clear_critical_overflow()

    def agent_heartbeat(self) -> AgentHeartbeat:
        """The agent's heartbeat words (last beat, pid, generation)."""
        d = self._core_segment.agent_heartbeat()
        return AgentHeartbeat(d["heartbeat_ns"], d["pid"], d["generation"])

    def attach_agent(self) -> int:
        """Announce this process as the instance's agent: pid, generation + 1, a first beat.

        Returns the new agent generation.
        """
        return self._core_segment.attach_agent()

    def beat_agent(self, now_ns: int | None = None) -> None:
        """Store an agent heartbeat (``now_ns``: CLOCK_MONOTONIC; default now)."""
        self._core_segment.beat_agent(0 if now_ns is None else now_ns)

    def detach_agent(self) -> None:
        """Clear the agent pid if it is this process's (the last beat stays: it goes stale)."""
        self._core_segment.detach_agent()

    def close(self) -> None:
        """Detach; the owner also unlinks the name. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "owner" if self.is_owner else "attached"
        state = "closed" if self.closed else role
        return f"<Segment {self.path} ({state})>"
