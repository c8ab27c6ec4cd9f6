"""The data store: typed slots with versions, tear-free under concurrent writers and readers."""

from __future__ import annotations

import errno
import logging
import math
import mmap
import os
import re
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import child_ready, run_child, spawn_python

from mxrc import get_include
from mxrc._native import _core
from mxrc.bus import (
    ChangeToken,
    DataStore,
    DataStoreBusyError,
    DataStoreFormatError,
    DefinitionError,
    DsKind,
    Segment,
    SlotValueError,
    SnapshotResult,
    SnapshotTimeoutError,
    TornReadError,
    UnknownSlotError,
)
from mxrc.errors import MxrcError, SegmentError

ds_core = _core.datastore


def _store(**kw: int) -> DataStore:
    return DataStore.private(max_slots=kw.get("max_slots", 16), arena_bytes=kw.get("arena", 4096))


@pytest.fixture
def shm_file() -> Iterator[Path]:
    """A /dev/shm file for a data store shared between processes."""
    path = Path(f"/dev/shm/mxrc-test-ds-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.write_bytes(bytes(DataStore.region_bytes(16, 4096)))
    yield path
    path.unlink(missing_ok=True)


def _map(path: Path) -> mmap.mmap:
    with path.open("r+b") as f:
        return mmap.mmap(f.fileno(), 0)


# --- the format and the C header ---


def test_kinds_match_mxrc_h() -> None:
    header = (Path(get_include()) / "mxrc.h").read_text()
    defined = {m[1]: int(m[2]) for m in re.finditer(r"#define MXRC_DS_(\w+) (\d+)", header)}
    assert defined == {k.name: k.value for k in DsKind}
    assert [k.value for k in DsKind] == [
        ds_core.INT64,
        ds_core.FLOAT64,
        ds_core.BOOL,
        ds_core.STRING,
        ds_core.F64ARRAY,
    ]
    assert ds_core.HEADER_SIZE == 256 and ds_core.SLOT_SIZE == 64
    assert ds_core.MAGIC.to_bytes(8, "little") == b"MXRCDS01"


def test_region_size_and_arena_round_trip() -> None:
    for slots, arena in ((1, 8), (16, 4096), (256, 65536), (4096, 1 << 20)):
        size = DataStore.region_bytes(slots, arena)
        assert size % 64 == 0
        fits = DataStore.arena_bytes_for(size, slots)  # >= arena: the padding is used too
        assert arena <= fits < arena + 64
        assert DataStore.region_bytes(slots, fits) <= size
        assert DataStore.arena_bytes_for(size - 64, slots) < arena
    assert DataStore.region_bytes(4, 1) == DataStore.region_bytes(4, 8)  # whole words
    assert DataStore.arena_bytes_for(100, 4) == 0
    with pytest.raises(ValueError, match=r"max_slots must be 1\.\.4096, got 0"):
        DataStore.region_bytes(0, 64)
    with pytest.raises(ValueError, match="arena_bytes"):
        DataStore.region_bytes(4, 0)


def test_a_fresh_store_is_empty() -> None:
    ds = _store()
    assert len(ds) == 0 and ds.names() == [] and ds.max_slots == 16
    s = ds.stats()
    assert s["slot_count"] == 0 and s["arena_bytes"] == 4096 and s["arena_used_bytes"] == 0
    assert ds.change_counter == 0
    assert repr(ds) == "<DataStore 0/16 slots, 0/4096 bytes used>"


# --- definitions ---


def test_define_initial_values_and_idempotence() -> None:
    ds = _store()
    assert ds.define("n", "int64") == ds.info("n")
    ds.define("x", float)
    ds.define("flag", DsKind.BOOL)
    ds.define("label", str, 8)
    pos = ds.define("axis0.pos", "f64array", 3)
    assert (pos.index, pos.kind, pos.capacity) == (4, DsKind.F64ARRAY, 3)
    assert ds.names() == ["n", "x", "flag", "label", "axis0.pos"]
    assert "x" in ds and "y" not in ds and 3 not in ds
    assert list(ds) == ds.names() and len(ds) == 5
    values = ds.read_all()
    assert values["n"] == 0 and values["x"] == 0.0 and values["flag"] is False
    assert values["label"] == ""
    assert np.array_equal(values["axis0.pos"], np.zeros(3))  # arrays start at full capacity
    assert all(ds.version(n) == 0 for n in ds)
    # the same definition again: the same slot
    assert ds.define("axis0.pos", DsKind.F64ARRAY, 3).index == 4
    assert ds.define("x", "float64", 1).index == 1
    assert len(ds) == 5
    assert ds.stats()["arena_used_bytes"] == 8 * (1 + 1 + 1 + 1 + 3)


def test_conflicting_and_invalid_definitions() -> None:
    ds = _store()
    ds.define("pos", "f64array", 3)
    with pytest.raises(
        DefinitionError,
        match=r"'pos' is already defined as f64array\[3\] \(index 0\); cannot redefine it "
        r"as f64array\[4\]",
    ):
        ds.define("pos", "f64array", 4)
    with pytest.raises(DefinitionError, match=r"already defined as f64array\[3\].*as int64"):
        ds.define("pos", int)
    with pytest.raises(DefinitionError, match=r"1\.\.31 bytes, got 32"):
        ds.define("p" * 32, int)
    with pytest.raises(DefinitionError, match=r"1\.\.31 bytes, got 0"):
        ds.define("", int)
    for bad in ("has space", "tab\t", "pös"):
        with pytest.raises(DefinitionError, match="printable ASCII without spaces"):
            ds.define(bad, int)
    with pytest.raises(DefinitionError, match="needs a capacity"):
        ds.define("s", str)
    with pytest.raises(DefinitionError, match="needs a capacity"):
        ds.define("s", str, 0)
    with pytest.raises(DefinitionError, match="holds one value"):
        ds.define("i", int, 2)
    with pytest.raises(DefinitionError, match="unknown data store kind 'complex'"):
        ds.define("c", "complex")
    with pytest.raises(DefinitionError, match="capacity must be an int"):
        ds.define("a", "array", 2.5)  # type: ignore[arg-type]
    assert issubclass(DefinitionError, ValueError) and issubclass(DefinitionError, MxrcError)
    assert ds.names() == ["pos"]


def test_full_table_and_full_arena() -> None:
    ds = _store(max_slots=2, arena=64)
    ds.define("a", "f64array", 6)
    with pytest.raises(
        DefinitionError,
        match=r"arena is full: 'b' \(f64array\[3\]\) needs 24 bytes, 16 of 64 are free "
        r"\(raise rt.bus.datastore_bytes\)",
    ):
        ds.define("b", "array", 3)
    ds.define("b", "array", 2)
    with pytest.raises(DefinitionError, match=r"all 2 slots are defined; cannot define 'c'"):
        ds.define("c", int)


# --- values ---


def test_scalar_and_string_values_round_trip() -> None:
    ds = _store()
    for name, kind, cap in (("n", int, None), ("x", float, None), ("b", bool, None)):
        ds.define(name, kind, cap)
    ds.define("s", str, 6)
    for v in (1, -1, 2**63 - 1, -(2**63), np.int32(7)):
        ds["n"] = v
        assert ds["n"] == int(v) and type(ds["n"]) is int
    for x in (1.5, -0.0, math.inf, 3, np.float32(0.25)):
        ds["x"] = x
        assert ds["x"] == float(x)
    ds["x"] = -0.0
    assert math.copysign(1.0, ds.read("x")) == -1.0  # type: ignore[arg-type]
    ds["x"] = math.nan
    assert math.isnan(ds.read("x"))  # type: ignore[arg-type]
    ds["b"] = True
    assert ds["b"] is True
    ds["b"] = np.bool_(False)
    assert ds["b"] is False
    ds["s"] = "héllo"  # 6 bytes of UTF-8
    assert ds["s"] == "héllo"
    ds["s"] = ""
    assert ds["s"] == ""
    assert ds.version("n") == 2 * 5 and ds.version("s") == 4
    assert ds.read_versioned("s") == ("", 4)


def test_wrong_values_are_refused_clearly() -> None:
    ds = _store()
    ds.define("n", int)
    ds.define("x", float)
    ds.define("b", bool)
    ds.define("s", str, 4)
    ds.define("a", "f64array", 2)
    cases: list[tuple[str, object, str]] = [
        ("n", 1.5, r"'n' \(int64\) takes an int, got float 1.5"),
        ("n", True, r"takes an int, got bool"),
        ("n", 2**63, "out of range"),
        ("x", "1", r"'x' \(float64\) takes a real number, got str"),
        ("x", True, "takes a real number"),
        ("b", 1, r"'b' \(bool\) takes a bool, got int"),
        ("s", b"ab", r"takes a str, got bytes"),
        ("s", "abcde", "holds at most 4 bytes of UTF-8; got 5"),
        ("s", "éé£", "at most 4 bytes"),
        ("a", [1.0, 2.0, 3.0], "holds at most 2 float64s; got 3"),
        ("a", [[1.0]], r"expected a 1-D array, got shape \(1, 1\)"),
        ("a", "12", "takes a 1-D sequence of floats"),
        ("a", ["x"], "cannot convert the value to float64"),
    ]
    for name, value, message in cases:
        with pytest.raises(SlotValueError, match=message):
            ds.write(name, value)
    assert all(ds.version(n) == 0 for n in ds)  # nothing was written
    with pytest.raises(UnknownSlotError, match=r"no data store slot named 'nope'; defined: n, x"):
        ds.read("nope")
    with pytest.raises(KeyError):
        ds["nope"] = 1


def test_arrays_carry_their_length() -> None:
    ds = _store()
    ds.define("a", "f64array", 5)
    ds["a"] = [1, 2, 3]
    got = ds["a"]
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert got.tolist() == [1.0, 2.0, 3.0]
    got[0] = 99  # a copy
    assert ds.read("a")[0] == 1.0  # type: ignore[index]
    ds["a"] = np.arange(5.0)
    assert ds["a"].tolist() == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    ds["a"] = []
    assert ds["a"].size == 0  # type: ignore[union-attr]
    ds["a"] = np.arange(10.0)[::2]  # non-contiguous input is copied
    out = np.full(3, -1.0)
    assert ds.read_into("a", out) == 5  # truncated to out.size
    assert out.tolist() == [0, 2, 4]
    out7 = np.full(7, -1.0)
    assert ds.read_into("a", out7) == 5
    assert out7.tolist() == [0, 2, 4, 6, 8, -1, -1]
    with pytest.raises(SlotValueError, match="float64 numpy array"):
        ds.read_into("a", np.zeros(3, dtype=np.float32))  # type: ignore[arg-type]


# --- write scopes (zero-copy) ---


def test_write_scope_is_zero_copy_and_publishes_on_exit() -> None:
    ds = _store()
    ds.define("pos", "f64array", 4)
    ds.define("x", float)
    ds["pos"] = [1, 2]
    v0 = ds.version("pos")
    with ds.write_scope("pos") as arr:
        assert arr.shape == (2,)  # the current length
        assert ds.version("pos") == v0 + 1  # odd: held
        arr[:] += 10
    assert ds.version("pos") == v0 + 2
    assert ds["pos"].tolist() == [11, 12]  # type: ignore[union-attr]
    assert not arr.flags.writeable  # the view is dead after the scope
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 0
    with ds.write_scope("pos", 4) as arr4:
        arr4[:] = 7
    assert ds["pos"].tolist() == [7, 7, 7, 7]  # type: ignore[union-attr]
    with ds.write_scope("x") as one:
        one[0] = 2.5
    assert ds["x"] == 2.5
    # an exception inside the scope still publishes what the view holds
    with pytest.raises(RuntimeError), ds.write_scope("pos") as arr:
        arr[0] = -1
        raise RuntimeError
    assert ds["pos"][0] == -1  # type: ignore[index]
    assert ds.version("pos") % 2 == 0
    with pytest.raises(SlotValueError, match=r"length must be 0\.\.4, got 5"):
        ds.write_scope("pos", 5).__enter__()
    ds.define("n", int)
    with pytest.raises(SlotValueError, match="needs a float64 or f64array slot, not int64"):
        ds.write_scope("n").__enter__()
    assert ds.version("pos") % 2 == 0 and ds.version("n") == 0


def test_a_held_slot_makes_others_wait_then_fail() -> None:
    ds = _store()
    ds.define("pos", "f64array", 2)
    errors: dict[str, BaseException] = {}

    def other_thread() -> None:
        for what, fn in (
            ("read", lambda: ds.read("pos", timeout=0.01)),
            ("write", lambda: ds.write("pos", [1, 2], timeout=0.01)),
        ):
            try:
                fn()
            except BaseException as exc:
                errors[what] = exc

    with ds.write_scope("pos") as arr:
        arr[:] = 5
        with pytest.raises(DataStoreBusyError, match="held by a write_scope of this thread"):
            ds.read("pos")
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert isinstance(errors["read"], TornReadError)
    assert f"a write (pid {os.getpid()}) stayed in progress" in str(errors["read"])
    assert isinstance(errors["write"], DataStoreBusyError)
    assert isinstance(errors["write"], BlockingIOError)
    assert re.search(
        r"'pos' \(index 0\) is held by another writer \(pid \d+\)", str(errors["write"])
    )
    assert ds["pos"].tolist() == [5, 5]  # type: ignore[union-attr]


def test_a_waiting_writer_gets_the_slot_when_the_scope_ends() -> None:
    ds = _store()
    ds.define("x", float)
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with ds.write_scope("x") as a:
            a[0] = 1.0
            entered.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    threading.Timer(0.05, release.set).start()
    ds.write("x", 2.0, timeout=10)  # waits (GIL released) until the holder is done
    t.join()
    assert ds["x"] == 2.0 and ds.version("x") == 4


# --- the C table's entries ---


def test_c_functions_find_read_write() -> None:
    ds = _store()
    core = ds._core_store
    for name, kind, cap in (
        ("i", int, None),
        ("f", float, None),
        ("b", bool, None),
        ("s", str, 8),
        ("a", "f64array", 3),
    ):
        ds.define(name, kind, cap)
    assert [ds_core.c_find(core, n) for n in ("i", "f", "b", "s", "a")] == [0, 1, 2, 3, 4]
    assert ds_core.c_find(core, "missing") == -errno.ENOENT
    assert ds_core.c_find(None, "i") == -errno.ENOENT  # no data store
    assert ds_core.c_find(core, "i\0x") == 0  # C sees the name up to the NUL

    assert ds_core.c_write_i64(core, 0, -42) == 0
    assert ds_core.c_read_i64(core, 0) == (0, -42)
    assert ds["i"] == -42 and ds.version("i") == 2
    assert ds_core.c_write_f64(core, 1, 0.5) == 0
    assert ds_core.c_read_f64(core, 1) == (0, 0.5)
    # typed entries check the slot's type
    assert ds_core.c_read_f64(core, 0)[0] == errno.EINVAL
    assert ds_core.c_write_i64(core, 1, 1) == errno.EINVAL
    # bad index, no store
    assert ds_core.c_read_i64(core, 99)[0] == errno.EINVAL
    assert ds_core.c_read_i64(core, -1)[0] == errno.EINVAL
    assert ds_core.c_write(core, 5, b"") == errno.EINVAL
    assert ds_core.c_read_f64(None, 1)[0] == errno.ENOENT
    assert ds_core.c_write_f64(None, 1, 1.0) == errno.ENOENT
    assert ds_core.c_read(None, 0, 8)[0] == errno.ENOENT

    # generic write: exact sizes
    assert ds_core.c_write(core, 2, b"\x05") == 0  # any non-zero byte is true
    assert ds["b"] is True
    assert ds_core.c_read(core, 2, 1) == (0, b"\x01", 1, 2)
    assert ds_core.c_write(core, 2, b"\x01\x00") == errno.EINVAL
    assert ds_core.c_write(core, 0, struct.pack("<i", 1)) == errno.EINVAL
    assert ds_core.c_write(core, 3, b"abc") == 0
    rc, data, n, version = ds_core.c_read(core, 3, 8)
    assert (rc, data, n, version) == (0, b"abc", 3, 2)
    assert ds_core.c_write(core, 3, b"123456789") == errno.EINVAL  # > capacity 8
    # arrays: 8 bytes per element, at most capacity
    assert ds_core.c_write(core, 4, struct.pack("<2d", 1.0, 2.0)) == 0
    assert ds["a"].tolist() == [1.0, 2.0]  # type: ignore[union-attr]
    assert ds_core.c_write(core, 4, b"\0" * 12) == errno.EINVAL
    assert ds_core.c_write(core, 4, b"\0" * 32) == errno.EINVAL
    # truncated copies report the full length; arrays copy whole elements
    rc, data, n, _ = ds_core.c_read(core, 4, 12)
    assert (rc, data, n) == (0, struct.pack("<d", 1.0), 16)
    rc, data, n, _ = ds_core.c_read(core, 3, 2)
    assert (rc, data, n) == (0, b"ab", 3)


def test_c_string_read_is_nul_terminated_when_room() -> None:
    ds = _store()
    ds.define("s", str, 8)
    ds["s"] = "abcdef"
    ds["s"] = "xy"
    core = ds._core_store
    # c_read returns the bytes copied (len); the byte after them is NUL in C
    rc, data, n, _ = ds_core.c_read(core, 0, 8)
    assert (rc, data, n) == (0, b"xy", 2)
    ds_core.c_write(core, 0, b"no-nul!!")  # exactly capacity: no room for a NUL
    assert ds["s"] == "no-nul!!"


def test_c_write_returns_ebusy_while_a_scope_holds_the_slot() -> None:
    ds = _store()
    ds.define("x", float)
    core = ds._core_store
    with ds.write_scope("x") as a:
        a[0] = 1.0
        assert ds_core.c_write_f64(core, 0, 2.0) == errno.EBUSY  # the RT side never waits
        assert ds_core.c_read_f64(core, 0)[0] == errno.EAGAIN  # bounded retries: torn
    assert ds_core.c_read_f64(core, 0) == (0, 1.0)
    assert ds_core.c_write_f64(core, 0, 2.0) == 0


# --- regions: open, attach, format errors ---


def test_open_formats_a_zeroed_buffer_once_and_then_attaches() -> None:
    buf = bytearray(DataStore.region_bytes(8, 256))
    a = DataStore.open(buf, max_slots=8)
    assert a.max_slots == 8 and 256 <= a.stats()["arena_bytes"] < 256 + 64
    a.define("x", float)
    a["x"] = 3.0
    b = DataStore.open(buf, max_slots=99)  # formatted already: attached, max_slots ignored
    assert b.max_slots == 8 and b["x"] == 3.0
    c = DataStore.attach(buf)
    c["x"] = 4.0
    assert a["x"] == 4.0 and a.version("x") == 4
    # a slot another view defines is found by name
    c.define("y", int)
    assert a.names() == ["x", "y"] and a["y"] == 0
    d = DataStore.format(buf, max_slots=4)  # erases
    assert d.names() == [] and a.names() == []


def test_attach_and_open_refuse_what_is_not_a_data_store() -> None:
    size = DataStore.region_bytes(4, 64)
    with pytest.raises(DataStoreFormatError, match="is not formatted yet"):
        DataStore.attach(bytearray(size))
    junk = bytearray(b"not a data store" * (size // 16))
    for fn in (DataStore.attach, DataStore.open):
        with pytest.raises(DataStoreFormatError, match=r"magic 0x.*expected 0x313053444352584d"):
            fn(junk)
    junk[:8] = bytes(8)  # no magic, but not zero-filled either
    with pytest.raises(DataStoreFormatError, match=r"neither an mxrc data store.*nor zero-filled"):
        DataStore.open(junk)
    buf = bytearray(size)
    DataStore.format(buf, max_slots=4)
    struct.pack_into("<I", buf, 8, 2)  # format_version
    with pytest.raises(
        DataStoreFormatError, match="format version 2; this mxrc reads version 1"
    ) as info:
        DataStore.attach(buf)
    assert isinstance(info.value, SegmentError)
    struct.pack_into("<I", buf, 8, 1)
    struct.pack_into("<Q", buf, 32, 1 << 40)  # arena_words
    with pytest.raises(DataStoreFormatError, match="corrupt header"):
        DataStore.attach(buf)
    with pytest.raises(DataStoreFormatError, match="is too small for 4 slots"):
        DataStore.format(bytearray(300), max_slots=4)
    with pytest.raises(DataStoreFormatError, match="smaller than a data store header"):
        DataStore.attach(bytearray(100))
    ok = bytearray(size + 8)
    with pytest.raises(DataStoreFormatError, match="not 8-byte aligned"):
        DataStore.format(memoryview(ok)[1 : size + 1], max_slots=4)
    with pytest.raises(BufferError, match="not writable"):
        DataStore.open(b"read-only bytes")


def test_a_store_over_raw_memory_keeps_its_owner_alive() -> None:
    owner = np.zeros(DataStore.region_bytes(4, 64) // 8, dtype=np.uint64)
    core = ds_core.DataStore.from_address(owner.ctypes.data, owner.nbytes, owner, "open", 4)
    ds = DataStore(core)
    del owner  # the store holds it
    ds.define("x", float)
    ds["x"] = 1.0
    again = DataStore(
        ds_core.DataStore.from_address(core.region_address, core.region_size, core, "attach")
    )
    assert again["x"] == 1.0 and ds.address != again.address != 0
    with pytest.raises(ValueError, match="mode must be 'open', 'format' or 'attach'"):
        ds_core.DataStore.from_address(core.region_address, core.region_size, core, "reuse")
    with pytest.raises(ValueError, match=r"max_slots must be 1\.\.4096"):
        DataStore.private(max_slots=0)


def test_attach_refuses_a_region_smaller_than_its_format() -> None:
    buf = bytearray(DataStore.region_bytes(4, 1024))
    DataStore.format(buf, max_slots=4)
    with pytest.raises(DataStoreFormatError, match="smaller than the data store formatted in it"):
        DataStore.attach(memoryview(buf)[:2048])


# --- concurrency: never torn ---


def test_rt_writer_and_concurrent_readers_never_see_a_torn_array() -> None:
    ds = _store()
    ds.define("arr", "f64array", 64)
    core = ds._core_store
    # a C++ "cycle thread" writing back to back: cycle k sets all 64 elements to k
    writer = ds_core._start_test_cycle(core, [0], 300_000)
    result = ds_core._check_reads(core, 0, reads=50_000)
    for _ in range(1000):
        a = ds.read("arr", timeout=1.0)
        assert isinstance(a, np.ndarray) and a.size == 64
        assert (a == a[0]).all()
    writer.join()
    assert result["inconsistent"] == 0
    assert result["version_mismatch"] == 0  # version == 2 * value: one write per cycle
    assert result["regressions"] == 0
    assert result["ok"] + result["torn"] == 50_000 and result["ok"] > 0
    assert writer.counters()["busy"] == 0
    assert ds["arr"].tolist() == [300_000.0] * 64  # type: ignore[union-attr]
    assert ds.version("arr") == 600_000


def test_python_and_rt_writers_share_a_slot_without_tearing() -> None:
    ds = _store()
    ds.define("arr", "f64array", 32)
    core = ds._core_store
    writer = ds_core._start_test_cycle(core, [0], 200_000)
    stop = threading.Event()
    written = [0]

    def python_writer() -> None:
        k = 0
        while True:
            k += 1
            ds.write("arr", np.full(32, -float(k)), timeout=1.0)
            if stop.is_set():
                break
        written[0] = k

    t = threading.Thread(target=python_writer)
    t.start()
    result = ds_core._check_reads(core, 0, reads=50_000, single_writer=False)
    writer.join()
    stop.set()
    t.join()
    assert result["inconsistent"] == 0
    assert result["ok"] > 0
    assert written[0] > 0
    final = ds["arr"]
    assert isinstance(final, np.ndarray) and (final == final[0]).all()
    # every completed write, from either side, counted 2 in the version
    assert ds.version("arr") == 2 * (200_000 - writer.counters()["busy"] + written[0])


def test_two_processes_through_a_dev_shm_file(shm_file: Path) -> None:
    mm = _map(shm_file)
    ds = DataStore.open(mm, max_slots=16)
    ds.define("arr", "f64array", 48)
    ds.define("n", int)
    n = 300_000
    child = spawn_python(
        f"""
        import json, mmap, sys
        from mxrc._native import _core
        from mxrc.bus import DataStore
        with open({str(shm_file)!r}, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        ds = DataStore.attach(mm)
        idx = [ds.info("arr").index, ds.info("n").index]
        sys.stdin.readline()
        w = _core.datastore._start_test_cycle(ds._core_store, idx, {n})
        print(json.dumps({{"pid": __import__("os").getpid()}}), flush=True)
        w.join()
        print(json.dumps(w.counters()), flush=True)
        """
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        child_ready(child)
        result = ds_core._check_reads(ds._core_store, 0, reads=100_000)
        seen = []
        for _ in range(2000):
            a = ds.read("arr", timeout=1.0)
            assert isinstance(a, np.ndarray) and (a == a[0]).all()
            seen.append(float(a[0]))
        counters = child_ready(child)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)
    assert result["inconsistent"] == 0 and result["version_mismatch"] == 0
    assert result["regressions"] == 0
    assert seen == sorted(seen)
    assert counters["cycles"] == n and counters["busy"] == 0
    assert ds["n"] == n and ds.version("arr") == 2 * n
    assert ds["arr"].tolist() == [float(n)] * 48  # type: ignore[union-attr]
    # the writer's pid is recorded in the slot
    assert ds._core_store.info(0)["writer_pid"] != os.getpid()


def test_processes_opening_the_same_zeroed_file_agree_on_one_format(shm_file: Path) -> None:
    code = f"""
        import json, mmap, sys
        from mxrc.bus import DataStore
        with open({str(shm_file)!r}, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        sys.stdin.readline()
        ds = DataStore.open(mm, max_slots=16)
        me = "p" + str(__import__("os").getpid())
        ds.define(me, int)
        ds[me] = 1
        ds.define("shared", "f64array", 4)
        print(json.dumps({{"name": me}}), flush=True)
        """
    children = [spawn_python(code) for _ in range(4)]
    try:
        for c in children:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        names = [child_ready(c)["name"] for c in children]
        for c in children:
            assert c.wait(timeout=60) == 0
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
            c.communicate(timeout=10)
    ds = DataStore.attach(_map(shm_file))
    assert sorted(ds.names()) == sorted([*names, "shared"])
    assert all(ds[n] == 1 for n in names)


# --- change notification ---


def test_changed_since_reports_each_write_once() -> None:
    ds = _store()
    ds.define("a", int)
    ds.define("b", float)
    names, token = ds.changed_since()
    assert names == [] and isinstance(token, ChangeToken)
    assert ds.changed_since(token) == ([], token)  # nothing new: the same token
    ds["a"] = 1
    names, token = ds.changed_since(token)
    assert names == ["a"]
    ds["a"] = 2
    ds["b"] = 1.0
    ds.define("c", str, 4)  # defined, never written: not a change
    names, token = ds.changed_since(token)
    assert names == ["a", "b"]
    with ds.write_scope("b") as v:  # in progress: reported once completed
        v[0] = 2.0
        mid, token = ds.changed_since(token)
        assert mid == []
    names, token = ds.changed_since(token)
    assert names == ["b"]
    ds["c"] = "x"
    assert ds.changed_since(token)[0] == ["c"]
    assert ds.changed_since()[0] == ["a", "b", "c"]


def test_watch_calls_back_from_a_daemon_thread(caplog: pytest.LogCaptureFixture) -> None:
    ds = _store()
    ds.define("a", int)
    ds.define("b", int)
    calls: list[tuple[list[str], str]] = []
    got = threading.Event()

    def cb(names: list[str]) -> None:
        calls.append((names, threading.current_thread().name))
        got.set()
        if names == ["b"]:
            raise RuntimeError("callback bug")

    with ds.watch(cb, interval_s=0.005) as w:
        assert w.running
        ds["a"] = 1
        assert got.wait(10)
        got.clear()
        with caplog.at_level(logging.ERROR, logger="mxrc.bus.datastore"):
            ds["b"] = 1
            assert got.wait(10)
            got.clear()
            ds["a"] = 2
            assert got.wait(10)  # the watcher survived the raising callback
    assert not w.running
    assert [c[0] for c in calls] == [["a"], ["b"], ["a"]]
    assert {c[1] for c in calls} == {"mxrc-datastore-watch"}
    assert w.errors == 1 and w.notifications == 3
    assert "data store watch callback failed for ['b']" in caplog.text
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        ds.watch(cb, interval_s=0)


# --- snapshots at a cycle boundary ---


def test_snapshot_serviced_by_a_python_cycle_thread() -> None:
    ds = _store()
    for name, kind, cap in (("k", int, None), ("x", float, None), ("v", "f64array", 8)):
        ds.define(name, kind, cap)
    ds.define("label", str, 12)
    assert ds.service_snapshot(0) is SnapshotResult.IDLE  # nothing requested
    assert ds.last_snapshot() is None
    stop = threading.Event()
    cycles = [0]

    def cycle_thread() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            ds["k"] = k
            ds["x"] = float(k)
            ds["v"] = np.full(8, float(k))
            ds["label"] = f"cycle {k}"
            ds.service_snapshot(k)  # the cycle boundary
        cycles[0] = k

    t = threading.Thread(target=cycle_thread)
    t.start()
    try:
        snaps = [ds.snapshot(timeout=10) for _ in range(20)]
    finally:
        stop.set()
        t.join()
    tokens = [s.token for s in snaps]
    assert tokens == sorted(tokens) and len(set(tokens)) == 20
    for s in snaps:
        k = s.cycle
        assert s.values["k"] == k and s.values["x"] == float(k)
        assert s.values["v"].tolist() == [float(k)] * 8  # type: ignore[union-attr]
        assert s.values["label"] == f"cycle {k}"
        assert s.versions == {"k": 2 * k, "x": 2 * k, "v": 2 * k, "label": 2 * k}
        assert s.torn == () and s.taken_ns > 0
    assert [s.cycle for s in snaps] == sorted(s.cycle for s in snaps)
    last = ds.last_snapshot()
    assert last is not None and last.token == snaps[-1].token
    assert ds.stats()["snapshots_taken"] == 20


def test_snapshots_of_a_full_speed_rt_cycle_are_consistent() -> None:
    ds = _store(arena=8192)
    ds.define("i", int)
    ds.define("f", float)
    ds.define("arr", "f64array", 256)
    ds.define("s", str, 16)
    n = 2_000_000
    writer = ds_core._start_test_cycle(ds._core_store, [0, 1, 2, 3], n)
    snaps = []
    while len(snaps) < 100 and not writer.done:
        token = ds.request_snapshot()
        while not writer.done:
            try:
                snaps.append(ds.read_snapshot(token, timeout=0.05))
                break
            except SnapshotTimeoutError:
                pass  # the writer finished before the boundary: taken below
    writer.join()
    if ds.stats()["snapshot_done"] < ds.stats()["snapshot_request"]:
        assert ds.service_snapshot(n) is SnapshotResult.TAKEN  # the loop's last boundary
        snaps.append(ds.read_snapshot())
    for s in snaps:
        k = s.cycle
        assert s.values["i"] == k and s.values["f"] == float(k)
        assert s.values["s"] == str(k)
        arr = s.values["arr"]
        assert isinstance(arr, np.ndarray) and arr.size == 256 and (arr == k).all()
        assert set(s.versions.values()) == {2 * k}
    assert writer.counters()["postponed"] == 0  # a single writer never postpones


def test_snapshot_without_a_cycle_thread_times_out() -> None:
    ds = _store()
    ds.define("a", int)
    with pytest.raises(SnapshotTimeoutError, match=r"request 1 was not serviced within 0\.05 s"):
        ds.snapshot(timeout=0.05)
    assert isinstance(SnapshotTimeoutError("x"), TimeoutError)
    # serviced later, the old request is answered
    assert ds.service_snapshot(7, now_ns=123) is SnapshotResult.TAKEN
    s = ds.read_snapshot(1, timeout=0)
    assert (s.token, s.cycle, s.taken_ns, s.values) == (1, 7, 123, {"a": 0})


def test_snapshot_is_postponed_while_a_slot_is_written_then_forced() -> None:
    ds = _store()
    ds.define("a", int)
    ds.define("arr", "f64array", 2)
    ds["a"] = 5
    token = ds.request_snapshot()
    with ds.write_scope("arr") as v:
        v[:] = 1
        results = [ds.service_snapshot(0)]
        with pytest.raises(SnapshotTimeoutError):
            ds.read_snapshot(token, timeout=0)
        results += [ds.service_snapshot(k) for k in range(1, ds_core.SNAPSHOT_MAX_POSTPONE + 1)]
    assert results[:-1] == [SnapshotResult.POSTPONED] * ds_core.SNAPSHOT_MAX_POSTPONE
    assert results[-1] is SnapshotResult.TAKEN  # forced: the held slot is reported torn
    s = ds.read_snapshot(token)
    assert s.cycle == ds_core.SNAPSHOT_MAX_POSTPONE
    assert s.values == {"a": 5, "arr": None} and s.torn == ("arr",)
    assert s.versions["arr"] % 2 == 1
    # the next one is complete again
    t2 = ds.request_snapshot()
    assert ds.service_snapshot(100) is SnapshotResult.TAKEN
    s2 = ds.read_snapshot(t2)
    assert s2.torn == () and s2.values["arr"].tolist() == [1, 1]  # type: ignore[union-attr]


# --- a writer that dies mid-write ---


def test_repair_releases_a_slot_held_by_a_dead_process(shm_file: Path) -> None:
    ds = DataStore.open(_map(shm_file), max_slots=16)
    ds.define("arr", "f64array", 4)
    ds.define("ok", int)
    ds["arr"] = [1, 2, 3, 4]
    result = run_child(
        f"""
        import json, mmap, os
        from mxrc.bus import DataStore
        with open({str(shm_file)!r}, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        ds = DataStore.attach(mm)
        print(json.dumps({{"pid": os.getpid()}}), flush=True)
        scope = ds.write_scope("arr")
        arr = scope.__enter__()
        arr[0] = -1
        os._exit(0)  # dies holding the slot
        """
    )
    assert ds.version("arr") % 2 == 1
    with pytest.raises(TornReadError, match=rf"a write \(pid {result['pid']}\) stayed in progress"):
        ds.read("arr", timeout=0.01)
    with pytest.raises(DataStoreBusyError, match=f"pid {result['pid']}"):
        ds.write("arr", [0.0], timeout=0.01)
    assert ds.repair(grace_s=0.05) == ["arr"]
    assert ds.version("arr") % 2 == 0
    assert ds["arr"].tolist() == [-1, 2, 3, 4]  # type: ignore[union-attr]
    ds["arr"] = [0.0]
    assert ds["arr"].tolist() == [0.0]  # type: ignore[union-attr]
    assert ds.repair(grace_s=0.0) == []  # nothing left to repair


def test_repair_leaves_live_writers_alone() -> None:
    ds = _store()
    ds.define("x", float)
    with ds.write_scope("x"):
        assert ds.repair(grace_s=0.01) == []  # held by this (live) process
        assert ds.version("x") % 2 == 1
    assert ds.version("x") == 2


# --- the segment's region ---


def test_data_store_in_an_instance_segment() -> None:
    instance = f"test-ds-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with Segment.create(instance, datastore_slots=32, datastore_bytes=4096) as seg:
        ds = DataStore.from_segment(seg)
        assert ds.max_slots == 32 and 4096 <= ds.stats()["arena_bytes"] < 4096 + 64
        ds.define("setpoint", float)
        ds["setpoint"] = 1.25
        got = run_child(
            f"""
            import json
            from mxrc.bus import DataStore, Segment
            with Segment.attach({instance!r}) as seg:
                ds = DataStore.from_segment(seg)
                value = ds["setpoint"]
                ds.define("ack", int)
                ds["ack"] = 7
            print(json.dumps({{"value": value, "names": ds.names()}}))
            """
        )
        assert got == {"value": 1.25, "names": ["setpoint", "ack"]}
        assert ds["ack"] == 7
    with (
        Segment.create(instance, datastore_bytes=0) as seg,
        pytest.raises(SegmentError, match="without a data store"),
    ):
        DataStore.from_segment(seg)
