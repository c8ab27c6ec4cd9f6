"""The agent: the non-RT side of an instance (heartbeat, ring draining, the EventBus).

See ``docs/agent.md``. ``mxrc agent --instance NAME`` runs one in its own
process; ``mxrc run`` spawns one by default.
"""

from __future__ import annotations

from mxrc.agent._agent import (
    DEFAULT_DRAIN_INTERVAL_S,
    DEFAULT_RESCAN_INTERVAL_S,
    Agent,
    AgentCounters,
    AgentError,
    ExecutiveCounters,
    RecordSink,
)
from mxrc.bus import RingTransport

__all__ = [
    "DEFAULT_DRAIN_INTERVAL_S",
    "DEFAULT_RESCAN_INTERVAL_S",
    "Agent",
    "AgentCounters",
    "AgentError",
    "ExecutiveCounters",
    "RecordSink",
    "RingTransport",
]
