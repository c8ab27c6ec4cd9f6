"""Scheduling policy and priority; EPERM explained as PrivilegeError, for real."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from helpers import run_child

from mxrc._native import _core
from mxrc.errors import UnsupportedError
from mxrc.rt import _affinity as aff
from mxrc.rt._sched import (
    SchedParams,
    SchedPolicy,
    get_scheduler,
    priority_range,
    set_deadline,
    set_scheduler,
)

CPUS = sorted(os.sched_getaffinity(0))

# Imports everything the child needs, then drops to nobody with RLIMIT_RTPRIO 0
# and no supplementary groups: no CAP_SYS_NICE, no CAP_IPC_LOCK.
DROP_PRIVILEGES = """
import json, logging, os, resource, sys, threading
import mxrc._privilege, mxrc.errors, mxrc.rt._cgroup, mxrc.rt._isolation
import mxrc.rt._memory, mxrc.rt._sched, mxrc.rt._setup
from mxrc.errors import PrivilegeError
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
"""


@contextmanager
def sleeping_thread() -> Iterator[int]:
    """A helper thread that only sleeps (never busy under FIFO); yields its tid."""
    stop = threading.Event()
    ready = threading.Event()

    def run() -> None:
        ready.set()
        stop.wait(30)

    t = threading.Thread(target=run, name="mxrc-test-sched")
    t.start()
    ready.wait(5)
    assert t.native_id is not None
    try:
        yield t.native_id
    finally:
        # Back to SCHED_OTHER before it wakes up.
        with suppress(OSError):
            os.sched_setscheduler(t.native_id, os.SCHED_OTHER, os.sched_param(0))
        stop.set()
        t.join(5)


def test_policy_parsing_and_unknown_policy() -> None:
    assert SchedPolicy.parse("SCHED_FIFO") is SchedPolicy.FIFO
    assert SchedPolicy.parse("rr") is SchedPolicy.RR
    assert SchedPolicy("SCHED_OTHER") is SchedPolicy.OTHER
    with pytest.raises(ValueError, match=r"unknown scheduling policy 'SCHED_FAST'.*SCHED_FIFO"):
        SchedPolicy.parse("SCHED_FAST")
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        set_scheduler("SCHED_FAST", 1)


def test_priority_ranges_come_from_the_kernel() -> None:
    assert priority_range("SCHED_FIFO") == (
        os.sched_get_priority_min(os.SCHED_FIFO),
        os.sched_get_priority_max(os.SCHED_FIFO),
    )
    assert priority_range(SchedPolicy.OTHER) == (0, 0)


def test_bad_priority_is_a_value_error_naming_the_range() -> None:
    with sleeping_thread() as tid:
        with pytest.raises(ValueError, match=r"priority 100 .*SCHED_FIFO.*1\.\.99"):
            set_scheduler(SchedPolicy.FIFO, 100, tid)
        with pytest.raises(ValueError, match=r"priority 0 .*SCHED_RR.*1\.\.99"):
            set_scheduler("SCHED_RR", 0, tid)
        with pytest.raises(ValueError, match=r"priority 5 .*SCHED_OTHER.*0\.\.0"):
            set_scheduler("SCHED_OTHER", 5, tid)
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER


def test_deadline_needs_set_deadline() -> None:
    with pytest.raises(ValueError, match="set_deadline"):
        set_scheduler(SchedPolicy.DEADLINE, 0)
    with pytest.raises(ValueError, match="runtime <= deadline <= period"):
        set_deadline(2_000_000, 1_000_000, 1_000_000)


def test_get_scheduler_of_a_normal_thread() -> None:
    params = get_scheduler()
    assert params.policy is SchedPolicy(
        {
            os.SCHED_OTHER: "SCHED_OTHER",
            os.SCHED_BATCH: "SCHED_BATCH",
            os.SCHED_IDLE: "SCHED_IDLE",
        }[os.sched_getscheduler(0)]
    )
    assert params.priority == 0
    assert params.nice == os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert (params.runtime_ns, params.deadline_ns, params.period_ns) == (0, 0, 0)


@pytest.mark.privileged
@pytest.mark.parametrize("policy", [SchedPolicy.FIFO, SchedPolicy.RR])
def test_realtime_policy_on_a_helper_thread_and_back(policy: SchedPolicy) -> None:
    with sleeping_thread() as tid:
        set_scheduler(policy, 7, tid)
        kernel = {SchedPolicy.FIFO: os.SCHED_FIFO, SchedPolicy.RR: os.SCHED_RR}[policy]
        assert os.sched_getscheduler(tid) == kernel
        assert os.sched_getparam(tid).sched_priority == 7
        assert get_scheduler(tid) == SchedParams(policy, 7)
        # The calling thread is untouched.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        set_scheduler(SchedPolicy.OTHER, 0, tid)
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER
        assert get_scheduler(tid).policy is SchedPolicy.OTHER


@pytest.mark.privileged
def test_reset_on_fork_is_reported() -> None:
    with sleeping_thread() as tid:
        set_scheduler(SchedPolicy.FIFO, 2, tid, reset_on_fork=True)
        assert get_scheduler(tid).reset_on_fork
        set_scheduler(SchedPolicy.OTHER, 0, tid)


@pytest.mark.privileged
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_deadline_on_a_pinned_thread_is_unsupported() -> None:
    with sleeping_thread() as tid:
        aff.set_thread_affinity({CPUS[-1]}, tid)
        with pytest.raises(UnsupportedError, match=r"strict subset of the online CPUs") as info:
            set_deadline(100_000, 10_000_000, 10_000_000, tid)
        assert isinstance(info.value, NotImplementedError)
        assert "EPERM" in str(info.value)
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER


@pytest.mark.privileged
def test_deadline_on_an_unpinned_thread_and_back() -> None:
    if set(CPUS) != set(_core.sched.online_cpus()):
        pytest.skip("this process is pinned to a subset of the online CPUs")
    with sleeping_thread() as tid:
        set_deadline(200_000, 10_000_000, 0, tid)
        params = get_scheduler(tid)
        assert params.policy is SchedPolicy.DEADLINE
        assert (params.runtime_ns, params.deadline_ns, params.period_ns) == (
            200_000,
            10_000_000,
            10_000_000,
        )
        set_scheduler(SchedPolicy.OTHER, 0, tid)
        assert get_scheduler(tid).policy is SchedPolicy.OTHER


@pytest.mark.privileged
def test_eperm_without_privileges_names_rtprio_and_cap_sys_nice() -> None:
    result = run_child(
        DROP_PRIVILEGES
        + """
