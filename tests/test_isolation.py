"""Isolation verification on fake trees (isolated NUMA host, cgroup v1, plain host) and for real."""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from mxrc.rt._cpulist import parse_cpulist
from mxrc.rt._isolation import (
    Finding,
    IsolationReport,
    check_isolation,
    irq_affinities,
    isolated_cpus,
    kernel_info,
    parse_isolcpus,
    parse_kernel_cmdline,
    resource_limits,
)


def host(data_dir: Path, name: str) -> dict[str, str]:
    base = data_dir / "hosts" / name
    return {"procfs_root": str(base / "proc"), "sysfs_root": str(base / "sys")}


def clock_ok() -> Mapping[str, object]:
    return {"synchronized": True, "maxerror_us": 120}


def by_check(rep: IsolationReport, check: str) -> list[Finding]:
    return [f for f in rep.findings if f.check == check]


def severities(rep: IsolationReport, check: str) -> set[str]:
    return {f.severity for f in by_check(rep, check)}


# ---------------------------------------------------------------- parsers


def test_cmdline_stops_at_double_dash_and_keeps_flags() -> None:
    params = parse_kernel_cmdline(
        'ro quiet isolcpus=2,3 acpi_osi="Windows 2020" nohz_full=2-3 -- init-arg isolcpus=9'
    )
    assert params["isolcpus"] == "2,3"
    assert params["quiet"] is None
    assert params["acpi_osi"] == "Windows 2020"
    assert "init-arg" not in params


@pytest.mark.parametrize(
    ("value", "cpus", "flags"),
    [
        ("managed_irq,domain,2,3", {2, 3}, {"managed_irq", "domain"}),
        ("2-3", {2, 3}, {"domain"}),
        ("nohz,domain,1-7:2", {1, 3, 5, 7}, {"nohz", "domain"}),
        ("managed_irq,4", {4}, {"managed_irq"}),
    ],
)
def test_parse_isolcpus(value: str, cpus: set[int], flags: set[str]) -> None:
    s = parse_isolcpus(value)
    assert s.cpus == frozenset(cpus)
    assert s.flags == frozenset(flags)


# ---------------------------------------------------------------- numa2_isolated


@pytest.fixture
def numa2(data_dir: Path) -> IsolationReport:
    return check_isolation([2, 3], clock_status=clock_ok, **host(data_dir, "numa2_isolated"))


def test_numa2_reads_isolation_settings(numa2: IsolationReport) -> None:
    assert numa2.isolated_cpus == frozenset({2, 3})
    assert numa2.isolated_sysfs == frozenset({2, 3})
    assert numa2.isolcpus is not None
    assert numa2.isolcpus.flags == frozenset({"managed_irq", "domain"})
    assert numa2.nohz_full == frozenset({2, 3})
    assert numa2.rcu_nocbs == frozenset({2, 3})
    assert numa2.cgroup_version == "v2"
    assert numa2.cpuset is not None and numa2.cpuset.exclusive
    assert numa2.cpus_allowed == frozenset({2, 3})
    assert numa2.rt_runtime_us == -1
    assert numa2.rt_period_us == 1_000_000
    assert numa2.rt_group is None
    assert numa2.governors == {2: "powersave", 3: "performance"}
    assert numa2.smt_siblings == {2: frozenset({6}), 3: frozenset({7})}
    assert [i.irq for i in numa2.irqs_on_rt_cores] == [24, 26]
    assert numa2.irqs_on_rt_cores[0].names == ("eth0-rx-0",)
    assert numa2.irqs_on_rt_cores[0].effective == frozenset({2})
    assert numa2.default_irq_affinity == frozenset(range(8))
    assert numa2.limits.memlock_soft == "unlimited"
    assert numa2.limits.rtprio_soft == 95
    assert numa2.capabilities_effective == 0
    assert numa2.kernel.preempt_rt
    assert numa2.kernel.release == "6.1.0-18-rt-amd64"
    assert numa2.virtualized is False


def test_numa2_findings(numa2: IsolationReport) -> None:
    assert severities(numa2, "isolcpus") == {"ok"}
    assert severities(numa2, "nohz_full") == {"ok"}
    assert severities(numa2, "rcu_nocbs") == {"ok"}
    assert severities(numa2, "cpuset") == {"ok"}
    assert severities(numa2, "preempt_rt") == {"ok"}
    assert severities(numa2, "rtprio") == {"ok"}
    assert severities(numa2, "memlock") == {"ok"}
    assert severities(numa2, "clock_sync") == {"ok"}
    assert severities(numa2, "rt_throttling") == {"info"}  # -1: off
    (gov,) = by_check(numa2, "cpufreq")
    assert gov.severity == "warning"
    assert "CPU 2: powersave" in gov.message
    assert "performance" in gov.advice
    (smt,) = by_check(numa2, "smt")
    assert smt.severity == "warning"
    assert "2 with 6" in smt.message and "3 with 7" in smt.message
    assert "nosmt" in smt.advice
    irq = by_check(numa2, "irq_affinity")
    assert {f.severity for f in irq} == {"warning"}
    assert "24 (eth0-rx-0)" in irq[0].message and "26" in irq[0].message
    assert "IRQBALANCE_BANNED_CPULIST=2-3" in irq[0].advice
    assert "echo 0-1,4-7 > /proc/irq/N/smp_affinity_list" in irq[0].advice
    assert "echo f3 > /proc/irq/default_smp_affinity" in irq[1].advice
    assert not [f for f in numa2.findings if f.severity == "error"]


