"""The node's HA state machine (upstream §2.7): NORMAL, DEGRADED, SAFE_MODE,
RECOVERY_IN_PROGRESS, MANUAL_INTERVENTION, SHUTDOWN.

The supervisor drives it: a failure of the RT process → RECOVERY_IN_PROGRESS
(a restart is under way) → NORMAL once the new process beats; a refused
restart (policy exhausted) → MANUAL_INTERVENTION, which is left only to NORMAL
(an operator cleared the fault) or SHUTDOWN. While the RT process runs:
SAFE_MODE when one of its cycle threads is in SAFE_MODE, else DEGRADED while a
cause lasts (deadline-miss rate above the limit, agent down), else NORMAL.
SHUTDOWN is final. A transition
that is not in :data:`TRANSITIONS` raises :class:`InvalidTransitionError`
naming both states and the allowed targets.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mxrc.errors import MxrcError

__all__ = [
    "TRANSITIONS",
    "HaState",
    "HaStateMachine",
    "HaTransition",
    "InvalidTransitionError",
]


class HaState(enum.Enum):
    """States of a node's HA state machine."""

    NORMAL = "NORMAL"
    DEGRADED = "DEGRADED"
    SAFE_MODE = "SAFE_MODE"
    RECOVERY_IN_PROGRESS = "RECOVERY_IN_PROGRESS"
    MANUAL_INTERVENTION = "MANUAL_INTERVENTION"
    SHUTDOWN = "SHUTDOWN"


_S = HaState
TRANSITIONS: dict[HaState, frozenset[HaState]] = {
    _S.NORMAL: frozenset(
        {_S.DEGRADED, _S.SAFE_MODE, _S.RECOVERY_IN_PROGRESS, _S.MANUAL_INTERVENTION, _S.SHUTDOWN}
    ),
    _S.DEGRADED: frozenset(
        {_S.NORMAL, _S.SAFE_MODE, _S.RECOVERY_IN_PROGRESS, _S.MANUAL_INTERVENTION, _S.SHUTDOWN}
    ),
    # SAFE_MODE -> DEGRADED: the RT process leaves SAFE_MODE while a DEGRADED cause
    # (miss rate, agent down) persists; going through NORMAL would report a false NORMAL.
    _S.SAFE_MODE: frozenset(
        {_S.NORMAL, _S.DEGRADED, _S.RECOVERY_IN_PROGRESS, _S.MANUAL_INTERVENTION, _S.SHUTDOWN}
    ),
    _S.RECOVERY_IN_PROGRESS: frozenset(
        {_S.NORMAL, _S.DEGRADED, _S.SAFE_MODE, _S.MANUAL_INTERVENTION, _S.SHUTDOWN}
    ),
    _S.MANUAL_INTERVENTION: frozenset({_S.NORMAL, _S.SHUTDOWN}),
    _S.SHUTDOWN: frozenset(),
}
"""Allowed transitions: state → states it may go to (a state to itself is a no-op)."""


class InvalidTransitionError(MxrcError, ValueError):
    """A transition the HA state machine does not allow."""


@dataclass(frozen=True)
class HaTransition:
    """One transition that happened."""

    from_state: HaState
    to_state: HaState
    reason: str
    at_s: float
    """The machine's clock (monotonic seconds) at the transition."""


class HaStateMachine:
    """Thread-safe HA state with a bounded transition history.

    ``listener(transition)`` is called after each transition (outside the lock).
    """

    HISTORY = 64

    def __init__(
        self,
        initial: HaState = HaState.NORMAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        listener: Callable[[HaTransition], None] | None = None,
    ) -> None:
        self._state = HaState(initial)
        self._clock = clock
        self._listener = listener
        self._lock = threading.Lock()
        self._history: list[HaTransition] = []

    @property
    def state(self) -> HaState:
        """The current state."""
        return self._state

    @property
    def history(self) -> list[HaTransition]:
        """The last :attr:`HISTORY` transitions, oldest first."""
        with self._lock:
            return list(self._history)

    def can_transition(self, to: HaState) -> bool:
        """Whether ``to`` is reachable from the current state (or is the current state)."""
        to = HaState(to)
        return to is self._state or to in TRANSITIONS[self._state]

    def transition(self, to: HaState, reason: str = "") -> HaTransition | None:
        """Go to ``to``; None when already there. Raises InvalidTransitionError."""
        to = HaState(to)
        with self._lock:
            current = self._state
            if to is current:
                return None
            if to not in TRANSITIONS[current]:
                allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
                raise InvalidTransitionError(
                    f"HA state {current.value} cannot go to {to.value} ({reason or 'no reason'});"
                    f" allowed from {current.value}: {allowed}"
                )
            record = HaTransition(current, to, reason, self._clock())
            self._state = to
            self._history.append(record)
            del self._history[: -self.HISTORY]
        if self._listener is not None:
            self._listener(record)
        return record
