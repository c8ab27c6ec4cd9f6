"""mxrc.rt._cgroup on fake trees (v1, v2, none) and on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mxrc.rt._cgroup import (
    cgroup_entries,
    cgroup_mounts,
    cgroup_version,
    controller_location,
    cpuset_effective,
    cpuset_info,
    rt_group_runtime,
)
from mxrc.rt._cpulist import parse_cpulist


def roots(data_dir: Path, host: str) -> dict[str, str]:
    base = data_dir / "hosts" / host
    return {"procfs_root": str(base / "proc"), "sysfs_root": str(base / "sys")}


def test_v2_mounts_rerooted_under_sysfs_root(data_dir: Path) -> None:
    r = roots(data_dir, "numa2_isolated")
    mounts = cgroup_mounts(**r)
    assert len(mounts) == 1
    (m,) = mounts
    assert m.version == 2
    assert m.mount_point == str(Path(r["sysfs_root"]) / "fs" / "cgroup")
    assert {"cpuset", "cpu", "memory"} <= m.controllers
    assert cgroup_version(**r) == "v2"


def test_v2_cpuset_walks_up_to_nearest_effective_file(data_dir: Path) -> None:
    r = roots(data_dir, "numa2_isolated")
    (entry,) = cgroup_entries(procfs_root=r["procfs_root"])
    assert entry.hierarchy_id == 0
    assert entry.path == "/mxrc.slice/mxrc-rt.service"
    info = cpuset_info(**r)
    assert info is not None
    assert info.version == 2
    # the service directory has no cpuset.cpus.effective: its parent's applies
    assert info.cgroup_path == "/mxrc.slice"
    assert info.effective_cpus == frozenset({2, 3})
    assert info.partition == "isolated"
    assert info.exclusive is True
    assert info.cpus == frozenset({2, 3})
    assert cpuset_effective(**r) == frozenset({2, 3})


def test_v2_has_no_rt_group_runtime(data_dir: Path) -> None:
    assert rt_group_runtime(**roots(data_dir, "numa2_isolated")) is None


def test_v1_named_and_combined_hierarchies(data_dir: Path) -> None:
    r = roots(data_dir, "cgroup_v1")
    mounts = cgroup_mounts(**r)
    by_point = {Path(m.mount_point).name: m for m in mounts}
    assert by_point["cpu,cpuacct"].controllers == frozenset({"cpu", "cpuacct"})
    assert by_point["systemd"].controllers == frozenset()  # name=systemd is no controller
    assert all(m.version == 1 for m in mounts)
    assert cgroup_version(**r) == "v1"
    loc = controller_location("cpu", **r)
    assert loc is not None
    assert loc.cgroup_path == "/system.slice/mxrc.service"
    assert loc.directory.endswith("cpu,cpuacct/system.slice/mxrc.service")


def test_v1_cpuset_and_zero_rt_runtime(data_dir: Path) -> None:
    r = roots(data_dir, "cgroup_v1")
    info = cpuset_info(**r)
    assert info is not None
    assert (info.version, info.cgroup_path) == (1, "/rt")
    assert info.effective_cpus == frozenset({3})
    assert info.exclusive is True
    rt = rt_group_runtime(**r)
    assert rt is not None
    assert rt.runtime_us == 0
    assert rt.period_us == 1_000_000
    assert not rt.allows_rt
    assert rt.cgroup_path == "/system.slice/mxrc.service"


def test_no_cgroup_mounts_gives_none(data_dir: Path, tmp_path: Path) -> None:
    r = roots(data_dir, "numa4")
    assert cgroup_mounts(**r) == ()
    assert cgroup_version(**r) == "none"
    assert cpuset_effective(**r) is None
    assert rt_group_runtime(**r) is None
    # a tree with nothing at all behaves the same
    empty = {"procfs_root": str(tmp_path / "proc"), "sysfs_root": str(tmp_path / "sys")}
    assert cpuset_effective(**empty) is None
    assert cgroup_entries(procfs_root=empty["procfs_root"]) == ()


def test_fallback_without_mountinfo_probes_sysfs(tmp_path: Path) -> None:
    cg = tmp_path / "sys" / "fs" / "cgroup"
    (cg / "app").mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpuset cpu\n")
    (cg / "cpuset.cpus.effective").write_text("0-5\n")
    (cg / "app" / "cpuset.cpus.effective").write_text("4-5\n")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/app\n")
    r = {"procfs_root": str(tmp_path / "proc"), "sysfs_root": str(tmp_path / "sys")}
    assert cgroup_version(**r) == "v2"
    assert cpuset_effective(**r) == frozenset({4, 5})


def test_mount_root_of_a_container_is_stripped(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(
        "30 20 0:26 /docker/abc /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
    )
    (proc / "cgroup").write_text("0::/docker/abc/inner\n")
    cg = tmp_path / "sys" / "fs" / "cgroup"
    (cg / "inner").mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpuset\n")
    (cg / "inner" / "cpuset.cpus.effective").write_text("1\n")
    r = {"procfs_root": str(tmp_path / "proc"), "sysfs_root": str(tmp_path / "sys")}
    assert cpuset_effective(**r) == frozenset({1})


def _independent_cpuset() -> frozenset[int] | None:
    """Read this process's cpuset effective CPUs without mxrc's code paths."""
    v1_path = None
    v2_path = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctl, path = line.split(":", 2)
        if "cpuset" in ctl.split(","):
            v1_path = path
        if hid == "0":
            v2_path = path
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, opts = right.split()[:3]
        point = left.split()[4]
        if fstype == "cgroup" and "cpuset" in opts.split(",") and v1_path is not None:
            d = Path(point + v1_path)
            for name in ("cpuset.effective_cpus", "cpuset.cpus"):
                if (d / name).exists():
                    return parse_cpulist((d / name).read_text())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2" and v2_path is not None:
            d = Path(left.split()[4] + v2_path.rstrip("/"))
            while True:
                f = d / "cpuset.cpus.effective"
                if f.exists():
                    return parse_cpulist(f.read_text())
                if str(d) == left.split()[4]:
                    return None
                d = d.parent
    return None


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists(), reason="needs Linux /proc")
def test_real_cpuset_matches_independent_read_and_affinity() -> None:
    got = cpuset_effective()
    assert got == _independent_cpuset()
    if got is not None:
        assert frozenset(os.sched_getaffinity(0)) <= got


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists(), reason="needs Linux /proc")
def test_real_version_agrees_with_mountinfo() -> None:
    text = Path("/proc/self/mountinfo").read_text()
    has_v2 = " - cgroup2 " in text
    has_v1 = any(
        " - cgroup " in line
        and any(o not in ("rw", "ro") and "=" not in o for o in line.split()[-1].split(","))
        for line in text.splitlines()
    )
    expected = {
        (True, True): "hybrid",
        (True, False): "v1",
        (False, True): "v2",
        (False, False): "none",
    }[(has_v1, has_v2)]
    assert cgroup_version() == expected


def test_real_rt_runtime_matches_cpu_controller_file() -> None:
    rt = rt_group_runtime()
    loc = controller_location("cpu")
    if rt is None:
        assert loc is None or not (Path(loc.directory) / "cpu.rt_runtime_us").exists()
    else:
        assert loc is not None
        assert rt.runtime_us == int((Path(loc.directory) / "cpu.rt_runtime_us").read_text())
