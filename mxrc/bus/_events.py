"""Events and the in-process EventBus, with a transport interface for the rings.

An :class:`Event` is what travels between the cycle threads and the non-RT
side: type, payload (≤ 136 bytes, raw or compact JSON), priority, target id,
id, CLOCK_MONOTONIC timestamp and the 25-byte W3C trace carrier. It converts
to and from the exact 256-byte ``mxrc_event`` record of ``mxrc.h``
(:meth:`Event.to_record`, :meth:`Event.from_record`).

:class:`EventBus` is the non-RT side's bus: a bounded queue whose admission
depends on the priority (LOW dropped at ≥ 80 % full, NORMAL at ≥ 90 %, HIGH
only when full; CRITICAL in its own queue with its own bound, whose overflow
sets a sticky flag), subscriptions by exact type, prefix (``"task.*"``) or
``"*"`` with an optional filter predicate, observer hooks around publish and
dispatch, dispatch on one dedicated thread, and counters for the
``mxrc_bus_*`` metrics (:class:`mxrc.metrics.BusCollector`).

:class:`Transport` is how the bus reaches another process: records received
from it are published into the bus, and events matching its forward patterns
are sent to it. :class:`InMemoryTransport` is the in-process implementation
(tests, two buses in one process); the ring-backed ones attach the same way.

Nothing here runs on a cycle thread: a cycle body publishes by copying a
record into its ring (``api->publish_event``). See ``docs/eventbus.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import json
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mxrc.errors import MxrcError

__all__ = [
    "CARRIER_SIZE",
    "DEFAULT_CAPACITY",
    "DEFAULT_CRITICAL_CAPACITY",
    "EVENT_DTYPE",
    "FLAG_JSON",
    "PAYLOAD_MAX",
    "RECORD_SIZE",
    "TARGET_MAX",
    "TYPE_MAX",
    "BusCounters",
    "BusObserver",
    "Event",
    "EventBus",
    "EventError",
    "InMemoryTransport",
    "Priority",
    "Subscription",
    "Transport",
    "TransportCounters",
    "admits",
    "current_carrier",
    "use_carrier",
]

_log = logging.getLogger("mxrc.bus.events")

# ---------------------------------------------------------------- the record (mxrc.h)

RECORD_SIZE = 256
"""sizeof(mxrc_event): bytes of one event record in a ring."""
TYPE_MAX = 32
"""MXRC_EVENT_TYPE_MAX: bytes of the UTF-8 type name."""
TARGET_MAX = 32
"""MXRC_EVENT_TARGET_MAX: bytes of the UTF-8 target id."""
PAYLOAD_MAX = 136
"""MXRC_EVENT_PAYLOAD_MAX: bytes of payload."""
CARRIER_SIZE = 25
"""MXRC_CARRIER_SIZE: trace id (16) + span id (8) + W3C trace flags (1)."""
FLAG_JSON = 0x01
"""MXRC_EVENT_FLAG_JSON: ``flags`` bit 0, the payload is UTF-8 JSON (other bits reserved)."""

# id, timestamp_ns, priority, flags, payload_len, reserved, type, target_id,
# carrier, carrier_pad, payload: native byte order, no implicit padding (the
# struct has none either: every member sits at a multiple of its alignment).
_RECORD = struct.Struct("=QqBBHI32s32s25s7s136s")
assert _RECORD.size == RECORD_SIZE

_OFFSETS = {
    "id": 0,
    "timestamp_ns": 8,
    "priority": 16,
    "flags": 17,
    "payload_len": 18,
    "reserved": 20,
    "type": 24,
    "target_id": 56,
    "carrier": 88,
    "carrier_pad": 113,
    "payload": 120,
}

EVENT_DTYPE: np.dtype[np.void] = np.dtype(
    {
        "names": list(_OFFSETS),
        "formats": [
            np.uint64,
            np.int64,
            np.uint8,
            np.uint8,
            np.uint16,
            np.uint32,
            "S32",
            "S32",
            (np.uint8, (CARRIER_SIZE,)),
            (np.uint8, (7,)),
            (np.uint8, (PAYLOAD_MAX,)),
        ],
        "offsets": list(_OFFSETS.values()),
        "itemsize": RECORD_SIZE,
    }
)
"""numpy structured dtype of ``mxrc_event`` (native byte order), e.g. for a numba body."""

_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_NO_TRACE = bytes(16)


class EventError(MxrcError, ValueError):
    """An event does not fit the ``mxrc_event`` record, or a record is not a valid event."""


class Priority(enum.IntEnum):
    """Event priority (``MXRC_PRIO_*``): decides admission, not order."""

    CRITICAL = 0
    """Never dropped by the fill thresholds: its own queue/ring, whose overflow is sticky."""
    HIGH = 1
    """Dropped only when the queue is full."""
    NORMAL = 2
    """Dropped when the queue is ≥ 90 % full."""
    LOW = 3
    """Dropped when the queue is ≥ 80 % full."""


def admits(priority: Priority | int, fill: int, capacity: int) -> bool:
    """Whether an event of ``priority`` enters a queue holding ``fill`` of ``capacity``.

    LOW needs ``fill < 80 %``, NORMAL ``fill < 90 %``, HIGH ``fill < capacity``
    (integer arithmetic, as the C++ rings do). For CRITICAL, ``fill`` and
    ``capacity`` are those of its own queue/ring: admitted unless it is full.
    """
    p = _priority(priority)
    if p is Priority.LOW:
        return fill * 10 < capacity * 8
    if p is Priority.NORMAL:
        return fill * 10 < capacity * 9
    return fill < capacity


def _priority(value: Priority | int) -> Priority:
    if isinstance(value, Priority):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(
            f"event priority must be a Priority or an int 0..3 (CRITICAL, HIGH, NORMAL, LOW), "
            f"got {value!r}"
        )
    try:
        return Priority(value)
    except ValueError:
        raise EventError(
            f"event priority must be 0..3 (CRITICAL, HIGH, NORMAL, LOW), got {value}"
        ) from None


def _name_bytes(what: str, value: object, limit: int, *, allow_empty: bool) -> bytes:
    if not isinstance(value, str):
        raise EventError(f"event {what} must be a str, got {type(value).__name__}")
    raw = value.encode("utf-8")
    if not raw and not allow_empty:
        raise EventError(f"event {what} must not be empty")
    if len(raw) > limit:
        raise EventError(
            f"event {what} {value!r} is {len(raw)} bytes in UTF-8; the mxrc_event record holds "
            f"at most {limit}"
        )
    if "\0" in value:
        raise EventError(f"event {what} {value!r} contains a NUL character")
    return raw


def _encode_payload(payload: object) -> tuple[bytes, bool]:
    """The payload's bytes and whether they were encoded as JSON here."""
    if payload is None:
        return b"", False
    if isinstance(payload, bytes | bytearray | memoryview):
        raw = bytes(payload)
        kind = "payload"
    else:
        try:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EventError(
                f"event payload must be bytes or JSON-serialisable (dict, list, str, numbers, "
                f"bool, None): {exc}"
            ) from None
        raw = text.encode("utf-8")
        kind = "payload encoded as JSON"
    if len(raw) > PAYLOAD_MAX:
        raise EventError(
            f"event {kind} is {len(raw)} bytes; the mxrc_event record holds at most "
            f"{PAYLOAD_MAX} (put bulk data in the DataStore and send its name)"
        )
    return raw, kind != "payload"


