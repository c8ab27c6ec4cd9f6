"""Turn an EPERM from a system call into a :class:`PrivilegeError` that says what to change.

The advice names the capability, resource limit or cgroup setting that the
failed operation needs: ``CAP_SYS_NICE`` / ``RLIMIT_RTPRIO`` for SCHED_FIFO and
SCHED_RR (or, when the process already has the capability, the RT runtime of
its cpu cgroup), ``RLIMIT_MEMLOCK`` / ``CAP_IPC_LOCK`` for locked memory,
``CAP_SYS_NICE`` for another user's threads. Other errors pass through unchanged.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from mxrc.errors import PrivilegeError

__all__ = [
    "Operation",
    "privilege_advice",
    "privilege_error",
    "translate_eperm",
]

Operation = Literal[
    "sched_rt",
    "sched_deadline",
    "sched",
    "mlock",
    "affinity",
    "mempolicy",
    "timer_slack",
]

_CAP_IPC_LOCK = 14
_CAP_SYS_NICE = 23

_RTPRIO_ADVICE = (
    "raise RLIMIT_RTPRIO: a line `@realtime - rtprio 99` in /etc/security/limits.conf "
    "(and the user in group realtime, then log in again), or `LimitRTPRIO=99` in the "
    "systemd unit; or grant CAP_SYS_NICE (`AmbientCapabilities=CAP_SYS_NICE` in the unit, "
    "or `setcap cap_sys_nice+ep` on the interpreter)"
)
_MEMLOCK_ADVICE = (
    "raise RLIMIT_MEMLOCK: a line `@realtime - memlock unlimited` in "
    "/etc/security/limits.conf (and the user in group realtime), or `LimitMEMLOCK=infinity` "
    "in the systemd unit; or grant CAP_IPC_LOCK (`AmbientCapabilities=CAP_IPC_LOCK`)"
)
_NICE_ADVICE = (
    "acting on another user's threads needs CAP_SYS_NICE (`AmbientCapabilities=CAP_SYS_NICE` "
    "in the systemd unit) or running as that user"
)


def _has_cap(cap: int, procfs_root: str) -> bool | None:
    try:
        # Imported here: advice is built rarely, and a broken reader must not break it.
        from mxrc.rt._isolation import effective_capabilities

        caps = effective_capabilities("self", procfs_root=procfs_root)
    except Exception:  # advice must never fail: fall back to "unknown"
        return None
    return None if caps is None else bool(caps >> cap & 1)


def _limit_text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _rt_group_advice(procfs_root: str, sysfs_root: str) -> str:
    """The RT group-scheduling cause: a cgroup with no RT runtime."""
    try:
        from mxrc.rt._cgroup import rt_group_runtime

        grp = rt_group_runtime("self", procfs_root=procfs_root, sysfs_root=sysfs_root)
    except Exception:
        grp = None
    if grp is not None and grp.runtime_us == 0:
        return (
            f"RT group scheduling: this process's cpu cgroup {grp.cgroup_path} has "
            f"cpu.rt_runtime_us = 0, so SCHED_FIFO/SCHED_RR fail with EPERM even for root. "
            f"Give it RT runtime, parents first: `echo 950000 > {grp.directory}/cpu.rt_runtime_us`"
            ", or move the process to the root cpu cgroup"
        )
    return (
        "the likely cause is RT group scheduling: a cpu cgroup with cpu.rt_runtime_us = 0 "
        "refuses SCHED_FIFO/SCHED_RR with EPERM even for root. On cgroup v1 write a budget "
        "into <cpu cgroup>/cpu.rt_runtime_us (parents first, e.g. 950000); with systemd and "
        "cgroup v2, keep RT tasks out of cgroups with the cpu controller enabled (no "
        "CPUQuota=/CPUWeight= on the unit). `mxrc doctor` shows this host's setting"
    )


def privilege_advice(
    operation: Operation,
    *,
    priority: int | None = None,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
) -> str:
    """What to change so that ``operation`` is permitted.

    Reads the process's capabilities, resource limits and cgroup to pick the
    likely cause. Never raises.

    Availability: Linux.
    """
    if operation == "sched_rt":
        nice = _has_cap(_CAP_SYS_NICE, procfs_root)
        soft, _hard = resource.getrlimit(resource.RLIMIT_RTPRIO)
        need = priority if priority is not None else 1
        limit_ok = soft == resource.RLIM_INFINITY or soft >= need
        if nice or limit_ok:
            who = "has CAP_SYS_NICE" if nice else f"has RLIMIT_RTPRIO {_limit_text(soft)}"
            return f"the process {who}, so " + _rt_group_advice(procfs_root, sysfs_root)
        return (
            f"the process lacks CAP_SYS_NICE and its RLIMIT_RTPRIO is {_limit_text(soft)} "
            f"(priority {need} needs at least {need}): {_RTPRIO_ADVICE}"
        )
    if operation == "sched_deadline":
        return (
            "SCHED_DEADLINE needs CAP_SYS_NICE (RLIMIT_RTPRIO does not apply: "
            "`AmbientCapabilities=CAP_SYS_NICE` in the systemd unit), a thread whose affinity "
            "covers its whole root domain (all online CPUs unless exclusive cpusets split "
            "them), and deadline bandwidth (sched_rt_runtime_us not 0)"
        )
    if operation == "mlock":
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        have = "has" if _has_cap(_CAP_IPC_LOCK, procfs_root) else "lacks"
        shown = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
        return (
            f"RLIMIT_MEMLOCK is {shown} and the process {have} CAP_IPC_LOCK: {_MEMLOCK_ADVICE}. "
            "MCL_ONFAULT does not help here: the kernel counts the full size of every "
            "locked mapping (the whole address space for MCL_CURRENT) against the limit"
        )
    if operation == "affinity":
        return (
            "setting the CPU affinity of another user's thread needs CAP_SYS_NICE "
            "(`AmbientCapabilities=CAP_SYS_NICE` in the systemd unit) or running as that user"
        )
    if operation == "mempolicy":
        return (
            "moving pages of other processes (MPOL_MF_MOVE_ALL, migrate_pages of another "
            "process) needs CAP_SYS_NICE (`AmbientCapabilities=CAP_SYS_NICE`)"
        )
    if operation == "timer_slack":
        return "changing the timer slack of another thread needs CAP_SYS_NICE"
    return _NICE_ADVICE


def privilege_error(
    exc: OSError,
    operation: Operation,
    what: str,
    *,
    priority: int | None = None,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
) -> OSError:
    """Return a :class:`PrivilegeError` for an EPERM ``exc``, else ``exc`` itself.

    ``what`` says what was attempted ("cannot set SCHED_FIFO priority 10 on
    thread 1234"). For ``mlock``, ENOMEM (RLIMIT_MEMLOCK exceeded) is also a
    privilege problem. The new error keeps ``errno``.

    Availability: Linux.
    """
    code = exc.errno
    if code == errno.EPERM or (operation == "mlock" and code == errno.ENOMEM):
        reason = exc.strerror or os.strerror(code)
        # Errors from mxrc._core already say what failed and which call did it.
        text = reason if "(from " in reason else f"{what}: {reason}"
        advice = privilege_advice(
            operation, priority=priority, procfs_root=procfs_root, sysfs_root=sysfs_root
        )
        return PrivilegeError(code, f"{text} [{errno.errorcode[code]}]. To fix: {advice}")
    return exc


@contextmanager
def translate_eperm(
    operation: Operation,
    what: str,
    *,
    priority: int | None = None,
) -> Iterator[None]:
    """Context manager: re-raise EPERM inside it as :class:`PrivilegeError`.

    Availability: Linux.
    """
    try:
        yield
    except PrivilegeError:
        raise
    except OSError as exc:
        new = privilege_error(exc, operation, what, priority=priority)
        if new is exc:
            raise
        raise new from exc
