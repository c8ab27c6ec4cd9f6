"""Per-operation costs of the bus: rings and the data store, from C++ and from Python.

Run: python -m pytest bench/test_bench_bus.py --benchmark-only
(not part of the test command). The C++ cases time one call of a loop in
``mxrc._core._bench`` (the GIL released inside): the cost per operation is
the reported time divided by ``batch`` (in ``extra_info``). So are the
Python cases named ``..._x1000`` (a Python ``for`` loop of 1000 calls; the
loop itself costs ~0.03 µs per call). Every ring here is private (process
memory) or a fresh segment's, with one producer and one consumer.

Groups: ring-cpp, ring-python, event-record, datastore-c, datastore-python.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from mxrc._native import _core
from mxrc.bus import DataStore, Event, Priority, Ring, Segment

bench = _core._bench
CAPACITY = 4096  # records of the benchmark rings (a full drain / fill per round)
RECORD = 256  # bytes: an mxrc_event (the event, critical and command rings)
BATCH = 100_000
EVENT = Event(
    "bench.probe",
    b"\x01" * 16,
    priority=Priority.NORMAL,
    target_id="axis-1",
    carrier=bytes(range(1, 26)),
)


def _ring() -> Ring:
    return Ring.private(CAPACITY, RECORD)


def _drain(ring: Ring) -> None:
    bench.ring_pop_n(ring.core.address, CAPACITY)


def _fill(ring: Ring) -> None:
    _drain(ring)
    bench.ring_push_n(ring.core.address, CAPACITY, RECORD)


# --------------------------------------------------------------------------- C++


@pytest.mark.benchmark(group="ring-cpp")
def test_cpp_push(benchmark) -> None:  # type: ignore[no-untyped-def]
    """SpscRing::try_push of a 256-byte record into an empty ring, 4096 per round."""
    ring = _ring()
    benchmark.extra_info["batch"] = CAPACITY
    benchmark.pedantic(
        bench.ring_push_n,
        args=(ring.core.address, CAPACITY, RECORD),
        setup=lambda: _drain(ring),
        rounds=2000,
        warmup_rounds=20,
    )


@pytest.mark.benchmark(group="ring-cpp")
def test_cpp_push_admitted(benchmark) -> None:  # type: ignore[no-untyped-def]
    """try_push_admitted(NORMAL): the path of publish_event, 4096 per round (ring 0..90 %)."""
    ring = _ring()
    n = CAPACITY * 9 // 10
    benchmark.extra_info["batch"] = n
    benchmark.pedantic(
        bench.ring_push_n,
        args=(ring.core.address, n, RECORD, int(Priority.NORMAL)),
        setup=lambda: _drain(ring),
        rounds=2000,
        warmup_rounds=20,
    )


@pytest.mark.benchmark(group="ring-cpp")
def test_cpp_pop(benchmark) -> None:  # type: ignore[no-untyped-def]
    """SpscRing::try_pop of a 256-byte record from a full ring, 4096 per round."""
    ring = _ring()
    benchmark.extra_info["batch"] = CAPACITY
    benchmark.pedantic(
        bench.ring_pop_n,
        args=(ring.core.address, CAPACITY),
        setup=lambda: _fill(ring),
        rounds=2000,
        warmup_rounds=20,
    )


@pytest.mark.parametrize("record_len", [32, 256])
@pytest.mark.benchmark(group="ring-cpp")
def test_cpp_push_pop(benchmark, record_len: int) -> None:  # type: ignore[no-untyped-def]
    """One push + one pop on one thread (batches of 64), 100 000 records per round."""
    ring = _ring()
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["record_len"] = record_len
    moved = benchmark(bench.ring_push_pop, ring.core.address, BATCH, record_len, 64)
    assert moved == BATCH


@pytest.mark.benchmark(group="ring-cpp")
def test_cpp_transfer_between_threads(benchmark) -> None:  # type: ignore[no-untyped-def]
    """100 000 records from one thread to another (producer retries when full): throughput.

    Both threads spin; on a 2-vCPU machine they take both CPUs.
    """
    ring = _ring()
    benchmark.extra_info["batch"] = BATCH
    result = benchmark.pedantic(
        bench.ring_transfer, args=(ring.core.address, BATCH, RECORD), rounds=20
    )
    benchmark.extra_info["last_round"] = result


# --------------------------------------------------------------------------- Python rings


@pytest.fixture
def segment() -> Iterator[Segment]:
    with Segment.create(f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}") as seg:
        seg.claim_stats("main")
        yield seg


@pytest.mark.benchmark(group="ring-python")
def test_python_push_x1000(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Ring.push(256 bytes) from Python (producer lock + copy), 1000 per round."""
    ring = _ring()
    rec = EVENT.to_record()
    push = ring.push

    def run() -> None:
        for _ in range(1000):
            push(rec)

    benchmark.extra_info["batch"] = 1000
    benchmark.pedantic(run, setup=lambda: _drain(ring), rounds=300, warmup_rounds=5)


