"""The shared-memory bus of an instance: segment header and per-cycle-thread stats.

See ``docs/stats-and-segment.md``; segment layout and rings: ``docs/bus.md``;
the data store: ``docs/datastore.md``; events and the EventBus: ``docs/eventbus.md``.
"""

from __future__ import annotations

from mxrc._native import _core
from mxrc.bus._datastore import (
    ChangeToken,
    DataStore,
    DataStoreBusyError,
    DataStoreError,
    DataStoreFormatError,
    DataStoreSnapshot,
    DataStoreWatcher,
    DefinitionError,
    DsKind,
    SlotInfo,
    SlotValueError,
    SnapshotResult,
    SnapshotTimeoutError,
    TornReadError,
    UnknownSlotError,
)
from mxrc.bus._events import (
    EVENT_DTYPE,
    BusCounters,
    BusObserver,
    Event,
    EventBus,
    EventError,
    InMemoryTransport,
    Priority,
    Subscription,
    Transport,
    TransportCounters,
    admits,
)
from mxrc.bus._rings import RING_KINDS, AgentHeartbeat, Ring, RingCounters, RingSet
from mxrc.bus._ringtransport import RingTransport
from mxrc.bus._segment import LAYOUT_VERSION, Segment, segment_path
from mxrc.tracecontext import Baggage, TraceContext, TraceState

__all__ = [
    "EVENT_DTYPE",
    "LAYOUT_VERSION",
    "RING_KINDS",
    "AgentHeartbeat",
    "Baggage",
    "BusCounters",
    "BusObserver",
    "ChangeToken",
    "DataStore",
    "DataStoreBusyError",
    "DataStoreError",
    "DataStoreFormatError",
    "DataStoreSnapshot",
    "DataStoreWatcher",
    "DefinitionError",
    "DsKind",
    "Event",
    "EventBus",
    "EventError",
    "InMemoryTransport",
    "Priority",
    "Ring",
    "RingCounters",
    "RingSet",
    "RingTransport",
    "Segment",
    "SlotInfo",
    "SlotValueError",
    "SnapshotResult",
    "SnapshotTimeoutError",
    "StatsSlot",
    "Subscription",
    "TornReadError",
    "TraceContext",
    "TraceState",
    "Transport",
    "TransportCounters",
    "UnknownSlotError",
    "admits",
    "private_stats",
    "segment_path",
]

StatsSlot = _core.bus.StatsSlot
"""Handle on a stats block plus what keeps its memory alive (from ``claim_stats``)."""


def private_stats(name: str) -> _core.bus.StatsSlot:
    """A standalone zeroed stats block (process memory) for an executive without a segment."""
    return _core.bus.private_stats(name)
