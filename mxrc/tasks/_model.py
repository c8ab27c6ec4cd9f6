"""Task → Sequence → Action: state machines that publish every state change.

Non-RT objects (a lock each, Python values). Every accepted transition is
handed, as a :class:`StateChange`, to the publisher of the object or of the
nearest parent that has one (the EventBus in an instance); ``to_dict()`` /
``from_dict()`` give JSON-safe, schema-versioned state.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from mxrc import tracecontext
from mxrc.tasks._states import (
    SEQUENCE_TRANSITIONS,
    TASK_TRANSITIONS,
    InvalidTransitionError,
    RunState,
    TaskMode,
    TaskModelError,
    TaskState,
)
from mxrc.tracecontext import TraceContext, TraceState

if TYPE_CHECKING:
    from mxrc.bus import Event, EventBus

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "Publisher",
    "Sequence",
    "StateChange",
    "Task",
    "bus_publisher",
    "from_dict",
    "publish_errors",
]

SCHEMA_VERSION = 1
"""Version of the ``to_dict()`` format; ``from_dict()`` refuses other versions."""

ID_MAX = 32
TRIGGER_MAX = 24
_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,32}")
_TRIGGER_RE = re.compile(r"[a-z][a-z0-9_.:\-]{0,23}")

_log = logging.getLogger("mxrc.tasks")
_errors_lock = threading.Lock()
_publish_errors = 0


def publish_errors() -> int:
    """How many times a publisher raised (logged and swallowed: the change stands)."""
    with _errors_lock:
        return _publish_errors


@dataclass(frozen=True, slots=True)
class StateChange:
    """One accepted state change, as handed to the publisher.

    ``type`` is ``"<kind>.state_changed"``; ``payload`` is
    ``{"id", "from", "to", "trigger"}`` (JSON, at most 136 bytes: it fits an
    ``mxrc_event``); ``id`` fits the event's 32-byte target id.
    ``timestamp_ns`` is ``CLOCK_MONOTONIC`` (like events); ``trace`` the trace
    context current for the change (the object's own, else the caller's).
    """

    kind: str
    id: str
    from_state: str
    to_state: str
    trigger: str
    timestamp_ns: int
    trace: TraceContext | None = None

    @property
    def type(self) -> str:
        return f"{self.kind}.state_changed"

    @property
    def payload(self) -> dict[str, str]:
        return {
            "id": self.id,
            "from": self.from_state,
            "to": self.to_state,
            "trigger": self.trigger,
        }

    def payload_json(self) -> bytes:
        """The payload as compact JSON bytes."""
        return json.dumps(self.payload, separators=(",", ":")).encode()

    def to_event(self) -> Event:
        """This change as an :class:`mxrc.bus.Event` for the EventBus.

        ``target_id`` is the object's id, the carrier its trace context; changes
        to FAILED or TIMEOUT are HIGH priority (kept until the bus is full),
        the others NORMAL.
        """
        from mxrc.bus import Event, Priority

        failed = self.to_state in ("FAILED", "TIMEOUT")
        return Event(
            self.type,
            self.payload,
            priority=Priority.HIGH if failed else Priority.NORMAL,
            target_id=self.id,
            timestamp_ns=self.timestamp_ns,
            carrier=None if self.trace is None else self.trace.to_carrier(),
        )


Publisher = Callable[[StateChange], object]
"""Receives every state change (its return value is ignored; exceptions are logged)."""


def bus_publisher(bus: EventBus) -> Publisher:
    """A publisher that puts each change on ``bus`` (:meth:`StateChange.to_event`)."""

    def publish(change: StateChange) -> bool:
        return bus.publish(change.to_event())

    return publish


def _new_id(kind: str) -> str:
    return f"{kind}-{os.urandom(6).hex()}"


def _check_id(kind: str, ident: object) -> str:
    if not isinstance(ident, str) or _ID_RE.fullmatch(ident) is None:
        raise TaskModelError(
            f"{kind} id {ident!r} is invalid: expected 1 to {ID_MAX} characters of "
            "A-Z a-z 0-9 _ . : - (it is an event's target id)"
        )
    return ident


def _check_json(what: str, value: Any) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
        same = json.loads(text) == value
    except (TypeError, ValueError) as err:
        raise TaskModelError(
            f"{what} must be JSON-safe (dicts with str keys, lists, str, int, finite float, "
            f"bool, None): {err}"
        ) from None
    if not same:
        raise TaskModelError(
            f"{what} must be JSON-safe (dicts with str keys, lists, str, int, finite float, "
            f"bool, None): {value!r} does not survive a JSON round trip (tuples? int keys?)"
        )
    return json.loads(text)  # a private copy


def _check_timeout(what: str, value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise TaskModelError(
            f"{what} must be a finite number of seconds > 0 or None, got {value!r}"
        )
    return float(value)


S = TypeVar("S", bound=enum.Enum)


class _Node(Generic[S]):
    """What Task, Sequence and Action share: id, state, lock, publisher, trace context."""

    kind: ClassVar[str]
    _states: ClassVar[type[enum.Enum]]
    _table: ClassVar[Mapping[Any, Mapping[Any, str]]]

    def __init__(
        self,
        ident: str | None,
        name: str | None,
        initial: S,
        publisher: Publisher | None,
        trace_context: TraceContext | None,
    ) -> None:
        self.id = _check_id(self.kind, _new_id(self.kind) if ident is None else ident)
        if name is not None and not isinstance(name, str):
            raise TaskModelError(f"{self.kind} {self.id!r}: name must be a str, got {name!r}")
        self.name: str = self.id if name is None else name
        if trace_context is not None and not isinstance(trace_context, TraceContext):
            raise TaskModelError(
                f"{self.kind} {self.id!r}: trace_context must be a TraceContext or None"
            )
        self.trace_context = trace_context
        self.publisher = publisher
        self.error: str | None = None
        self._state: S = initial
        self.state_changed_at_ns: int = time.time_ns()
        self._lock = threading.RLock()
        self._parent: _Node[Any] | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> S:
        return self._state

    def allowed(self) -> tuple[S, ...]:
        """The states reachable from the current one."""
        return tuple(self._allowed_from(self._state))

    def _allowed_from(self, state: S) -> Mapping[S, str]:
        return self._table[state]

    def _refuse(self, to: S) -> str | None:
        """A reason an otherwise allowed transition is refused here, or None."""
        return None

    def transition(self, to: S | str, trigger: str | None = None) -> StateChange:
        """Change to ``to`` (a state or its name) if the table allows it; publish the change.

        ``trigger`` defaults to the table's name for the transition (``start``,
        ``cancel``, ...). Raises :class:`InvalidTransitionError` naming from,
        to and the allowed states otherwise.
        """
        with self._lock:
            target, name = self._check(to, trigger)
            return self._apply(target, name)

    def _check(self, to: S | str, trigger: str | None) -> tuple[S, str]:
        """Validate a transition without changing anything: (target state, trigger)."""
        target = self._coerce_state(to)
        allowed = self._allowed_from(self._state)
        if target not in allowed:
            raise InvalidTransitionError(self.kind, self.id, self._state, target, allowed=allowed)
        why = self._refuse(target)
        if why is not None:
            raise InvalidTransitionError(
                self.kind, self.id, self._state, target, allowed=allowed, why=why
            )
        if trigger is None:
            return target, allowed[target]
        if not isinstance(trigger, str) or _TRIGGER_RE.fullmatch(trigger) is None:
            raise TaskModelError(
                f"{self.kind} {self.id!r}: trigger {trigger!r} is invalid: expected a lowercase "
                f"letter then up to {TRIGGER_MAX - 1} of a-z 0-9 _ . : -"
            )
        return target, trigger

    def _apply(self, target: S, trigger: str) -> StateChange:
        """Carry out a checked transition: children first, then this node; publish."""
        self._cascade(target, trigger)
        before = self._state
        self._state = target
        self.state_changed_at_ns = time.time_ns()
        self._entered(before, target)
        change = StateChange(
            self.kind,
            self.id,
            before.value,
            target.value,
            trigger,
            time.monotonic_ns(),
            self.effective_trace_context() or tracecontext.current(),
        )
        self._publish(change)
        return change

    def _cascade(self, target: S, trigger: str) -> None:
        """Hook: end open children before this node takes ``target``."""

    def _entered(self, before: S, after: S) -> None:
        """Hook: bookkeeping after the state changed, before it is published."""

    def fail(self, error: str | BaseException) -> StateChange:
        """→ FAILED with ``error`` (an exception is kept as ``"Type: message"``)."""
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        elif isinstance(error, str):
            text = error
        else:
            raise TaskModelError(f"{self.kind} {self.id!r}: error must be a str or an exception")
        with self._lock:
            target, trigger = self._check("FAILED", None)  # TaskState and RunState both
            self.error = text
            return self._apply(target, trigger)

    def _coerce_state(self, value: S | str) -> S:
        if isinstance(value, self._states):
            return value
        try:
            return self._states(value)  # type: ignore[return-value]
        except ValueError:
            names = ", ".join(s.value for s in self._states)
            raise TaskModelError(
                f"{self.kind} {self.id!r}: unknown state {value!r}; expected one of {names}"
            ) from None

    # ------------------------------------------------------------------ publishing

    def effective_publisher(self) -> Publisher | None:
        """The publisher of this object, else of the nearest parent that has one."""
        node: _Node[Any] | None = self
        while node is not None:
            if node.publisher is not None:
                return node.publisher
            node = node._parent
        return None

    def effective_trace_context(self) -> TraceContext | None:
        """The trace context of this object, else of the nearest parent that has one."""
        node: _Node[Any] | None = self
        while node is not None:
            if node.trace_context is not None:
                return node.trace_context
            node = node._parent
        return None

    def _publish(self, change: StateChange) -> None:
        global _publish_errors  # noqa: PLW0603 - a process-wide counter
        publisher = self.effective_publisher()
        if publisher is None:
            return
        # the publisher (the EventBus) attaches the current context to the event
        scope = (
            tracecontext.use(change.trace)
            if change.trace is not None and change.trace is not tracecontext.current()
            else contextlib.nullcontext()
        )
        try:
            with scope:
                publisher(change)
        except Exception:
            with _errors_lock:
                _publish_errors += 1
            _log.exception(
                "publisher failed for %s %s (the state change stands)", change.type, change.id
            )

    # ------------------------------------------------------------------ serialisation

    def _base_dict(self) -> dict[str, Any]:
        trace = None
        if self.trace_context is not None:
            trace = {
                "traceparent": self.trace_context.traceparent,
                "tracestate": self.trace_context.tracestate.to_header(),
            }
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "state": self._state.value,
            "state_changed_at_ns": self.state_changed_at_ns,
            "error": self.error,
            "trace": trace,
        }

    def _restore_base(self, data: _Reader) -> None:
        self.error = data.opt_str("error")
        self.state_changed_at_ns = data.int_("state_changed_at_ns")
        self._state = data.enum_("state", self._states)  # type: ignore[assignment]
        trace = data.get("trace")
        if trace is not None:
            tr = _Reader(trace, f"{data.path}['trace']")
            try:
                ctx = TraceContext.from_traceparent(tr.str_("traceparent"), strict=True)
                ts = TraceState.parse(tr.str_("tracestate"), strict=True)
            except ValueError as err:
                raise TaskModelError(f"{tr.path}: {err}") from None
            self.trace_context = ctx.with_tracestate(ts)

    def walk(self) -> Iterator[_Node[Any]]:
        """This object, then everything below it, depth first."""
        yield self

    def _adopt(self, child: _Node[Any]) -> None:
        """Make ``child`` ours, refusing an id already used anywhere in this tree."""
        if child._parent is not None:
            raise TaskModelError(
                f"{child.kind} {child.id!r} already belongs to {child._parent.kind} "
                f"{child._parent.id!r}"
            )
        root: _Node[Any] = self
        while root._parent is not None:
            root = root._parent
        used = {n.id for n in root.walk()}
        for node in child.walk():
            if node.id in used:
                raise TaskModelError(
                    f"{root.kind} {root.id!r} already has an object with id {node.id!r}: "
                    "ids are unique within a task (they address its events)"
                )
            used.add(node.id)
        child._parent = self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, state={self._state.value})"


# --------------------------------------------------------------------------- runs


class _Run(_Node[RunState]):
    """What Sequence and Action share: PENDING → RUNNING → an end, a timeout, start/end times."""

    _states = RunState
    _table = SEQUENCE_TRANSITIONS

    def __init__(
        self,
        ident: str | None,
        name: str | None,
        timeout_s: float | None,
        publisher: Publisher | None,
        trace_context: TraceContext | None,
    ) -> None:
        super().__init__(ident, name, RunState.PENDING, publisher, trace_context)
        self.timeout_s = _check_timeout(f"{self.kind} {self.id!r} timeout_s", timeout_s)
        self.started_at_ns: int | None = None
        self.finished_at_ns: int | None = None

    def _entered(self, before: RunState, after: RunState) -> None:
        if after is RunState.RUNNING:
            self.started_at_ns = self.state_changed_at_ns
        elif after.terminal:
            self.finished_at_ns = self.state_changed_at_ns

    def start(self) -> StateChange:
        return self.transition(RunState.RUNNING)

    def cancel(self) -> StateChange:
        return self.transition(RunState.CANCELLED)

    def timeout(self) -> StateChange:
        return self.transition(RunState.TIMEOUT)

    def _run_dict(self) -> dict[str, Any]:
        d = self._base_dict()
        d.update(
            timeout_s=self.timeout_s,
            started_at_ns=self.started_at_ns,
            finished_at_ns=self.finished_at_ns,
        )
        return d

    def _restore_run(self, r: _Reader) -> None:
        self._restore_base(r)
        self.started_at_ns = r.opt_int("started_at_ns")
        self.finished_at_ns = r.opt_int("finished_at_ns")


# --------------------------------------------------------------------------- Action


class Action(_Run):
    """One step: PENDING → RUNNING → COMPLETED | FAILED | CANCELLED | TIMEOUT.

    ``params`` and ``result`` are JSON-safe values; ``timeout_s`` is the
    budget an executor enforces (see :meth:`overdue`).
    """

    kind = "action"

    def __init__(
        self,
        id: str | None = None,
        name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        publisher: Publisher | None = None,
        trace_context: TraceContext | None = None,
    ) -> None:
        super().__init__(id, name, timeout_s, publisher, trace_context)
        self.params: dict[str, Any] = _check_json(f"action {self.id!r} params", dict(params or {}))
        self.result: Any = None

    def complete(self, result: Any = None) -> StateChange:
        """RUNNING → COMPLETED, keeping ``result`` (JSON-safe)."""
        with self._lock:
            checked = _check_json(f"action {self.id!r} result", result)
            target, trigger = self._check(RunState.COMPLETED, None)
            self.result = checked
            return self._apply(target, trigger)

    def overdue(self, now_ns: int | None = None) -> bool:
        """RUNNING for longer than ``timeout_s`` (wall clock, ``time.time_ns()``)."""
        if self._state is not RunState.RUNNING or self.timeout_s is None:
            return False
        started = self.started_at_ns or self.state_changed_at_ns
        now = time.time_ns() if now_ns is None else now_ns
        return now - started > self.timeout_s * 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (``schema_version`` 1); :func:`from_dict` restores it."""
        with self._lock:
            d = self._run_dict()
            d.update(
                params=json.loads(json.dumps(self.params)),
                result=json.loads(json.dumps(self.result)),
            )
            return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, publisher: Publisher | None = None) -> Action:
        """Restore from :meth:`to_dict` output (publishes nothing)."""
        return cls._from_reader(_Reader(data, "action", kind="action"), publisher)

    @classmethod
    def _from_reader(cls, r: _Reader, publisher: Publisher | None) -> Action:
        with r.context():
            action = cls(
                r.str_("id"),
                r.str_("name"),
                params=r.dict_("params"),
                timeout_s=r.opt_number("timeout_s"),
                publisher=publisher,
            )
            action.result = _check_json("result", r.get("result"))
        action._restore_run(r)
        return action


