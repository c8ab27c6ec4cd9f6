"""The shared-memory bus of an instance: segment header and per-cycle-thread stats.

See ``docs/stats-and-segment.md``.
"""

from __future__ import annotations

from mxrc._native import _core
from mxrc.bus._segment import LAYOUT_VERSION, Segment, segment_path

__all__ = ["LAYOUT_VERSION", "Segment", "StatsSlot", "private_stats", "segment_path"]

StatsSlot = _core.bus.StatsSlot
"""Handle on a stats block plus what keeps its memory alive (from ``claim_stats``)."""


def private_stats(name: str) -> _core.bus.StatsSlot:
    """A standalone zeroed stats block (process memory) for an executive without a segment."""
    return _core.bus.private_stats(name)
