"""mxrc doctor reports on fake trees, with configurations, and for real on this machine."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mxrc._doctor import DoctorReport, run_doctor
from mxrc.errors import ConfigError

REQUIRED_KEYS = {
    "cpus_allowed",
    "isolated_cpus",
    "nohz_full",
    "rcu_nocbs",
    "rt_throttling",
    "preempt_rt",
    "memlock_limit",
    "rtprio_limit",
    "numa_nodes",
    "capabilities",
    "findings",
}


def clock_ok() -> Mapping[str, object]:
    return {"synchronized": True, "maxerror_us": 50}


def doctor(data_dir: Path, name: str, **kw: Any) -> DoctorReport:
    base = data_dir / "hosts" / name
    kw.setdefault("clock_status", clock_ok)
    kw.setdefault("environ", {})
    return run_doctor(procfs_root=str(base / "proc"), sysfs_root=str(base / "sys"), **kw)


def checks(rep: DoctorReport, severity: str) -> set[str]:
    return {f.check for f in rep.findings if f.severity == severity}


def write_config(directory: Path, files: Mapping[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content))
    return directory


def test_numa2_json(data_dir: Path) -> None:
    rep = doctor(data_dir, "numa2_isolated")
    d = json.loads(json.dumps(rep.to_dict()))
    assert set(d) >= REQUIRED_KEYS
    assert d["cpus_allowed"] == [2, 3]
    assert d["rt_cores"] == [3]  # auto: highest allowed CPU
    assert d["isolated_cpus"] == [2, 3]
    assert d["nohz_full"] == [2, 3]
    assert d["rcu_nocbs"] == [2, 3]
    assert d["rt_throttling"]["enabled"] is False
    assert d["preempt_rt"] is True
    assert d["memlock_limit"] == "unlimited"
    assert d["rtprio_limit"] == 95
    assert d["numa_nodes"] == 2
    assert d["numa"]["1"]["cpus"] == [2, 3, 6, 7]
    assert d["capabilities"]["sched_fifo"]["available"] is True
    assert d["capabilities"]["isolation"]["available"] is True
    for f in d["findings"]:
        assert set(f) >= {"severity", "message", "advice"}
        assert f["severity"] in ("ok", "info", "warning", "error")
    assert rep.exit_code == 0
    assert d["summary"]["error"] == 0
    assert "smt" in checks(rep, "warning")
    assert "irq_affinity" in checks(rep, "warning")
    # default config binds rt memory to node 0 while the RT core is on node 1
    assert "numa_binding" in checks(rep, "warning")


def test_cgroup_v1_not_ready(data_dir: Path) -> None:
    rep = doctor(data_dir, "cgroup_v1")
    assert rep.exit_code == 1
    assert {"rt_group_sched", "sched_fifo"} <= checks(rep, "error")
    d = rep.to_dict()
    assert d["cgroup"]["version"] == "v1"
    assert d["cgroup"]["rt_runtime_us"] == 0
    assert d["rtprio_limit"] == 0
    assert d["memlock_limit"] == 65536
    assert d["numa_nodes"] == 1
    assert d["isolated_cpus"] == []


def test_unprivileged_numa4_not_ready(data_dir: Path) -> None:
    rep = doctor(data_dir, "numa4")
    assert rep.exit_code == 1
    assert "rtprio" in checks(rep, "error")
    assert "memlock" in checks(rep, "warning")
    assert rep.to_dict()["numa_nodes"] == 4


def test_config_sets_cores_priority_and_node(data_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "cfg",
        {
            "cpu_affinity.json": {
                "rt": {"cpu_cores": [2, 3], "priority": 90, "isolation_mode": "HYBRID"}
            },
            "numa_binding.json": {"rt": {"numa_node": 1}},
        },
    )
    rep = doctor(data_dir, "numa2_isolated", config_dir=cfg)
    assert rep.rt_cores == frozenset({2, 3})
    assert "cpu_affinity.json" in rep.rt_cores_source
    assert "numa_binding" in checks(rep, "ok")
    assert "isolation_mode" not in checks(rep, "error") | checks(rep, "warning")
    assert "rtprio" in checks(rep, "ok")  # 90 <= RLIMIT_RTPRIO 95
    assert rep.exit_code == 0
    assert rep.to_dict()["config_dir"] == str(cfg)
    too_high = write_config(tmp_path / "high", {"cpu_affinity.json": {"rt": {"priority": 99}}})
    assert "rtprio" in checks(doctor(data_dir, "numa2_isolated", config_dir=too_high), "error")


def test_isolation_mode_requires_isolated_cores(data_dir: Path, tmp_path: Path) -> None:
    strict = write_config(
        tmp_path / "strict", {"cpu_affinity.json": {"rt": {"isolation_mode": "ISOLCPUS"}}}
    )
    rep = doctor(data_dir, "cgroup_v1", config_dir=strict)
    assert "isolation_mode" in checks(rep, "error")
    lenient = write_config(
        tmp_path / "lenient",
        {
            "cpu_affinity.json": {
                "rt": {"isolation_mode": "ISOLCPUS", "fallback": {"allow_non_isolated": True}}
            }
        },
    )
    rep2 = doctor(data_dir, "cgroup_v1", config_dir=lenient)
    assert "isolation_mode" in checks(rep2, "warning")
    assert "isolation_mode" not in checks(rep2, "error")


def test_invalid_config_raises_config_error(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cpu_affinity.json").write_text('{"rt": {"priority": 80,}}')
    with pytest.raises(ConfigError) as info:
        doctor(data_dir, "numa2_isolated", config_dir=bad)
    assert "cpu_affinity.json" in str(info.value)


def test_explicit_rt_cores_win(data_dir: Path) -> None:
    rep = doctor(data_dir, "numa2_isolated", rt_cores=[2])
    assert rep.rt_cores == frozenset({2})
    assert "cpufreq" in checks(rep, "warning")  # CPU 2 runs powersave


def test_text_report_is_grouped_with_markers_and_advice(data_dir: Path) -> None:
    text = doctor(data_dir, "cgroup_v1").format_text()
    assert text.startswith("mxrc doctor: real-time readiness of plc-v1")
    for header in ("CPUs and isolation", "Scheduling", "Memory and NUMA", "Kernel and clock"):
        assert f"\n{header}\n" in text
    assert "  [ERROR] cgroup /system.slice/mxrc.service" in text
    assert "\n          fix: echo 950000 >" in text
    assert "[WARN ]" in text and "[ ok  ]" in text
    assert text.rstrip().endswith("not ready")
    # errors come first within a group
    sched = text.split("\nScheduling\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sched[0].startswith("  [ERROR]")


# ---------------------------------------------------------------- this machine


@pytest.fixture(scope="module")
def real() -> DoctorReport:
    return run_doctor(environ={})


def test_real_report_matches_host(real: DoctorReport) -> None:
    d = real.to_dict()
    assert set(d) >= REQUIRED_KEYS
    json.dumps(d)
    assert set(d["cpus_allowed"]) <= os.sched_getaffinity(0)
    assert d["rt_cores"] == [max(d["cpus_allowed"])]
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    assert d["numa_nodes"] == max(len(nodes), 1)
    iso_file = Path("/sys/devices/system/cpu/isolated")
    no_isolation = (
        iso_file.exists()
        and not iso_file.read_text().strip()
        and "isolcpus=" not in Path("/proc/cmdline").read_text()
    )
    if no_isolation:
        assert d["isolated_cpus"] == []
        assert d["capabilities"]["isolation"]["available"] is False
    assert d["rt_throttling"]["runtime_us"] == int(
        Path("/proc/sys/kernel/sched_rt_runtime_us").read_text()
    )
    assert real.exit_code == (1 if d["summary"]["error"] else 0)


@pytest.mark.privileged
def test_real_root_may_use_sched_fifo(real: DoctorReport) -> None:
    d = real.to_dict()
    if d["cgroup"]["rt_runtime_us"] == 0:
        pytest.skip("running inside a cgroup without RT runtime")
    assert d["capabilities"]["sched_fifo"]["available"] is True
    assert "sched_fifo" in checks(real, "ok")
    assert "rtprio" in checks(real, "ok")


@pytest.mark.parametrize(
    "relpath",
    [
        "sys/devices/system/cpu/online",
        "sys/devices/system/cpu/isolated",
        "sys/devices/system/node/node1/cpulist",
        "proc/irq/24/smp_affinity_list",
        "proc/cmdline",
        "proc/self/status",
    ],
)
def test_corrupt_cpu_lists_do_not_crash(data_dir: Path, tmp_path: Path, relpath: str) -> None:
    """A corrupt file (here a CPU number of 20 digits) degrades a finding, never the report."""
    import shutil

    base = tmp_path / "host"
    shutil.copytree(data_dir / "hosts" / "numa2_isolated", base)
    target = base / relpath
    if relpath == "proc/cmdline":
        target.write_text("isolcpus=domain,0-99999999999999999999 nohz_full=99999999999999999999\n")
    elif relpath == "proc/self/status":
        target.write_text("Cpus_allowed_list:\t0-99999999999999999999\n")
    else:
        target.write_text("0-99999999999999999999\n")
    rep = run_doctor(
        procfs_root=str(base / "proc"),
        sysfs_root=str(base / "sys"),
        rt_cores=[3],
        clock_status=clock_ok,
        environ={},
    )
    d = rep.to_dict()
    json.dumps(d)
    assert d["findings"]
    assert d["cpus_allowed"] is None or all(c < 8192 for c in d["cpus_allowed"])
