"""States, modes and the explicit transition tables of the Task / Sequence / Action model."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mxrc.errors import MxrcError

__all__ = [
    "ACTION_TRANSITIONS",
    "SEQUENCE_TRANSITIONS",
    "TASK_TRANSITIONS",
    "ActionState",
    "InvalidTransitionError",
    "RunState",
    "SequenceState",
    "TaskMode",
    "TaskModelError",
    "TaskState",
]


class TaskState(str, enum.Enum):
    """State of a :class:`~mxrc.tasks.Task` (the value is the name, as serialised)."""

    IDLE = "IDLE"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


class TaskMode(str, enum.Enum):
    """How a task runs: once, every ``period_s``, or on each ``trigger_event``."""

    ONCE = "ONCE"
    PERIODIC = "PERIODIC"
    TRIGGERED = "TRIGGERED"

    def __str__(self) -> str:
        return self.value


class RunState(str, enum.Enum):
    """State of one execution: a :class:`~mxrc.tasks.Sequence` or an :class:`~mxrc.tasks.Action`.

    ``COMPLETED``, ``FAILED``, ``CANCELLED`` and ``TIMEOUT`` are terminal.
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def terminal(self) -> bool:
        return self not in (RunState.PENDING, RunState.RUNNING)

    def __str__(self) -> str:
        return self.value


SequenceState = RunState
"""The states of a Sequence (the same enum as :data:`ActionState`)."""
ActionState = RunState
"""The states of an Action (the same enum as :data:`SequenceState`)."""


def _table(
    rows: dict[enum.Enum, dict[enum.Enum, str]],
) -> Mapping[enum.Enum, Mapping[enum.Enum, str]]:
    return MappingProxyType({k: MappingProxyType(v) for k, v in rows.items()})


_T = TaskState
TASK_TRANSITIONS: Mapping[TaskState, Mapping[TaskState, str]] = _table(  # type: ignore[assignment]
    {
        _T.IDLE: {_T.SCHEDULED: "schedule", _T.RUNNING: "start", _T.CANCELLED: "cancel"},
        _T.SCHEDULED: {_T.RUNNING: "start", _T.IDLE: "unschedule", _T.CANCELLED: "cancel"},
        _T.RUNNING: {
            _T.PAUSED: "pause",
            _T.COMPLETED: "complete",
            _T.FAILED: "fail",
            _T.CANCELLED: "cancel",
            # a PERIODIC or TRIGGERED task waits for its next period / trigger
            _T.SCHEDULED: "reschedule",
        },
        _T.PAUSED: {_T.RUNNING: "resume", _T.FAILED: "fail", _T.CANCELLED: "cancel"},
        _T.COMPLETED: {_T.IDLE: "reset"},
        _T.FAILED: {_T.IDLE: "reset"},
        _T.CANCELLED: {_T.IDLE: "reset"},
    }
)
"""Task: from-state → {to-state: trigger}. RUNNING → SCHEDULED is not for ONCE tasks."""

_R = RunState
SEQUENCE_TRANSITIONS: Mapping[RunState, Mapping[RunState, str]] = _table(  # type: ignore[assignment]
    {
        _R.PENDING: {_R.RUNNING: "start", _R.FAILED: "fail", _R.CANCELLED: "cancel"},
        _R.RUNNING: {
            _R.COMPLETED: "complete",
            _R.FAILED: "fail",
            _R.CANCELLED: "cancel",
            _R.TIMEOUT: "timeout",
        },
        _R.COMPLETED: {},
        _R.FAILED: {},
        _R.CANCELLED: {},
        _R.TIMEOUT: {},
    }
)
"""Sequence: from-state → {to-state: trigger}. Terminal states have no way out."""

ACTION_TRANSITIONS: Mapping[RunState, Mapping[RunState, str]] = SEQUENCE_TRANSITIONS
"""Action: the same table as :data:`SEQUENCE_TRANSITIONS`."""


class TaskModelError(MxrcError, ValueError):
    """A Task / Sequence / Action definition or serialised state is invalid."""


class InvalidTransitionError(TaskModelError):
    """A state change that the transition table does not allow.

    ``kind`` (``task``/``sequence``/``action``), ``id``, ``from_state``,
    ``to_state`` and ``allowed`` (the states reachable from ``from_state``)
    say what was tried.
    """

    def __init__(
        self,
        kind: str,
        ident: str,
        from_state: enum.Enum,
        to_state: enum.Enum,
        *,
        allowed: Mapping[Any, str],
        why: str | None = None,
    ) -> None:
        self.kind = kind
        self.id = ident
        self.from_state = from_state
        self.to_state = to_state
        self.allowed = tuple(allowed)
        choices = (
            ", ".join(f"{s.value} ({trigger})" for s, trigger in allowed.items())
            or f"none ({from_state.value} is terminal)"
        )
        text = (
            f"{kind} {ident!r}: invalid transition {from_state.value} -> {to_state.value}; "
            f"allowed from {from_state.value}: {choices}"
        )
        if why:
            text += f"; {why}"
        super().__init__(text)
