"""The real-time state machine's states (shared with the C++ core's ``RtState``)."""

from __future__ import annotations

import enum

__all__ = ["RtState"]


class RtState(enum.IntEnum):
    """State of a cycle thread, as stored in its stats block.

    The values are those of ``mxrc::RtState`` in ``csrc/include/mxrc/stats.hpp``
    and are part of the shared-memory layout: never renumber them.
    """

    INIT = 0
    READY = 1
    RUNNING = 2
    PAUSED = 3
    SAFE_MODE = 4
    ERROR = 5
    SHUTDOWN = 6
