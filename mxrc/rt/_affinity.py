"""CPU affinity of threads and processes, validated against the CPUs this process may use.

Affinity is per thread on Linux: a process-wide change walks
``/proc/<pid>/task`` and sets every thread (done in C++, see ``mxrc._core.sched``).
Cores are validated against the mask the process started with (recorded when
this module is first imported) intersected with its cgroup's
``cpuset.cpus.effective`` — never against the CPU count or the current mask.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from mxrc._native import _core
from mxrc._privilege import translate_eperm
from mxrc.errors import CpuNotAllowedError
from mxrc.rt._cgroup import cpuset_effective
from mxrc.rt._cpulist import format_cpulist

__all__ = [
    "allowed_cpus",
    "get_process_affinity",
    "get_thread_affinity",
    "pinned",
    "restore_affinity",
    "set_process_affinity",
    "set_thread_affinity",
    "start_cpus",
    "validate_cpus",
]

# The mask this process had when mxrc's affinity layer was first imported.
_START_CPUS: frozenset[int] = frozenset(os.sched_getaffinity(0))


def start_cpus() -> frozenset[int]:
    """The CPU mask the process had when this module was first imported.

    Availability: Linux.
    """
    return _START_CPUS


def allowed_cpus(*, procfs_root: str = "/proc", sysfs_root: str = "/sys") -> frozenset[int]:
    """CPUs this process may pin threads to: the start mask ∩ the cgroup's effective cpuset.

    Availability: Linux.
    """
    effective = cpuset_effective("self", procfs_root=procfs_root, sysfs_root=sysfs_root)
    return _START_CPUS if effective is None else _START_CPUS & effective


def _as_cores(cores: Iterable[int]) -> frozenset[int]:
    result: set[int] = set()
    for core in cores:
        if isinstance(core, bool) or not isinstance(core, int):
            raise TypeError(f"CPU numbers must be int, got {core!r}")
        if core < 0:
            raise ValueError(f"CPU numbers cannot be negative, got {core}")
        result.add(core)
    if not result:
        raise ValueError("an empty set of CPUs cannot be an affinity mask")
    return frozenset(result)


def validate_cpus(
    cores: Iterable[int],
    *,
    allowed: frozenset[int] | None = None,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
) -> frozenset[int]:
    """Check cores against the allowed CPUs and return them as a frozenset.

    Raises ValueError for an empty set or a negative number, and
    :class:`~mxrc.errors.CpuNotAllowedError` naming the first (lowest) core
    outside ``allowed`` (default: :func:`allowed_cpus`).

    Availability: Linux.
    """
    wanted = _as_cores(cores)
    if allowed is not None:
        for core in sorted(wanted):
            if core not in allowed:
                raise CpuNotAllowedError(core, frozenset(allowed), "the allowed set given")
        return wanted
    effective = cpuset_effective("self", procfs_root=procfs_root, sysfs_root=sysfs_root)
    permitted = _START_CPUS if effective is None else _START_CPUS & effective
    for core in sorted(wanted):
        if core in permitted:
            continue
        if core not in _START_CPUS:
            why = (
                f"allowed = start mask ∩ cgroup cpuset; CPU {core} is not in the mask the "
                f"process started with ({format_cpulist(_START_CPUS)})"
            )
        else:
            why = (
                f"allowed = start mask ∩ cgroup cpuset; CPU {core} is not in the cgroup's "
                f"cpuset.cpus.effective ({format_cpulist(effective or ())})"
            )
        raise CpuNotAllowedError(core, permitted, why)
    return wanted


def get_thread_affinity(tid: int = 0) -> frozenset[int]:
    """CPUs one thread may run on (tid 0: the calling thread).

    Availability: Linux.
    """
    return frozenset(_core.sched.get_thread_affinity(tid))


def set_thread_affinity(cores: Iterable[int], tid: int = 0, *, validate: bool = True) -> None:
    """Pin one thread (tid 0: the calling thread) to ``cores``.

    With ``validate`` (default) the cores are checked by :func:`validate_cpus`
    first: the kernel itself silently drops offline CPUs from a mask.
    Raises CpuNotAllowedError, PrivilegeError (another user's thread) or OSError.

    Availability: Linux; another user's thread needs CAP_SYS_NICE.
    """
    wanted = validate_cpus(cores) if validate else _as_cores(cores)
    who = "the calling thread" if tid == 0 else f"thread {tid}"
    with translate_eperm("affinity", f"cannot pin {who} to CPUs {format_cpulist(wanted)}"):
        _core.sched.set_thread_affinity(sorted(wanted), tid)


def get_process_affinity(pid: int = 0) -> dict[int, frozenset[int]]:
    """Affinity of every thread of a process (pid 0: this one), keyed by thread id.

    Availability: Linux.
    """
    return {tid: frozenset(cpus) for tid, cpus in _core.sched.get_process_affinity(pid).items()}


def set_process_affinity(
    cores: Iterable[int], pid: int = 0, *, validate: bool = True
) -> dict[int, frozenset[int]]:
    """Pin every thread of a process (pid 0: this one); return the previous masks.

    Threads started while the walk runs are included. On failure no thread
    is left changed. Cores are validated for this process only.

    Availability: Linux; another user's process needs CAP_SYS_NICE.
    """
    own = pid in (0, os.getpid())
    wanted = validate_cpus(cores) if validate and own else _as_cores(cores)
    who = "this process" if own else f"process {pid}"
    with translate_eperm("affinity", f"cannot pin {who} to CPUs {format_cpulist(wanted)}"):
        previous = _core.sched.set_process_affinity(sorted(wanted), pid)
    return {tid: frozenset(cpus) for tid, cpus in previous.items()}


def restore_affinity(masks: Mapping[int, Iterable[int]]) -> None:
    """Put back per-thread masks (as returned by :func:`set_process_affinity`).

    Threads that have exited meanwhile are skipped. The masks are not
    re-validated: they are what the threads had before.

    Availability: Linux.
    """
    for tid, cpus in masks.items():
        try:
            _core.sched.set_thread_affinity(sorted(cpus), tid)
        except ProcessLookupError:
            continue
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                continue
            raise


@contextmanager
def pinned(
    cores: Iterable[int], *, tid: int | None = None, process: bool = False
) -> Iterator[dict[int, frozenset[int]]]:
    """Pin the calling thread (or thread ``tid``, or the whole process) inside a ``with`` block.

    Yields the previous masks by thread id and restores exactly those masks on
    exit, also when the block raises. With ``process=True`` every thread of
    this process is pinned and restored; threads started inside the block keep
    the mask they inherited.

    Availability: Linux.
    """
    if process:
        if tid is not None:
            raise ValueError("pass either tid or process=True, not both")
        previous = set_process_affinity(cores)
    else:
        target = threading.get_native_id() if tid is None else tid
        previous = {target: get_thread_affinity(target)}
        set_thread_affinity(cores, target)
    try:
        yield dict(previous)
    finally:
        restore_affinity(previous)
