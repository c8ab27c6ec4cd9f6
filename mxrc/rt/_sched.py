"""Scheduling policy and priority of a thread (SCHED_OTHER/FIFO/RR/BATCH/IDLE/DEADLINE).

Policies are per thread: ``tid`` is a kernel thread id
(``threading.get_native_id()``), 0 meaning the calling thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mxrc._native import _core
from mxrc._privilege import Operation, translate_eperm

__all__ = [
    "SchedParams",
    "SchedPolicy",
    "get_scheduler",
    "priority_range",
    "set_deadline",
    "set_scheduler",
]


class SchedPolicy(str, Enum):
    """Linux scheduling policies; the values are the kernel's names."""

    OTHER = "SCHED_OTHER"
    FIFO = "SCHED_FIFO"
    RR = "SCHED_RR"
    BATCH = "SCHED_BATCH"
    IDLE = "SCHED_IDLE"
    DEADLINE = "SCHED_DEADLINE"

    @property
    def is_realtime(self) -> bool:
        """True for the fixed-priority real-time policies FIFO and RR."""
        return self in (SchedPolicy.FIFO, SchedPolicy.RR)

    @classmethod
    def parse(cls, value: SchedPolicy | str) -> SchedPolicy:
        """Accept a member, ``"SCHED_FIFO"`` or ``"fifo"``; ValueError naming the choices."""
        if isinstance(value, SchedPolicy):
            return value
        if isinstance(value, str):
            key = value.strip().upper()
            if not key.startswith("SCHED_"):
                key = "SCHED_" + key
            for member in cls:
                if member.value == key:
                    return member
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown scheduling policy {value!r} (expected one of {choices})")


_TO_KERNEL: dict[SchedPolicy, int] = {
    SchedPolicy.OTHER: _core.sched.SCHED_OTHER,
    SchedPolicy.FIFO: _core.sched.SCHED_FIFO,
    SchedPolicy.RR: _core.sched.SCHED_RR,
    SchedPolicy.BATCH: _core.sched.SCHED_BATCH,
    SchedPolicy.IDLE: _core.sched.SCHED_IDLE,
    SchedPolicy.DEADLINE: _core.sched.SCHED_DEADLINE,
}
_FROM_KERNEL: dict[int, SchedPolicy] = {v: k for k, v in _TO_KERNEL.items()}


def _kernel_value(policy: SchedPolicy) -> int:
    return _TO_KERNEL[policy]


@dataclass(frozen=True)
class SchedParams:
    """A thread's scheduling parameters as the kernel reports them.

    ``priority`` is 1..99 for FIFO/RR and 0 otherwise; ``nice`` applies to
    OTHER/BATCH; the ``*_ns`` fields are set for DEADLINE only.
    """

    policy: SchedPolicy
    priority: int = 0
    nice: int = 0
    runtime_ns: int = 0
    deadline_ns: int = 0
    period_ns: int = 0
    reset_on_fork: bool = False


def _who(tid: int) -> str:
    return "the calling thread" if tid == 0 else f"thread {tid}"


def priority_range(policy: SchedPolicy | str) -> tuple[int, int]:
    """Valid static priorities of a policy (``sched_get_priority_min/max``): (1, 99) for FIFO/RR.

    Availability: Linux.
    """
    return _core.sched.priority_range(_kernel_value(SchedPolicy.parse(policy)))


def set_scheduler(
    policy: SchedPolicy | str, priority: int = 0, tid: int = 0, *, reset_on_fork: bool = False
) -> None:
    """Set a thread's policy and priority (tid 0: the calling thread).

    Raises ValueError for an unknown policy or a priority outside
    :func:`priority_range` (the message names the range), PrivilegeError with
    advice when the kernel answers EPERM, OSError otherwise. SCHED_DEADLINE
    takes :func:`set_deadline` instead.

    Availability: Linux; SCHED_FIFO/RR need CAP_SYS_NICE or RLIMIT_RTPRIO >= priority,
    and RT runtime in the thread's cpu cgroup.
    """
    pol = SchedPolicy.parse(policy)
    if pol is SchedPolicy.DEADLINE:
        raise ValueError(
            "SCHED_DEADLINE takes runtime, deadline and period, not a priority: use set_deadline()"
        )
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be int, got {priority!r}")
    operation: Operation = "sched_rt" if pol.is_realtime else "sched"
    what = f"cannot set {pol.value} priority {priority} on {_who(tid)}"
    with translate_eperm(operation, what, priority=priority):
        _core.sched.set_scheduler(_kernel_value(pol), priority, tid, reset_on_fork)


def get_scheduler(tid: int = 0) -> SchedParams:
    """A thread's scheduling parameters (tid 0: the calling thread).

    Availability: Linux.
    """
    raw, priority, nice, runtime, deadline, period, reset = _core.sched.get_scheduler(tid)
    try:
        pol = _FROM_KERNEL[raw]
    except KeyError:
        raise ValueError(f"thread {tid} runs an unknown scheduling policy {raw}") from None
    if pol is not SchedPolicy.DEADLINE:
        # sched_getattr also reports the fair scheduler's slice as "runtime".
        runtime = deadline = period = 0
    return SchedParams(pol, priority, nice, runtime, deadline, period, reset)


def set_deadline(
    runtime_ns: int,
    deadline_ns: int,
    period_ns: int = 0,
    tid: int = 0,
    *,
    reset_on_fork: bool = False,
) -> None:
    """Run a thread under SCHED_DEADLINE (via the raw ``sched_setattr`` system call).

    Needs 1024 ns <= runtime <= deadline <= period (period 0: = deadline),
    else ValueError. Raises :class:`~mxrc.errors.UnsupportedError` when the
    thread is pinned to a strict subset of the online CPUs (the kernel refuses
    that combination), PrivilegeError on EPERM. A deadline thread cannot fork
    unless ``reset_on_fork`` is set.

    Availability: Linux >= 3.14; needs CAP_SYS_NICE.
    """
    what = (
        f"cannot set SCHED_DEADLINE (runtime {runtime_ns} ns, deadline {deadline_ns} ns, "
        f"period {period_ns or deadline_ns} ns) on {_who(tid)}"
    )
    with translate_eperm("sched_deadline", what):
        _core.sched.set_deadline(runtime_ns, deadline_ns, period_ns, tid, reset_on_fork)
