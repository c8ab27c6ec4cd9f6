"""NUMA memory policy through the system calls, read back with get_mempolicy."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
from helpers import in_thread

from mxrc.rt._cpulist import parse_cpulist
from mxrc.rt._mempolicy import (
    MemoryPolicy,
    allowed_memory_nodes,
    bind_memory,
    buffer_memory_policy,
    buffer_node,
    get_memory_policy,
    migrate_pages,
    set_memory_policy,
)

ONLINE_NODES = parse_cpulist(Path("/sys/devices/system/node/online").read_text())
NODE = min(ONLINE_NODES)
ABSENT_NODE = max(ONLINE_NODES) + 3


@pytest.mark.parametrize(
    ("policy", "nodes"),
    [
        (MemoryPolicy.BIND, {NODE}),
        (MemoryPolicy.INTERLEAVE, {NODE}),
        (MemoryPolicy.PREFERRED, {NODE}),
        (MemoryPolicy.LOCAL, set()),
        (MemoryPolicy.DEFAULT, set()),
    ],
)
def test_round_trip_on_a_dedicated_thread(policy: MemoryPolicy, nodes: set[int]) -> None:
    def body() -> tuple[tuple[MemoryPolicy, frozenset[int]], tuple[MemoryPolicy, frozenset[int]]]:
        set_memory_policy(policy, nodes)
        got = get_memory_policy()
        set_memory_policy("DEFAULT")
        return got, get_memory_policy()

    got, restored = in_thread(body)
    assert got == (policy, frozenset(nodes))
    assert restored == (MemoryPolicy.DEFAULT, frozenset())
    # The policy is per thread: this thread never changed.
    assert get_memory_policy() == (MemoryPolicy.DEFAULT, frozenset())


def test_policy_names_parse_and_unknown_policy_is_clear() -> None:
    assert MemoryPolicy.parse("bind") is MemoryPolicy.BIND
    assert MemoryPolicy.parse("MPOL_INTERLEAVE") is MemoryPolicy.INTERLEAVE
    with pytest.raises(ValueError, match=r"unknown memory policy 'NEAREST'.*LOCAL"):
        set_memory_policy("NEAREST", [NODE])


def test_invalid_node_is_a_clear_error() -> None:
    def body() -> None:
        set_memory_policy(MemoryPolicy.BIND, {ABSENT_NODE})

    with pytest.raises(ValueError, match=rf"NUMA node {ABSENT_NODE} is not available") as info:
        in_thread(body)
    assert str(sorted(allowed_memory_nodes())[0]) in str(info.value)
    with pytest.raises(ValueError, match="negative"):
        set_memory_policy(MemoryPolicy.BIND, {-1})
    with pytest.raises(ValueError, match="out of range"):
        set_memory_policy(MemoryPolicy.BIND, {5000})


def test_node_count_must_suit_the_policy() -> None:
    with pytest.raises(ValueError, match="LOCAL takes no nodes"):
        set_memory_policy(MemoryPolicy.LOCAL, {NODE})
    with pytest.raises(ValueError, match="BIND takes at least one node"):
        set_memory_policy(MemoryPolicy.BIND, set())
    with pytest.raises(ValueError, match="PREFERRED takes exactly one node"):
        set_memory_policy(MemoryPolicy.PREFERRED, set())
    assert get_memory_policy() == (MemoryPolicy.DEFAULT, frozenset())


def test_allowed_nodes_match_the_cpuset_mems() -> None:
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("Mems_allowed_list:"))
    assert allowed_memory_nodes() == parse_cpulist(line.split(":", 1)[1])


def test_mbind_on_an_mmap_buffer_and_read_back() -> None:
    buf = mmap.mmap(-1, 16 * mmap.PAGESIZE)
    assert buffer_memory_policy(buf) == (MemoryPolicy.DEFAULT, frozenset())
    bind_memory(buf, MemoryPolicy.BIND, {NODE})
    assert buffer_memory_policy(buf) == (MemoryPolicy.BIND, frozenset({NODE}))
    buf[0] = 1  # touch the first page, then ask where it lives
    assert buffer_node(buf) == NODE
    bind_memory(buf, "INTERLEAVE", {NODE}, move=True)
    assert buffer_memory_policy(buf) == (MemoryPolicy.INTERLEAVE, frozenset({NODE}))
    # The thread's own policy is untouched.
    assert get_memory_policy() == (MemoryPolicy.DEFAULT, frozenset())


def test_mbind_on_an_unaligned_buffer_needs_whole_pages() -> None:
    data = bytearray(3 * mmap.PAGESIZE)
    view = memoryview(data)[1:]  # never page-aligned
    with pytest.raises(ValueError, match=r"page boundary.*whole_pages=True"):
        bind_memory(view, MemoryPolicy.BIND, {NODE})
    bind_memory(view, MemoryPolicy.BIND, {NODE}, whole_pages=True)
    assert buffer_memory_policy(view) == (MemoryPolicy.BIND, frozenset({NODE}))
    bind_memory(view, MemoryPolicy.DEFAULT, whole_pages=True)
    assert buffer_memory_policy(view)[0] is MemoryPolicy.DEFAULT


def test_mbind_invalid_node_and_read_only_buffer() -> None:
    buf = mmap.mmap(-1, mmap.PAGESIZE)
    with pytest.raises(ValueError, match=rf"NUMA node {ABSENT_NODE}"):
        bind_memory(buf, MemoryPolicy.BIND, {ABSENT_NODE})
    with pytest.raises(BufferError):
        bind_memory(b"x" * 8192, MemoryPolicy.BIND, {NODE})


def test_migrate_pages_within_the_node() -> None:
    assert migrate_pages({NODE}, {NODE}) >= 0
    with pytest.raises(ValueError, match="at least one source and one target"):
        migrate_pages(set(), {NODE})


def test_core_names_an_unknown_policy_number() -> None:
    from mxrc._native import _core

    with pytest.raises(ValueError, match="unknown memory policy 99"):
        _core.numa.set_mempolicy(99, [0])
