"""NUMA memory policy through ``set_mempolicy``/``mbind``/``get_mempolicy`` (no libnuma).

A thread's policy (:func:`set_memory_policy`) decides where *its future*
allocations go; pages that already exist do not move. :func:`bind_memory`
sets the policy of a buffer's pages and can move the existing ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING

from mxrc._native import _core
from mxrc._privilege import translate_eperm

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "MemoryPolicy",
    "allowed_memory_nodes",
    "bind_memory",
    "buffer_memory_policy",
    "buffer_node",
    "get_memory_policy",
    "migrate_pages",
    "set_memory_policy",
]

_numa = _core.numa


class MemoryPolicy(str, Enum):
    """Linux memory policies (``MPOL_*``), named as in the configuration."""

    DEFAULT = "DEFAULT"
    LOCAL = "LOCAL"
    PREFERRED = "PREFERRED"
    INTERLEAVE = "INTERLEAVE"
    BIND = "BIND"
    PREFERRED_MANY = "PREFERRED_MANY"
    WEIGHTED_INTERLEAVE = "WEIGHTED_INTERLEAVE"

    @classmethod
    def parse(cls, value: MemoryPolicy | str) -> MemoryPolicy:
        """Accept a member or its name in any case (``"bind"``, ``"MPOL_BIND"``)."""
        if isinstance(value, MemoryPolicy):
            return value
        if isinstance(value, str):
            key = value.strip().upper().removeprefix("MPOL_")
            for member in cls:
                if member.value == key:
                    return member
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown memory policy {value!r} (expected one of {choices})")


_TO_KERNEL: dict[MemoryPolicy, int] = {
    MemoryPolicy.DEFAULT: _numa.MPOL_DEFAULT,
    MemoryPolicy.LOCAL: _numa.MPOL_LOCAL,
    MemoryPolicy.PREFERRED: _numa.MPOL_PREFERRED,
    MemoryPolicy.INTERLEAVE: _numa.MPOL_INTERLEAVE,
    MemoryPolicy.BIND: _numa.MPOL_BIND,
    MemoryPolicy.PREFERRED_MANY: _numa.MPOL_PREFERRED_MANY,
    MemoryPolicy.WEIGHTED_INTERLEAVE: _numa.MPOL_WEIGHTED_INTERLEAVE,
}
_FROM_KERNEL: dict[int, MemoryPolicy] = {v: k for k, v in _TO_KERNEL.items()}


def _nodes(nodes: Iterable[int]) -> list[int]:
    out: set[int] = set()
    for node in nodes:
        if isinstance(node, bool) or not isinstance(node, int):
            raise TypeError(f"NUMA node numbers must be int, got {node!r}")
        if node < 0:
            raise ValueError(f"NUMA node numbers cannot be negative, got {node}")
        out.add(node)
    return sorted(out)


def _result(raw: tuple[int, int, list[int]]) -> tuple[MemoryPolicy, frozenset[int]]:
    mode, _flags, nodes = raw
    try:
        policy = _FROM_KERNEL[mode]
    except KeyError:
        raise ValueError(f"the kernel reports an unknown memory policy mode {mode}") from None
    return policy, frozenset(nodes)


def allowed_memory_nodes() -> frozenset[int]:
    """NUMA nodes the calling thread may allocate from (its cpuset's mems).

    Availability: Linux with NUMA support.
    """
    return frozenset(_numa.allowed_nodes())


def set_memory_policy(policy: MemoryPolicy | str, nodes: Iterable[int] = ()) -> None:
    """Set the calling thread's memory policy (``set_mempolicy``).

    DEFAULT and LOCAL take no nodes, PREFERRED exactly one, the others at least
    one. Raises ValueError naming a node the thread may not use (or a wrong
    node count). Affects this thread's future allocations only.

    Availability: Linux with NUMA support.
    """
    pol = MemoryPolicy.parse(policy)
    _numa.set_mempolicy(_TO_KERNEL[pol], _nodes(nodes))


def get_memory_policy() -> tuple[MemoryPolicy, frozenset[int]]:
    """The calling thread's memory policy and node set (``get_mempolicy``).

    Availability: Linux with NUMA support.
    """
    return _result(_numa.get_mempolicy())


def bind_memory(
    buffer: Buffer,
    policy: MemoryPolicy | str,
    nodes: Iterable[int] = (),
    *,
    move: bool = False,
    strict: bool = False,
    whole_pages: bool = False,
) -> None:
    """Set the memory policy of a writable buffer's pages (``mbind``).

    The buffer must start on a page boundary (an ``mmap`` buffer does) unless
    ``whole_pages`` is set: then every page the buffer overlaps gets the
    policy, neighbours on those pages included. ``move`` migrates pages that
    already exist (``MPOL_MF_MOVE``); ``strict`` fails when some cannot be.

    Availability: Linux with NUMA support.
    """
    pol = MemoryPolicy.parse(policy)
    flags = (_numa.MPOL_MF_MOVE if move else 0) | (_numa.MPOL_MF_STRICT if strict else 0)
    with translate_eperm("mempolicy", f"cannot bind a buffer to memory policy {pol.value}"):
        _numa.mbind(buffer, _TO_KERNEL[pol], _nodes(nodes), flags, whole_pages)


def buffer_memory_policy(buffer: Buffer) -> tuple[MemoryPolicy, frozenset[int]]:
    """The policy governing a buffer's first page (``get_mempolicy(MPOL_F_ADDR)``).

    Availability: Linux with NUMA support.
    """
    return _result(_numa.get_mempolicy_at(buffer))


def buffer_node(buffer: Buffer) -> int:
    """The node holding a buffer's first page (touch it first).

    Availability: Linux with NUMA support.
    """
    return _numa.node_of(buffer)


def migrate_pages(from_nodes: Iterable[int], to_nodes: Iterable[int], pid: int = 0) -> int:
    """Move a process's pages (pid 0: this one) from some nodes to others.

    Returns the number of pages that could not be moved.

    Availability: Linux with NUMA support; another process needs CAP_SYS_NICE.
    """
    source, target = _nodes(from_nodes), _nodes(to_nodes)
    with translate_eperm("mempolicy", f"cannot migrate the pages of process {pid or 'self'}"):
        return _numa.migrate_pages(pid, source, target)
