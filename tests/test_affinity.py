"""CPU affinity: per thread, process-wide, the restoring guard, validation."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mxrc._native import _core
from mxrc.errors import CpuNotAllowedError
from mxrc.rt import _affinity as aff
from mxrc.rt._cpulist import format_cpulist, parse_cpulist

CPUS = sorted(os.sched_getaffinity(0))
needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs in the affinity mask")


def _status_cpus(tid: int) -> frozenset[int]:
    text = Path(f"/proc/self/task/{tid}/status").read_text()
    for line in text.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpulist(line.split(":", 1)[1])
    raise AssertionError("no Cpus_allowed_list in status")


@contextmanager
def _sleeping_thread() -> Iterator[threading.Thread]:
    stop = threading.Event()
    ready = threading.Event()

    def run() -> None:
        ready.set()
        stop.wait(30)

    t = threading.Thread(target=run, name="mxrc-test-sleeper")
    t.start()
    ready.wait(5)
    try:
        yield t
    finally:
        stop.set()
        t.join(5)


def test_start_and_allowed_cpus_match_this_machine() -> None:
    assert aff.start_cpus()
    assert aff.start_cpus() <= parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    allowed = aff.allowed_cpus()
    assert allowed <= aff.start_cpus()
    assert allowed  # never empty on a running host


def test_allowed_cpus_uses_the_cgroup_cpuset_of_a_fake_tree(tmp_path: Path) -> None:
    # A v1 cpuset hierarchy that allows only the highest CPU of the start mask.
    top = max(aff.start_cpus())
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("3:cpuset:/rt\n")
    (proc / "self" / "mountinfo").write_text(
        "30 25 0:26 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset\n"
    )
    cs = tmp_path / "sys" / "fs" / "cgroup" / "cpuset" / "rt"
    cs.mkdir(parents=True)
    (cs / "cpuset.effective_cpus").write_text(f"{top}\n")
    (cs / "cpuset.cpus").write_text(f"{top}\n")
    procfs_root, sysfs_root = str(proc), str(tmp_path / "sys")
    assert aff.allowed_cpus(procfs_root=procfs_root, sysfs_root=sysfs_root) == frozenset({top})
    if top > 0:
        with pytest.raises(CpuNotAllowedError, match=r"CPU 0 is not allowed") as info:
            aff.validate_cpus({0, top}, procfs_root=procfs_root, sysfs_root=sysfs_root)
        assert info.value.core == 0
        assert "cpuset" in str(info.value)


def test_validate_names_the_offending_core() -> None:
    bad = max(aff.allowed_cpus()) + 7
    with pytest.raises(CpuNotAllowedError) as info:
        aff.validate_cpus([min(CPUS), bad, bad + 1])
    assert info.value.core == bad
    assert f"CPU {bad}" in str(info.value)
    assert format_cpulist(aff.allowed_cpus()) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_validate_rejects_empty_and_negative_and_accepts_given_set() -> None:
    with pytest.raises(ValueError, match="empty"):
        aff.validate_cpus([])
    with pytest.raises(ValueError, match="negative"):
        aff.validate_cpus([-1])
    assert aff.validate_cpus([3], allowed=frozenset({3, 4})) == frozenset({3})
    with pytest.raises(CpuNotAllowedError, match="CPU 5"):
        aff.validate_cpus([5], allowed=frozenset({3, 4}))


def test_set_thread_affinity_outside_allowed_set_raises_and_changes_nothing() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(CpuNotAllowedError, match=r"CPU 4096"):
        aff.set_thread_affinity({4096})
    assert os.sched_getaffinity(0) == before


@needs_two_cpus
def test_pin_a_thread_and_read_back() -> None:
    target = CPUS[-1]
    with _sleeping_thread() as t:
        tid = t.native_id
        assert tid is not None
        aff.set_thread_affinity({target}, tid)
        assert os.sched_getaffinity(tid) == {target}
        assert _status_cpus(tid) == {target}
        assert aff.get_thread_affinity(tid) == frozenset({target})
        # Only that thread moved.
        assert os.sched_getaffinity(0) == set(CPUS)


@needs_two_cpus
def test_pinned_guard_restores_the_calling_thread_even_on_exception() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError, match="boom"), aff.pinned({CPUS[0]}) as previous:
        me = threading.get_native_id()
        assert previous == {me: frozenset(before)}
        assert os.sched_getaffinity(0) == {CPUS[0]}
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == before


@needs_two_cpus
def test_process_wide_pin_reaches_every_thread_and_restores_exact_masks() -> None:
    main_before = os.sched_getaffinity(0)
    with _sleeping_thread() as early:
        tid = early.native_id
        assert tid is not None
        # Give the early thread its own mask so "restore" must be per thread.
        os.sched_setaffinity(tid, {CPUS[0]})
        before = aff.get_process_affinity()
        assert before[tid] == frozenset({CPUS[0]})
        target = CPUS[-1]
        with pytest.raises(KeyError), aff.pinned({target}, process=True) as previous:
            assert previous == before
            for task in os.listdir("/proc/self/task"):
                assert os.sched_getaffinity(int(task)) == {target}, task
                assert _status_cpus(int(task)) == {target}
            raise KeyError("leave the block by an exception")
        assert os.sched_getaffinity(tid) == {CPUS[0]}
        assert os.sched_getaffinity(0) == main_before
        after = aff.get_process_affinity()
        assert {t: after[t] for t in before if t in after} == {
            t: before[t] for t in before if t in after
        }


@needs_two_cpus
def test_set_process_affinity_returns_previous_masks() -> None:
    before = aff.get_process_affinity()
    previous = aff.set_process_affinity({CPUS[-1]})
    try:
        assert previous == before
        assert set(aff.get_process_affinity().values()) == {frozenset({CPUS[-1]})}
    finally:
        aff.restore_affinity(previous)
    assert aff.get_process_affinity() == before


def test_restore_skips_threads_that_exited() -> None:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    assert t.native_id is not None
    gone = t.native_id
    # join() returns before the kernel task is fully gone: wait for it.
    deadline = time.monotonic() + 10
    while Path(f"/proc/self/task/{gone}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ProcessLookupError, match="sched_setaffinity"):
        _core.sched.set_thread_affinity(CPUS, gone)
    me = threading.get_native_id()
    before = os.sched_getaffinity(me)
    aff.restore_affinity({gone: frozenset(CPUS), me: frozenset({CPUS[0]})})
    try:
        assert os.sched_getaffinity(me) == {CPUS[0]}  # the live thread was restored
    finally:
        os.sched_setaffinity(me, before)


def test_core_error_carries_errno_and_syscall() -> None:
    with pytest.raises(OSError, match="sched_setaffinity") as info:
        _core.sched.set_thread_affinity([4095])  # not online: EINVAL
    assert info.value.errno == 22
    with pytest.raises(ValueError, match="empty"):
        _core.sched.set_thread_affinity([])


def test_cpp_cpulist_helpers_match_python() -> None:
    for text in ["0-3,8", "1", "0-7:2", "", "2,1,1"]:
        assert frozenset(_core.sched.parse_cpulist(text)) == parse_cpulist(text)
    assert _core.sched.format_cpulist([0, 1, 2, 3, 8]) == "0-3,8"
    with pytest.raises(ValueError, match="bad CPU list entry"):
        _core.sched.parse_cpulist("3-1")
    online = Path("/sys/devices/system/cpu/online").read_text()
    assert frozenset(_core.sched.online_cpus()) == parse_cpulist(online)
    # A corrupt list must not make either parser build billions of CPUs.
    for corrupt in ["0-4000000000", "8192", "99999999999999999999", "1-3:x"]:
        with pytest.raises(ValueError, match="bad CPU list entry"):
            parse_cpulist(corrupt)
        with pytest.raises(ValueError, match="bad CPU list entry"):
            _core.sched.parse_cpulist(corrupt)
    assert max(parse_cpulist("8191")) == max(_core.sched.parse_cpulist("8191")) == 8191
    assert _core.sched.current_tid() == threading.get_native_id()
