"""Locked and prefaulted memory, and timer slack.

A cycle thread must not page-fault: lock the process's memory
(``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``), then prefault the stack
depth and the buffers the cycle touches. ``MCL_ONFAULT`` locks pages when they
are first touched instead of faulting every mapping in (a new thread's 8 MiB
stack is not populated at once). It does not change the accounting: the
kernel counts the full size of every locked mapping against
``RLIMIT_MEMLOCK``, so ``MCL_CURRENT`` needs the whole address space (tens of
MiB for Python) below the limit, and without ``CAP_IPC_LOCK`` the limit must
be ``unlimited``.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING

from mxrc._native import _core
from mxrc._privilege import translate_eperm

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "get_timer_slack_ns",
    "lock_memory",
    "prefault",
    "prefault_stack",
    "set_timer_slack_ns",
    "unlock_memory",
]


def lock_memory(*, on_fault: bool = True) -> None:
    """Lock the process's current and future memory (``mlockall``).

    With ``on_fault`` (default) pages are locked when first touched
    (``MCL_ONFAULT``); prefault what the cycle uses. Raises PrivilegeError when
    RLIMIT_MEMLOCK is too small and CAP_IPC_LOCK is missing.

    Availability: Linux; needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK.
    """
    flags = "MCL_CURRENT | MCL_FUTURE" + (" | MCL_ONFAULT" if on_fault else "")
    with translate_eperm("mlock", f"cannot lock the process's memory ({flags})"):
        _core.sched.lock_memory(on_fault)


def unlock_memory() -> None:
    """Unlock all of the process's memory (``munlockall``).

    Availability: Linux.
    """
    _core.sched.unlock_memory()


def prefault_stack(nbytes: int) -> None:
    """Touch ``nbytes`` of the calling thread's stack below the current frame, page by page.

    Call it on the cycle thread after :func:`lock_memory`, with the stack depth
    the cycle needs. Raises ValueError when the thread's stack has fewer bytes
    left (plus a 64 KiB margin).

    Availability: Linux.
    """
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    _core.sched.prefault_stack(nbytes)


def prefault(buffer: Buffer) -> None:
    """Fault in every page of a writable buffer (bytearray, mmap, numpy array), keeping its bytes.

    Uses ``MADV_POPULATE_WRITE``; safe while other threads write to the buffer.
    Raises BufferError for a read-only or non-contiguous buffer.

    Availability: Linux.
    """
    _core.sched.prefault(buffer)


def set_timer_slack_ns(ns: int, *, tid: int = 0, procfs_root: str = "/proc") -> None:
    """Set a thread's timer slack (tid 0: the calling thread, via ``PR_SET_TIMERSLACK``).

    The default slack of SCHED_OTHER threads is 50 µs, which shows up as
    wake-up latency; a cycle thread uses 1 ns. 0 restores the thread's
    default. Another thread's slack is written to ``/proc/<tid>/timerslack_ns``.

    Availability: Linux; another thread of another process needs CAP_SYS_NICE.
    """
    if ns < 0:
        raise ValueError(f"timer slack must be >= 0 ns, got {ns}")
    if tid == 0:
        _core.sched.set_timer_slack_ns(ns)
        return
    path = Path(procfs_root) / str(tid) / "timerslack_ns"
    with translate_eperm("timer_slack", f"cannot set the timer slack of thread {tid}"):
        try:
            path.write_text(f"{ns}\n")
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise PermissionError(errno.EPERM, exc.strerror, str(path)) from exc
            raise


def get_timer_slack_ns(*, tid: int = 0, procfs_root: str = "/proc") -> int:
    """A thread's timer slack in ns (tid 0: the calling thread, via ``PR_GET_TIMERSLACK``).

    Availability: Linux.
    """
    if tid == 0:
        return _core.sched.get_timer_slack_ns()
    return int((Path(procfs_root) / str(tid) / "timerslack_ns").read_text().strip())