try:
    mxrc.rt._sched.set_scheduler("SCHED_FIFO", 5)
    out = {"raised": None}
except PrivilegeError as exc:
    out = {"raised": type(exc).__name__, "errno": exc.errno, "msg": str(exc),
           "perm": isinstance(exc, PermissionError)}
out["policy"] = os.sched_getscheduler(0)
print(json.dumps(out))
"""
    )
    assert result["raised"] == "PrivilegeError"
    assert result["errno"] == 1
    assert result["perm"] is True
    assert result["policy"] == os.SCHED_OTHER
    msg = str(result["msg"])
    assert "SCHED_FIFO priority 5" in msg
    assert "CAP_SYS_NICE" in msg
    assert "RLIMIT_RTPRIO is 0" in msg
    assert "@realtime - rtprio 99" in msg
    assert "LimitRTPRIO=99" in msg


@pytest.mark.privileged
def test_eperm_for_another_users_thread_names_cap_sys_nice() -> None:
    with sleeping_thread() as tid:
        result = run_child(
            DROP_PRIVILEGES
            + f"""
try:
    mxrc.rt._sched.set_scheduler("SCHED_BATCH", 0, {tid})
    out = {{"raised": None}}
except PrivilegeError as exc:
    out = {{"raised": type(exc).__name__, "msg": str(exc)}}
print(json.dumps(out))
"""
        )
        assert result["raised"] == "PrivilegeError"
        assert "CAP_SYS_NICE" in str(result["msg"])
        assert f"thread {tid}" in str(result["msg"])
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER


CPU_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


@pytest.fixture
def cgroup_without_rt_runtime() -> Iterator[Path]:
    """A v1 cpu cgroup whose cpu.rt_runtime_us is 0 (the default for a new group)."""
    if not (CPU_CGROUP_V1 / "cpu.rt_runtime_us").exists():
        pytest.skip("no cgroup v1 cpu controller with RT group scheduling")
    group = CPU_CGROUP_V1 / f"mxrc-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.rt_runtime_us").write_text("0\n")
        yield group
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.privileged
def test_eperm_as_root_explains_rt_group_scheduling(cgroup_without_rt_runtime: Path) -> None:
    group = cgroup_without_rt_runtime
    result = run_child(
        f"""
import json, os
from mxrc.errors import PrivilegeError
from mxrc.rt._sched import set_scheduler
with open("{group}/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
try:
    set_scheduler("SCHED_FIFO", 1)
    out = {{"raised": None}}
except PrivilegeError as exc:
    out = {{"raised": type(exc).__name__, "msg": str(exc)}}
print(json.dumps(out))
"""
    )
    assert result["raised"] == "PrivilegeError"
    msg = str(result["msg"])
    assert "CAP_SYS_NICE" in msg  # "the process has CAP_SYS_NICE, so ..."
    assert "cpu.rt_runtime_us = 0" in msg
    assert f"{group}/cpu.rt_runtime_us" in msg