def _parent_trigger(trigger: str) -> str:
    """The trigger of a child ended because its parent ended (``parent_cancel``, ...)."""
    return trigger if trigger.startswith("parent_") else f"parent_{trigger}"


def _end_child(child: _Node[RunState], end: RunState, trigger: str) -> None:
    """End an open child of a node that is ending: RUNNING takes ``end``, PENDING is CANCELLED."""
    with child._lock:
        if child.state.terminal:
            return
        if child.state is RunState.PENDING:
            end = RunState.CANCELLED
        child._check(end, None)
        child._apply(end, trigger)


# --------------------------------------------------------------------------- Sequence


class Sequence(_Run):
    """Ordered actions run as one: PENDING → RUNNING → COMPLETED | FAILED | CANCELLED | TIMEOUT.

    When the sequence ends, no action stays open: a RUNNING action ends the way
    the sequence did (FAILED / CANCELLED / TIMEOUT; trigger ``parent_<trigger>``)
    and PENDING actions are CANCELLED (``skip`` when the sequence completed).
    """

    kind = "sequence"

    def __init__(
        self,
        id: str | None = None,
        name: str | None = None,
        actions: Iterable[Action] = (),
        *,
        timeout_s: float | None = None,
        publisher: Publisher | None = None,
        trace_context: TraceContext | None = None,
    ) -> None:
        super().__init__(id, name, timeout_s, publisher, trace_context)
        self._actions: list[Action] = []
        for action in actions:
            self.add(action)

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(self._actions)

    def add(self, action: Action) -> Action:
        """Append an action (only while the sequence is PENDING or RUNNING)."""
        if not isinstance(action, Action):
            raise TaskModelError(f"sequence {self.id!r}: add() takes an Action, not {action!r}")
        with self._lock:
            if self._state.terminal:
                raise TaskModelError(
                    f"sequence {self.id!r} is {self._state.value}: no actions can be added"
                )
            self._adopt(action)
            self._actions.append(action)
            return action

    def action(self, ident: str) -> Action:
        for a in self._actions:
            if a.id == ident:
                return a
        raise KeyError(f"sequence {self.id!r} has no action {ident!r}")

    @property
    def current_action(self) -> Action | None:
        """The first action that has not ended (RUNNING or PENDING), or None."""
        for a in self._actions:
            if not a.state.terminal:
                return a
        return None

    def next_action(self) -> Action | None:
        """The first PENDING action, or None."""
        for a in self._actions:
            if a.state is RunState.PENDING:
                return a
        return None

    def _refuse(self, to: RunState) -> str | None:
        if to is RunState.COMPLETED:
            running = [a.id for a in self._actions if a.state is RunState.RUNNING]
            if running:
                return f"action(s) {', '.join(running)} still RUNNING: end them first"
        return None

    def _cascade(self, target: RunState, trigger: str) -> None:
        if not target.terminal:
            return
        child_trigger = "skip" if target is RunState.COMPLETED else _parent_trigger(trigger)
        for a in self._actions:
            _end_child(a, target, child_trigger)

    def complete(self) -> StateChange:
        return self.transition(RunState.COMPLETED)

    def walk(self) -> Iterator[_Node[Any]]:
        yield self
        yield from self._actions

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            d = self._run_dict()
            d.update(actions=[a.to_dict() for a in self._actions])
            return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, publisher: Publisher | None = None) -> Sequence:
        """Restore from :meth:`to_dict` output, actions included (publishes nothing)."""
        return cls._from_reader(_Reader(data, "sequence", kind="sequence"), publisher)

    @classmethod
    def _from_reader(cls, r: _Reader, publisher: Publisher | None) -> Sequence:
        with r.context():
            seq = cls(
                r.str_("id"),
                r.str_("name"),
                timeout_s=r.opt_number("timeout_s"),
                publisher=publisher,
            )
        _restore_children(seq, r, "actions", Action, seq._actions)
        seq._restore_run(r)
        return seq


