"""The RT process's restart policy (``failover_policy.json`` ``rt``), on an injectable clock.

A fixed window anchored at the first restart (upstream §2.6): at most
``max_restart_count`` restarts within ``restart_window_sec`` of the window's
first restart. A failure after the window has passed opens a new window. A
failure while the window is full refuses the restart and the policy *gives up*
for good (until :meth:`RestartPolicy.reset`, an operator's action): the
supervisor stops restarting, logs CRITICAL and enters MANUAL_INTERVENTION.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mxrc.config import FailoverRole

__all__ = ["RestartDecision", "RestartPolicy"]


@dataclass(frozen=True)
class RestartDecision:
    """The answer to one failure: restart after ``delay_s``, or give up."""

    restart: bool
    delay_s: float
    restarts_in_window: int
    """Restarts counted in the current window, including this one when allowed."""
    window_remaining_s: float
    """Seconds until the current window ends (0 when no window is open)."""
    reason: str


class RestartPolicy:
    """Counts restarts in a fixed window anchored at its first restart.

    ``clock``: seconds on a monotonic scale (default :func:`time.monotonic`;
    tests pass a fake). ``max_restart_count`` >= 1, ``restart_window_s`` > 0,
    ``restart_delay_s`` >= 0.
    """

    def __init__(
        self,
        max_restart_count: int = 5,
        restart_window_s: float = 60.0,
        restart_delay_s: float = 0.1,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_restart_count, bool) or not isinstance(max_restart_count, int):
            raise TypeError(f"max_restart_count must be an int, got {max_restart_count!r}")
        if max_restart_count < 1:
            raise ValueError(f"max_restart_count must be >= 1, got {max_restart_count}")
        if not restart_window_s > 0:
            raise ValueError(f"restart_window_s must be > 0, got {restart_window_s}")
        if not restart_delay_s >= 0:
            raise ValueError(f"restart_delay_s must be >= 0, got {restart_delay_s}")
        self.max_restart_count = max_restart_count
        self.restart_window_s = float(restart_window_s)
        self.restart_delay_s = float(restart_delay_s)
        self._clock = clock
        self._window_start: float | None = None
        self._in_window = 0
        self._total = 0
        self._gave_up = False

    @classmethod
    def from_config(
        cls, role: FailoverRole, *, clock: Callable[[], float] = time.monotonic
    ) -> RestartPolicy:
        """The policy of ``failover_policy.json`` ``rt``."""
        return cls(
            role.max_restart_count,
            float(role.restart_window_sec),
            role.restart_delay_ms / 1000.0,
            clock=clock,
        )

    @property
    def restart_count(self) -> int:
        """Restarts allowed since creation (a counter: :meth:`reset` keeps it)."""
        return self._total

    @property
    def restarts_in_window(self) -> int:
        """Restarts counted in the current window (0 once it has passed)."""
        if self._window_start is None or self._window_expired(self._clock()):
            return 0
        return self._in_window

    @property
    def gave_up(self) -> bool:
        """True once a restart was refused (stays until :meth:`reset`)."""
        return self._gave_up

    def _window_expired(self, now: float) -> bool:
        assert self._window_start is not None
        return now - self._window_start >= self.restart_window_s

    def on_failure(self) -> RestartDecision:
        """Record a failure of the RT process; decide whether to restart it."""
        now = self._clock()
        if self._gave_up:
            return RestartDecision(False, 0.0, self._in_window, 0.0, "already gave up")
        if self._window_start is None or self._window_expired(now):
            self._window_start = now
            self._in_window = 0
        remaining = max(0.0, self._window_start + self.restart_window_s - now)
        if self._in_window >= self.max_restart_count:
            self._gave_up = True
            return RestartDecision(
                False,
                0.0,
                self._in_window,
                remaining,
                f"{self._in_window} restarts within {self.restart_window_s:g} s "
                f"(max_restart_count {self.max_restart_count}, restart_window_sec "
                f"{self.restart_window_s:g})",
            )
        self._in_window += 1
        self._total += 1
        return RestartDecision(
            True,
            self.restart_delay_s,
            self._in_window,
            remaining,
            f"restart {self._in_window}/{self.max_restart_count} in this window",
        )

    def reset(self) -> None:
        """Forget the window and the give-up (an operator cleared the fault)."""
        self._window_start = None
        self._in_window = 0
        self._gave_up = False
