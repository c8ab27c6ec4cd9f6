"""A :class:`~mxrc.bus.Transport` over one cycle thread's ring set (the agent's side).

:class:`RingTransport` connects an :class:`~mxrc.bus.EventBus` in the agent
to the rings of one stats slot of the instance's segment: ``receive`` takes
records from the RT -> agent ``critical`` ring first, then from the ``event``
ring; ``send`` pushes a record into the agent -> RT ``command`` ring with the
admission rule of its priority. Python pops and pushes take the ring-side
lock (a process-local mutex plus a pid word in the ring header), so several
threads or processes of the non-RT side never act as two consumers (or two
producers) of one ring. See ``docs/agent.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mxrc.bus._events import RECORD_SIZE, Priority
from mxrc.bus._rings import RingSet

__all__ = ["RingTransport"]


class RingTransport:
    """The agent's end of one ring set: RT -> agent events in, agent -> RT records out.

    ``rings``: the :class:`~mxrc.bus.RingSet` of a stats slot
    (:meth:`mxrc.bus.Segment.rings`). ``name``: a label for logs and
    metrics (default: ``"ring set <slot index>"``).

    Attach it to a bus (``bus.attach(RingTransport(rings), forward="cmd.*")``);
    the bus's dispatch thread is then the consumer of the ``critical`` and
    ``event`` rings. Records shorter than 256 bytes (a producer that pushed a
    truncated ``mxrc_event``) are zero-padded to a full record. Never blocks
    on the RT side; a Python push or pop waits at most 2 s for another
    non-RT process holding the same ring side (then SegmentError).
    """

    def __init__(self, rings: RingSet, *, name: str | None = None) -> None:
        if not isinstance(rings, RingSet):
            raise TypeError(
                f"RingTransport needs an mxrc.bus.RingSet (Segment.rings(name)), got "
                f"{type(rings).__name__}"
            )
        self._rings = rings
        self._critical = rings.critical
        self._event = rings.event
        self._command = rings.command
        self.name = name or f"ring set {rings.slot_index}"
        """Label of this transport."""
        self._lock = threading.Lock()
        self.received = 0
        """Records taken from the critical and event rings."""
        self.received_critical = 0
        """Of which from the critical ring."""
        self.sent = 0
        """Records the command ring admitted."""
        self.dropped = 0
        """Records the command ring refused (full, or over the admission threshold)."""

    @property
    def rings(self) -> RingSet:
        """The ring set it reads and writes."""
        return self._rings

    def receive(self, max_records: int) -> Sequence[bytes]:
        """Up to ``max_records`` RT -> agent records, CRITICAL ones first; never blocks on RT."""
        if max_records <= 0:
            return []
        out = self._critical.pop_many(max_records)
        n_critical = len(out)
        if len(out) < max_records:
            out.extend(self._event.pop_many(max_records - len(out)))
        for i, rec in enumerate(out):
            if len(rec) < RECORD_SIZE:
                out[i] = rec + bytes(RECORD_SIZE - len(rec))
        if out:
            with self._lock:
                self.received += len(out)
                self.received_critical += n_critical
        return out

    def send(self, record: bytes, priority: Priority) -> bool:
        """Push one 256-byte record into the command ring; False when it was dropped.

        Admission by ``priority``: LOW below 80 % fill, NORMAL below 90 %,
        HIGH and CRITICAL while not full.
        """
        ok = self._command.push(record, int(priority))
        with self._lock:
            if ok:
                self.sent += 1
            else:
                self.dropped += 1
        return ok

    def pending(self) -> int:
        """RT -> agent event records waiting (critical + event rings)."""
        return self._critical.size() + self._event.size()

    def __repr__(self) -> str:
        return f"<RingTransport {self.name}>"
