"""The agent: the non-RT side of an instance, attached to its shared-memory segment.

An :class:`Agent` attaches to the instance's segment, announces itself
(:meth:`~mxrc.bus.Segment.attach_agent`: pid, generation + 1), writes its
heartbeat every ``failover_policy.json`` ``rt.agent_heartbeat_interval_ms``
on a thread of its own (the RT side enters SAFE_MODE when the heartbeat is
older than ``rt.agent_heartbeat_timeout_ms``), and drains the rings of every
claimed stats slot:

- RT -> agent events (``critical`` ring first, then ``event``) go into its
  :class:`~mxrc.bus.EventBus` through one :class:`~mxrc.bus.RingTransport`
  per cycle thread, dispatched to subscribers on the bus's thread;
- log and span records go to pluggable sinks (default: counted and
  discarded until the logging and tracing exporters exist);
- agent -> RT events and commands go into a cycle thread's ``command`` ring
  (:meth:`Agent.send`, or events of the agent's bus matching ``forward``).

It runs in its own process (``mxrc agent``, spawned by ``mxrc run``) or, for
tests, notebooks and native bodies only, as threads of the RT process. See
``docs/agent.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mxrc.bus import (
    AgentHeartbeat,
    Event,
    EventBus,
    Priority,
    RingCounters,
    RingSet,
    RingTransport,
    Segment,
    Subscription,
)
from mxrc.bus._events import _patterns, current_carrier
from mxrc.errors import MxrcError
from mxrc.rt._placement import pid_alive

if TYPE_CHECKING:
    from mxrc.bus._events import Filter, Handler
    from mxrc.config import MxrcConfig

__all__ = [
    "DEFAULT_DRAIN_INTERVAL_S",
    "DEFAULT_RESCAN_INTERVAL_S",
    "Agent",
    "AgentCounters",
    "AgentError",
    "ExecutiveCounters",
    "RecordSink",
]

_log = logging.getLogger("mxrc.agent")

RecordSink = Callable[[str, Sequence[bytes]], object]
"""``sink(executive, records)``: a batch of log (256-byte) or span (128-byte) records
drained from the rings of the cycle thread ``executive``, oldest first."""

DEFAULT_DRAIN_INTERVAL_S = 0.01
"""How often the log and span rings are drained (events: the bus's poll interval)."""
DEFAULT_RESCAN_INTERVAL_S = 0.1
"""How often the stats slots are rescanned for new cycle threads (and the owner checked)."""

_SLOT_IN_USE = ("claimed", "released")
_DRAIN_BATCH = 1024


class AgentError(MxrcError, RuntimeError):
    """The agent cannot run: another live agent serves the instance, or it was misused."""


# ---------------------------------------------------------------- counters


@dataclass(frozen=True)
class ExecutiveCounters:
    """What the agent did with one cycle thread's rings, plus the rings' own counters."""

    name: str
    slot_index: int
    events_received: int
    """Event records taken from the critical and event rings (then published into the bus)."""
    critical_received: int
    """Of which from the critical ring."""
    commands_sent: int
    """Records the command ring admitted (:meth:`Agent.send` and forwarded events)."""
    commands_dropped: int
    """Records the command ring refused (full, or over the admission threshold)."""
    log_records: int
    """Log records drained and handed to the log sink."""
    span_records: int
    """Span records drained and handed to the span sink."""
    rings: Mapping[str, RingCounters]
    """Counters of every ring of the set (pushed, dropped, popped, size, ...)."""
    critical_overflow: bool
    """Sticky: the critical ring dropped a record."""


@dataclass(frozen=True)
class AgentCounters:
    """A snapshot of an :class:`Agent`'s counters."""

    instance: str
    pid: int
    generation: int
    """Agent generation of the segment this agent got at attach (0 before start)."""
    heartbeat_interval_ms: int
    beats: int
    """Heartbeats written (the first, at attach, included)."""
    log_records: int
    span_records: int
    sink_errors: int
    """Sink calls that raised (the records of that batch are lost, counted here)."""
    events_received: int
    commands_sent: int
    commands_dropped: int
    executives: Mapping[str, ExecutiveCounters]


# ---------------------------------------------------------------- helpers


def _count_and_discard(executive: str, records: Sequence[bytes]) -> None:
    """The default log and span sink: the agent counts the records, nothing else."""


def _python_executives_here() -> list[str]:
    """Names of executives of this process with a Python body (GIL-sensitive)."""
    try:
        from mxrc.rt import _executive
    except ImportError:  # pragma: no cover - the core is always there
        return []
    with _executive._registry_lock:
        return [ex.name for ex in _executive._live if ex._python_tier()]


class _Slot:
    """A stats slot the agent drains."""

    __slots__ = (
        "index",
        "log",
        "log_records",
        "name",
        "rings",
        "span",
        "span_records",
        "transport",
    )

    def __init__(self, index: int, name: str, rings: RingSet) -> None:
        self.index = index
        self.name = name
        self.rings = rings
        self.log = rings.log
        self.span = rings.span
        self.transport = RingTransport(rings, name=name)
        self.log_records = 0
        self.span_records = 0


# ---------------------------------------------------------------- the agent


class Agent:
    """The non-RT side of an instance: heartbeat, ring draining, the EventBus.

    ``instance_or_segment``: an instance name (the agent attaches to
    ``/dev/shm/mxrc-<instance>`` and detaches when stopped; SegmentError when
    it does not exist, is not an mxrc segment or has another layout version)
    or an open :class:`~mxrc.bus.Segment` (left open). ``config``: an
    :class:`~mxrc.config.MxrcConfig` or a config directory (default:
    ``MXRC_CONFIG_DIR``, else the defaults) supplying
    ``failover_policy.json`` ``rt.agent_heartbeat_interval_ms`` and
    ``rt.agent_heartbeat_timeout_ms``; ``heartbeat_interval_ms`` overrides
    the interval.

    ``bus``: the :class:`~mxrc.bus.EventBus` events are published into
    (default: a new one named ``"agent"``, started and closed with the
    agent). ``forward``: event types/patterns of that bus sent to every cycle
    thread's command ring when dispatched (e.g. ``"cmd.*"``; default none:
    use :meth:`send`). ``log_sink`` / ``span_sink``: ``sink(executive,
    records)`` for the log and span rings (default: counted and discarded).
    ``drain_interval_s``: how often those rings are drained;
    ``rescan_interval_s``: how often new cycle threads are looked for.

    :meth:`start` attaches and starts the threads (a heartbeat thread, a
    drain thread, the bus's dispatch thread); :meth:`run` blocks until
    :meth:`stop` (or :meth:`request_stop`, or the segment's owner going
    away); or use it as a context manager. Refuses to start while another
    live agent with a fresh heartbeat serves the instance (AgentError),
    unless ``takeover``.

    In the RT process (``mxrc run --agent thread``) its threads take the GIL:
    never next to a Python cycle body (a warning is logged when one runs).
    """

    def __init__(
        self,
        instance_or_segment: str | Segment,
        *,
        config: MxrcConfig | str | os.PathLike[str] | None = None,
        bus: EventBus | None = None,
        forward: str | Iterable[str] | None = None,
        log_sink: RecordSink | None = None,
        span_sink: RecordSink | None = None,
        heartbeat_interval_ms: int | None = None,
        drain_interval_s: float = DEFAULT_DRAIN_INTERVAL_S,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
        takeover: bool = False,
    ) -> None:
        from mxrc.config import MxrcConfig, load_config

        cfg = config if isinstance(config, MxrcConfig) else load_config(config, check_host=False)
        policy = cfg.failover_policy.rt
        interval = (
            policy.agent_heartbeat_interval_ms
            if heartbeat_interval_ms is None
            else heartbeat_interval_ms
        )
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(
                f"heartbeat_interval_ms must be an int >= 1 (milliseconds), got {interval!r}"
            )
        for what, value in (
            ("drain_interval_s", drain_interval_s),
            ("rescan_interval_s", rescan_interval_s),
        ):
            if not value > 0:
                raise ValueError(f"{what} must be > 0 seconds, got {value!r}")
        for what, sink in (("log_sink", log_sink), ("span_sink", span_sink)):
            if sink is not None and not callable(sink):
                raise TypeError(f"{what} must be callable(executive, records) or None")
        if bus is not None and not isinstance(bus, EventBus):
            raise TypeError(f"bus must be an mxrc.bus.EventBus, got {type(bus).__name__}")
        if isinstance(instance_or_segment, Segment):
            self._segment = instance_or_segment
            self._owns_segment = False
        elif isinstance(instance_or_segment, str):
            self._segment = Segment.attach(instance_or_segment)
            self._owns_segment = True
        else:
            raise TypeError(
                "Agent needs an instance name or an mxrc.bus.Segment, got "
                f"{type(instance_or_segment).__name__}"
            )
        self._config = cfg
        self._interval_ms = interval
        self._timeout_ms = policy.agent_heartbeat_timeout_ms
        self._owns_bus = bus is None
        self._bus = EventBus(name="agent") if bus is None else bus
        self._forward = None if forward is None else _patterns(forward)
        self._log_sink: RecordSink = log_sink or _count_and_discard
        self._span_sink: RecordSink = span_sink or _count_and_discard
        self._drain_interval_s = float(drain_interval_s)
        self._rescan_interval_s = float(rescan_interval_s)
        self._takeover = takeover
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()  # one drainer of the log/span rings at a time
        self._slots: dict[int, _Slot] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False
        self._generation = 0
        self._beats = 0
        self._sink_errors = 0
        self._ids = itertools.count(1)
        self._sent_ids = 0
        self.owner_gone = False
        """True once the segment's owner was seen gone (the agent then stops by itself)."""
        self.failure: str | None = None
        """What the ``check`` of :meth:`run` reported (the agent then stopped), else None."""

    # ------------------------------------------------------------ properties

    @property
    def segment(self) -> Segment:
        """The attached segment."""
        return self._segment

    @property
    def instance(self) -> str:
        return self._segment.instance

    @property
    def bus(self) -> EventBus:
        """The EventBus RT events are published into (subscribe here)."""
        return self._bus

    @property
    def generation(self) -> int:
        """The agent generation this agent got at :meth:`start` (0 before)."""
        return self._generation

    @property
    def heartbeat_interval_ms(self) -> int:
        return self._interval_ms

    @property
    def heartbeat_timeout_ms(self) -> int:
        """The RT side's timeout from the configuration (what :meth:`start` checks against)."""
        return self._timeout_ms

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._started and not self._stopped

    def executives(self) -> list[str]:
        """Names of the cycle threads (stats slots) whose rings it drains, in slot order."""
        with self._lock:
            return [s.name for _, s in sorted(self._slots.items())]

    def heartbeat(self) -> AgentHeartbeat:
        """The segment's agent heartbeat words as the RT side sees them."""
        return self._segment.agent_heartbeat()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Agent:
        """Attach as the instance's agent and start the threads; returns self.

        Raises AgentError when another live agent beat within the heartbeat
        timeout (unless ``takeover``) or the agent was already started.
        """
        if self._started or self._stopped:
            raise AgentError(f"the agent of {self._segment.path} was already started (one-shot)")
        self._check_no_other_agent()
        python = _python_executives_here()
        if python:
            _log.warning(
                "agent: running in the process of executive(s) %s with a Python body: the "
                "agent's threads take the GIL and delay every cycle (up to the switch "
                "interval); run the agent as its own process (`mxrc agent`)",
                ", ".join(repr(n) for n in python),
            )
        self._started = True
        self._generation = self._segment.attach_agent()
        self._beats = 1
        try:
            self._rescan()
            if self._owns_bus or not self._bus.running:
                self._bus.start()
            for target, label in (
                (self._heartbeat_loop, "heartbeat"),
                (self._drain_loop, "drain"),
            ):
                t = threading.Thread(target=target, name=f"mxrc-agent-{label}", daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.stop()
            raise
        _log.info(
            "agent: attached to %s as agent generation %d (pid %d), heartbeat every %d ms",
            self._segment.path,
            self._generation,
            os.getpid(),
            self._interval_ms,
        )
        return self

    def _check_no_other_agent(self) -> None:
        hb = self._segment.agent_heartbeat()
        if self._takeover or hb.pid in (0, os.getpid()):
            return
        age = hb.age_ns()
        if age is not None and age <= self._timeout_ms * 1_000_000 and pid_alive(hb.pid):
            raise AgentError(
                f"{self._segment.path} already has a live agent: pid {hb.pid}, last heartbeat "
                f"{age / 1e6:.0f} ms ago (timeout {self._timeout_ms} ms); stop it first, or "
                "pass takeover=True"
            )

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler; does not wait)."""
        self._stop.set()

    def run(self, check: Callable[[], str | None] | None = None) -> None:
        """Start if needed, then block until :meth:`stop`/:meth:`request_stop` or the
        segment's owner goes away; stops the agent before returning.

        ``check`` is called every 0.2 s: a part of the agent that died (e.g. the health
        server's thread) returns why, and the agent stops with it in :attr:`failure`
        rather than beat on without it (its supervisor then restarts it)."""
        if not self._started:
            self.start()
        try:
            while not self._stop.wait(0.2):
                failure = None if check is None else check()
                if failure is not None:
                    self.failure = failure
                    _log.error("agent: %s; stopping", failure)
                    break
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, drain what is left, detach. Idempotent.

        The last heartbeat stays in the segment (the pid is cleared), so the
        RT side sees the agent go stale after the timeout.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        try:
            if self._started and not self._segment.closed:
                with contextlib.suppress(Exception):
                    self._drain_records()
                if self._owns_bus:
                    self._bus.close(drain=True, timeout=timeout)
                else:
                    for slot in self._slot_list():
                        with contextlib.suppress(ValueError):
                            self._bus.detach(slot.transport)
                self._segment.detach_agent()
        finally:
            if self._owns_segment:
                self._segment.close()

    def __enter__(self) -> Agent:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ threads

    def _heartbeat_loop(self) -> None:
        interval = self._interval_ms / 1000.0
        while not self._stop.wait(interval):
            try:
                self._segment.beat_agent()
            except Exception:  # the segment was closed under us
                _log.exception("agent: writing the heartbeat failed; the heartbeat stops")
                return
            self._beats += 1

    def _drain_loop(self) -> None:
        last_scan = time.monotonic()
        while not self._stop.wait(self._drain_interval_s):
            try:
                self._drain_records()
                now = time.monotonic()
                if now - last_scan >= self._rescan_interval_s:
                    last_scan = now
                    if not self._segment.owner_alive():
                        self.owner_gone = True
                        _log.warning(
                            "agent: the owner of %s (pid %d) is gone; stopping",
                            self._segment.path,
                            self._segment.header["owner_pid"],
                        )
                        self._stop.set()
                        return
                    self._rescan()
            except Exception:
                _log.exception("agent: draining the rings failed")

    def _slot_list(self) -> list[_Slot]:
        with self._lock:
            return list(self._slots.values())

    def _rescan(self) -> None:
        """Attach a transport for every newly claimed stats slot (or a renamed one)."""
        for info in self._segment.slots():
            if info["state"] not in _SLOT_IN_USE:
                continue
            index, name = int(info["index"]), str(info["name"])
            with self._lock:
                old = self._slots.get(index)
                if old is not None and old.name == name:
                    continue
            slot = _Slot(index, name, self._segment.ring_set(index))
            if old is not None:
                with contextlib.suppress(ValueError):
                    self._bus.detach(old.transport)
            label = name
            if any(s.name == name for s in self._slot_list() if s.index != index):
                label = f"{name}#{index}"  # a released and a claimed slot of one name
                slot.transport.name = label
            self._bus.attach(slot.transport, forward=self._forward, name=label)
            with self._lock:
                self._slots[index] = slot
            _log.info("agent: draining the rings of cycle thread %r (slot %d)", name, index)

    def _drain_records(self) -> None:
        with self._drain_lock:
            for slot in self._slot_list():
                for ring, sink, attr in (
                    (slot.log, self._log_sink, "log_records"),
                    (slot.span, self._span_sink, "span_records"),
                ):
                    while True:
                        records = ring.pop_many(_DRAIN_BATCH)
                        if not records:
                            break
                        setattr(slot, attr, getattr(slot, attr) + len(records))
                        try:
                            sink(slot.name, records)
                        except Exception:
                            self._sink_errors += 1
                            if self._sink_errors <= 3 or self._sink_errors % 1000 == 0:
                                _log.exception(
                                    "agent: %s sink raised on %d records of %r (%d errors)",
                                    attr.split("_")[0],
                                    len(records),
                                    slot.name,
                                    self._sink_errors,
                                )
                        if len(records) < _DRAIN_BATCH:
                            break

    # ------------------------------------------------------------ events

    def subscribe(
        self, types: str | Iterable[str], handler: Handler, *, filter: Filter | None = None
    ) -> Subscription:
        """Subscribe to events on the agent's bus (RT events included): ``bus.subscribe``."""
        return self._bus.subscribe(types, handler, filter=filter)

    def send(
        self,
        event: Event | str,
        payload: object = None,
        *,
        executive: str | None = None,
        priority: Priority | int = Priority.NORMAL,
        target_id: str = "",
        carrier: bytes | None = None,
    ) -> bool:
        """Push an event or command into a cycle thread's command ring; True when admitted.

        ``event``: an :class:`~mxrc.bus.Event`, or a type with ``payload``,
        ``priority``, ``target_id`` and ``carrier`` to build one (the
        current trace context when ``carrier`` is None). ``executive``: the
        cycle thread's name; default the only one, else ``"main"``. An id
        and timestamp are set when 0. False when the ring refused it (full,
        or over the admission threshold of its priority: LOW 80 %, NORMAL
        90 %). Raises LookupError when there is no such cycle thread.
        """
        if isinstance(event, str):
            event = Event(event, payload, priority=priority, target_id=target_id, carrier=carrier)
        elif payload is not None or carrier is not None or target_id:
            raise TypeError("send(Event) takes no payload, target_id or carrier")
        changes: dict[str, Any] = {}
        if event.id == 0:
            changes["id"] = (self._generation << 48) | next(self._ids)
        if event.timestamp_ns == 0:
            changes["timestamp_ns"] = time.monotonic_ns()
        if event.carrier is None:
            current = current_carrier()
            if current is not None:
                changes["carrier"] = current
        if changes:
            event = dataclasses.replace(event, **changes)
        slot = self._slot_for(executive)
        return slot.transport.send(event.to_record(), event.priority)

    def _slot_for(self, executive: str | None) -> _Slot:
        slots = self._slot_list()
        if not slots or (executive is not None and all(s.name != executive for s in slots)):
            self._rescan()
            slots = self._slot_list()
        if executive is None:
            claimed = {s.name: s for s in slots}
            if len(claimed) == 1:
                return next(iter(claimed.values()))
            if "main" in claimed:
                return claimed["main"]
            if not claimed:
                raise LookupError(
                    f"no cycle thread has claimed a stats slot in {self._segment.path} yet"
                )
            raise LookupError(
                f"{self._segment.path} has cycle threads {sorted(claimed)}: pass executive=NAME"
            )
        found = [s for s in slots if s.name == executive]
        if not found:
            raise LookupError(
                f"no cycle thread named {executive!r} in {self._segment.path}; have "
                f"{sorted({s.name for s in slots}) or 'none'}"
            )
        # a claimed slot wins over a released one of the same name
        by_state = {int(i["index"]): i["state"] for i in self._segment.slots()}
        found.sort(key=lambda s: by_state.get(s.index) != "claimed")
        return found[0]

    # ------------------------------------------------------------ counters

    def counters(self) -> AgentCounters:
        """A snapshot of the counters (per cycle thread with its rings' counters)."""
        executives: dict[str, ExecutiveCounters] = {}
        totals = {"events": 0, "sent": 0, "dropped": 0, "log": 0, "span": 0}
        for slot in sorted(self._slot_list(), key=lambda s: s.index):
            t = slot.transport
            c = ExecutiveCounters(
                name=slot.name,
                slot_index=slot.index,
                events_received=t.received,
                critical_received=t.received_critical,
                commands_sent=t.sent,
                commands_dropped=t.dropped,
                log_records=slot.log_records,
                span_records=slot.span_records,
                rings=slot.rings.counters(),
                critical_overflow=slot.rings.critical_overflow,
            )
            executives[t.name] = c
            totals["events"] += c.events_received
            totals["sent"] += c.commands_sent
            totals["dropped"] += c.commands_dropped
            totals["log"] += c.log_records
            totals["span"] += c.span_records
        return AgentCounters(
            instance=self.instance,
            pid=os.getpid(),
            generation=self._generation,
            heartbeat_interval_ms=self._interval_ms,
            beats=self._beats,
            log_records=totals["log"],
            span_records=totals["span"],
            sink_errors=self._sink_errors,
            events_received=totals["events"],
            commands_sent=totals["sent"],
            commands_dropped=totals["dropped"],
            executives=executives,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        return f"<Agent of {self._segment.path} ({state})>"
