"""The cycle thread really applies its setup (affinity, policy, priority, mlock, timer slack)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_child

from mxrc.errors import CpuNotAllowedError
from mxrc.rt._affinity import allowed_cpus
from mxrc.rt._bodies import BuiltinBody
from mxrc.rt._executive import Executive

pytestmark = pytest.mark.timing

# the cycle thread goes to the highest allowed CPU (CPU 1 here; CPU 0 stays free)
RT_CPU = max(allowed_cpus())


def _status(tid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


@pytest.mark.privileged
def test_affinity_policy_priority_and_timer_slack_are_applied() -> None:
    ex = Executive(BuiltinBody(), period_us=1000, cpus=[RT_CPU], policy="SCHED_FIFO", priority=20)
    with ex:
        assert ex.wait(cycles=10, timeout=5)
        tid = ex.tid
        assert tid is not None
        assert _status(tid)["Cpus_allowed_list"] == str(RT_CPU)
        assert os.sched_getscheduler(tid) == os.SCHED_FIFO
        assert os.sched_getparam(tid).sched_priority == 20
        # 1 ns asked; recent kernels report 0 for real-time tasks (they get no slack)
        assert Path(f"/proc/{tid}/timerslack_ns").read_text().strip() in ("0", "1")
        assert Path(f"/proc/self/task/{tid}/comm").read_text().strip() == "mxrc-main"
    # the calling thread is untouched
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_unprivileged_defaults_touch_only_timer_slack() -> None:
    ex = Executive(BuiltinBody(), period_us=1000, thread_name="cyc")
    with ex:
        assert ex.wait(cycles=5, timeout=5)
        tid = ex.tid
        assert tid is not None
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER
        assert Path(f"/proc/{tid}/timerslack_ns").read_text().strip() == "1"
        assert Path(f"/proc/self/task/{tid}/comm").read_text().strip() == "cyc"


def test_cpu_outside_the_allowed_set_is_refused_before_anything_runs() -> None:
    with pytest.raises(CpuNotAllowedError):
        Executive(BuiltinBody(), cpus=[4096])


@pytest.mark.privileged
def test_lock_memory_is_applied_in_arun_child() -> None:
    r = run_child(
        """
        import json
        from mxrc.rt._bodies import BuiltinBody
        from mxrc.rt._executive import Executive

        def vmlck():
            for line in open("/proc/self/status"):
                if line.startswith("VmLck:"):
                    return int(line.split()[1])
        before = vmlck()
        ex = Executive(BuiltinBody(), period_us=1000, lock_memory=True, prefault_stack_kb=128)
        with ex:
            ex.wait(cycles=5, timeout=5)
            during = vmlck()
        print(json.dumps({"before": before, "during": during}))
        """
    )
    assert r["before"] == 0
    assert isinstance(r["during"], int) and r["during"] > 0


_DROP = """
import json, logging, os
logging.basicConfig(level=logging.WARNING)
from mxrc.errors import PrivilegeError
from mxrc.rt._bodies import BuiltinBody
from mxrc.rt._executive import Executive
import mxrc.rt._perf, mxrc._privilege, mxrc.rt._isolation, mxrc.rt._cgroup  # before losing access
os.setgid(65534); os.setuid(65534)   # no CAP_SYS_NICE, RLIMIT_RTPRIO 0
"""


@pytest.mark.privileged
def test_fifo_refused_without_privilege_raises_privilege_error() -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_RTPRIO)[0] != 0:
        pytest.skip("RLIMIT_RTPRIO is raised here")
    r = run_child(
        _DROP
        + """
ex = Executive(BuiltinBody(), period_us=1000, policy="SCHED_FIFO", priority=10)
try:
    ex.start()
    out = {"raised": None}
except PrivilegeError as e:
    out = {"raised": type(e).__name__, "msg": str(e), "state": ex.state.name}
ex2 = Executive(BuiltinBody(), period_us=1000, policy="SCHED_FIFO", priority=10,
                allow_sched_other_fallback=True)
st = ex2.run(20)
out["fallback"] = ex2.sched_fallback
out["fallback_cycles"] = st.cycle_count
print(json.dumps(out))
""",
        with_stderr=True,
    )
    assert r["raised"] == "PrivilegeError"
    assert "scheduler" in str(r["msg"]) and "RTPRIO" in str(r["msg"])
    assert r["state"] == "ERROR"
    assert r["fallback"] is True
    assert r["fallback_cycles"] == 20
    assert "allow_sched_other_fallback" in str(r["stderr"])


def test_from_config_maps_the_rt_role(tmp_path: Path) -> None:
    (tmp_path / "cpu_affinity.json").write_text(
        json.dumps({"rt": {"cpu_cores": [1], "policy": "SCHED_RR", "priority": 20}})
    )
    (tmp_path / "perf_monitor.json").write_text(
        json.dumps({"rt": {"cycle_time_us": 500, "deadline_us": 400, "overrun_policy": "run_late"}})
    )
    (tmp_path / "numa_binding.json").write_text(
        json.dumps(
            {
                "rt": {
                    "memory_policy": "LOCAL",
                    "memory_allocation": {"lock_memory": False, "prefault_stack_kb": 64},
                }
            }
        )
    )
    ex = Executive.from_config(tmp_path, BuiltinBody(), name="cfg", priority=15)
    assert ex.period_ns == 500_000
    assert ex.deadline_ns == 400_000
    assert ex._overrun == "run_late"
    s = ex._setup
    assert tuple(s.cpus or ()) == (1,)
    assert s.policy == "SCHED_RR"
    assert s.priority == 15  # the override wins
    assert s.memory_policy == "LOCAL"
    assert s.lock_memory is False
    assert s.prefault_stack_bytes == 64 * 1024
    assert ex.name == "cfg"


def test_from_config_defaults_pin_the_highest_allowed_cpu() -> None:
    from mxrc.config import MxrcConfig
    from mxrc.rt._affinity import allowed_cpus

    ex = Executive.from_config(MxrcConfig(), BuiltinBody())
    assert tuple(ex._setup.cpus or ()) == (max(allowed_cpus()),)
    assert ex._setup.policy == "SCHED_FIFO"
    assert ex.period_ns == 1_000_000
