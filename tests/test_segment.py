"""The shared-memory segment: ownership, reclaim, refusal of foreign files, stats slots."""

from __future__ import annotations

import gc
import os
import signal
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
from helpers import child_ready, run_child, spawn_python

from mxrc._native import _core
from mxrc.bus import LAYOUT_VERSION, Segment, segment_path
from mxrc.errors import SegmentError, SegmentInUseError

bus = _core.bus


def _owner_child(instance: str) -> subprocess.Popen[str]:
    return spawn_python(
        f"""
        import json, os, sys
        from mxrc.bus import Segment
        seg = Segment.create({instance!r})
        print(json.dumps({{"pid": os.getpid()}}), flush=True)
        sys.stdin.read()
        seg.close()
        """
    )


def test_create_attach_and_header(instance: str) -> None:
    with Segment.create(instance, max_stats=4) as seg:
        path = Path(segment_path(instance))
        assert path == Path("/dev/shm") / f"mxrc-{instance}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        h = seg.header
        assert h["magic"] == bus.MAGIC
        assert h["layout_version"] == LAYOUT_VERSION == 2
        assert h["owner_pid"] == os.getpid()
        assert h["generation"] == 1
        assert h["max_stats"] == 4
        assert h["total_size"] == path.stat().st_size
        offset_ns = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.monotonic_ns()
        assert abs(h["wallclock_offset_ns"] - offset_ns) < 1_000_000_000
        assert abs(h["created_realtime_ns"] - time.time_ns()) < 60 * 10**9
        assert seg.is_owner
        with Segment.attach(instance) as other:
            assert not other.is_owner
            assert other.header["generation"] == 1
            assert other.owner_alive()
            assert other.bump_generation() == 2
        assert seg.generation == 2
    assert not path.exists()


def test_close_unlinks_and_attach_then_fails(instance: str) -> None:
    seg = Segment.create(instance)
    seg.close()
    seg.close()  # idempotent
    assert seg.closed
    assert not Path(segment_path(instance)).exists()
    with pytest.raises(SegmentError, match=f"no instance '{instance}' running: .* does not exist"):
        Segment.attach(instance)
    with pytest.raises(SegmentError, match="closed"):
        _ = seg.header