def _carrier(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EventError(
            f"event carrier must be {CARRIER_SIZE} bytes (trace id, span id, flags) or None, "
            f"got {type(value).__name__}"
        )
    raw = bytes(value)
    if len(raw) != CARRIER_SIZE:
        raise EventError(
            f"event carrier must be {CARRIER_SIZE} bytes (trace id 16, span id 8, flags 1), "
            f"got {len(raw)}"
        )
    return None if raw[:16] == _NO_TRACE else raw


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Event:
    """An event: what a producer publishes and subscribers receive.

    ``type``: a non-empty name of at most 32 UTF-8 bytes (dotted by
    convention, ``"task.state_changed"``; ``*`` is reserved for
    subscription patterns). ``payload``: bytes as given, or any other value
    encoded as compact JSON (UTF-8), at most 136 bytes either way; None is an
    empty payload. ``priority``: :class:`Priority` (or 0..3).
    ``target_id``: at most 32 UTF-8 bytes ("" = none). ``id`` and
    ``timestamp_ns`` (CLOCK_MONOTONIC): 0 lets the bus set them when the event
    is published. ``carrier``: the 25-byte trace carrier or None (a carrier
    whose trace id is all zero is None); the bus attaches the current trace
    context to an event published without one. ``is_json``: the payload is
    UTF-8 JSON (``flags`` bit 0 of the record, ``MXRC_EVENT_FLAG_JSON``);
    a payload encoded as JSON here always has it; True with a bytes payload
    declares those bytes JSON (the default None: False for bytes).

    Immutable; :func:`dataclasses.replace` makes a changed copy. Invalid
    values raise :class:`EventError` (a ValueError).
    """

    type: str
    payload: bytes
    priority: Priority
    target_id: str
    id: int
    timestamp_ns: int
    carrier: bytes | None
    is_json: bool = dataclasses.field(compare=False)
    """Payload flagged as UTF-8 JSON; not part of equality (the bytes are)."""

    def __init__(
        self,
        type: str,
        payload: object = None,
        *,
        priority: Priority | int = Priority.NORMAL,
        target_id: str = "",
        id: int = 0,
        timestamp_ns: int = 0,
        carrier: bytes | bytearray | memoryview | None = None,
        is_json: bool | None = None,
    ) -> None:
        _name_bytes("type", type, TYPE_MAX, allow_empty=False)
        if "*" in type:
            raise EventError(
                f"event type {type!r} contains '*', reserved for subscription patterns"
            )
        _name_bytes("target_id", target_id, TARGET_MAX, allow_empty=True)
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= _U64_MAX:
            raise EventError(f"event id must be an int in 0..2**64-1, got {id!r}")
        if (
            isinstance(timestamp_ns, bool)
            or not isinstance(timestamp_ns, int)
            or not _I64_MIN <= timestamp_ns <= _I64_MAX
        ):
            raise EventError(f"event timestamp_ns must be an int64, got {timestamp_ns!r}")
        raw, encoded = _encode_payload(payload)
        set_ = object.__setattr__
        set_(self, "type", type)
        set_(self, "payload", raw)
        set_(self, "priority", _priority(priority))
        set_(self, "target_id", target_id)
        set_(self, "id", id)
        set_(self, "timestamp_ns", timestamp_ns)
        set_(self, "carrier", _carrier(carrier))
        set_(self, "is_json", encoded if is_json is None else bool(is_json) or encoded)

    def json(self) -> Any:
        """The payload decoded as JSON (None for an empty payload), whatever :attr:`is_json` says.

        Raises EventError when the payload is not UTF-8 JSON (a raw bytes payload).
        """
        if not self.payload:
            return None
        try:
            return json.loads(self.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise EventError(
                f"the payload of event {self.type!r} is not JSON ({exc}); read event.payload "
                "for raw bytes"
            ) from None

    @property
    def trace_id(self) -> bytes | None:
        """The 16-byte trace id of the carrier, or None."""
        return None if self.carrier is None else self.carrier[:16]

    def to_record(self) -> bytes:
        """The 256-byte ``mxrc_event`` record (native byte order, unused bytes zero)."""
        return _RECORD.pack(
            self.id,
            self.timestamp_ns,
            int(self.priority),
            FLAG_JSON if self.is_json else 0,
            len(self.payload),
            0,
            self.type.encode("utf-8"),
            self.target_id.encode("utf-8"),
            self.carrier or b"",
            b"",
            self.payload,
        )

    @classmethod
    def from_record(cls, record: bytes | bytearray | memoryview) -> Event:
        """Decode a 256-byte ``mxrc_event`` record.

        ``flags`` bit 0 becomes :attr:`is_json`; the other flag bits and the
        reserved bytes are ignored.

        Raises EventError for a wrong size, a priority outside 0..3, a
        payload_len over 136, an empty type or names that are not UTF-8.
        """
        raw = memoryview(record).cast("B")
        if raw.nbytes != RECORD_SIZE:
            raise EventError(
                f"an mxrc_event record is exactly {RECORD_SIZE} bytes, got {raw.nbytes}"
            )
        (ident, ts, prio, flags, plen, _res, type_, target, carrier, _pad, payload) = (
            _RECORD.unpack(raw)
        )
        if prio > Priority.LOW:
            raise EventError(f"mxrc_event record has priority {prio}; expected 0..3")
        if plen > PAYLOAD_MAX:
            raise EventError(
                f"mxrc_event record has payload_len {plen}; expected at most {PAYLOAD_MAX}"
            )
        try:
            type_name = type_.split(b"\0", 1)[0].decode("utf-8")
            target_id = target.split(b"\0", 1)[0].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(
                f"mxrc_event record has a type or target_id not in UTF-8: {exc}"
            ) from None
        if not type_name:
            raise EventError("mxrc_event record has an empty type")
        return cls(
            type_name,
            payload[:plen],
            priority=Priority(prio),
            target_id=target_id,
            id=ident,
            timestamp_ns=ts,
            carrier=carrier,
            is_json=bool(flags & FLAG_JSON),
        )


# ---------------------------------------------------------------- trace context (part TC)

CarrierProvider = Callable[[], bytes | None]
"""Returns the current trace context as a 25-byte carrier, or None."""
ContextActivator = Callable[[bytes], AbstractContextManager[object]]
"""Makes a carrier's context the current one inside a ``with`` block."""


def current_carrier() -> bytes | None:
    """The current trace context (this thread / asyncio task) as a 25-byte carrier, or None.

    The default ``carrier_provider`` of :class:`EventBus`:
    :func:`mxrc.tracecontext.current` as a carrier (``docs/trace-context.md``).
    """
    from mxrc import tracecontext  # lazily: the bus does not need it to import

    ctx = tracecontext.current()
    return None if ctx is None else ctx.to_carrier()


def use_carrier(carrier: bytes) -> AbstractContextManager[object]:
    """A context manager making ``carrier``'s trace context current inside it.

    The default ``dispatch_context`` of :class:`EventBus`: handlers run with
    the publisher's context (:func:`mxrc.tracecontext.use`), so the spans they
    start join the publisher's trace. A malformed carrier (no span id) is
    counted by the trace-context module and leaves the context as it is.
    """
    from mxrc import tracecontext

    ctx = tracecontext.TraceContext.from_carrier(carrier)
    return nullcontext() if ctx is None else tracecontext.use(ctx)


# ---------------------------------------------------------------- observers, subscriptions


class BusObserver:
    """Hooks around publish and dispatch; subclass and override what you need.

    ``before_publish``/``after_publish`` run on the publishing thread (for
    events received from a transport: the thread that polled it, normally
    the dispatch thread), the dispatch hooks
    on the dispatch thread. An exception in a hook is logged and counted
    (``observer_errors``); it never stops a publish or a dispatch. Keep hooks
    short: they delay the publisher.
    """

    def before_publish(self, event: Event) -> None:
        """The event (id, timestamp and carrier set) is about to meet admission."""

    def after_publish(self, event: Event, admitted: bool) -> None:
        """Admission decided: ``admitted`` False means the event was dropped."""

    def before_dispatch(self, event: Event, n_subscribers: int) -> None:
        """The event is about to be handed to ``n_subscribers`` handlers (after filters)."""

    def after_dispatch(self, event: Event, n_subscribers: int) -> None:
        """Every handler has returned (or raised)."""


Handler = Callable[[Event], object]
Filter = Callable[[Event], bool]


def _patterns(types: str | Iterable[str]) -> tuple[str, ...]:
    items = (types,) if isinstance(types, str) else tuple(types)
    if not items:
        raise ValueError("subscribe needs at least one event type or pattern")
    for p in items:
        if not isinstance(p, str) or not p:
            raise ValueError(f"an event type pattern must be a non-empty str, got {p!r}")
        if "*" in p[:-1]:
            raise ValueError(
                f"event type pattern {p!r}: '*' is allowed only at the end (prefix match, "
                "'task.*') or alone ('*', every event)"
            )
        stem = p.removesuffix("*")
        if len(stem.encode("utf-8")) > TYPE_MAX:
            raise ValueError(
                f"event type pattern {p!r} is longer than an event type can be ({TYPE_MAX} "
                "bytes): it would never match"
            )
    return items


def _match(patterns: tuple[str, ...], type_: str) -> bool:
    for p in patterns:
        if p.endswith("*"):
            if type_.startswith(p[:-1]):
                return True
        elif p == type_:
            return True
    return False


class Subscription:
    """A handler subscribed to event types (from :meth:`EventBus.subscribe`).

    :meth:`cancel` (or leaving its ``with`` block) unsubscribes; an event
    already being dispatched may still reach it once.
    """

    __slots__ = ("_bus", "active", "delivered", "errors", "filter", "handler", "patterns")

    def __init__(
        self, bus: EventBus, patterns: tuple[str, ...], handler: Handler, filter: Filter | None
    ) -> None:
        self._bus = bus
        self.patterns = patterns
        """The exact types and prefix patterns it matches."""
        self.handler = handler
        self.filter = filter
        """Predicate on the event; the handler runs only where it returns true."""
        self.active = True
        """False once cancelled."""
        self.delivered = 0
        """Events handed to the handler."""
        self.errors = 0
        """Exceptions raised by the handler or the filter."""

    def matches(self, type_: str) -> bool:
        """Whether an event of this type reaches the filter of this subscription."""
        return _match(self.patterns, type_)

    def cancel(self) -> None:
        """Unsubscribe. Idempotent."""
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        return f"<Subscription {', '.join(self.patterns)} -> {self.handler!r} ({state})>"


# ---------------------------------------------------------------- transports


@runtime_checkable
class Transport(Protocol):
    """Where a bus meets another producer/consumer of ``mxrc_event`` records.

    The ring-backed transports of the agent implement this: ``receive``
    drains the RT→agent event rings (CRITICAL first), ``send`` pushes to the
    agent→RT ring with the admission rule. :class:`InMemoryTransport` is the
    in-process one.
    """

    def receive(self, max_records: int) -> Sequence[bytes | bytearray | memoryview]:
        """Up to ``max_records`` records waiting (256 bytes each); empty when none. Never blocks."""
        ...

    def send(self, record: bytes, priority: Priority) -> bool:
        """Queue one 256-byte record; False when it was dropped (full / admission). Never blocks."""
        ...


class InMemoryTransport:
    """One end of an in-process record channel (a stand-in for a ring set).

    :meth:`pair` makes two connected ends: what one end :meth:`send`\\s, the
    other :meth:`receive`\\s. Each direction holds up to ``capacity`` records
    with the ring's admission rule (:func:`admits`) and up to
    ``critical_capacity`` CRITICAL records apart, received first. Counters:
    :attr:`sent`, :attr:`dropped`, :attr:`received`. Thread-safe.
    """

    def __init__(self, capacity: int = 1024, critical_capacity: int = 64) -> None:
        if capacity < 1 or critical_capacity < 1:
            raise ValueError(
                f"capacities must be >= 1 record, got capacity={capacity}, "
                f"critical_capacity={critical_capacity}"
            )
        self.capacity = capacity
        self.critical_capacity = critical_capacity
        self._lock = threading.Lock()
        self._inbox: deque[bytes] = deque()
        self._critical: deque[bytes] = deque()
        self._peer: InMemoryTransport = self
        self.sent = 0
        """Records this end sent that the other end admitted."""
        self.dropped = 0
        """Records this end sent that the other end refused (admission, full)."""
        self.received = 0
        """Records this end handed out from receive()."""
        self.critical_overflow = False
        """Sticky: a CRITICAL record sent to this end found its critical queue full."""

    @classmethod
    def pair(
        cls, capacity: int = 1024, critical_capacity: int = 64
    ) -> tuple[InMemoryTransport, InMemoryTransport]:
        """Two connected ends (a loopback when a single end is used alone)."""
        a = cls(capacity, critical_capacity)
        b = cls(capacity, critical_capacity)
        a._peer, b._peer = b, a
        return a, b

    def pending(self) -> int:
        """Records waiting to be received at this end."""
        with self._lock:
            return len(self._inbox) + len(self._critical)

    def send(self, record: bytes, priority: Priority) -> bool:
        """Queue ``record`` at the other end; False when its admission refused it."""
        if len(record) != RECORD_SIZE:
            raise EventError(f"a record is {RECORD_SIZE} bytes, got {len(record)}")
        ok = self._peer._deliver(bytes(record), priority)
        with self._lock:
            if ok:
                self.sent += 1
            else:
                self.dropped += 1
        return ok

    def _deliver(self, record: bytes, priority: Priority) -> bool:
        with self._lock:
            if priority is Priority.CRITICAL:
                if admits(priority, len(self._critical), self.critical_capacity):
                    self._critical.append(record)
                    return True
                self.critical_overflow = True
                return False
            if admits(priority, len(self._inbox), self.capacity):
                self._inbox.append(record)
                return True
            return False

    def receive(self, max_records: int) -> list[bytes]:
        """Up to ``max_records`` waiting records, CRITICAL ones first."""
        out: list[bytes] = []
        with self._lock:
            for queue in (self._critical, self._inbox):
                while queue and len(out) < max_records:
                    out.append(queue.popleft())
            self.received += len(out)
        return out


@dataclasses.dataclass(frozen=True)
class TransportCounters:
    """Counters of one transport attached to a bus."""

    received: int
    """Records received and decoded (then published into the bus, admission applies)."""
    decode_errors: int
    """Records received that were not valid events (skipped, logged)."""
    forwarded: int
    """Events sent to the transport and accepted by it."""
    forward_dropped: int
    """Events the transport refused (its ring full / admission) or whose send raised."""


@dataclasses.dataclass(frozen=True)
class BusCounters:
    """A consistent snapshot of an :class:`EventBus`'s counters (for ``mxrc_bus_*`` metrics)."""

    name: str
    published: Mapping[Priority, int]
    """Events admitted, per priority (published locally or received from a transport)."""
    dropped: Mapping[Priority, int]
    """Events refused, per priority (admission thresholds, CRITICAL overflow, closed bus)."""
    dispatched: int
    """Events taken off the queues and dispatched (to any number of handlers)."""
    delivered: int
    """Handler calls that returned normally."""
    handler_errors: int
    """Handler or filter calls that raised."""
    observer_errors: int
    """Observer hook calls that raised."""
    unhandled: int
    """Events dispatched that no handler (after filters) received."""
    queue_depth: int
    """Non-CRITICAL events waiting."""
    critical_depth: int
    """CRITICAL events waiting."""
    capacity: int
    critical_capacity: int
    critical_overflow: bool
    """Sticky: a CRITICAL event was dropped because its queue was full."""
    transports: Mapping[str, TransportCounters]


# ---------------------------------------------------------------- the bus

DEFAULT_CAPACITY = 10_000
"""Default bound of the queue of non-CRITICAL events (upstream's bus)."""
DEFAULT_CRITICAL_CAPACITY = 1024
"""Default bound of the CRITICAL queue."""

_Item = tuple[Event, "_Attached | None"]
_MATCH_CACHE_MAX = 4096
_ERROR_LOG_FIRST = 3
_ERROR_LOG_EVERY = 1000


class _Attached:
    """A transport attached to a bus, with its forward patterns and counters."""

    __slots__ = (
        "decode_errors",
        "forward_dropped",
        "forward_filter",
        "forwarded",
        "name",
        "patterns",
        "receive",
        "received",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        name: str,
        receive: bool,
        patterns: tuple[str, ...],
        forward_filter: Filter | None,
    ) -> None:
        self.transport = transport
        self.name = name
        self.receive = receive
        self.patterns = patterns
        self.forward_filter = forward_filter
        self.received = 0
        self.decode_errors = 0
        self.forwarded = 0
        self.forward_dropped = 0


class EventBus:
    """A bounded, prioritised publish/subscribe bus dispatching on its own thread.

    ``capacity`` bounds the queue of non-CRITICAL events (admission: LOW
    dropped at ≥ 80 % full, NORMAL at ≥ 90 %, HIGH when full);
    ``critical_capacity`` bounds the CRITICAL queue (dispatched first; a
    CRITICAL event finding it full is dropped, counted and sets the sticky
    :attr:`critical_overflow`). Order: FIFO within each queue.

    ``carrier_provider`` (default :func:`current_carrier`, the publishing
    thread's trace context) fills the carrier of events published without
    one; None disables it. ``dispatch_context`` (default :func:`use_carrier`)
    makes an event's carrier the current context while its handlers run;
    None disables it. ``poll_interval_s``: how often an idle dispatch thread
    polls attached transports. ``clock``: timestamps of events published with
    ``timestamp_ns=0`` (default ``time.monotonic_ns``, CLOCK_MONOTONIC).

    :meth:`start` the dispatch thread (or use the bus as a context manager),
    :meth:`close` it. Events published before :meth:`start` wait in the
    queue. Thread-safe: publish and subscribe from any thread.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        critical_capacity: int = DEFAULT_CRITICAL_CAPACITY,
        name: str = "default",
        carrier_provider: CarrierProvider | None = current_carrier,
        dispatch_context: ContextActivator | None = use_carrier,
        poll_interval_s: float = 0.001,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        for what, value in (("capacity", capacity), ("critical_capacity", critical_capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EventBus {what} must be an int >= 1 (events), got {value!r}")
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s!r}")
        self.name = name
        """The ``bus`` label of its metrics."""
        self.capacity = capacity
        self.critical_capacity = critical_capacity
        self._carrier_provider = carrier_provider
        self._dispatch_context = dispatch_context
        self._poll_interval_s = float(poll_interval_s)
        self._clock = clock
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Item] = deque()
        self._critical: deque[_Item] = deque()
        self._subs: tuple[Subscription, ...] = ()
        self._match_cache: dict[str, tuple[Subscription, ...]] = {}
        self._observers: tuple[BusObserver, ...] = ()
        self._transports: tuple[_Attached, ...] = ()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # items being dispatched (flush waits for them)
        # One consumer at a time per transport (a ring is single-consumer).
        self._pump_lock = threading.Lock()
        self._closed = False
        self._published = [0] * len(Priority)
        self._dropped = [0] * len(Priority)
        self._dispatched = 0
        self._delivered = 0
        self._handler_errors = 0
        self._observer_errors = 0
        self._unhandled = 0
        self._critical_overflow = False
        self._provider_errors = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> EventBus:
        """Start the dispatch thread (daemon, ``mxrc-eventbus-<name>``); returns self."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"EventBus {self.name!r} is closed; make a new one")
            if self._thread is not None:
                raise RuntimeError(f"EventBus {self.name!r} is already started")
            self._thread = threading.Thread(
                target=self._run, name=f"mxrc-eventbus-{self.name}", daemon=True
            )
            # under the lock: close() never sees a thread that is not started
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """The dispatch thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, *, drain: bool = True, timeout: float | None = 5.0) -> bool:
        """Stop accepting events and stop the dispatch thread. Idempotent.

        ``drain``: dispatch what is queued first (on the caller's thread when
        the bus was never started); otherwise discard it (counted as
        dropped). Transports are not polled any more. Returns False when the
        dispatch thread did not end within ``timeout`` (a handler is stuck).
        """
        with self._cond:
            self._closed = True
            if not drain:
                for item in itertools.chain(self._queue, self._critical):
                    self._dropped[item[0].priority] += 1
                self._queue.clear()
                self._critical.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            if drain:
                self._dispatch_queued()
            return True
        if thread is threading.current_thread():
            return True  # closed from a handler: the thread ends after it
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> EventBus:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ subscribe, observe, attach

    def subscribe(
        self,
        types: str | Iterable[str],
        handler: Handler,
        *,
        filter: Filter | None = None,
    ) -> Subscription:
        """Call ``handler(event)`` on the dispatch thread for every matching event.

        ``types``: an exact type (``"task.state_changed"``), a prefix pattern
        ending in ``*`` (``"task.*"``), ``"*"`` for every event, or several of
        these. ``filter``: a predicate; the handler runs only where it
        returns true. Handlers run in subscription order; one that raises is
        logged and counted and the others still run.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if filter is not None and not callable(filter):
            raise TypeError(f"filter must be callable or None, got {type(filter).__name__}")
        sub = Subscription(self, _patterns(types), handler, filter)
        with self._lock:
            self._subs = (*self._subs, sub)
            self._match_cache = {}
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            sub.active = False
            if sub in self._subs:
                self._subs = tuple(s for s in self._subs if s is not sub)
                self._match_cache = {}

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The active subscriptions, in order."""
        return self._subs

    def add_observer(self, observer: BusObserver) -> None:
        """Call ``observer``'s hooks around every publish and dispatch (:class:`BusObserver`)."""
        with self._lock:
            if any(o is observer for o in self._observers):
                raise ValueError(f"{observer!r} already observes EventBus {self.name!r}")
            self._observers = (*self._observers, observer)

    def remove_observer(self, observer: BusObserver) -> None:
        """Stop calling ``observer``; ValueError when it is not observing."""
        with self._lock:
            if not any(o is observer for o in self._observers):
                raise ValueError(f"{observer!r} does not observe EventBus {self.name!r}")
            self._observers = tuple(o for o in self._observers if o is not observer)

    def attach(
        self,
        transport: Transport,
        *,
        receive: bool = True,
        forward: str | Iterable[str] | None = None,
        forward_filter: Filter | None = None,
        name: str | None = None,
    ) -> None:
        """Connect a :class:`Transport`.

        ``receive``: the dispatch thread polls it and publishes every record
        it gets into this bus (the producer's id, timestamp and carrier are
        kept; admission applies). ``forward``: types/patterns (as for
        :meth:`subscribe`) of events sent to it as records when dispatched,
        optionally narrowed by ``forward_filter``; an event received from a
        transport is never forwarded back to it. ``name``: its ``transport``
        label in the counters (default: the class name and an index).
        """
        if not isinstance(transport, Transport):
            raise TypeError(
                f"{type(transport).__name__} is not a Transport (needs receive(max_records) "
                "and send(record, priority))"
            )
        patterns = () if forward is None else _patterns(forward)
        with self._lock:
            if any(a.transport is transport for a in self._transports):
                raise ValueError(f"{transport!r} is already attached to EventBus {self.name!r}")
            label = name or f"{type(transport).__name__}-{len(self._transports)}"
            if any(a.name == label for a in self._transports):
                raise ValueError(f"EventBus {self.name!r} already has a transport named {label!r}")
            self._transports = (
                *self._transports,
                _Attached(transport, label, receive, patterns, forward_filter),
            )
            self._cond.notify_all()  # an idle dispatch thread starts polling

    def detach(self, transport: Transport) -> None:
        """Disconnect a transport; ValueError when it is not attached."""
        with self._lock:
            if not any(a.transport is transport for a in self._transports):
                raise ValueError(f"{transport!r} is not attached to EventBus {self.name!r}")
            self._transports = tuple(a for a in self._transports if a.transport is not transport)

    # ------------------------------------------------------------ publish

    def publish(
        self,
        event: Event | str,
        payload: object = None,
        *,
        priority: Priority | int | None = None,
        target_id: str | None = None,
    ) -> bool:
        """Publish an event; True when admitted, False when dropped (and counted).

        ``event``: an :class:`Event`, or a type name with ``payload``,
        ``priority`` (default NORMAL) and ``target_id`` to build one. An id
        and a timestamp are set when they are 0, and the current trace
        context becomes the carrier when the event has none. Never blocks on
        the dispatch thread: handlers run later, on it. A closed bus drops.
        """
        if isinstance(event, Event):
            if payload is not None or priority is not None or target_id is not None:
                raise TypeError("publish(Event) takes no payload, priority or target_id")
        else:
            event = Event(
                event,
                payload,
                priority=Priority.NORMAL if priority is None else priority,
                target_id=target_id or "",
            )
        return self._admit(self._complete(event, local=True), None)

    def _complete(self, event: Event, *, local: bool) -> Event:
        changes: dict[str, Any] = {}
        if event.id == 0:
            changes["id"] = next(self._ids)
        if event.timestamp_ns == 0:
            changes["timestamp_ns"] = self._clock()
        if local and event.carrier is None and self._carrier_provider is not None:
            try:
                carrier = self._carrier_provider()
            except Exception as exc:
                self._provider_errors += 1
                if self._provider_errors <= _ERROR_LOG_FIRST:
                    _log.warning("EventBus %r: carrier_provider raised: %r", self.name, exc)
                carrier = None
            if carrier is not None:
                changes["carrier"] = carrier
        return dataclasses.replace(event, **changes) if changes else event

    def _admit(self, event: Event, origin: _Attached | None) -> bool:
        observers = self._observers
        for obs in observers:
            self._call_observer(obs.before_publish, event)
        p = event.priority
        with self._cond:
            if self._closed:
                admitted = False
            elif p is Priority.CRITICAL:
                admitted = len(self._critical) < self.critical_capacity
                if admitted:
                    self._critical.append((event, origin))
                else:
                    self._critical_overflow = True
            else:
                admitted = admits(p, len(self._queue), self.capacity)
                if admitted:
                    self._queue.append((event, origin))
            if admitted:
                self._published[p] += 1
                self._cond.notify_all()
            else:
                self._dropped[p] += 1
        if not admitted and p is Priority.CRITICAL and not self._closed:
            _log.error(
                "EventBus %r: CRITICAL event %r dropped: the critical queue is full (%d)",
                self.name,
                event.type,
                self.critical_capacity,
            )
        for obs in observers:
            self._call_observer(obs.after_publish, event, admitted)
        return admitted

    def _call_observer(self, hook: Callable[..., object], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            with self._lock:
                self._observer_errors += 1
                n = self._observer_errors
            if n <= _ERROR_LOG_FIRST or n % _ERROR_LOG_EVERY == 0:
                _log.exception(
                    "EventBus %r: observer hook %r raised (%d so far)", self.name, hook, n
                )

    # ------------------------------------------------------------ dispatch

    @property
    def critical_overflow(self) -> bool:
        """Sticky: a CRITICAL event was dropped because the critical queue was full."""
        return self._critical_overflow

    def pending(self) -> int:
        """Events waiting to be dispatched (both queues)."""
        with self._lock:
            return len(self._queue) + len(self._critical)

    def pending_events(self) -> list[Event]:
        """A copy of the events waiting to be dispatched, critical first, each queue in
        arrival order (what a checkpoint keeps; the queues are not changed)."""
        with self._lock:
            return [ev for ev, _origin in itertools.chain(self._critical, self._queue)]

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every queued event has been dispatched; False on timeout.

        Polls attached transports once first, so records already waiting
        there are included. Not from a handler (RuntimeError) nor on a bus
        that is not started (use :meth:`dispatch_pending`).
        """
        thread = self._thread
        if thread is None:
            raise RuntimeError(
                f"EventBus {self.name!r} is not started: start() it or call dispatch_pending()"
            )
        if thread is threading.current_thread():
            raise RuntimeError("flush() from an event handler would wait for itself")
        if not self._closed:
            self._pump()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._critical or self._in_flight:
                if not thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def dispatch_pending(self, max_events: int | None = None) -> int:
        """Poll the transports once and dispatch queued events on this thread; how many.

        For a bus driven by its owner's loop instead of the dispatch thread
        (RuntimeError when the thread is started: events would race).
        """
        if self._thread is not None:
            raise RuntimeError(
                f"EventBus {self.name!r} dispatches on its own thread; use flush() to wait"
            )
        if not self._closed:
            self._pump()
        return self._dispatch_queued(max_events)

    def _dispatch_queued(self, max_events: int | None = None) -> int:
        n = 0
        while max_events is None or n < max_events:
            with self._cond:
                item = self._take_locked()
            if item is None:
                break
            self._dispatch(item)
            n += 1
        return n

    def _take_locked(self) -> _Item | None:
        if self._critical:
            item = self._critical.popleft()
        elif self._queue:
            item = self._queue.popleft()
        else:
            return None
        self._in_flight += 1
        return item

    def _run(self) -> None:
        while True:
            got = 0 if self._closed else self._pump()
            with self._cond:
                item = self._take_locked()
                if item is None:
                    if self._closed:
                        self._cond.notify_all()
                        return
                    if not got:
                        timeout = self._poll_interval_s if self._transports else None
                        self._cond.wait(timeout)
                    continue
            self._dispatch(item)

    def _handlers(self, type_: str) -> tuple[Subscription, ...]:
        subs = self._match_cache.get(type_)
        if subs is None:
            with self._lock:
                subs = tuple(s for s in self._subs if s.matches(type_))
                if len(self._match_cache) >= _MATCH_CACHE_MAX:
                    self._match_cache = {}
                self._match_cache[type_] = subs
        return subs

    def _dispatch(self, item: _Item) -> None:
        event, origin = item
        try:
            targets = [s for s in self._handlers(event.type) if s.active and self._passes(s, event)]
            n = len(targets)
            observers = self._observers
            for obs in observers:
                self._call_observer(obs.before_dispatch, event, n)
            delivered = self._deliver(event, targets)
            forwarded = self._forward(event, origin)
            for obs in observers:
                self._call_observer(obs.after_dispatch, event, n)
            with self._lock:
                self._dispatched += 1
                self._delivered += delivered
                if n == 0 and not forwarded:
                    self._unhandled += 1
        except Exception:  # never let the dispatch thread die
            _log.exception("EventBus %r: dispatching event %r failed", self.name, event.type)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _deliver(self, event: Event, targets: list[Subscription]) -> int:
        delivered = 0
        with contextlib.ExitStack() as stack:
            if event.carrier is not None and self._dispatch_context is not None:
                try:
                    stack.enter_context(self._dispatch_context(event.carrier))
                except Exception:
                    _log.exception("EventBus %r: dispatch_context raised", self.name)
            for sub in targets:
                try:
                    sub.handler(event)
                except Exception:
                    self._handler_error(sub, event, "handler")
                else:
                    sub.delivered += 1
                    delivered += 1
        return delivered

    def _passes(self, sub: Subscription, event: Event) -> bool:
        if sub.filter is None:
            return True
        try:
            return bool(sub.filter(event))
        except Exception:
            self._handler_error(sub, event, "filter")
            return False

    def _handler_error(self, sub: Subscription, event: Event, what: str) -> None:
        sub.errors += 1
        with self._lock:
            self._handler_errors += 1
        if sub.errors <= _ERROR_LOG_FIRST or sub.errors % _ERROR_LOG_EVERY == 0:
            _log.exception(
                "EventBus %r: %s of %r raised on event %r (id %d; %d errors so far)",
                self.name,
                what,
                sub,
                event.type,
                event.id,
                sub.errors,
            )

    # ------------------------------------------------------------ transports

    def _pump(self, max_records: int = 256) -> int:
        """Receive from every receiving transport once; how many records were read."""
        with self._pump_lock:
            return self._pump_locked(max_records)

    def _pump_locked(self, max_records: int) -> int:
        total = 0
        for att in self._transports:
            if not att.receive:
                continue
            try:
                records = att.transport.receive(max_records)
            except Exception:
                _log.exception("EventBus %r: receive from transport %r raised", self.name, att.name)
                continue
            total += len(records)
            for record in records:
                try:
                    event = Event.from_record(record)
                except EventError as exc:
                    with self._lock:
                        att.decode_errors += 1
                        n = att.decode_errors
                    if n <= _ERROR_LOG_FIRST or n % _ERROR_LOG_EVERY == 0:
                        _log.warning(
                            "EventBus %r: transport %r sent an invalid record (%d so far): %s",
                            self.name,
                            att.name,
                            n,
                            exc,
                        )
                    continue
                with self._lock:
                    att.received += 1
                self._admit(self._complete(event, local=False), att)
        return total

    def _forward(self, event: Event, origin: _Attached | None) -> int:
        forwarded = 0
        record: bytes | None = None
        for att in self._transports:
            if att is origin or not att.patterns or not _match(att.patterns, event.type):
                continue
            try:
                if att.forward_filter is not None and not att.forward_filter(event):
                    continue
                if record is None:
                    record = event.to_record()
                ok = att.transport.send(record, event.priority)
            except Exception:
                _log.exception("EventBus %r: send to transport %r raised", self.name, att.name)
                ok = False
            with self._lock:
                if ok:
                    att.forwarded += 1
                    forwarded += 1
                else:
                    att.forward_dropped += 1
        return forwarded

    # ------------------------------------------------------------ counters

    def counters(self) -> BusCounters:
        """A snapshot of the counters (what :class:`mxrc.metrics.BusCollector` exports)."""
        with self._lock:
            return BusCounters(
                name=self.name,
                published={p: self._published[p] for p in Priority},
                dropped={p: self._dropped[p] for p in Priority},
                dispatched=self._dispatched,
                delivered=self._delivered,
                handler_errors=self._handler_errors,
                observer_errors=self._observer_errors,
                unhandled=self._unhandled,
                queue_depth=len(self._queue),
                critical_depth=len(self._critical),
                capacity=self.capacity,
                critical_capacity=self.critical_capacity,
                critical_overflow=self._critical_overflow,
                transports={
                    a.name: TransportCounters(
                        a.received, a.decode_errors, a.forwarded, a.forward_dropped
                    )
                    for a in self._transports
                },
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self.running else "not started")
        return f"<EventBus {self.name!r} {state}, {self.pending()} pending>"