# --------------------------------------------------------------------------- Task


class Task(_Node[TaskState]):
    """A unit of work made of sequences; runs ONCE, PERIODIC (``period_s``) or TRIGGERED.

    States IDLE, SCHEDULED, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLED
    (:data:`~mxrc.tasks.TASK_TRANSITIONS`). ``run_count`` counts the runs
    (entries into RUNNING other than ``resume``). Cancelling or failing a task
    ends its open sequences (and their actions) the same way first.
    """

    kind = "task"
    _states = TaskState
    _table = TASK_TRANSITIONS

    def __init__(
        self,
        id: str | None = None,
        name: str | None = None,
        *,
        mode: TaskMode | str = TaskMode.ONCE,
        period_s: float | None = None,
        trigger_event: str | None = None,
        sequences: Iterable[Sequence] = (),
        publisher: Publisher | None = None,
        trace_context: TraceContext | None = None,
    ) -> None:
        super().__init__(id, name, TaskState.IDLE, publisher, trace_context)
        try:
            self.mode = TaskMode(mode)
        except ValueError:
            raise TaskModelError(
                f"task {self.id!r}: unknown mode {mode!r}; expected ONCE, PERIODIC or TRIGGERED"
            ) from None
        self.period_s = _check_timeout(f"task {self.id!r} period_s", period_s)
        if trigger_event is not None and (not isinstance(trigger_event, str) or not trigger_event):
            raise TaskModelError(
                f"task {self.id!r}: trigger_event must be a non-empty event type, got "
                f"{trigger_event!r}"
            )
        self.trigger_event = trigger_event
        if self.mode is TaskMode.PERIODIC and self.period_s is None:
            raise TaskModelError(f"task {self.id!r}: a PERIODIC task needs period_s > 0")
        if self.mode is TaskMode.TRIGGERED and self.trigger_event is None:
            raise TaskModelError(
                f"task {self.id!r}: a TRIGGERED task needs trigger_event (the event type that "
                "starts a run)"
            )
        if self.mode is not TaskMode.PERIODIC and self.period_s is not None:
            raise TaskModelError(f"task {self.id!r}: period_s is only for PERIODIC tasks")
        if self.mode is not TaskMode.TRIGGERED and self.trigger_event is not None:
            raise TaskModelError(f"task {self.id!r}: trigger_event is only for TRIGGERED tasks")
        self.run_count = 0
        self._sequences: list[Sequence] = []
        for seq in sequences:
            self.add_sequence(seq)

    @property
    def sequences(self) -> tuple[Sequence, ...]:
        return tuple(self._sequences)

    def add_sequence(self, sequence: Sequence) -> Sequence:
        """Attach a sequence (an execution of this task's work; not once COMPLETED/FAILED/
        CANCELLED)."""
        if not isinstance(sequence, Sequence):
            raise TaskModelError(f"task {self.id!r}: add_sequence() takes a Sequence")
        with self._lock:
            if self._state in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED):
                raise TaskModelError(
                    f"task {self.id!r} is {self._state.value}: reset() it before adding sequences"
                )
            self._adopt(sequence)
            self._sequences.append(sequence)
            return sequence

    def sequence(self, ident: str) -> Sequence:
        for s in self._sequences:
            if s.id == ident:
                return s
        raise KeyError(f"task {self.id!r} has no sequence {ident!r}")

    def _refuse(self, to: TaskState) -> str | None:
        if (
            self._state is TaskState.RUNNING
            and to is TaskState.SCHEDULED
            and self.mode is TaskMode.ONCE
        ):
            return "only PERIODIC and TRIGGERED tasks go back to SCHEDULED after a run"
        return None

    def _cascade(self, target: TaskState, trigger: str) -> None:
        if target in (TaskState.CANCELLED, TaskState.FAILED):
            end = RunState.CANCELLED if target is TaskState.CANCELLED else RunState.FAILED
            for seq in self._sequences:
                _end_child(seq, end, _parent_trigger(trigger))

    def _entered(self, before: TaskState, after: TaskState) -> None:
        if after is TaskState.RUNNING and before is not TaskState.PAUSED:
            self.run_count += 1
        if after is TaskState.IDLE and before is not TaskState.SCHEDULED:
            self.error = None

    def schedule(self) -> StateChange:
        return self.transition(TaskState.SCHEDULED)

    def unschedule(self) -> StateChange:
        return self.transition(TaskState.IDLE)

    def start(self) -> StateChange:
        return self.transition(TaskState.RUNNING)

    def pause(self) -> StateChange:
        return self.transition(TaskState.PAUSED)

    def resume(self) -> StateChange:
        return self.transition(TaskState.RUNNING)

    def reschedule(self) -> StateChange:
        """RUNNING → SCHEDULED: a PERIODIC/TRIGGERED run ended; wait for the next one."""
        return self.transition(TaskState.SCHEDULED)

    def complete(self) -> StateChange:
        return self.transition(TaskState.COMPLETED)

    def cancel(self) -> StateChange:
        return self.transition(TaskState.CANCELLED)

    def reset(self) -> StateChange:
        """COMPLETED / FAILED / CANCELLED → IDLE (clears ``error``; sequences are kept)."""
        return self.transition(TaskState.IDLE)

    def walk(self) -> Iterator[_Node[Any]]:
        """This task, then each sequence followed by its actions."""
        yield self
        for seq in self._sequences:
            yield from seq.walk()

    def find(self, ident: str) -> _Node[Any]:
        """The task, sequence or action with id ``ident`` (``KeyError`` when absent)."""
        for node in self.walk():
            if node.id == ident:
                return node
        raise KeyError(f"task {self.id!r} has no node {ident!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state of the task and everything in it (``schema_version`` 1)."""
        with self._lock:
            d = self._base_dict()
            d.update(
                mode=self.mode.value,
                period_s=self.period_s,
                trigger_event=self.trigger_event,
                run_count=self.run_count,
                sequences=[s.to_dict() for s in self._sequences],
            )
            return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, publisher: Publisher | None = None) -> Task:
        """Restore from :meth:`to_dict` output, sequences and actions included.

        Restoring publishes nothing; ``publisher`` becomes the task's publisher.
        """
        return cls._from_reader(_Reader(data, "task", kind="task"), publisher)

    @classmethod
    def _from_reader(cls, r: _Reader, publisher: Publisher | None) -> Task:
        with r.context():
            task = cls(
                r.str_("id"),
                r.str_("name"),
                mode=r.str_("mode"),
                period_s=r.opt_number("period_s"),
                trigger_event=r.opt_str("trigger_event"),
                publisher=publisher,
            )
        _restore_children(task, r, "sequences", Sequence, task._sequences)
        task._restore_base(r)
        task.run_count = r.int_("run_count")
        return task