def test_dropping_the_owner_object_unlinks(instance: str) -> None:
    seg = Segment.create(instance)
    del seg
    gc.collect()
    assert not Path(segment_path(instance)).exists()


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 65, "ü", "a b", "../etc"])
def test_bad_instance_names(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\[A-Za-z0-9_.-\]"):
        Segment.create(bad)
    with pytest.raises(ValueError, match=r"\[A-Za-z0-9_.-\]"):
        Segment.attach(bad)


def test_max_stats_bounds(instance: str) -> None:
    with pytest.raises(ValueError, match="max_stats"):
        Segment.create(instance, max_stats=0)
    with pytest.raises(ValueError, match="max_stats"):
        Segment.create(instance, max_stats=100_000)


def test_in_use_by_this_process(instance: str) -> None:
    with Segment.create(instance):
        with pytest.raises(SegmentInUseError, match=f"pid {os.getpid()}") as info:
            Segment.create(instance)
        assert info.value.owner_pid == os.getpid()  # type: ignore[attr-defined]
        with pytest.raises(SegmentInUseError):
            Segment.remove(instance)


def test_in_use_by_another_process_then_reclaimed_after_sigkill(instance: str) -> None:
    child = _owner_child(instance)
    try:
        pid = child_ready(child)["pid"]
        with pytest.raises(SegmentInUseError, match=f"owned by live process pid {pid}") as info:
            Segment.create(instance)
        assert info.value.owner_pid == pid  # type: ignore[attr-defined]
        with Segment.attach(instance) as seen:
            assert seen.owner_alive()
            assert seen.header["owner_pid"] == pid
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            assert not seen.owner_alive()
        # the dead owner left its segment behind: reclaimed, generation + 1
        assert Path(segment_path(instance)).exists()
        with Segment.create(instance) as seg:
            assert seg.header["owner_pid"] == os.getpid()
            assert seg.generation == 2
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


def test_remove_leftover(instance: str) -> None:
    assert not Segment.remove(instance)
    child = _owner_child(instance)
    child_ready(child)
    child.kill()
    child.communicate(timeout=10)
    assert Segment.remove(instance)
    assert not Path(segment_path(instance)).exists()


def _fake(instance: str, data: bytes) -> None:
    Path(segment_path(instance)).write_bytes(data)


def test_attach_refuses_a_foreign_file(instance: str) -> None:
    _fake(instance, b"hello, world" * 100)
    with pytest.raises(SegmentError, match="is not an mxrc segment: bad magic"):
        Segment.attach(instance)
    _fake(instance, b"")
    with pytest.raises(SegmentError, match="is not an mxrc segment: 0 bytes"):
        Segment.attach(instance)


@pytest.mark.parametrize("version", [1, 3])
def test_attach_refuses_another_layout_version(instance: str, version: int) -> None:
    # a v1 header: magic, version, header size 256, total size, generation ...
    _fake(instance, struct.pack("<QIIQQ", bus.MAGIC, version, 256, 4096, 1) + bytes(4096))
    with pytest.raises(
        SegmentError, match=f"layout v{version}, this mxrc reads v2: upgrade/downgrade"
    ):
        Segment.attach(instance)


def test_attach_refuses_an_inconsistent_header(instance: str) -> None:
    _fake(instance, struct.pack("<QIIQ", bus.MAGIC, 2, 384, 1 << 40) + bytes(4096))
    with pytest.raises(SegmentError, match="inconsistent header"):
        Segment.attach(instance)


def test_create_reclaims_a_foreign_file_nobody_holds(instance: str) -> None:
    _fake(instance, b"junk" * 10)
    with Segment.create(instance) as seg:
        assert seg.generation == 1
        with Segment.attach(instance) as other:
            assert other.header["owner_pid"] == os.getpid()


def test_claim_stats_unique_names_and_release(instance: str) -> None:
    with Segment.create(instance, max_stats=2) as seg:
        a = seg.claim_stats("a")
        assert a.name == "a"
        with pytest.raises(SegmentError, match="'a' is already claimed"):
            seg.claim_stats("a")
        b = seg.claim_stats("b")
        with pytest.raises(SegmentError, match="no free stats slot"):
            seg.claim_stats("c")
        assert [(s["name"], s["state"]) for s in seg.slots()] == [
            ("a", "claimed"),
            ("b", "claimed"),
        ]
        bus._start_test_writer(a, 100).join()
        del a
        gc.collect()
        assert seg.slots()[0]["state"] == "released"
        assert seg.stats("a").cycle_count == 100  # still readable
        a2 = seg.claim_stats("a")  # same name: same slot, zeroed
        assert seg.slots()[0]["claim_count"] == 2
        assert seg.stats("a").cycle_count == 0
        del a2
        gc.collect()
        c = seg.claim_stats("c")  # reuses a released slot
        assert seg.stats_names() == ["c", "b"]
        with pytest.raises(LookupError, match="pass a name"):
            seg.stats()
        with pytest.raises(LookupError, match="no stats block named 'zz'"):
            seg.stats("zz")
        del b, c


def test_claimed_block_outlives_close(instance: str) -> None:
    seg = Segment.create(instance)
    slot = seg.claim_stats("main")
    seg.close()
    assert not Path(segment_path(instance)).exists()
    bus._start_test_writer(slot, 1000).join()  # the mapping is still alive
    assert slot.read()["cycle_count"] == 1000


def test_second_process_reads_stats_while_a_writer_runs(instance: str) -> None:
    with Segment.create(instance) as seg:
        slot = seg.claim_stats("main")
        writer = bus._start_test_writer(slot, 20_000, pause_ns=50_000)
        try:
            result = run_child(
                f"""
                import json, time
                from mxrc.bus import Segment
                seen, torn = [], 0
                with Segment.attach({instance!r}) as seg:
                    for _ in range(100):
                        s = seg.stats("main")
                        if s.torn:
                            torn += 1
                            continue
                        c = s.cycle_count
                        assert s.wake_latency.count == c == int(s.wake_latency.counts.sum())
                        assert s.exec_time.sum_ns == 3 * c * (c + 1) // 2
                        seen.append(c)
                        time.sleep(0.002)
                    alive = seg.owner_alive()
                print(json.dumps({{"seen": seen, "torn": torn, "alive": alive}}))
                """
            )
        finally:
            writer.join()
    seen = result["seen"]
    assert isinstance(seen, list)
    assert seen == sorted(seen)
    assert len(set(seen)) > 2  # the counts advanced while the child read
    assert result["alive"] is True


def test_a_block_claimed_by_another_process(instance: str) -> None:
    with Segment.create(instance) as seg:
        run_child(
            f"""
            import json
            from mxrc._core import bus
            from mxrc.bus import Segment
            seg = Segment.attach({instance!r})
            slot = seg.claim_stats("remote")
            bus._start_test_writer(slot, 500).join()
            print(json.dumps({{}}))
            """
        )
        assert seg.stats("remote").cycle_count == 500
        assert seg.slots()[0]["state"] == "released"
        # its claimer is gone: claiming the name again reuses (and zeroes) its slot
        slot = seg.claim_stats("remote")
        assert slot.read()["cycle_count"] == 0
        assert seg.slots()[0]["claim_count"] == 2
        assert seg.stats_names() == ["remote"]


def test_concurrent_claims_of_one_name_from_processes(instance: str) -> None:
    with Segment.create(instance):
        code = f"""
            import json, sys
            from mxrc.bus import Segment
            from mxrc.errors import SegmentError
            seg = Segment.attach({instance!r})
            sys.stdin.readline()
            try:
                slot = seg.claim_stats("same")
                ok = True
            except SegmentError:
                ok = False
            print(json.dumps({{"ok": ok}}), flush=True)
            sys.stdin.read()
            """
        children = [spawn_python(code) for _ in range(4)]
        try:
            for c in children:
                assert c.stdin is not None
                c.stdin.write("go\n")
                c.stdin.flush()
            results = [child_ready(c)["ok"] for c in children]
        finally:
            for c in children:
                c.communicate(timeout=20)
    assert sorted(results) == [False, False, False, True]


def test_a_claim_of_a_killed_process_is_reused(instance: str) -> None:
    with Segment.create(instance) as seg:
        child = spawn_python(
            f"""
            import json, sys
            from mxrc.bus import Segment
            seg = Segment.attach({instance!r})
            slot = seg.claim_stats("main")
            print(json.dumps({{}}), flush=True)
            sys.stdin.read()
            """
        )
        child_ready(child)
        with pytest.raises(SegmentError, match="already claimed"):
            seg.claim_stats("main")
        child.kill()
        child.communicate(timeout=10)
        assert seg.slots()[0]["state"] == "claimed"  # nobody released it
        slot = seg.claim_stats("main")
        assert seg.slots()[0]["claimer_pid"] == os.getpid()
        assert seg.stats_names() == ["main"]
        del slot
