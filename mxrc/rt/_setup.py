"""Prepare the calling thread for a real-time cycle, in the order of ARCHITECTURE §5.

memory policy → ``mlockall`` → prefault of the stack and buffers → affinity →
policy/priority → timer slack. Every field is validated before any step runs;
the steps themselves run in C++ (``mxrc::apply_thread_setup``, the same code a
C++ cycle thread uses) and stop at the first failure, leaving later steps
unapplied.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mxrc._native import _core
from mxrc._privilege import Operation, privilege_error
from mxrc.errors import ThreadSetupError, UnsupportedError
from mxrc.rt._affinity import validate_cpus
from mxrc.rt._mempolicy import _TO_KERNEL as _MPOL
from mxrc.rt._mempolicy import MemoryPolicy, allowed_memory_nodes
from mxrc.rt._sched import _TO_KERNEL as _SCHED
from mxrc.rt._sched import SchedPolicy, priority_range

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "SETUP_STEPS",
    "SetupReport",
    "ThreadSetup",
    "apply_thread_setup",
]

_log = logging.getLogger("mxrc.rt")

#: The steps in the order they run.
SETUP_STEPS: tuple[str, ...] = tuple(_core.sched.setup_steps())

_STEP_OPERATION: dict[str, Operation] = {
    "memory_policy": "mempolicy",
    "lock_memory": "mlock",
    "affinity": "affinity",
    "timer_slack": "timer_slack",
}


@dataclass(frozen=True)
class ThreadSetup:
    """What :func:`apply_thread_setup` does to the calling thread; ``None`` leaves a setting as is.

    ``prefault_buffers`` are writable buffers (bytearray, mmap, numpy arrays)
    the cycle touches. ``allow_sched_other_fallback``: when SCHED_FIFO/RR is
    refused with EPERM, log a warning on logger ``mxrc.rt`` and continue on the
    current policy instead of raising.
    """

    memory_policy: MemoryPolicy | str | None = None
    memory_nodes: Collection[int] = ()
    lock_memory: bool = False
    lock_on_fault: bool = True
    prefault_stack_bytes: int = 0
    prefault_buffers: Sequence[Buffer] = ()
    cpus: Collection[int] | None = None
    policy: SchedPolicy | str | None = None
    priority: int = 0
    deadline_runtime_ns: int = 0
    deadline_ns: int = 0
    deadline_period_ns: int = 0
    timer_slack_ns: int | None = None
    allow_sched_other_fallback: bool = False

    def steps(self) -> tuple[str, ...]:
        """The steps this setup asks for, in the order they run."""
        wanted = {
            "memory_policy": self.memory_policy is not None,
            "lock_memory": self.lock_memory,
            "prefault_stack": self.prefault_stack_bytes > 0,
            "prefault_buffers": len(self.prefault_buffers) > 0,
            "affinity": self.cpus is not None,
            "scheduler": self.policy is not None,
            "timer_slack": self.timer_slack_ns is not None,
        }
        return tuple(step for step in SETUP_STEPS if wanted[step])


@dataclass(frozen=True)
class SetupReport:
    """What :func:`apply_thread_setup` did.

    ``sched_fallback`` is True when the real-time policy was refused and the
    thread stayed on its previous policy (``allow_sched_other_fallback``).
    """

    applied: tuple[str, ...]
    sched_fallback: bool = False
    fallback_reason: str | None = field(default=None, compare=False)


def _validate(setup: ThreadSetup) -> dict[str, Any]:
    """Check every field; return the keyword arguments of the C++ call."""
    kwargs: dict[str, Any] = {}
    if setup.memory_policy is not None:
        mpol = MemoryPolicy.parse(setup.memory_policy)
        nodes = sorted(set(setup.memory_nodes))
        allowed = allowed_memory_nodes()
        for node in nodes:
            if node not in allowed:
                raise ValueError(
                    f"NUMA node {node} is not available: this thread may use nodes "
                    f"{sorted(allowed)}"
                )
        need_none = mpol in (MemoryPolicy.DEFAULT, MemoryPolicy.LOCAL)
        if need_none and nodes:
            raise ValueError(f"memory policy {mpol.value} takes no nodes; got {nodes}")
        if mpol is MemoryPolicy.PREFERRED and len(nodes) != 1:
            raise ValueError(f"memory policy PREFERRED takes exactly one node; got {nodes}")
        if not need_none and not nodes:
            raise ValueError(f"memory policy {mpol.value} needs at least one node")
        kwargs["memory_policy"] = _MPOL[mpol]
        kwargs["memory_nodes"] = nodes
    elif setup.memory_nodes:
        raise ValueError("memory_nodes given without a memory_policy")
    if setup.prefault_stack_bytes < 0:
        raise ValueError(f"prefault_stack_bytes must be >= 0, got {setup.prefault_stack_bytes}")
    limit = _core.sched.max_prefault_stack_bytes()
    if setup.prefault_stack_bytes > limit:
        raise ValueError(
            f"prefault_stack_bytes {setup.prefault_stack_bytes} exceeds what this thread's stack "
            f"allows ({limit} bytes left after a 64 KiB margin): prefault less or give the "
            "thread a larger stack (threading.stack_size)"
        )
    kwargs["lock_memory"] = setup.lock_memory
    kwargs["lock_on_fault"] = setup.lock_on_fault
    kwargs["prefault_stack_bytes"] = setup.prefault_stack_bytes
    kwargs["prefault_buffers"] = list(setup.prefault_buffers)
    if setup.cpus is not None:
        kwargs["cpus"] = sorted(validate_cpus(setup.cpus))
    if setup.policy is not None:
        pol = SchedPolicy.parse(setup.policy)
        if pol is SchedPolicy.DEADLINE:
            if setup.cpus is not None:
                raise UnsupportedError(
                    "SCHED_DEADLINE cannot be combined with pinned cpus: the kernel rejects a "
                    "deadline thread whose affinity is a strict subset of its root domain (EPERM)."
                    " Leave cpus unset for SCHED_DEADLINE, or use SCHED_FIFO with pinned cpus"
                )
            period = setup.deadline_period_ns or setup.deadline_ns
            if not 1024 <= setup.deadline_runtime_ns <= setup.deadline_ns <= period:
                raise ValueError(
                    "SCHED_DEADLINE needs 1024 ns <= deadline_runtime_ns <= deadline_ns <= "
                    f"deadline_period_ns; got {setup.deadline_runtime_ns}, {setup.deadline_ns}, "
                    f"{period}"
                )
            kwargs["deadline_runtime_ns"] = setup.deadline_runtime_ns
            kwargs["deadline_deadline_ns"] = setup.deadline_ns
            kwargs["deadline_period_ns"] = setup.deadline_period_ns
        else:
            lo, hi = priority_range(pol)
            if not lo <= setup.priority <= hi:
                raise ValueError(
                    f"priority {setup.priority} is out of range for {pol.value}: valid "
                    f"priorities are {lo}..{hi}"
                )
        kwargs["policy"] = _SCHED[pol]
        kwargs["priority"] = setup.priority
    if setup.timer_slack_ns is not None:
        if setup.timer_slack_ns < 0:
            raise ValueError(f"timer_slack_ns must be >= 0, got {setup.timer_slack_ns}")
        kwargs["timer_slack_ns"] = setup.timer_slack_ns
    return kwargs


def _failure(
    setup: ThreadSetup, step: str, syscall: str, code: int, requested: tuple[str, ...]
) -> OSError:
    applied = requested[: requested.index(step)] if step in requested else ()
    skipped = requested[len(applied) + 1 :]
    what = (
        f"thread setup failed at step '{step}' ({syscall}); applied before it: "
        f"{', '.join(applied) or 'nothing'}; not applied: {', '.join(skipped) or 'nothing'}"
    )
    base = OSError(code, os.strerror(code))
    operation: Operation | None = _STEP_OPERATION.get(step)
    priority: int | None = None
    if step == "scheduler" and setup.policy is not None:
        pol = SchedPolicy.parse(setup.policy)
        operation = (
            "sched_deadline"
            if pol is SchedPolicy.DEADLINE
            else ("sched_rt" if pol.is_realtime else "sched")
        )
        priority = setup.priority
    if operation is not None:
        translated = privilege_error(base, operation, what, priority=priority)
        if translated is not base:
            return translated
    return ThreadSetupError(
        code,
        f"{what}: {os.strerror(code)}",
        step=step,
        syscall=syscall,
        applied=applied,
        skipped=skipped,
    )


def apply_thread_setup(setup: ThreadSetup) -> SetupReport:
    """Apply ``setup`` to the calling thread in the order of ARCHITECTURE §5.

    Validates every field first (ValueError, CpuNotAllowedError,
    UnsupportedError: nothing applied). Then runs the steps and stops at the
    first failure, raising PrivilegeError (EPERM, with advice) or
    :class:`ThreadSetupError` naming the step; earlier steps stay applied,
    later ones are not run. With ``allow_sched_other_fallback`` an EPERM for
    SCHED_FIFO/RR is logged as a warning and the remaining steps still run.

    Availability: Linux; see the individual steps for the privileges they need.
    """
    kwargs = _validate(setup)
    requested = setup.steps()
    step, syscall, code = _core.sched.apply_thread_setup(**kwargs)
    if code == 0:
        return SetupReport(applied=requested)
    pol = SchedPolicy.parse(setup.policy) if setup.policy is not None else None
    if (
        step == "scheduler"
        and code == errno.EPERM
        and setup.allow_sched_other_fallback
        and pol is not None
        and pol.is_realtime
    ):
        reason = str(_failure(setup, step, syscall, code, requested))
        _log.warning(
            "%s priority %d refused (EPERM); continuing on the thread's current policy "
            "(allow_sched_other_fallback). %s",
            pol.value,
            setup.priority,
            reason,
        )
        rest = requested[requested.index("scheduler") + 1 :]
        if "timer_slack" in rest:
            step, syscall, code = _core.sched.apply_thread_setup(
                timer_slack_ns=kwargs["timer_slack_ns"]
            )
            if code != 0:
                raise _failure(setup, step, syscall, code, requested)
        applied = tuple(s for s in requested if s != "scheduler")
        return SetupReport(applied=applied, sched_fallback=True, fallback_reason=reason)
    raise _failure(setup, step, syscall, code, requested)
