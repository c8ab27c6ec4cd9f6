"""Where a thread runs, read from ``/proc/<pid>/task/<tid>`` by any process.

Used by ``mxrc status`` and the Prometheus collector to describe a cycle thread
from outside: reading these files never disturbs the thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxrc.rt._cpulist import parse_cpulist

__all__ = ["ThreadPlacement", "pid_alive", "thread_placement"]

_POLICIES = {
    0: "SCHED_OTHER",
    1: "SCHED_FIFO",
    2: "SCHED_RR",
    3: "SCHED_BATCH",
    5: "SCHED_IDLE",
    6: "SCHED_DEADLINE",
}


@dataclass(frozen=True)
class ThreadPlacement:
    """Where a thread runs, from ``/proc/<pid>/task/<tid>``."""

    cpu: int
    """The CPU it last ran on (field 39 of ``stat``)."""
    cpus_allowed: frozenset[int]
    """Its affinity (``Cpus_allowed_list`` of ``status``)."""
    policy: str
    priority: int
    """rt_priority: 1..99 under SCHED_FIFO/RR, else 0."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "cpus_allowed": sorted(self.cpus_allowed),
            "policy": self.policy,
            "priority": self.priority,
        }


def thread_placement(pid: int, tid: int, *, procfs_root: str = "/proc") -> ThreadPlacement | None:
    """The current CPU, affinity and scheduling of thread ``tid`` of process ``pid``.

    None when the thread does not exist (any more) or cannot be read.

    Availability: Linux.
    """
    if pid <= 0 or tid <= 0:
        return None
    task = Path(procfs_root) / str(pid) / "task" / str(tid)
    try:
        stat = (task / "stat").read_text()
        status = (task / "status").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    allowed: frozenset[int] = frozenset()
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            try:
                allowed = parse_cpulist(line.split(":", 1)[1])
            except ValueError:
                allowed = frozenset()
            break
    try:
        cpu, rt_priority, policy = int(fields[36]), int(fields[37]), int(fields[38])
    except (IndexError, ValueError):
        return None
    return ThreadPlacement(cpu, allowed, _POLICIES.get(policy, f"policy {policy}"), rt_priority)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a stopped one counts as alive).

    A process this user may not signal counts as alive. Availability: Linux.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # it answered the signal; /proc is just unreadable
    return state not in ("Z", "X")
