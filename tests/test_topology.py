"""mxrc.rt._topology on fake trees and on this machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mxrc.rt._cpulist import parse_cpulist
from mxrc.rt._topology import numa_topology, online_cpus, smt_siblings


def sysfs(data_dir: Path, host: str) -> str:
    return str(data_dir / "hosts" / host / "sys")


def test_two_nodes_with_distances_and_memory(data_dir: Path) -> None:
    topo = numa_topology(sysfs_root=sysfs(data_dir, "numa2_isolated"))
    assert len(topo) == 2
    assert not topo.synthetic
    assert topo.nodes[0].cpus == frozenset({0, 1, 4, 5})
    assert topo.nodes[1].cpus == frozenset({2, 3, 6, 7})
    assert topo.nodes[0].memory_total_kb == 16303932
    assert topo.nodes[1].memory_total_kb == 16510244
    assert topo.nodes[0].distances == (10, 21)
    assert topo.distance(1, 0) == 21
    assert topo.distance(1, 1) == 10
    assert topo.node_of_cpu(3) == 1
    assert topo.node_of_cpu(4) == 0
    assert topo.node_of_cpu(99) is None


def test_four_nodes_offline_node_ignored(data_dir: Path) -> None:
    topo = numa_topology(sysfs_root=sysfs(data_dir, "numa4"))
    assert topo.node_ids == (0, 1, 2, 3)  # node7 exists but is not online
    assert topo.nodes[3].cpus == frozenset(range(12, 16))
    assert topo.distance(0, 3) == 22
    assert topo.distance(0, 7) is None
    assert topo.nodes[2].memory_total_kb == 32000002


def test_smt_siblings_and_online(data_dir: Path) -> None:
    root = sysfs(data_dir, "numa2_isolated")
    assert online_cpus(sysfs_root=root) == frozenset(range(8))
    assert smt_siblings(2, sysfs_root=root) == frozenset({2, 6})
    assert smt_siblings(7, sysfs_root=root) == frozenset({3, 7})
    # unreadable: the CPU alone
    assert smt_siblings(42, sysfs_root=root) == frozenset({42})


def test_no_node_directory_gives_one_synthetic_node(tmp_path: Path) -> None:
    cpu = tmp_path / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text("0-3\n")
    topo = numa_topology(sysfs_root=str(tmp_path))
    assert topo.synthetic
    assert topo.node_ids == (0,)
    assert topo.nodes[0].cpus == frozenset(range(4))


def test_real_topology_matches_sysfs() -> None:
    node_dir = Path("/sys/devices/system/node")
    topo = numa_topology()
    if node_dir.is_dir():
        dirs = {
            int(m.group(1)) for p in node_dir.iterdir() if (m := re.fullmatch(r"node(\d+)", p.name))
        }
        assert set(topo.node_ids) == dirs
        assert 0 in topo.nodes
    all_cpus = frozenset().union(*(n.cpus for n in topo.nodes.values()))
    assert frozenset(os.sched_getaffinity(0)) <= all_cpus
    assert online_cpus() == parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    for cpu in os.sched_getaffinity(0):
        assert cpu in smt_siblings(cpu)
        assert topo.node_of_cpu(cpu) is not None