@pytest.mark.benchmark(group="ring-python")
def test_python_pop_x1000(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Ring.pop() -> bytes from Python (consumer lock + copy), 1000 per round."""
    ring = _ring()
    pop = ring.pop

    def run() -> None:
        for _ in range(1000):
            pop()

    benchmark.extra_info["batch"] = 1000
    benchmark.pedantic(run, setup=lambda: _fill(ring), rounds=300, warmup_rounds=5)


@pytest.mark.benchmark(group="ring-python")
def test_python_pop_many_1000(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Ring.pop_many(1000): one lock, a list of 1000 bytes objects."""
    ring = _ring()
    benchmark.extra_info["batch"] = 1000
    benchmark.pedantic(ring.pop_many, args=(1000,), setup=lambda: _fill(ring), rounds=300)


@pytest.mark.benchmark(group="ring-python")
def test_python_segment_publish_event(benchmark, segment: Segment) -> None:  # type: ignore[no-untyped-def]
    """RingSet.publish_event(record, NORMAL) on a segment's event ring (the default 1024
    records), as many per round as NORMAL admits into an empty ring (< 90 %)."""
    rings = segment.rings("main")
    assert rings is not None
    n = rings.event.capacity * 9 // 10
    rec = EVENT.to_record()
    publish = rings.publish_event
    address = rings.event.core.address

    def run() -> None:
        for _ in range(n):
            publish(rec, 2)

    def empty() -> None:
        bench.ring_pop_n(address, n)

    benchmark.extra_info["batch"] = n
    benchmark.pedantic(run, setup=empty, rounds=300, warmup_rounds=5)
    assert rings.event.counters().dropped == 0


@pytest.mark.benchmark(group="ring-python")
def test_python_publish_event_object_x1000(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Event(...) + to_record() + Ring.push: what a Python producer pays per event."""
    ring = _ring()
    push = ring.push
    carrier = bytes(range(1, 26))

    def run() -> None:
        for i in range(1000):
            push(Event("bench.probe", {"i": i}, target_id="axis-1", carrier=carrier).to_record())

    benchmark.extra_info["batch"] = 1000
    benchmark.pedantic(run, setup=lambda: _drain(ring), rounds=100, warmup_rounds=2)


# --------------------------------------------------------------------------- records


@pytest.mark.benchmark(group="event-record")
def test_event_to_record(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Event.to_record(): the 256-byte mxrc_event (struct.pack)."""
    benchmark(EVENT.to_record)


@pytest.mark.benchmark(group="event-record")
def test_event_from_record(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Event.from_record(): decode and validate a 256-byte record."""
    rec = EVENT.to_record()
    benchmark(Event.from_record, rec)


@pytest.mark.benchmark(group="event-record")
def test_event_json_payload(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Event(type, dict payload): JSON-encode and validate (no record)."""
    payload = {"id": "axis-1", "from": "RUNNING", "to": "SAFE_MODE", "trigger": "agent"}
    benchmark(Event, "rt.state_changed", payload)


# --------------------------------------------------------------------------- data store


@pytest.fixture(scope="module")
def store() -> DataStore:
    ds = DataStore.private(max_slots=16, arena_bytes=8192)
    ds.define("f", float)
    ds.define("i", int)
    ds.define("flag", bool)
    ds.define("name", str, 24)
    ds.define("arr", "f64array", 64)
    ds.write("f", 1.5)
    ds.write("i", 7)
    ds.write("flag", True)
    ds.write("name", "axis-1")
    ds.write("arr", np.arange(64, dtype=np.float64))
    return ds


@pytest.mark.parametrize(
    ("op", "slot"),
    [
        ("read_f64", "f"),
        ("write_f64", "f"),
        ("read_i64", "i"),
        ("write_i64", "i"),
        ("read", "arr"),
        ("write", "arr"),
    ],
)
@pytest.mark.benchmark(group="datastore-c")
def test_c_table(benchmark, store: DataStore, op: str, slot: str) -> None:  # type: ignore[no-untyped-def]
    """The ds_c function behind the C table's ds_<op> (what a native body calls), 100 000
    calls per round; read/write of "arr" move its 64 float64 (512 bytes)."""
    index = store.info(slot).index
    benchmark.extra_info["batch"] = BATCH
    failed = benchmark(bench.ds_loop, store.address, index, BATCH, op)
    assert failed == 0


@pytest.mark.benchmark(group="datastore-c")
def test_c_read_f64_through_binding(benchmark, store: DataStore) -> None:  # type: ignore[no-untyped-def]
    """_core.datastore.c_read_f64: one ds_c call plus the pybind11 call (reference)."""
    core = store._core_store
    index = store.info("f").index
    benchmark(_core.datastore.c_read_f64, core, index)


@pytest.mark.parametrize("slot", ["f", "i", "flag", "name", "arr"])
@pytest.mark.benchmark(group="datastore-python")
def test_python_read(benchmark, store: DataStore, slot: str) -> None:  # type: ignore[no-untyped-def]
    """DataStore.read(name): lookup + copy out (arr: a new numpy array of 64 float64)."""
    benchmark(store.read, slot)


@pytest.mark.parametrize(
    ("slot", "value"),
    [
        ("f", 2.5),
        ("i", 11),
        ("flag", False),
        ("name", "axis-2"),
        ("arr", np.ones(64)),
    ],
    ids=["f", "i", "flag", "name", "arr"],
)
@pytest.mark.benchmark(group="datastore-python")
def test_python_write(benchmark, store: DataStore, slot: str, value: object) -> None:  # type: ignore[no-untyped-def]
    """DataStore.write(name, value): lookup, type check, seqlock write."""
    benchmark(store.write, slot, value)


@pytest.mark.benchmark(group="datastore-python")
def test_python_getitem(benchmark, store: DataStore) -> None:  # type: ignore[no-untyped-def]
    """ds["f"] (same as read)."""
    benchmark(store.__getitem__, "f")


@pytest.mark.benchmark(group="datastore-python")
def test_python_write_scope(benchmark, store: DataStore) -> None:  # type: ignore[no-untyped-def]
    """with ds.write_scope("arr") as a: a[:] = 3.0 (zero-copy view, 64 elements)."""

    def run() -> None:
        with store.write_scope("arr") as a:
            a[:] = 3.0

    benchmark(run)


@pytest.mark.benchmark(group="datastore-python")
def test_python_version(benchmark, store: DataStore) -> None:  # type: ignore[no-untyped-def]
    """ds.version("f")."""
    benchmark(store.version, "f")
