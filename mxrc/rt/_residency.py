"""NUMA page residency of a process from ``/proc/<pid>/numa_maps``.

This is page **residency** (on which node a process's pages sit), not access
locality: which memory a thread actually touches, and how often, needs PMU
counters. A high remote share still says memory was placed badly.

Reading ``numa_maps`` takes the target's mmap lock, so a reader can stall an
allocating process. Sample rarely, and never on one-node hosts:
:func:`sample_page_residency` refuses to read there unless forced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from mxrc.rt._cgroup import _read
from mxrc.rt._cpulist import parse_cpulist
from mxrc.rt._topology import numa_topology

__all__ = [
    "DEFAULT_REMOTE_WARNING_RATIO",
    "PageResidency",
    "ResidencySample",
    "page_residency",
    "parse_numa_maps",
    "sample_page_residency",
]

DEFAULT_REMOTE_WARNING_RATIO = 0.05
"""Remote share of resident memory above which a residency result warns."""

_NODE_FIELD = re.compile(r"^N(\d+)=(\d+)$")
_PAGESIZE_FIELD = re.compile(r"^kernelpagesize_kB=(\d+)$")


@dataclass(frozen=True)
class _ParsedMaps:
    pages: dict[int, int]
    kib: dict[int, int]


def _parse(text: str) -> _ParsedMaps:
    pages: dict[int, int] = {}
    kib: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        page_kb = 4
        per_node: list[tuple[int, int]] = []
        for item in fields[1:]:
            m = _NODE_FIELD.match(item)
            if m:
                per_node.append((int(m.group(1)), int(m.group(2))))
                continue
            p = _PAGESIZE_FIELD.match(item)
            if p:
                page_kb = int(p.group(1))
        for node, count in per_node:
            pages[node] = pages.get(node, 0) + count
            kib[node] = kib.get(node, 0) + count * page_kb
    return _ParsedMaps(pages, kib)


def parse_numa_maps(text: str) -> dict[int, int]:
    """Sum the ``N<node>=<pages>`` fields of a ``numa_maps`` text per node.

    Counts are pages of each mapping's own size (``kernelpagesize_kB``), so a
    2 MiB huge page counts as one page.
    """
    return _parse(text).pages


@dataclass(frozen=True)
class PageResidency:
    """Where a process's resident pages are, relative to its ``local_node``.

    ``pages_per_node`` sums ``N<n>=`` counts; ``kib_per_node`` weights them by
    page size. The ratios (0..1, never percent) are by memory size, so one
    huge page weighs as much as 512 small ones. ``remote_warning`` is True
    when ``remote_ratio`` exceeds ``remote_warning_ratio``.
    """

    pid: int | str
    local_node: int
    pages_per_node: Mapping[int, int]
    kib_per_node: Mapping[int, int]
    remote_warning_ratio: float = DEFAULT_REMOTE_WARNING_RATIO

    @property
    def total_pages(self) -> int:
        """All resident pages counted in ``numa_maps``."""
        return sum(self.pages_per_node.values())

    @property
    def local_pages(self) -> int:
        """Pages resident on ``local_node``."""
        return self.pages_per_node.get(self.local_node, 0)

    @property
    def remote_pages(self) -> int:
        """Pages resident on any other node."""
        return self.total_pages - self.local_pages

    @property
    def total_kib(self) -> int:
        """Resident memory in KiB."""
        return sum(self.kib_per_node.values())

    @property
    def local_ratio(self) -> float:
        """Share (0..1) of resident memory on ``local_node``; 1.0 when nothing is resident."""
        total = self.total_kib
        if total == 0:
            return 1.0
        return self.kib_per_node.get(self.local_node, 0) / total

    @property
    def remote_ratio(self) -> float:
        """Share (0..1) of resident memory on other nodes."""
        total = self.total_kib
        if total == 0:
            return 0.0
        return (total - self.kib_per_node.get(self.local_node, 0)) / total

    @property
    def remote_warning(self) -> bool:
        """True when more than ``remote_warning_ratio`` of memory is remote."""
        return self.remote_ratio > self.remote_warning_ratio

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "pid": self.pid,
            "local_node": self.local_node,
            "pages_per_node": {str(k): v for k, v in sorted(self.pages_per_node.items())},
            "kib_per_node": {str(k): v for k, v in sorted(self.kib_per_node.items())},
            "local_ratio": self.local_ratio,
            "remote_ratio": self.remote_ratio,
            "remote_warning_ratio": self.remote_warning_ratio,
            "remote_warning": self.remote_warning,
        }


@dataclass(frozen=True)
class ResidencySample:
    """Result of :func:`sample_page_residency`: a residency, or None and why not."""

    residency: PageResidency | None
    reason: str


def page_residency(
    pid: int | str = "self",
    local_node: int = 0,
    *,
    procfs_root: str = "/proc",
    remote_warning_ratio: float = DEFAULT_REMOTE_WARNING_RATIO,
) -> PageResidency:
    """Read ``<procfs>/<pid>/numa_maps`` and summarise page residency.

    Takes the target's mmap lock while reading: do not call it from or near a
    real-time loop, and not often. Raises OSError when the file is unreadable
    (no such process, no NUMA support, or no ptrace access).

    Availability: Linux with CONFIG_NUMA; reading another user's process needs
    ptrace access (CAP_SYS_PTRACE).
    """
    if not 0.0 <= remote_warning_ratio <= 1.0:
        raise ValueError(
            f"remote_warning_ratio must be a ratio in 0..1, got {remote_warning_ratio!r}"
        )
    path = Path(procfs_root) / str(pid) / "numa_maps"
    with open(path, encoding="utf-8", errors="replace") as f:
        parsed = _parse(f.read())
    return PageResidency(
        pid=pid,
        local_node=local_node,
        pages_per_node=MappingProxyType(parsed.pages),
        kib_per_node=MappingProxyType(parsed.kib),
        remote_warning_ratio=remote_warning_ratio,
    )


def _default_local_node(pid: int | str, procfs_root: str, sysfs_root: str) -> int | None:
    """Node of the lowest CPU the target may run on (from its status file)."""
    status = _read(Path(procfs_root) / str(pid) / "status") or ""
    cpus: frozenset[int] = frozenset()
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            try:
                cpus = parse_cpulist(line.split(":", 1)[1])
            except ValueError:
                cpus = frozenset()
            break
    if not cpus and procfs_root == "/proc":
        target = 0 if pid == "self" else int(pid)
        try:
            cpus = frozenset(os.sched_getaffinity(target))
        except OSError:
            cpus = frozenset()
    if not cpus:
        return None
    return numa_topology(sysfs_root=sysfs_root).node_of_cpu(min(cpus))


def sample_page_residency(
    pid: int | str = "self",
    local_node: int | None = None,
    *,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
    remote_warning_ratio: float = DEFAULT_REMOTE_WARNING_RATIO,
    force: bool = False,
) -> ResidencySample:
    """Sample page residency unless it is pointless or cannot be read.

    Returns ``ResidencySample(None, reason)`` on a one-node host (every page
    is local; reading would only take the target's mmap lock) unless
    ``force`` is set, and when ``numa_maps`` is unreadable. ``local_node``
    defaults to the node of the lowest CPU the target may run on.

    Availability: Linux with CONFIG_NUMA.
    """
    topo = numa_topology(sysfs_root=sysfs_root)
    if len(topo) < 2 and not force:
        return ResidencySample(
            None,
            f"skipped: this host has {len(topo)} NUMA node; every page is local and reading "
            "numa_maps would only take the target's mmap lock",
        )
    node = local_node
    if node is None:
        node = _default_local_node(pid, procfs_root, sysfs_root)
        if node is None:
            node = topo.node_ids[0]
    try:
        residency = page_residency(
            pid,
            node,
            procfs_root=procfs_root,
            remote_warning_ratio=remote_warning_ratio,
        )
    except OSError as exc:
        return ResidencySample(None, f"numa_maps of {pid} unreadable: {exc}")
    msg = f"{residency.remote_ratio:.3f} of resident memory is off node {node}" + (
        f" (above {residency.remote_warning_ratio:.3f})" if residency.remote_warning else ""
    )
    return ResidencySample(residency, msg)
