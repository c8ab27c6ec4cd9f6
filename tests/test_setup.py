"""apply_thread_setup: the ARCHITECTURE §5 order, stop-at-first-failure, fallback; clock state."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import replace

import pytest
from helpers import in_thread, run_child

from mxrc._native import _core
from mxrc.errors import CpuNotAllowedError, ThreadSetupError, UnsupportedError
from mxrc.rt import _setup
from mxrc.rt._mempolicy import MemoryPolicy, get_memory_policy
from mxrc.rt._sched import SchedPolicy
from mxrc.rt._setup import (
    SETUP_STEPS,
    ThreadSetup,
    apply_thread_setup,
)

CPUS = sorted(os.sched_getaffinity(0))


def _state() -> dict[str, object]:
    """What the steps change on the calling thread."""
    return {
        "mempolicy": get_memory_policy(),
        "cpus": os.sched_getaffinity(0),
        "policy": os.sched_getscheduler(0),
        "slack": _core.sched.get_timer_slack_ns(),
    }


def test_steps_run_in_the_documented_order() -> None:
    assert SETUP_STEPS == (
        "memory_policy",
        "lock_memory",
        "prefault_stack",
        "prefault_buffers",
        "affinity",
        "scheduler",
        "timer_slack",
    )
    setup = ThreadSetup(timer_slack_ns=1, policy="SCHED_OTHER", memory_policy="LOCAL")
    assert setup.steps() == ("memory_policy", "scheduler", "timer_slack")


@pytest.mark.privileged
def test_full_setup_on_a_thread_in_a_child_process() -> None:
    r = run_child(
        f"""
import json, mmap, os, threading
from mxrc.rt._setup import ThreadSetup, apply_thread_setup
from mxrc.rt._mempolicy import get_memory_policy
from mxrc._native import _core
def locked_kb():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Locked:"):
            return int(line.split()[1])
buf = mmap.mmap(-1, 8 << 20)
out = {{}}
def cycle_thread():
    out["locked0"] = locked_kb()
    report = apply_thread_setup(ThreadSetup(
        memory_policy="BIND", memory_nodes=[{min(get_memory_policy()[1] or {0})}],
        lock_memory=True, prefault_stack_bytes=512 << 10, prefault_buffers=[buf],
        cpus=[{CPUS[-1]}], policy="SCHED_FIFO", priority=3, timer_slack_ns=1))
    out["applied"] = list(report.applied)
    out["fallback"] = report.sched_fallback
    out["mempolicy"] = [get_memory_policy()[0].value, sorted(get_memory_policy()[1])]
    out["locked1"] = locked_kb()
    out["cpus"] = sorted(os.sched_getaffinity(0))
    out["policy"] = os.sched_getscheduler(0)
    out["priority"] = os.sched_getparam(0).sched_priority
    out["slack_rt"] = _core.sched.get_timer_slack_ns()
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # never linger under FIFO
    report = apply_thread_setup(ThreadSetup(policy="SCHED_OTHER", timer_slack_ns=1))
    out["slack_other"] = _core.sched.get_timer_slack_ns()
