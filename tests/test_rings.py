"""Rings of the segment (layout v2): SPSC records, drops, admission, ring sets, agent heartbeat."""

from __future__ import annotations

import gc
import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from helpers import child_ready, run_child, small_segment, spawn_python

from mxrc._native import _core
from mxrc.bus import RING_KINDS, AgentHeartbeat, Ring, RingSet, Segment, private_stats
from mxrc.bus._rings import RING_RECORD_SIZES, ring_admits
from mxrc.config import load_config
from mxrc.errors import ConfigError, SegmentError, SegmentInUseError

bus = _core.bus
CRITICAL, HIGH, NORMAL, LOW = 0, 1, 2, 3


# ---------------------------------------------------------------- one ring


@pytest.mark.parametrize(
    ("capacity", "record_size", "match"),
    [
        (0, 64, "capacity must be a power of two in 2..16777216 records, got 0"),
        (1, 64, "got 1"),
        (1000, 64, "got 1000"),
        (1 << 25, 64, "got 33554432"),
        (16, 0, "record size must be a multiple of 8 in 8..65536 bytes, got 0"),
        (16, 12, "got 12"),
        (16, 1 << 17, "got 131072"),
    ],
)
def test_bad_geometry_is_refused(capacity: int, record_size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ring.private(capacity, record_size)


def test_push_pop_keeps_order_length_and_bytes() -> None:
    ring = Ring.private(8, 64)
    assert (ring.capacity, ring.record_size, ring.size()) == (8, 64, 0)
    records = [b"", b"a", bytes(range(7)), bytes(range(8)), bytes(range(9)), bytes(range(64))]
    for r in records:
        assert ring.push(r)
    assert ring.push(bytearray(b"ba")) and ring.push(memoryview(b"mv"))
    assert ring.size() == 8
    assert ring.pop_many(3) == records[:3]
    assert ring.drain() == [*records[3:], b"ba", b"mv"]
    assert ring.pop() is None
    assert ring.pop_many(10) == []


def test_a_record_too_long_or_not_contiguous_is_refused() -> None:
    ring = Ring.private(4, 16)
    with pytest.raises(
        ValueError, match="record of 17 bytes does not fit the private ring: at most 16"
    ):
        ring.push(bytes(17))
    with pytest.raises(ValueError, match="contiguous"):
        ring.push(memoryview(bytes(8))[::2])
    with pytest.raises(ValueError, match=r"priority must be 0 \(CRITICAL\), 1 \(HIGH\)"):
        ring.push(b"x", priority=4)
    c = ring.counters()
    assert (c.pushed, c.dropped) == (0, 0)  # refused calls are not offers


def test_full_ring_drops_the_newest_and_counts() -> None:
    ring = Ring.private(4, 8)
    assert [ring.push(bytes([i])) for i in range(6)] == [True] * 4 + [False] * 2
    c = ring.counters()
    assert (c.pushed, c.accepted, c.dropped, c.popped, c.size) == (6, 4, 2, 0, 4)
    assert c.overflowed and ring.overflowed
    assert c.fill_ratio == 1.0
    assert ring.pop() == b"\x00"  # the oldest records were kept
    assert ring.push(b"\x09")
    assert ring.drain() == [b"\x01", b"\x02", b"\x03", b"\x09"]
    c = ring.counters()
    assert c.pushed == c.popped + c.dropped + c.size == 7
    assert c.dropped_by_priority == (0, 0, 0, 0)  # plain pushes: no admission
    assert ring.overflowed  # sticky
    ring.clear_overflow()
    assert not ring.overflowed


@pytest.mark.parametrize("capacity", [16, 1024])
def test_admission_thresholds(capacity: int) -> None:
    low_limit = -(-capacity * 8 // 10)  # first fill at which LOW is dropped: ceil(80 %)
    normal_limit = -(-capacity * 9 // 10)
    for fill in range(capacity + 1):
        assert ring_admits(fill, capacity, LOW) == (fill < low_limit)
        assert ring_admits(fill, capacity, NORMAL) == (fill < normal_limit)
        assert ring_admits(fill, capacity, HIGH) == (fill < capacity)
        assert ring_admits(fill, capacity, CRITICAL) == (fill < capacity)
    ring = Ring.private(capacity, 8)
    accepted = {LOW: 0, NORMAL: 0, HIGH: 0}
    for prio in (LOW, NORMAL, HIGH):
        while ring.push(b"x", priority=prio):
            accepted[prio] += 1
    assert accepted == {
        LOW: low_limit,
        NORMAL: normal_limit - low_limit,
        HIGH: capacity - normal_limit,
    }
    c = ring.counters()
    assert c.dropped_by_priority == (0, 1, 1, 1)
    assert c.size == capacity
    ring.pop_many(capacity - low_limit + 1)  # back below 80 %
    assert ring.push(b"x", priority=LOW)


def test_admission_accepts_the_bus_priority_enum() -> None:
    from mxrc.bus import Priority

    ring = Ring.private(16, 8)
    assert [int(p) for p in (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW)] == [
        0,
        1,
        2,
        3,
    ]
    assert ring.push(b"x", priority=Priority.LOW)


# ---------------------------------------------------------------- segment layout


def test_segment_layout_v2_region_table(instance: str) -> None:
    with small_segment(instance, event_ring_capacity=32) as seg:
        h = seg.header
        assert h["layout_version"] == 2
        assert h["header_size"] == bus.SEGMENT_HEADER_SIZE == 384
        assert h["ring_capacities"] == {
            "log": 16,
            "span": 16,
            "event": 32,
            "critical": 4,
            "command": 16,
        }
        stats_end = h["stats_offset"] + h["max_stats"] * h["stats_slot_size"]
        assert h["ring_sets_offset"] % 64 == 0 and h["ring_sets_offset"] >= stats_end
        assert h["ring_set_size"] % 64 == 0
        rings_end = h["ring_sets_offset"] + h["max_stats"] * h["ring_set_size"]
        assert h["datastore_offset"] % 64 == 0 and h["datastore_offset"] >= rings_end
        assert h["datastore_bytes"] == _core.datastore.region_bytes(16, 1024)
        assert h["datastore_slots"] == 16
        assert h["datastore_offset"] + h["datastore_bytes"] <= h["total_size"]
        assert h["total_size"] == Path(seg.path).stat().st_size
        assert (h["agent_heartbeat_ns"], h["agent_pid"], h["agent_generation"]) == (0, 0, 0)
        assert h["critical_overflow"] is False
        ring_bytes = sum(
            bus.ring_bytes(h["ring_capacities"][k], RING_RECORD_SIZES[k]) for k in RING_KINDS
        )
        assert h["ring_set_size"] == 128 + ring_bytes  # a 128-byte ring set header
        assert RING_RECORD_SIZES == {
            "log": 256,
            "span": 128,
            "event": 256,
            "critical": 256,
            "command": 256,
        }


def test_default_capacities_are_the_config_defaults(instance: str) -> None:
    with Segment.create(instance, max_stats=1) as seg:
        assert seg.header["ring_capacities"] == {
            "log": 8192,
            "span": 4096,
            "event": 1024,
            "critical": 64,
            "command": 256,
        }
        assert seg.header["datastore_bytes"] == _core.datastore.region_bytes(256, 65536)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_ring_capacity": 1000}, "event ring capacity must be a power of two"),
        ({"critical_ring_capacity": 1}, "critical ring capacity must be a power of two"),
        ({"log_ring_capacity": 1 << 25}, "log ring capacity must be a power of two"),
        ({"command_ring_capacity": 0}, "command ring capacity must be a power of two"),
        ({"span_ring_capacity": 3}, "span ring capacity must be a power of two"),
    ],
)
def test_bad_ring_capacities_are_refused(instance: str, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Segment.create(instance, max_stats=1, **kwargs)
    assert not Path(f"/dev/shm/mxrc-{instance}").exists()


def test_datastore_region_is_zeroed_aligned_writable_and_kept_mapped(instance: str) -> None:
    seg = small_segment(instance)
    region = seg.datastore_region()
    assert region.size == len(region) == seg.header["datastore_bytes"] > 0
    assert region.address % 64 == 0
    view = memoryview(region)
    assert view.nbytes == region.size and not view.readonly
    assert bytes(view) == bytes(region.size)
    view[:4] = b"mxrc"
    with Segment.attach(instance) as other:
        assert bytes(memoryview(other.datastore_region())[:4]) == b"mxrc"
    seg.close()
    gc.collect()
    assert bytes(view[:4]) == b"mxrc"  # the region keeps the mapping alive
    view.release()


def test_attach_waits_for_a_creator_still_initialising(instance: str) -> None:
    """A large segment takes milliseconds to initialise (magic published last):
    an attacher that finds the name early waits instead of calling it foreign."""
    path = Path(f"/dev/shm/mxrc-{instance}")
    child = spawn_python(
        f"""
        import json, sys
        from mxrc.bus import Segment
        sys.stdin.readline()
        seg = Segment.create({instance!r}, max_stats=16)
        print(json.dumps({{}}), flush=True)
        sys.stdin.read()
        """
    )
    try:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        deadline = time.monotonic() + 30
        while not path.exists():
            assert time.monotonic() < deadline
        with Segment.attach(instance) as seg:  # as early as possible
            assert seg.header["max_stats"] == 16
            assert seg.header["magic"] == bus.MAGIC
        child_ready(child)
    finally:
        child.communicate(timeout=30)


def test_no_datastore(instance: str) -> None:
    with small_segment(instance, datastore_bytes=0) as seg:
        assert seg.header["datastore_bytes"] == 0
        assert seg.datastore_region().size == 0


def test_one_ring_set_per_stats_slot(instance: str) -> None:
    with small_segment(instance) as seg:
        a = seg.claim_stats("a")
        b = seg.claim_stats("b")
        ra, rb = RingSet.of(a), RingSet.of(b)
        assert ra is not None and rb is not None
        assert (ra.slot_index, rb.slot_index) == (0, 1)
        assert seg.rings("b").slot_index == 1
        assert seg.ring_set(0).slot_index == 0
        assert ra.event.push(b"to a")
        assert rb.event.pop() is None
        assert seg.rings("a").event.pop() == b"to a"
        assert [ra.ring(k).record_size for k in RING_KINDS] == [256, 128, 256, 256, 256]
        assert ra.log.name == "log ring of stats slot 0"
        assert repr(rb.command) == "<Ring command ring of stats slot 1: 0/16 x 256 B>"
        with pytest.raises(KeyError, match="no ring named 'nope': expected one of log"):
            ra.ring("nope")
        with pytest.raises(LookupError, match="no stats slot named 'zz'"):
            seg.rings("zz")
        with pytest.raises(ValueError, match="stats slot index 2 out of range"):
            seg.ring_set(2)
        del a, b
    assert private_stats("p").rings is None
    assert RingSet.of(private_stats("p")) is None


def test_rings_keep_records_across_claims_and_processes(instance: str) -> None:
    with small_segment(instance) as seg:
        run_child(
            f"""
            import json
            from mxrc.bus import Segment, RingSet
            seg = Segment.attach({instance!r})
            slot = seg.claim_stats("main")
            rings = RingSet.of(slot)
            ok = [rings.log.push(b"log %d" % i) for i in range(20)]
            print(json.dumps({{"ok": ok}}))
            """
        )
        # the writer is gone; its records and counters are still there
        rings = seg.rings("main")
        c = rings.log.counters()
        assert (c.pushed, c.accepted, c.dropped) == (20, 16, 4)
        slot = seg.claim_stats("main")  # a restarted writer reuses the slot ...
        assert RingSet.of(slot) is not None
        assert rings.log.drain() == [b"log %d" % i for i in range(16)]  # ... records kept
        del slot


def test_critical_overflow_is_sticky_on_the_set_and_the_segment(instance: str) -> None:
    with small_segment(instance) as seg:
        slot = seg.claim_stats("main")
        rings = RingSet.of(slot)
        assert rings is not None
        for i in range(4):
            assert rings.publish_event(b"c%d" % i, CRITICAL)
        assert not rings.critical_overflow and not seg.critical_overflow
        assert not rings.publish_event(b"c4", CRITICAL)
        assert rings.critical_overflow and seg.critical_overflow
        assert seg.header["critical_overflow"] is True
        assert rings.critical.drain() == [b"c0", b"c1", b"c2", b"c3"]
        assert rings.critical_overflow  # draining does not clear it
        with Segment.attach(instance) as other:
            assert other.critical_overflow
            assert other.rings("main").critical_overflow
        assert rings.critical.counters().dropped_by_priority == (1, 0, 0, 0)
        assert rings.event.counters().pushed == 0  # CRITICAL never goes to the event ring
        seg.clear_critical_overflow()
        assert not rings.critical_overflow and not seg.critical_overflow


def test_publish_event_admits_by_priority_into_the_event_ring(instance: str) -> None:
    with small_segment(instance) as seg:
        slot = seg.claim_stats("main")
        rings = RingSet.of(slot)
        assert rings is not None
        results = [rings.publish_event(b"e", prio) for prio in [HIGH] * 13 + [LOW, NORMAL]]
        assert results == [True] * 13 + [False, True]  # 13/16 >= 80 %: LOW dropped
        counters = rings.counters()
        assert counters["event"].dropped_by_priority == (0, 0, 0, 1)
        assert counters["critical"].pushed == 0
        assert set(counters) == set(RING_KINDS)
        with pytest.raises(ValueError, match="priority must be"):
            rings.publish_event(b"e", 7)


def test_commands_flow_agent_to_rt_across_processes(instance: str) -> None:
    with small_segment(instance) as seg:
        slot = seg.claim_stats("main")
        rings = RingSet.of(slot)
        assert rings is not None
        run_child(
            f"""
            import json
            from mxrc.bus import Segment
            seg = Segment.attach({instance!r})
            cmd = seg.rings("main").command
            print(json.dumps({{"ok": [cmd.push(b"cmd %d" % i) for i in range(3)]}}))
            """
        )
        assert [rings.poll_command() for _ in range(4)] == [b"cmd 0", b"cmd 1", b"cmd 2", None]


# ---------------------------------------------------------------- version skew

# The last commit whose segment has layout v1: its segment code is built from
# git history to check that v1 and v2 refuse each other in both directions.
V1_COMMIT = "e008b0659c38c8f4f937f91202ee16cfc75033e6"
V1_FILES = [
    "csrc/include/mxrc/segment.hpp",
    "csrc/include/mxrc/stats.hpp",
    "csrc/include/mxrc/histogram.hpp",
    "csrc/include/mxrc/error.hpp",
    "csrc/src/segment.cpp",
    "csrc/src/stats.cpp",
    "csrc/src/histogram.cpp",
]
V1_MAIN = r"""
#include <cstdio>
#include <iostream>
#include <string>
#include "mxrc/segment.hpp"
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string mode = argv[1], instance = argv[2];
  try {
    if (mode == "attach") {
      auto seg = mxrc::Segment::attach(instance);
      std::printf("attached\n");
      return 0;
    }
    auto seg = mxrc::Segment::create(instance);
    std::printf("created v%u\n", seg->header().layout_version);
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);
    seg->close();
    return 0;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 3;
  }
}
"""


@pytest.fixture(scope="module")
def v1_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A program with the segment code of layout v1 (from git history)."""
    root = Path(__file__).parent.parent
    git, cxx = shutil.which("git"), shutil.which("g++") or shutil.which("c++")
    if git is None or cxx is None or not (root / ".git").exists():
        pytest.skip("needs git history and a C++ compiler")
    known = subprocess.run(
        [git, "cat-file", "-e", f"{V1_COMMIT}^{{commit}}"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        pytest.skip(f"commit {V1_COMMIT[:8]} (layout v1) is not in this clone")
    tmp = tmp_path_factory.mktemp("v1_probe")
    for name in V1_FILES:
        blob = subprocess.run(
            [git, "show", f"{V1_COMMIT}:{name}"], cwd=root, capture_output=True, check=True
        ).stdout
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    (tmp / "main.cpp").write_text(V1_MAIN, encoding="utf-8")
    out = tmp / "v1_probe"
    sources = [str(tmp / n) for n in V1_FILES if n.endswith(".cpp")]
    build = subprocess.run(
        [
            cxx,
            "-std=c++17",
            "-O1",
            f"-I{tmp / 'csrc' / 'include'}",
            str(tmp / "main.cpp"),
            *sources,
            "-o",
            str(out),
            "-pthread",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return out


@pytest.mark.slow
def test_v1_and_v2_refuse_each_other(instance: str, v1_probe: Path) -> None:
    # a v1 mxrc attaching to this (v2) segment
    with Segment.create(instance, max_stats=1):
        proc = subprocess.run(
            [str(v1_probe), "attach", instance],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 3
        assert "has layout v2, this mxrc reads v1: upgrade/downgrade mxrc" in proc.stdout
    # this mxrc attaching to a v1 segment whose owner is alive
    owner = subprocess.Popen(
        [str(v1_probe), "create", instance],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "created v1"
        with pytest.raises(
            SegmentError, match="has layout v1, this mxrc reads v2: upgrade/downgrade"
        ):
            Segment.attach(instance)
        with pytest.raises(SegmentInUseError, match=f"owned by live process pid {owner.pid}"):
            Segment.create(instance)
        owner.kill()
        owner.wait(timeout=10)
        # its owner died: this mxrc reclaims the v1 leftover as a v2 segment
        with Segment.create(instance, max_stats=1) as seg:
            assert seg.header["layout_version"] == 2
            assert seg.generation == 2
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.communicate(timeout=10)


# ---------------------------------------------------------------- agent heartbeat


def test_agent_heartbeat_words(instance: str) -> None:
    with small_segment(instance) as seg:
        hb = seg.agent_heartbeat()
        assert hb == AgentHeartbeat(0, 0, 0)
        assert hb.age_ns() is None and hb.stale(10**12)
        child = spawn_python(
            f"""
            import json, sys
            from mxrc.bus import Segment
            seg = Segment.attach({instance!r})
            gen = seg.attach_agent()
            print(json.dumps({{"generation": gen}}), flush=True)
            for line in sys.stdin:
                if line.startswith("beat"):
                    seg.beat_agent(int(line.split()[1]))
                elif line.startswith("detach"):
                    seg.detach_agent()
                print(json.dumps({{}}), flush=True)
            """
        )
        try:
            assert child_ready(child)["generation"] == 1
            hb = seg.agent_heartbeat()
            assert hb.pid == child.pid and hb.generation == 1
            age = hb.age_ns()
            assert age is not None and 0 <= age < 60 * 10**9
            assert child.stdin is not None
            child.stdin.write("beat 12345\n")
            child.stdin.flush()
            child_ready(child)
            hb = seg.agent_heartbeat()
            assert hb.heartbeat_ns == 12345
            assert hb.age_ns(now_ns=12345 + 600_000_000) == 600_000_000
            assert hb.stale(500_000_000, now_ns=12345 + 600_000_000)
            assert not hb.stale(500_000_000, now_ns=12345 + 400_000_000)
            seg.detach_agent()  # not ours: no effect
            assert seg.agent_heartbeat().pid == child.pid
            child.stdin.write("detach\n")
            child.stdin.flush()
            child_ready(child)
            hb = seg.agent_heartbeat()
            assert (hb.pid, hb.heartbeat_ns, hb.generation) == (0, 12345, 1)  # the beat stays
        finally:
            child.communicate(timeout=20)
        # a second agent
        assert seg.attach_agent() == 2
        before = time.monotonic_ns()
        seg.beat_agent()
        hb = seg.agent_heartbeat()
        assert hb.pid == os.getpid() and hb.generation == 2
        assert before <= hb.heartbeat_ns <= time.monotonic_ns()
        assert seg.header["agent_generation"] == 2


# ---------------------------------------------------------------- two processes


@pytest.mark.parametrize(
    "case",
    [
        # ring, capacity, admission by priority, records, producer pacing (ns)
        ("event", 1024, False, 2_000_000, 0),
        ("event", 16, True, 1_000_000, 0),
        ("command", 256, False, 1_000_000, 0),
        ("log", 1024, False, 200_000, 2_000),
    ],
    ids=["event-1024", "event-16-admission", "command-256", "log-paced"],
)
def test_two_process_stress(instance: str, case: tuple[str, int, bool, int, int]) -> None:
    """Producer and consumer in two processes at full speed (the paced run lets the
    consumer empty the ring): every record intact (checksummed, variable length),
    order kept, no duplicates, and pushed = popped + dropped + left."""
    ring, capacity, admission, n, spin_ns = case
    with Segment.create(
        instance,
        max_stats=1,
        log_ring_capacity=capacity if ring == "log" else 8192,
        event_ring_capacity=capacity if ring == "event" else 1024,
        command_ring_capacity=capacity if ring == "command" else 256,
    ) as seg:
        slot = seg.claim_stats("main")
        rings = RingSet.of(slot)
        assert rings is not None
        target = rings.ring(ring)
        consumer = bus._RingStressConsumer(target.core)
        try:
            produced = run_child(
                f"""
                import json
                from mxrc._core import bus
                from mxrc.bus import Segment
                seg = Segment.attach({instance!r})
                ring = seg.rings("main").ring({ring!r})
                print(json.dumps(bus._ring_stress_produce(ring.core, {n}, {admission}, {spin_ns})))
                """
            )
        finally:
            seen = consumer.join()
        c = target.counters()
    assert seen["corrupt"] == 0
    assert seen["out_of_order"] == 0
    assert produced["attempted"] == n == c.pushed
    assert produced["dropped"] == c.dropped
    assert produced["accepted"] == c.accepted == c.popped == seen["popped"]
    assert c.size == 0
    assert c.pushed == c.popped + c.dropped + c.size
    # every record not seen was counted as dropped
    missing = seen["gaps"] + (n - 1 - seen["last_seq"] if seen["popped"] else n)
    assert missing == c.dropped
    if admission:
        assert list(c.dropped_by_priority) == produced["dropped_by_priority"]
        assert sum(c.dropped_by_priority) == c.dropped
    assert c.overflowed == (c.dropped > 0)


def test_two_processes_through_the_python_api(instance: str) -> None:
    """Python push in a child, Python pop here, concurrently."""
    n = 20_000
    with small_segment(instance, event_ring_capacity=64) as seg:
        slot = seg.claim_stats("main")
        rings = RingSet.of(slot)
        assert rings is not None
        child = spawn_python(
            f"""
            import json, struct, sys, zlib
            from mxrc.bus import Segment
            seg = Segment.attach({instance!r})
            ring = seg.rings("main").event
            print(json.dumps({{}}), flush=True)
            sys.stdin.readline()
            ok = 0
            for i in range({n}):
                body = bytes((i + k) % 251 for k in range(i % 200))
                ok += ring.push(struct.pack("<QI", i, zlib.crc32(body)) + body)
            print(json.dumps({{"accepted": ok}}), flush=True)
            """
        )
        got: list[bytes] = []
        try:
            child_ready(child)
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            deadline = time.monotonic() + 120
            while child.poll() is None and time.monotonic() < deadline:
                got.extend(rings.event.pop_many(64))
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            got.extend(rings.event.drain())
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
        accepted = json.loads(out.strip().splitlines()[-1])["accepted"]
        c = rings.event.counters()
    seqs = []
    for rec in got:
        seq, crc = struct.unpack_from("<QI", rec)
        body = rec[12:]
        assert len(body) == seq % 200 and zlib.crc32(body) == crc
        seqs.append(seq)
    assert seqs == sorted(set(seqs))  # order kept, no duplicates
    assert len(got) == accepted == c.popped
    assert c.pushed == n == c.popped + c.dropped


def test_non_rt_producers_in_two_processes_are_serialised(instance: str) -> None:
    """Two agent-side processes push into one command ring through the Python API
    (serialised by the ring's producer lock); every record intact, each
    producer's order kept."""
    n = 5_000
    with small_segment(instance, command_ring_capacity=32) as seg:
        slot = seg.claim_stats("main")
        rings = RingSet.of(slot)
        assert rings is not None
        code = f"""
            import json, struct, sys
            from mxrc.bus import Segment
            seg = Segment.attach({instance!r})
            ring = seg.rings("main").command
            print(json.dumps({{}}), flush=True)
            who = int(sys.stdin.readline())
            ok = 0
            for i in range({n}):
                ok += ring.push(struct.pack("<QQ", who, i) + bytes([who]) * (i % 200))
            print(json.dumps({{"accepted": ok}}), flush=True)
            """
        children = [spawn_python(code) for _ in range(2)]
        got: list[bytes] = []
        try:
            for who, child in enumerate(children):
                child_ready(child)
                assert child.stdin is not None
                child.stdin.write(f"{who}\n")
                child.stdin.flush()
            deadline = time.monotonic() + 120
            while any(c.poll() is None for c in children) and time.monotonic() < deadline:
                record = rings.poll_command()
                if record is not None:
                    got.append(record)
            accepted = 0
            for child in children:
                out, err = child.communicate(timeout=30)
                assert child.returncode == 0, err
                accepted += json.loads(out.strip().splitlines()[-1])["accepted"]
            got.extend(rings.command.drain())
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.communicate(timeout=10)
    last = {0: -1, 1: -1}
    for rec in got:
        who, seq = struct.unpack_from("<QQ", rec)
        assert rec[16:] == bytes([who]) * (seq % 200)
        assert seq > last[who]
        last[who] = seq
    assert len(got) == accepted


# ---------------------------------------------------------------- config


def _write(directory: Path, name: str, data: object) -> None:
    (directory / name).write_text(json.dumps(data), encoding="utf-8")


def test_create_from_config(instance: str, tmp_path: Path) -> None:
    _write(
        tmp_path,
        "perf_monitor.json",
        {
            "rt": {
                "bus": {
                    "event_ring_capacity": 64,
                    "critical_ring_capacity": 8,
                    "command_ring_capacity": 32,
                    "datastore_slots": 8,
                    "datastore_bytes": 512,
                }
            }
        },
    )
    _write(tmp_path, "logging.json", {"ring_capacity": 128})
    _write(tmp_path, "tracing_config.json", {"rt": {"span_ring_capacity": 256}})
    cfg = load_config(tmp_path, environ={}, check_host=False)
    assert cfg.tracing.rt.service_name == "mxrc-rt"
    with Segment.create_from_config(instance, cfg, max_stats=3) as seg:
        h = seg.header
        assert h["max_stats"] == 3
        assert h["ring_capacities"] == {
            "log": 128,
            "span": 256,
            "event": 64,
            "critical": 8,
            "command": 32,
        }
        assert h["datastore_slots"] == 8
        assert h["datastore_bytes"] == _core.datastore.region_bytes(8, 512)


def test_config_defaults_for_the_bus() -> None:
    cfg = load_config(None, environ={}, check_host=False)
    bus_cfg = cfg.perf_monitor.rt.bus
    assert (
        bus_cfg.event_ring_capacity,
        bus_cfg.critical_ring_capacity,
        bus_cfg.command_ring_capacity,
        bus_cfg.datastore_slots,
        bus_cfg.datastore_bytes,
    ) == (1024, 64, 256, 256, 65536)
    assert cfg.tracing.rt.span_ring_capacity == 4096
    assert cfg.logging.ring_capacity == 8192
    fo = cfg.failover_policy.rt
    assert (fo.agent_heartbeat_interval_ms, fo.agent_heartbeat_timeout_ms) == (100, 500)
    assert "span_ring_capacity" not in cfg.tracing.to_dict()["nonrt"]


@pytest.mark.parametrize(
    ("file", "data", "key_path", "expected"),
    [
        (
            "perf_monitor.json",
            {"rt": {"bus": {"event_ring_capacity": 1000}}},
            "rt.bus.event_ring_capacity",
            "a power of two such as 512 or 1024",
        ),
        (
            "perf_monitor.json",
            {"rt": {"bus": {"critical_ring_capacity": 100}}},
            "rt.bus.critical_ring_capacity",
            "a power of two such as 64 or 128",
        ),
        (
            "tracing_config.json",
            {"rt": {"span_ring_capacity": 5000}},
            "rt.span_ring_capacity",
            "a power of two such as 4096 or 8192",
        ),
        (
            "logging.json",
            {"ring_capacity": 10000},
            "ring_capacity",
            "a power of two such as 8192 or 16384",
        ),
        (
            "failover_policy.json",
            {"rt": {"agent_heartbeat_interval_ms": 500}},
            "rt.agent_heartbeat_interval_ms",
            "less than agent_heartbeat_timeout_ms (500)",
        ),
        (
            "perf_monitor.json",
            {"rt": {"bus": {"command_ring_capacity": 8}}},
            "rt.bus.command_ring_capacity",
            "an integer in 16..16777216",
        ),
        (
            "tracing_config.json",
            {"nonrt": {"span_ring_capacity": 64}},
            "nonrt.span_ring_capacity",
            None,
        ),
    ],
)
def test_bus_config_errors(
    tmp_path: Path, file: str, data: object, key_path: str, expected: str | None
) -> None:
    _write(tmp_path, file, data)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={}, check_host=False)
    assert info.value.key_path == key_path
    if expected is not None:
        assert info.value.expected == expected
    assert file in str(info.value)


# ---------------------------------------------------------------- helpers used above


def test_stress_helpers_check_what_they_claim() -> None:
    """The stress consumer flags corrupt and out-of-order records (so a pass means something)."""
    ring = Ring.private(64, 256)
    bus._ring_stress_produce(ring.core, 10)
    records = ring.drain()
    assert len(records) == 10
    for rec in [records[3], records[1], b"\x00" * 8 + records[5][8:], records[5]]:
        assert ring.push(rec)
    seen = bus._RingStressConsumer(ring.core).join()
    assert seen["popped"] == 4
    assert seen["corrupt"] == 1  # seq 0 with seq 5's body
    assert seen["out_of_order"] == 1  # seq 1 after seq 3
    assert (seen["first_seq"], seen["last_seq"]) == (3, 5)
