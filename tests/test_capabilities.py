"""mxrc capabilities: real probes on this machine, inference on fake trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxrc._capabilities import Capabilities, capabilities
from mxrc.rt._cgroup import controller_location

REQUIRED = {
    "affinity",
    "sched_fifo",
    "sched_deadline",
    "mlock",
    "numa",
    "rt_kernel",
    "isolation",
    "timer_slack",
}


def host(data_dir: Path, name: str) -> dict[str, str]:
    base = data_dir / "hosts" / name
    return {"procfs_root": str(base / "proc"), "sysfs_root": str(base / "sys")}


def check_shape(caps: Capabilities) -> None:
    assert set(caps) >= REQUIRED
    for name, cap in caps.items():
        assert cap.name == name
        assert cap.reason, f"{name} has no reason"
        d = cap.to_dict()
        assert d["available"] is cap.available
    json.dumps(caps.to_dict())


def test_numa2_inferred(data_dir: Path) -> None:
    caps = capabilities(**host(data_dir, "numa2_isolated"))
    check_shape(caps)
    assert caps["affinity"].available
    assert caps["affinity"].details["cpus_allowed"] == [2, 3]
    assert caps["sched_fifo"].available
    assert "inferred" in caps["sched_fifo"].reason
    assert "RLIMIT_RTPRIO 95" in caps["sched_fifo"].reason
    assert not caps["sched_deadline"].available  # no CAP_SYS_NICE
    assert "CAP_SYS_NICE" in caps["sched_deadline"].reason
    assert "unpinned" in caps["sched_deadline"].reason
    assert caps["mlock"].available and "unlimited" in caps["mlock"].reason
    assert caps["numa"].available and caps["numa"].details["nodes"] == 2
    assert caps["rt_kernel"].available
    assert caps["isolation"].available
    assert caps["isolation"].details["isolated_cpus"] == [2, 3]
    assert caps["timer_slack"].available
    assert caps["timer_slack"].details["timer_slack_ns"] == 50000


def test_v1_rt_group_blocks_fifo_even_with_capabilities(data_dir: Path) -> None:
    caps = capabilities(**host(data_dir, "cgroup_v1"))
    check_shape(caps)
    fifo = caps["sched_fifo"]
    assert not fifo.available
    assert "cpu.rt_runtime_us = 0" in fifo.reason
    assert "RLIMIT_RTPRIO" not in fifo.reason  # CAP_SYS_NICE covers the limit
    assert caps["mlock"].available  # CAP_IPC_LOCK
    assert caps["numa"].details["nodes"] == 1
    assert not caps["isolation"].available
    assert "isolcpus" in caps["isolation"].reason
    assert not caps["rt_kernel"].available


def test_unprivileged_host_names_limits(data_dir: Path) -> None:
    caps = capabilities(**host(data_dir, "numa4"))
    check_shape(caps)
    assert not caps["sched_fifo"].available
    assert "RLIMIT_RTPRIO is 0" in caps["sched_fifo"].reason
    assert not caps["mlock"].available
    assert "LimitMEMLOCK=infinity" in caps["mlock"].reason
    assert caps["numa"].details["nodes"] == 4
    assert "PREEMPT_DYNAMIC" in caps["rt_kernel"].reason
    assert not caps["timer_slack"].available


def test_mapping_is_read_only(data_dir: Path) -> None:
    caps = capabilities(**host(data_dir, "numa4"))
    with pytest.raises(TypeError):
        caps["x"] = caps["numa"]  # type: ignore[index]
    assert len(caps) == len(list(caps))
    assert "numa=yes" in repr(caps)


def test_real_capabilities_consistent_with_system() -> None:
    caps = capabilities()
    check_shape(caps)
    assert set(caps["affinity"].details["cpus_allowed"]) <= os.sched_getaffinity(0)  # type: ignore[arg-type]
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    assert caps["numa"].details["nodes"] == max(len(nodes), 1)
    slack = Path("/proc/self/timerslack_ns")
    if slack.exists():
        assert caps["timer_slack"].available
        assert caps["timer_slack"].details["timer_slack_ns"] == int(slack.read_text())
    assert caps["isolation"].available == bool(
        Path("/sys/devices/system/cpu/isolated").read_text().strip()
        or "isolcpus=" in Path("/proc/cmdline").read_text()
    )


@pytest.mark.privileged
def test_real_sched_fifo_probe_as_root_restores_policy() -> None:
    before = os.sched_getscheduler(0)
    caps = capabilities()
    fifo = caps["sched_fifo"]
    grp = controller_location("cpu")
    rt_file = Path(grp.directory) / "cpu.rt_runtime_us" if grp else None
    if rt_file is not None and rt_file.exists() and int(rt_file.read_text()) == 0:
        pytest.skip("this test runs inside a cgroup without RT runtime")
    assert fifo.available, fifo.reason
    assert fifo.details["probed"] is True
    assert "probe" in fifo.reason
    assert os.sched_getscheduler(0) == before  # the probe used its own thread


@pytest.fixture
def zero_rt_cgroup() -> Iterator[Path]:
    loc = controller_location("cpu")
    if loc is None or loc.version != 1:
        pytest.skip("needs a cgroup v1 cpu controller (RT group scheduling)")
    base = Path(loc.mount_point)
    if not (base / "cpu.rt_runtime_us").exists():
        pytest.skip("kernel without RT group scheduling")
    path = base / f"mxrc-test-{os.getpid()}"
    path.mkdir()
    try:
        assert int((path / "cpu.rt_runtime_us").read_text()) == 0
        yield path
    finally:
        path.rmdir()


@pytest.mark.privileged
def test_real_probe_explains_eperm_from_rt_group_scheduling(zero_rt_cgroup: Path) -> None:
    code = (
        "import json, os\n"
        f"open({str(zero_rt_cgroup / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
        "from mxrc._capabilities import capabilities\n"
        "print(json.dumps(capabilities()['sched_fifo'].to_dict()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    fifo = json.loads(out.stdout)
    assert fifo["available"] is False
    assert fifo["errno"] == "EPERM"
    assert "RT group scheduling" in fifo["reason"]
    assert zero_rt_cgroup.name in fifo["reason"]