t = threading.Thread(target=cycle_thread)
t.start(); t.join()
out["main_cpus"] = sorted(os.sched_getaffinity(0))
print(json.dumps(out))
"""
    )
    assert r["applied"] == list(SETUP_STEPS)
    assert r["fallback"] is False
    assert r["mempolicy"] == ["BIND", [0]]
    locked0, locked1 = r["locked0"], r["locked1"]
    assert isinstance(locked0, int) and isinstance(locked1, int)
    assert locked1 - locked0 >= 8 * 1024  # the prefaulted buffer is locked
    assert r["cpus"] == [CPUS[-1]]
    assert r["policy"] == os.SCHED_FIFO
    assert r["priority"] == 3
    # Kernels >= 6.7 give RT threads no timer slack at all (0); older ones keep 1 ns.
    assert r["slack_rt"] in (0, 1)
    assert r["slack_other"] == 1
    assert r["main_cpus"] == CPUS  # only the cycle thread was pinned


def test_core_failure_at_affinity_stops_later_steps() -> None:
    def body() -> tuple[tuple[str, str, int], dict[str, object], dict[str, object]]:
        before = _state()
        result = _core.sched.apply_thread_setup(
            memory_policy=_core.numa.MPOL_BIND,
            memory_nodes=[0],
            prefault_stack_bytes=64 << 10,
            cpus=[4000],  # in range for a mask, but not online: EINVAL
            policy=_core.sched.SCHED_BATCH,
            timer_slack_ns=7,
        )
        return result, before, _state()

    result, before, after = in_thread(body)
    assert result == ("affinity", "sched_setaffinity", errno.EINVAL)
    assert after["mempolicy"] == (MemoryPolicy.BIND, frozenset({0}))  # applied before
    assert after["cpus"] == before["cpus"]
    assert after["policy"] == before["policy"] == os.SCHED_OTHER  # not applied
    assert after["slack"] == before["slack"] != 7  # not applied


def test_core_validates_everything_before_applying() -> None:
    def body() -> tuple[tuple[str, str, int], dict[str, object]]:
        result = _core.sched.apply_thread_setup(
            memory_policy=_core.numa.MPOL_BIND,
            memory_nodes=[0],
            policy=_core.sched.SCHED_FIFO,
            priority=0,  # invalid for FIFO
        )
        return result, _state()

    result, after = in_thread(body)
    assert result == ("scheduler", "sched_setscheduler", errno.EINVAL)
    assert after["mempolicy"] == (MemoryPolicy.DEFAULT, frozenset())  # nothing applied


def test_core_names_sched_setattr_for_a_refused_deadline() -> None:
    # runtime > deadline: refused before anything is applied, and the call
    # named is the one SCHED_DEADLINE goes through.
    result = in_thread(
        lambda: _core.sched.apply_thread_setup(
            policy=_core.sched.SCHED_DEADLINE,
            deadline_runtime_ns=2_000_000,
            deadline_deadline_ns=1_000_000,
        )
    )
    assert result == ("scheduler", "sched_setattr", errno.EINVAL)


def test_core_refuses_a_stack_prefault_larger_than_the_stack_before_applying() -> None:
    def body() -> tuple[tuple[str, str, int], dict[str, object]]:
        result = _core.sched.apply_thread_setup(
            memory_policy=_core.numa.MPOL_BIND,
            memory_nodes=[0],
            prefault_stack_bytes=_core.sched.max_prefault_stack_bytes() + (1 << 20),
        )
        return result, _state()

    result, after = in_thread(body)
    assert result == ("prefault_stack", "prefault_stack", errno.EINVAL)
    assert after["mempolicy"] == (MemoryPolicy.DEFAULT, frozenset())


def test_python_failure_names_the_step_and_what_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    # Let an offline CPU through validation so that the kernel refuses it.
    monkeypatch.setattr(_setup, "validate_cpus", frozenset)
    setup = ThreadSetup(
        memory_policy=MemoryPolicy.BIND,
        memory_nodes=[0],
        cpus=[4000],
        policy=SchedPolicy.BATCH,
        timer_slack_ns=7,
    )

    def body() -> tuple[ThreadSetupError, dict[str, object]]:
        with pytest.raises(ThreadSetupError) as info:
            apply_thread_setup(setup)
        return info.value, _state()

    err, after = in_thread(body)
    assert err.step == "affinity"
    assert err.syscall == "sched_setaffinity"
    assert err.errno == errno.EINVAL
    assert err.applied == ("memory_policy",)
    assert err.skipped == ("scheduler", "timer_slack")
    assert "step 'affinity'" in str(err)
    assert "not applied: scheduler, timer_slack" in str(err)
    assert after["policy"] == os.SCHED_OTHER
    assert after["slack"] != 7


def test_python_validation_fails_before_any_step() -> None:
    def attempt(setup: ThreadSetup) -> tuple[Exception, tuple[MemoryPolicy, frozenset[int]]]:
        try:
            apply_thread_setup(setup)
        except Exception as exc:
            return exc, get_memory_policy()
        raise AssertionError(f"no error for {setup}")

    bind = ThreadSetup(memory_policy="BIND", memory_nodes=[0])
    cases: list[tuple[ThreadSetup, type[Exception], str]] = [
        (replace(bind, cpus=[max(CPUS) + 5]), CpuNotAllowedError, f"CPU {max(CPUS) + 5}"),
        (replace(bind, policy="SCHED_FIFO", priority=0), ValueError, r"1\.\.99"),
        (replace(bind, policy="SCHED_NOPE"), ValueError, "unknown scheduling policy"),
        (
            replace(
                bind,
                cpus=[CPUS[0]],
                policy="SCHED_DEADLINE",
                deadline_runtime_ns=10_000,
                deadline_ns=1_000_000,
            ),
            UnsupportedError,
            "SCHED_DEADLINE cannot be combined with pinned cpus",
        ),
        (ThreadSetup(memory_policy="BIND", memory_nodes=[77]), ValueError, "NUMA node 77"),
        (ThreadSetup(memory_nodes=[0]), ValueError, "without a memory_policy"),
        (replace(bind, timer_slack_ns=-1), ValueError, "timer_slack_ns"),
        (replace(bind, prefault_stack_bytes=1 << 40), ValueError, "prefault_stack_bytes"),
    ]
    for setup, kind, text in cases:
        exc, mempolicy = in_thread(lambda setup=setup: attempt(setup))  # type: ignore[misc]
        assert isinstance(exc, kind), (setup, exc)
        assert re.search(text, str(exc)), (text, str(exc))
        assert mempolicy == (MemoryPolicy.DEFAULT, frozenset()), setup


DROP_PRIVILEGES = """
import json, logging, os, resource
import mxrc._privilege, mxrc.errors, mxrc.rt._cgroup, mxrc.rt._isolation, mxrc.rt._setup
from mxrc.errors import PrivilegeError
from mxrc.rt._setup import ThreadSetup, apply_thread_setup
from mxrc._native import _core
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.name, record.levelname, record.getMessage()))
logging.getLogger("mxrc.rt").addHandler(Keep())
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
"""


@pytest.mark.privileged
def test_sched_other_fallback_logs_and_continues() -> None:
    r = run_child(
        DROP_PRIVILEGES
        + """
