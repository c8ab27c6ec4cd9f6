"""CPU and NUMA topology from sysfs.

Readers take ``sysfs_root`` so tests can pass fake trees; eligible CPUs for a
process come from its affinity mask and cpuset, never from these counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mxrc.rt._cgroup import _read
from mxrc.rt._cpulist import parse_cpulist

__all__ = [
    "NumaNode",
    "NumaTopology",
    "numa_topology",
    "online_cpus",
    "smt_siblings",
]

_NODE_DIR = re.compile(r"node(\d+)")
_MEMTOTAL = re.compile(r"MemTotal:\s*(\d+)\s*kB")


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs, memory size and distances to every node.

    ``distances`` follows the kernel's ``node<N>/distance`` file: one entry
    per node of the topology, in node-id order (10 = local).
    ``memory_total_kb`` is None when the node's ``meminfo`` is unreadable.
    """

    node_id: int
    cpus: frozenset[int]
    memory_total_kb: int | None
    distances: tuple[int, ...]


@dataclass(frozen=True)
class NumaTopology:
    """NUMA nodes by id.

    ``synthetic`` is True when sysfs has no node directory (kernel without
    NUMA support) and a single node 0 holding the online CPUs was assumed.
    """

    nodes: Mapping[int, NumaNode]
    synthetic: bool = field(default=False)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def node_ids(self) -> tuple[int, ...]:
        """Node ids in ascending order."""
        return tuple(sorted(self.nodes))

    def node_of_cpu(self, cpu: int) -> int | None:
        """The node a CPU belongs to, or None when no node lists it."""
        for node in self.nodes.values():
            if cpu in node.cpus:
                return node.node_id
        return None

    def distance(self, from_node: int, to_node: int) -> int | None:
        """The kernel's distance between two nodes, or None when unknown."""
        src = self.nodes.get(from_node)
        ids = self.node_ids
        if src is None or to_node not in ids:
            return None
        index = ids.index(to_node)
        return src.distances[index] if index < len(src.distances) else None


def online_cpus(*, sysfs_root: str = "/sys") -> frozenset[int]:
    """CPUs the kernel has online (``devices/system/cpu/online``); empty when unreadable.

    Availability: Linux.
    """
    text = _read(Path(sysfs_root) / "devices" / "system" / "cpu" / "online")
    if text is None:
        return frozenset()
    try:
        return parse_cpulist(text)
    except ValueError:
        return frozenset()


def smt_siblings(cpu: int, *, sysfs_root: str = "/sys") -> frozenset[int]:
    """Hardware threads sharing a core with ``cpu``, including ``cpu`` itself.

    Reads ``cpu<N>/topology/thread_siblings_list``; ``{cpu}`` when unreadable.

    Availability: Linux.
    """
    path = (
        Path(sysfs_root)
        / "devices"
        / "system"
        / "cpu"
        / f"cpu{cpu}"
        / "topology"
        / "thread_siblings_list"
    )
    text = _read(path)
    if text is None:
        return frozenset({cpu})
    try:
        return parse_cpulist(text) | {cpu}
    except ValueError:
        return frozenset({cpu})


def _cpulist_or_empty(text: str | None) -> frozenset[int]:
    if text is None:
        return frozenset()
    try:
        return parse_cpulist(text)
    except ValueError:
        return frozenset()


def numa_topology(*, sysfs_root: str = "/sys") -> NumaTopology:
    """Read NUMA nodes from ``<sysfs>/devices/system/node``.

    Only nodes listed in ``node/online`` are returned when that file exists.
    A node may have no CPUs (memory-only nodes such as CXL memory).

    Availability: Linux.
    """
    base = Path(sysfs_root) / "devices" / "system" / "node"
    online_text = _read(base / "online")
    online = _cpulist_or_empty(online_text) if online_text is not None else None
    ids: list[int] = []
    try:
        for entry in base.iterdir():
            m = _NODE_DIR.fullmatch(entry.name)
            if m and entry.is_dir():
                ids.append(int(m.group(1)))
    except OSError:
        ids = []
    if online is not None:
        ids = [i for i in ids if i in online]
    ids.sort()
    if not ids:
        return NumaTopology(
            {0: NumaNode(0, online_cpus(sysfs_root=sysfs_root), None, (10,))}, synthetic=True
        )
    nodes: dict[int, NumaNode] = {}
    for node_id in ids:
        ndir = base / f"node{node_id}"
        cpus = _cpulist_or_empty(_read(ndir / "cpulist"))
        meminfo = _read(ndir / "meminfo") or ""
        m = _MEMTOTAL.search(meminfo)
        mem_kb = int(m.group(1)) if m else None
        dist_text = _read(ndir / "distance") or ""
        try:
            distances = tuple(int(x) for x in dist_text.split())
        except ValueError:
            distances = ()
        nodes[node_id] = NumaNode(node_id, cpus, mem_kb, distances)
    return NumaTopology(nodes)