def test_numa2_to_dict_uses_lists_and_limits(numa2: IsolationReport) -> None:
    d = numa2.to_dict()
    assert d["isolated_cpus"] == [2, 3]
    assert d["nohz_full"] == [2, 3]
    assert d["memlock_limit"] == "unlimited"
    assert d["rtprio_limit"] == 95
    assert d["rt_throttling"] == {"runtime_us": -1, "period_us": 1_000_000, "enabled": False}


def test_isolcpus_without_managed_irq_is_noted(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "hosts" / "numa2_isolated"
    shutil.copytree(src, tmp_path / "h")
    (tmp_path / "h" / "proc" / "cmdline").write_text("ro isolcpus=2,3\n")
    (tmp_path / "h" / "sys" / "devices" / "system" / "cpu" / "nohz_full").write_text("(null)\n")
    rep = check_isolation(
        [2, 3],
        procfs_root=str(tmp_path / "h" / "proc"),
        sysfs_root=str(tmp_path / "h" / "sys"),
        clock_status=clock_ok,
    )
    (iso,) = by_check(rep, "isolcpus")
    assert iso.severity == "info"
    assert "managed_irq" in iso.advice
    assert rep.nohz_full == frozenset()
    (nohz,) = by_check(rep, "nohz_full")
    assert nohz.severity == "info"
    assert "nohz_full=2-3" in nohz.advice


def test_rt_runtime_zero_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(data_dir / "hosts" / "numa2_isolated", tmp_path / "h")
    (tmp_path / "h" / "proc" / "sys" / "kernel" / "sched_rt_runtime_us").write_text("0\n")
    rep = check_isolation(
        [3],
        procfs_root=str(tmp_path / "h" / "proc"),
        sysfs_root=str(tmp_path / "h" / "sys"),
        clock_status=clock_ok,
    )
    (f,) = by_check(rep, "rt_throttling")
    assert f.severity == "error"
    assert "950000" in f.advice


# ---------------------------------------------------------------- cgroup_v1


@pytest.fixture
def v1(data_dir: Path) -> IsolationReport:
    return check_isolation([3], clock_status=clock_ok, **host(data_dir, "cgroup_v1"))


def test_v1_rt_group_scheduling_error(v1: IsolationReport) -> None:
    assert v1.cgroup_version == "v1"
    assert v1.rt_group is not None and v1.rt_group.runtime_us == 0
    (f,) = by_check(v1, "rt_group_sched")
    assert f.severity == "error"
    assert "EPERM" in f.message and "/system.slice/mxrc.service" in f.message
    assert "echo 950000 >" in f.advice and "cpu.rt_runtime_us" in f.advice
    assert "CPUQuota" in f.advice


def test_v1_not_isolated_gives_kernel_params_with_actual_cores(v1: IsolationReport) -> None:
    assert v1.isolated_cpus == frozenset()
    assert v1.isolated_sysfs == frozenset()
    (f,) = by_check(v1, "isolcpus")
    assert f.severity == "warning"
    assert "isolcpus=managed_irq,domain,3 nohz_full=3 rcu_nocbs=3" in f.advice


def test_v1_vm_without_cpufreq_is_info(v1: IsolationReport) -> None:
    assert v1.governors == {3: None}
    (f,) = by_check(v1, "cpufreq")
    assert f.severity == "info"
    assert "virtual machine" in f.message
    assert v1.virtualized is True
    assert severities(v1, "virtualization") == {"info"}


def test_v1_capabilities_override_limits(v1: IsolationReport) -> None:
    assert v1.limits.rtprio_soft == 0
    assert v1.limits.memlock_soft == 65536
    assert severities(v1, "rtprio") == {"ok"}  # CapEff has CAP_SYS_NICE
    assert severities(v1, "memlock") == {"ok"}  # and CAP_IPC_LOCK
    assert severities(v1, "cpuset") == {"ok"}  # exclusive v1 cpuset /rt


def test_v1_core_outside_cpuset_is_an_error(data_dir: Path) -> None:
    rep = check_isolation([1], clock_status=clock_ok, **host(data_dir, "cgroup_v1"))
    assert "error" in severities(rep, "cpus_allowed")
    (allowed,) = [f for f in by_check(rep, "cpus_allowed") if f.severity == "error"]
    assert "RT core(s) 1" in allowed.message and "3" in allowed.advice
    assert severities(rep, "cpuset") == {"error"}


# ---------------------------------------------------------------- numa4 (unprivileged, plain)


def test_unprivileged_limits_give_concrete_advice(data_dir: Path) -> None:
    rep = check_isolation([7], clock_status=clock_ok, **host(data_dir, "numa4"))
    (rtprio,) = by_check(rep, "rtprio")
    assert rtprio.severity == "error"
    assert "LimitRTPRIO=" in rtprio.advice and "rtprio" in rtprio.advice
    (memlock,) = by_check(rep, "memlock")
    assert memlock.severity == "warning"
    assert "8 MiB" in memlock.message
    assert "LimitMEMLOCK=infinity" in memlock.advice
    assert "memlock unlimited" in memlock.advice
    (pre,) = by_check(rep, "preempt_rt")
    assert pre.severity == "warning"
    assert "PREEMPT_DYNAMIC" in pre.message
    assert "preempt=full" in pre.advice
    assert rep.cpuset is None
    assert severities(rep, "cpuset") == {"info"}


def test_rtprio_below_requested_priority(data_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(data_dir / "hosts" / "numa2_isolated", tmp_path / "h")
    limits = tmp_path / "h" / "proc" / "self" / "limits"
    limits.write_text(limits.read_text().replace("95", "50"))
    r = {"procfs_root": str(tmp_path / "h" / "proc"), "sysfs_root": str(tmp_path / "h" / "sys")}
    low = check_isolation([3], rt_priority=80, clock_status=clock_ok, **r)
    assert severities(low, "rtprio") == {"error"}
    ok = check_isolation([3], rt_priority=40, clock_status=clock_ok, **r)
    assert severities(ok, "rtprio") == {"ok"}


# ---------------------------------------------------------------- clock and arguments


def test_clock_status_is_injectable(data_dir: Path) -> None:
    r = host(data_dir, "numa4")
    unsynced = check_isolation([7], clock_status=lambda: {"synchronized": False}, **r)
    (f,) = by_check(unsynced, "clock_sync")
    assert f.severity == "warning" and "chrony" in f.advice

    def broken() -> Mapping[str, object]:
        raise RuntimeError("no core")

    unknown = check_isolation([7], clock_status=broken, **r)
    (g,) = by_check(unknown, "clock_sync")
    assert g.severity == "info" and "no core" in g.message
    fake_default = check_isolation([7], **r)
    assert severities(fake_default, "clock_sync") == {"info"}


def test_bad_rt_cores() -> None:
    with pytest.raises(ValueError, match="at least one"):
        check_isolation([])
    with pytest.raises(ValueError, match=">= 0"):
        check_isolation([-1])


# ---------------------------------------------------------------- this machine


@pytest.fixture(scope="module")
def real() -> IsolationReport:
    return check_isolation([max(os.sched_getaffinity(0))])


def test_real_isolated_matches_sysfs_and_cmdline(real: IsolationReport) -> None:
    sysfs = Path("/sys/devices/system/cpu/isolated")
    expected = parse_cpulist(sysfs.read_text()) if sysfs.exists() else frozenset()
    params = parse_kernel_cmdline(Path("/proc/cmdline").read_text())
    if params.get("isolcpus"):
        expected |= parse_isolcpus(params["isolcpus"] or "").cpus
    assert real.isolated_cpus == expected
    assert isolated_cpus() == expected


def test_real_throttling_limits_kernel(real: IsolationReport) -> None:
    assert real.rt_runtime_us == int(Path("/proc/sys/kernel/sched_rt_runtime_us").read_text())
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    rsoft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    assert real.limits.memlock_soft == ("unlimited" if soft == resource.RLIM_INFINITY else soft)
    assert real.limits.rtprio_soft == ("unlimited" if rsoft == resource.RLIM_INFINITY else rsoft)
    assert resource_limits() == real.limits
    uname = os.uname().version.split()
    rt_file = Path("/sys/kernel/realtime")
    expect_rt = "PREEMPT_RT" in uname or (rt_file.exists() and rt_file.read_text().strip() == "1")
    assert real.kernel.preempt_rt == expect_rt
    assert kernel_info().preempt_dynamic == ("PREEMPT_DYNAMIC" in uname)
    assert real.cpus_allowed is not None
    assert real.cpus_allowed <= frozenset(os.sched_getaffinity(0))
    assert not [f for f in real.findings if f.check == "cpus_allowed" and f.severity == "error"]


def test_real_irqs_match_proc() -> None:
    for irq in irq_affinities():
        text = (Path("/proc/irq") / str(irq.irq) / "smp_affinity_list").read_text()
        assert irq.affinity == parse_cpulist(text)
