"""The Task / Sequence / Action model: states, modes, transitions, events, serialisation.

A :class:`Task` (ONCE, PERIODIC or TRIGGERED) holds :class:`Sequence` s of
:class:`Action` s. Each has an explicit transition table; an invalid change
raises :class:`InvalidTransitionError` naming from, to and the allowed
states. Every accepted change goes to a publisher as a :class:`StateChange`
(``"task.state_changed"``, payload ``{id, from, to, trigger}``); ``to_dict()``
/ ``from_dict()`` give JSON-safe, schema-versioned state.

See ``docs/tasks.md``.
"""

from __future__ import annotations

from mxrc.tasks._model import (
    SCHEMA_VERSION,
    Action,
    Publisher,
    Sequence,
    StateChange,
    Task,
    bus_publisher,
    from_dict,
    publish_errors,
)
from mxrc.tasks._states import (
    ACTION_TRANSITIONS,
    SEQUENCE_TRANSITIONS,
    TASK_TRANSITIONS,
    ActionState,
    InvalidTransitionError,
    RunState,
    SequenceState,
    TaskMode,
    TaskModelError,
    TaskState,
)

__all__ = [
    "ACTION_TRANSITIONS",
    "SCHEMA_VERSION",
    "SEQUENCE_TRANSITIONS",
    "TASK_TRANSITIONS",
    "Action",
    "ActionState",
    "InvalidTransitionError",
    "Publisher",
    "RunState",
    "Sequence",
    "SequenceState",
    "StateChange",
    "Task",
    "TaskMode",
    "TaskModelError",
    "TaskState",
    "bus_publisher",
    "from_dict",
    "publish_errors",
]