default = _core.sched.get_timer_slack_ns()
report = apply_thread_setup(ThreadSetup(
    policy="SCHED_FIFO", priority=5, timer_slack_ns=1, allow_sched_other_fallback=True))
print(json.dumps({"fallback": report.sched_fallback, "applied": list(report.applied),
                  "policy": os.sched_getscheduler(0), "slack": _core.sched.get_timer_slack_ns(),
                  "default": default, "records": records}))
"""
    )
    assert r["fallback"] is True
    assert r["applied"] == ["timer_slack"]
    assert r["policy"] == os.SCHED_OTHER
    assert r["slack"] == 1
    records = r["records"]
    assert isinstance(records, list) and len(records) == 1
    name, level, message = records[0]
    assert (name, level) == ("mxrc.rt", "WARNING")
    assert "SCHED_FIFO" in message and "RLIMIT_RTPRIO" in message


@pytest.mark.privileged
def test_without_fallback_eperm_is_a_privilege_error_and_stops() -> None:
    r = run_child(
        DROP_PRIVILEGES
        + """
default = _core.sched.get_timer_slack_ns()
try:
    apply_thread_setup(ThreadSetup(policy="SCHED_RR", priority=2, timer_slack_ns=1))
    out = {"raised": None}
except PrivilegeError as exc:
    out = {"raised": type(exc).__name__, "msg": str(exc), "errno": exc.errno}
out.update(slack=_core.sched.get_timer_slack_ns(), default=default, records=records)
print(json.dumps(out))
"""
    )
    assert r["raised"] == "PrivilegeError"
    assert r["errno"] == errno.EPERM
    msg = str(r["msg"])
    assert "step 'scheduler'" in msg
    assert "not applied: timer_slack" in msg
    assert "@realtime - rtprio 99" in msg and "CAP_SYS_NICE" in msg
    assert r["slack"] == r["default"]  # the later step did not run
    assert r["records"] == []


def test_sync_status_fields_are_consistent() -> None:
    s = _core.clock.sync_status()
    assert set(s) >= {"synchronized", "maxerror_us", "esterror_us", "status", "state"}
    assert isinstance(s["synchronized"], bool)
    unsync = bool(s["status"] & 0x0040)  # STA_UNSYNC
    assert s["synchronized"] == (s["state"] != 5 and not unsync)  # 5 = TIME_ERROR
    names = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT"}
    assert s["state_name"] == names.get(s["state"], "TIME_ERROR")
    assert s["maxerror_us"] >= 0
    assert s["esterror_us"] >= 0
    assert isinstance(s["frequency_ppm"], float)