def from_dict(data: Mapping[str, Any], *, publisher: Publisher | None = None) -> _Node[Any]:
    """Restore a Task, Sequence or Action from ``to_dict()`` output (by its ``kind``).

    Restoring publishes nothing. Raises :class:`TaskModelError` naming the key
    path for a wrong ``schema_version``, a missing or unknown key, or a bad
    value.
    """
    if not isinstance(data, Mapping):
        raise TaskModelError(f"expected a dict from to_dict(), got {type(data).__name__}")
    kind = data.get("kind")
    classes: dict[str, type[Task] | type[Sequence] | type[Action]] = {
        "task": Task,
        "sequence": Sequence,
        "action": Action,
    }
    if kind not in classes:
        raise TaskModelError(f"['kind'] is {kind!r}: expected 'task', 'sequence' or 'action'")
    return classes[kind].from_dict(data, publisher=publisher)


C = TypeVar("C", Action, Sequence)


def _restore_children(
    parent: _Node[Any], r: _Reader, key: str, cls: type[C], children: list[C]
) -> None:
    """Restore the list ``r[key]`` of ``cls`` objects, adopting each into ``parent`` and
    appending it to ``children`` (``parent``'s own list: later ids are checked against it)."""
    for i, item in enumerate(r.list_(key)):
        path = f"{r.path}[{key!r}][{i}]"
        child = cls._from_reader(_Reader(item, path, kind=cls.kind), None)
        with _Reader.prefix(path):
            parent._adopt(child)
        children.append(child)


