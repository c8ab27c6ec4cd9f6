"""Locked memory, prefaulting and timer slack, checked in /proc."""

from __future__ import annotations

import mmap
import resource
import threading
from pathlib import Path

import pytest
from helpers import run_child

from mxrc.rt import _memory as mem

MIB = 1 << 20

# Reads /proc/self/status and smaps_rollup fields in kB.
PROC_HELPERS = """
import json, mmap, os, resource, sys
def kb(field, name="status"):
    for line in open(f"/proc/self/{name}"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
"""

DROP_PRIVILEGES = """
import mxrc._privilege, mxrc.errors, mxrc.rt._cgroup, mxrc.rt._isolation, mxrc.rt._memory
from mxrc.errors import PrivilegeError
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
"""


def _as_int(value: object) -> int:
    assert isinstance(value, int)
    return value


@pytest.mark.privileged
def test_lock_on_fault_locks_without_faulting_everything_in() -> None:
    r = run_child(
        PROC_HELPERS
        + """
from mxrc.rt._memory import lock_memory, prefault, unlock_memory
buf = mmap.mmap(-1, 64 << 20)          # untouched: not resident
out = {"lck0": kb("VmLck"), "rss0": kb("VmRSS"), "locked0": kb("Locked", "smaps_rollup")}
lock_memory(on_fault=True)
out.update(lck1=kb("VmLck"), rss1=kb("VmRSS"), locked1=kb("Locked", "smaps_rollup"))
prefault(buf)
out.update(rss2=kb("VmRSS"), locked2=kb("Locked", "smaps_rollup"))
unlock_memory()
out.update(lck3=kb("VmLck"), locked3=kb("Locked", "smaps_rollup"))
print(json.dumps(out))
"""
    )
    v = {k: _as_int(x) for k, x in r.items()}
    assert v["lck0"] == 0
    assert v["lck1"] > 64 * 1024  # the locked mappings include the 64 MiB buffer
    assert v["rss1"] - v["rss0"] < 32 * 1024  # ...but it was not faulted in
    assert v["locked2"] - v["locked1"] >= 60 * 1024  # prefault faulted and locked it
    assert v["rss2"] - v["rss1"] >= 60 * 1024
    assert v["lck3"] == 0
    assert v["locked3"] < v["locked2"]


@pytest.mark.privileged
def test_lock_without_on_fault_faults_everything_in() -> None:
    r = run_child(
        PROC_HELPERS
        + """
from mxrc.rt._memory import lock_memory
buf = mmap.mmap(-1, 64 << 20)
rss0 = kb("VmRSS")
lock_memory(on_fault=False)
print(json.dumps({"grew": kb("VmRSS") - rss0, "locked": kb("Locked", "smaps_rollup")}))
"""
    )
    assert _as_int(r["grew"]) >= 60 * 1024
    assert _as_int(r["locked"]) >= 60 * 1024


@pytest.mark.privileged
@pytest.mark.parametrize(("limit", "errno_name"), [(0, "EPERM"), (MIB, "ENOMEM")])
def test_mlock_refused_gives_memlock_advice(limit: int, errno_name: str) -> None:
    r = run_child(
        PROC_HELPERS
        + f"""
resource.setrlimit(resource.RLIMIT_MEMLOCK, ({limit}, {limit}))
"""
        + DROP_PRIVILEGES
        + """
import errno
try:
    mxrc.rt._memory.lock_memory(on_fault=False)
    out = {"raised": None}
except PrivilegeError as exc:
    out = {"raised": type(exc).__name__, "errno": errno.errorcode[exc.errno], "msg": str(exc)}
out["lck"] = kb("VmLck")
print(json.dumps(out))
"""
    )
    assert r["raised"] == "PrivilegeError"
    assert r["errno"] == errno_name
    msg = str(r["msg"])
    assert "mlockall" in msg
    assert "RLIMIT_MEMLOCK" in msg
    assert "@realtime - memlock unlimited" in msg
    assert "LimitMEMLOCK=infinity" in msg
    assert "CAP_IPC_LOCK" in msg
    assert r["lck"] == 0


def test_prefault_keeps_contents_and_needs_a_writable_buffer() -> None:
    data = bytearray(range(256)) * 4096  # 1 MiB, a pattern on every page
    before = bytes(data)
    mem.prefault(data)
    assert data == before
    m = mmap.mmap(-1, 4 * MIB)
    m[::4096] = b"\x5a" * (4 * MIB // 4096)
    mem.prefault(m)
    assert m[::4096] == b"\x5a" * (4 * MIB // 4096)
    with pytest.raises(BufferError):
        mem.prefault(b"read-only bytes")
    mem.prefault(bytearray())  # empty: nothing to do


def _rss_kb() -> int:
    # VmRSS: mmap(-1, ...) is a shared mapping (RssShmem), a stack is RssAnon.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_prefault_faults_pages_in() -> None:
    # Resident memory, not fault counts: with transparent huge pages one fault
    # can bring in 2 MiB.
    m = mmap.mmap(-1, 8 * MIB)
    before = _rss_kb()
    mem.prefault(m)
    assert _rss_kb() - before >= 7 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    m[:: mmap.PAGESIZE] = b"\x01" * (8 * MIB // mmap.PAGESIZE)  # already there: no faults
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 64


def test_prefault_stack_touches_pages_on_a_fresh_thread() -> None:
    out: dict[str, object] = {}

    def run() -> None:
        r0 = _rss_kb()
        mem.prefault_stack(4 * MIB)
        r1 = _rss_kb()
        f1 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        mem.prefault_stack(4 * MIB)  # the same pages again: nothing new
        f2 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        out["grew_kb"], out["faults_again"] = r1 - r0, f2 - f1
        try:
            mem.prefault_stack(1 << 40)
        except ValueError as exc:
            out["error"] = str(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert _as_int(out["grew_kb"]) >= 3 * 1024
    assert _as_int(out["faults_again"]) < 32
    assert "bytes of stack left" in str(out["error"])
    with pytest.raises(ValueError, match=">= 0"):
        mem.prefault_stack(-1)


def test_timer_slack_of_the_main_thread_via_proc_self() -> None:
    r = run_child(
        """
import json
from mxrc.rt._memory import get_timer_slack_ns, set_timer_slack_ns
read = lambda: int(open("/proc/self/timerslack_ns").read())
default = read()
set_timer_slack_ns(1)
one = (read(), get_timer_slack_ns())
set_timer_slack_ns(0)  # back to the default
print(json.dumps({"default": default, "one": one, "reset": read()}))
"""
    )
    assert r["one"] == [1, 1]
    assert r["reset"] == r["default"]


@pytest.mark.privileged  # another task's timerslack_ns needs CAP_SYS_NICE
def test_timer_slack_of_another_thread_by_tid() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, args=(30,))
    t.start()
    try:
        tid = t.native_id
        assert tid is not None
        mem.set_timer_slack_ns(1000, tid=tid)
        assert int(Path(f"/proc/{tid}/timerslack_ns").read_text()) == 1000
        assert mem.get_timer_slack_ns(tid=tid) == 1000
    finally:
        stop.set()
        t.join()
    with pytest.raises(ValueError, match=">= 0"):
        mem.set_timer_slack_ns(-1)