# --------------------------------------------------------------------------- reading dicts

_BASE_KEYS = frozenset(
    {"schema_version", "kind", "id", "name", "state", "state_changed_at_ns", "error", "trace"}
)
_KEYS = {
    "action": _BASE_KEYS | {"params", "timeout_s", "result", "started_at_ns", "finished_at_ns"},
    "sequence": _BASE_KEYS | {"timeout_s", "started_at_ns", "finished_at_ns", "actions"},
    "task": _BASE_KEYS | {"mode", "period_s", "trigger_event", "run_count", "sequences"},
}


class _Reader:
    """Typed access to a serialised dict, with errors naming the key path."""

    def __init__(self, data: object, path: str, kind: str | None = None) -> None:
        self.path = path
        if not isinstance(data, Mapping):
            raise TaskModelError(f"{path}: expected a dict, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data
        if kind is not None:
            version = data.get("schema_version")
            if version != SCHEMA_VERSION:
                raise TaskModelError(
                    f"{path}['schema_version'] is {version!r}: this mxrc reads version "
                    f"{SCHEMA_VERSION}"
                )
            if data.get("kind") != kind:
                raise TaskModelError(f"{path}['kind'] is {data.get('kind')!r}: expected {kind!r}")
            missing = sorted(_KEYS[kind] - set(data))
            unknown = sorted(set(data) - _KEYS[kind], key=str)
            if missing:
                raise TaskModelError(f"{path}: missing key(s) {', '.join(missing)}")
            if unknown:
                raise TaskModelError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}")

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def _bad(self, key: str, expected: str) -> TaskModelError:
        return TaskModelError(
            f"{self.path}[{key!r}]: expected {expected}, found {self.data.get(key)!r}"
        )

    def str_(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string or null")
        return value

    def int_(self, key: str) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        return self.int_(key)

    def opt_number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self._bad(key, "a number or null")
        return value

    def dict_(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return value

    def list_(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        return value

    def enum_(self, key: str, states: type[enum.Enum]) -> enum.Enum:
        value = self.data.get(key)
        try:
            return states(value)
        except ValueError:
            names = ", ".join(s.value for s in states)
            raise self._bad(key, f"one of {names}") from None

    def context(self) -> contextlib.AbstractContextManager[None]:
        """Prefix the key path to a TaskModelError raised inside (constructor checks)."""
        return self.prefix(self.path)

    @staticmethod
    @contextlib.contextmanager
    def prefix(path: str) -> Iterator[None]:
        try:
            yield
        except TaskModelError as err:
            if str(err).startswith((f"{path}[", f"{path}:")):
                raise
            raise TaskModelError(f"{path}: {err}") from None
