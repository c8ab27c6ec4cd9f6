"""Events and the EventBus: the mxrc_event record, admission, dispatch, observers, transports,
trace-context carriers and the mxrc_bus_* metrics."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import require_tool, run_python
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mxrc
from mxrc import tracecontext as tc
from mxrc.bus import (
    BusObserver,
    Event,
    EventBus,
    EventError,
    InMemoryTransport,
    Priority,
    Transport,
)
from mxrc.bus import _events as ev
from mxrc.metrics import BusCollector

HEADER = Path(mxrc.get_include()) / "mxrc.h"


def _header_defines() -> dict[str, int]:
    text = HEADER.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define (MXRC_\w+) (\d+)u?\b", text)}


def _trace_carrier(flags: int = 1) -> bytes:
    return bytes(range(1, 17)) + bytes(range(17, 25)) + bytes((flags,))


@pytest.fixture
def bus() -> Iterator[EventBus]:
    """A started bus without trace context hooks (tests that want them build their own)."""
    b = EventBus(name="test", carrier_provider=None, dispatch_context=None).start()
    yield b
    assert b.close(timeout=10)


# ---------------------------------------------------------------- the record vs mxrc.h


class CEvent(ctypes.Structure):
    """mxrc_event transcribed field by field: ctypes applies the C alignment rules."""

    _fields_ = (
        ("id", ctypes.c_uint64),
        ("timestamp_ns", ctypes.c_int64),
        ("priority", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("payload_len", ctypes.c_uint16),
        ("reserved", ctypes.c_uint32),
        ("type", ctypes.c_char * 32),
        ("target_id", ctypes.c_char * 32),
        ("carrier", ctypes.c_uint8 * 25),
        ("carrier_pad", ctypes.c_uint8 * 7),
        ("payload", ctypes.c_uint8 * 136),
    )


def test_header_constants_match() -> None:
    d = _header_defines()
    assert d["MXRC_ABI_VERSION"] >= 3
    assert {p.name: p.value for p in Priority} == {
        "CRITICAL": d["MXRC_PRIO_CRITICAL"],
        "HIGH": d["MXRC_PRIO_HIGH"],
        "NORMAL": d["MXRC_PRIO_NORMAL"],
        "LOW": d["MXRC_PRIO_LOW"],
    }
    ours = (ev.TYPE_MAX, ev.TARGET_MAX, ev.PAYLOAD_MAX, ev.CARRIER_SIZE, tc.CARRIER_SIZE)
    assert ours == (
        d["MXRC_EVENT_TYPE_MAX"],
        d["MXRC_EVENT_TARGET_MAX"],
        d["MXRC_EVENT_PAYLOAD_MAX"],
        d["MXRC_CARRIER_SIZE"],
        d["MXRC_CARRIER_SIZE"],
    )


def test_struct_header_fields_are_transcribed() -> None:
    """The struct in mxrc.h has exactly the members CEvent and the codec use, in order."""
    text = HEADER.read_text()
    body = re.search(r"typedef struct mxrc_event \{(.*?)\} mxrc_event;", text, re.S)
    assert body is not None
    names = re.findall(r"(\w+)(?:\[\w+\])?;", re.sub(r"/\*.*?\*/", "", body[1], flags=re.S))
    assert names == [f[0] for f in CEvent._fields_] == list(ev.EVENT_DTYPE.names or ())


def test_record_layout_matches_ctypes() -> None:
    assert ctypes.sizeof(CEvent) == ev.RECORD_SIZE == ev.EVENT_DTYPE.itemsize == 256
    fields = ev.EVENT_DTYPE.fields
    assert fields is not None
    for name, _ in CEvent._fields_:
        assert getattr(CEvent, name).offset == fields[name][1], name


def test_record_layout_matches_the_c_compiler(tmp_path: Path) -> None:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc)")
    members = [f[0] for f in CEvent._fields_]
    src = tmp_path / "layout.c"
    src.write_text(
        '#include <stdio.h>\n#include "mxrc.h"\nint main(void) {\n'
        '  printf("size %zu\\n", sizeof(mxrc_event));\n'
        + "".join(
            f'  printf("{m} %zu %zu\\n", offsetof(mxrc_event, {m}), '
            f"sizeof(((mxrc_event*)0)->{m}));\n"
            for m in members
        )
        + "  return 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", mxrc.get_include(), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {ln.split()[0]: [int(x) for x in ln.split()[1:]] for ln in out.splitlines()}
    assert got.pop("size") == [256]
    fields = ev.EVENT_DTYPE.fields
    assert fields is not None
    for m in members:
        offset, size = got[m]
        assert fields[m][1] == offset, m
        assert fields[m][0].itemsize == size, m


def test_record_bytes_land_where_c_reads_them() -> None:
    e = Event(
        "axis.moved",
        b"\x01\x02\x03",
        priority=Priority.LOW,
        target_id="axis-7",
        id=0x1122334455667788,
        timestamp_ns=-5,
        carrier=_trace_carrier(0x03),
    )
    c = CEvent.from_buffer_copy(e.to_record())
    assert (c.id, c.timestamp_ns, c.priority, c.flags, c.payload_len, c.reserved) == (
        0x1122334455667788,
        -5,
        3,
        0,
        3,
        0,
    )
    assert c.type == b"axis.moved"
    assert c.target_id == b"axis-7"
    assert bytes(c.carrier) == _trace_carrier(0x03)
    assert bytes(c.carrier_pad) == bytes(7)
    assert bytes(c.payload) == b"\x01\x02\x03" + bytes(133)
    rec = np.frombuffer(e.to_record(), dtype=ev.EVENT_DTYPE)[0]
    assert int(rec["id"]) == e.id
    assert rec["type"] == b"axis.moved"
    assert bytes(rec["carrier"]) == e.carrier


def test_record_from_c_struct_decodes() -> None:
    c = CEvent()
    c.id = 9
    c.timestamp_ns = 123
    c.priority = 0
    c.flags = 0x80  # reserved bits of a later version: ignored
    c.reserved = 7
    c.type = b"x" * 32  # full: not NUL-terminated
    c.target_id = b"t"
    c.payload_len = 2
    c.payload[0], c.payload[1] = ord("{"), ord("}")
    e = Event.from_record(bytes(c))
    assert e == Event(
        "x" * 32, b"{}", priority=Priority.CRITICAL, target_id="t", id=9, timestamp_ns=123
    )
    assert e.json() == {}
    assert e.carrier is None  # all-zero trace id


# ---------------------------------------------------------------- Event validation and codec


def test_event_defaults_and_json_payload() -> None:
    e = Event("task.state_changed", {"id": "t1", "from": "IDLE", "to": "RUNNING"})
    assert e.priority is Priority.NORMAL
    assert (e.id, e.timestamp_ns, e.target_id, e.carrier) == (0, 0, "", None)
    assert e.payload == b'{"id":"t1","from":"IDLE","to":"RUNNING"}'
    assert e.json() == {"id": "t1", "from": "IDLE", "to": "RUNNING"}
    assert Event("a").payload == b""
    assert Event("a").json() is None
    assert Event("a", "é").payload == '"é"'.encode()
    assert Event("a", [1, 2.5, True, None]).json() == [1, 2.5, True, None]
    assert Event("a", bytearray(b"\xff")).payload == b"\xff"
    assert Event("a", priority=3).priority is Priority.LOW
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.id = 3  # type: ignore[misc]
    assert dataclasses.replace(e, id=5).id == 5
    assert hash(e) == hash(Event("task.state_changed", e.payload))


def test_event_json_of_raw_bytes_is_a_clear_error() -> None:
    with pytest.raises(EventError, match=r"not JSON .*event\.payload"):
        Event("a", b"\xff\x00").json()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": ""}, "type must not be empty"),
        ({"type": "x" * 33}, r"type 'x+' is 33 bytes in UTF-8; .* at most 32"),
        ({"type": "é" * 17}, "34 bytes in UTF-8"),
        ({"type": "a\0b"}, "NUL"),
        ({"type": "task.*"}, r"'\*', reserved for subscription patterns"),
        ({"type": 5}, "type must be a str, got int"),
        ({"target_id": "t" * 33}, "target_id .* 33 bytes"),
        ({"payload": b"x" * 137}, r"payload is 137 bytes; .* at most 136 .*DataStore"),
        ({"payload": {"k": "v" * 130}}, "payload encoded as JSON is 138 bytes"),
        ({"payload": {1, 2}}, "bytes or JSON-serialisable"),
        ({"payload": float("nan")}, "JSON-serialisable"),
        ({"priority": 4}, r"priority must be 0\.\.3 .* got 4"),
        ({"priority": -1}, r"0\.\.3"),
        ({"priority": True}, "priority must be a Priority or an int"),
        ({"priority": "HIGH"}, "priority must be a Priority or an int"),
        ({"id": -1}, r"id must be an int in 0\.\.2\*\*64-1"),
        ({"id": 1 << 64}, "id must be"),
        ({"timestamp_ns": 1 << 63}, "timestamp_ns must be an int64"),
        ({"carrier": b"\x01" * 24}, "carrier must be 25 bytes .* got 24"),
        ({"carrier": "00-ab"}, "carrier must be 25 bytes .* got str"),
    ],
)
def test_event_rejects(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"type": "ok"} | kwargs
    with pytest.raises(EventError, match=message) as info:
        Event(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, mxrc.errors.MxrcError)


def test_limits_are_inclusive() -> None:
    e = Event("é" * 16, b"p" * 136, target_id="t" * 32)
    assert Event.from_record(e.to_record()) == e


def test_all_zero_trace_id_is_no_carrier() -> None:
    assert Event("a", carrier=bytes(25)).carrier is None
    assert Event("a", carrier=bytes(16) + b"\x01" * 9).carrier is None
    e = Event("a", carrier=_trace_carrier())
    assert e.carrier == _trace_carrier()
    assert e.trace_id == bytes(range(1, 17))
    assert Event("a").trace_id is None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"priority": 4}, "priority 4; expected 0..3"),
        ({"payload_len": 137}, "payload_len 137; expected at most 136"),
        ({"type": b""}, "empty type"),
        ({"type": b"\xff\xfe"}, "not in UTF-8"),
        ({"target_id": b"\xc3"}, "not in UTF-8"),
    ],
)
def test_from_record_rejects(patch: dict[str, object], message: str) -> None:
    c = CEvent.from_buffer_copy(Event("ok", b"x").to_record())
    for name, value in patch.items():
        setattr(c, name, value)
    with pytest.raises(EventError, match=re.escape(message)):
        Event.from_record(bytes(c))


@pytest.mark.parametrize("size", [0, 255, 257, 512])
def test_from_record_wants_exactly_256_bytes(size: int) -> None:
    with pytest.raises(EventError, match=f"exactly 256 bytes, got {size}"):
        Event.from_record(bytes(size))


def test_from_record_accepts_buffers() -> None:
    e = Event("a.b", {"x": 1}, id=4, timestamp_ns=5)
    rec = e.to_record()
    assert Event.from_record(bytearray(rec)) == e
    assert Event.from_record(memoryview(rec)) == e
    assert Event.from_record(np.frombuffer(rec, dtype=np.uint64).data) == e


_names = st.text(
    alphabet=st.characters(blacklist_characters="\0*", blacklist_categories=("Cs",)), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    type_=_names.filter(lambda s: 0 < len(s.encode()) <= 32),
    target=_names.filter(lambda s: len(s.encode()) <= 32),
    payload=st.binary(max_size=136),
    prio=st.sampled_from(list(Priority)),
    ident=st.integers(0, (1 << 64) - 1),
    ts=st.integers(-(1 << 63), (1 << 63) - 1),
    carrier=st.none() | st.binary(min_size=25, max_size=25),
)
def test_record_round_trip(
    *,
    type_: str,
    target: str,
    payload: bytes,
    prio: Priority,
    ident: int,
    ts: int,
    carrier: bytes | None,
) -> None:
    e = Event(
        type_, payload, priority=prio, target_id=target, id=ident, timestamp_ns=ts, carrier=carrier
    )
    rec = e.to_record()
    assert len(rec) == 256
    assert Event.from_record(rec) == e


# ---------------------------------------------------------------- admission


@pytest.mark.parametrize("capacity", [1, 5, 10, 64, 1024, 10_000])
def test_admission_thresholds(capacity: int) -> None:
    for fill in range(capacity + 2):
        assert ev.admits(Priority.LOW, fill, capacity) == (fill < 0.8 * capacity - 1e-9)
        assert ev.admits(Priority.NORMAL, fill, capacity) == (fill < 0.9 * capacity - 1e-9)
        assert ev.admits(Priority.HIGH, fill, capacity) == (fill < capacity)
        assert ev.admits(Priority.CRITICAL, fill, capacity) == (fill < capacity)
    with pytest.raises(EventError):
        ev.admits(7, 0, 10)


def test_upstream_thresholds_at_10k() -> None:
    assert ev.admits(Priority.LOW, 7999, 10_000)
    assert not ev.admits(Priority.LOW, 8000, 10_000)
    assert ev.admits(Priority.NORMAL, 8999, 10_000)
    assert not ev.admits(Priority.NORMAL, 9000, 10_000)
    assert ev.admits(Priority.HIGH, 9999, 10_000)
    assert not ev.admits(Priority.HIGH, 10_000, 10_000)


def test_bus_admission_by_fill() -> None:
    b = EventBus(10, critical_capacity=2, carrier_provider=None)
    assert b.capacity == 10
    for i in range(8):
        assert b.publish("fill", i, priority=Priority.HIGH)
    assert not b.publish("low", priority=Priority.LOW)  # 8/10 = 80 %
    assert b.publish("normal", priority=Priority.NORMAL)  # 8 < 9
    assert not b.publish("normal", priority=Priority.NORMAL)  # 9/10 = 90 %
    assert not b.publish("low", priority=Priority.LOW)
    assert b.publish("high", priority=Priority.HIGH)  # 9 < 10
    assert not b.publish("high", priority=Priority.HIGH)  # full
    assert b.pending() == 10
    # CRITICAL has its own bound: admitted although the queue is full
    assert b.publish("crit", priority=Priority.CRITICAL)
    assert b.publish("crit", priority=Priority.CRITICAL)
    assert not b.critical_overflow
    assert not b.publish("crit", priority=Priority.CRITICAL)
    assert b.critical_overflow
    c = b.counters()
    assert c.published == {
        Priority.CRITICAL: 2,
        Priority.HIGH: 9,
        Priority.NORMAL: 1,
        Priority.LOW: 0,
    }
    assert c.dropped == {
        Priority.CRITICAL: 1,
        Priority.HIGH: 1,
        Priority.NORMAL: 1,
        Priority.LOW: 2,
    }
    assert (c.queue_depth, c.critical_depth, c.critical_overflow) == (10, 2, True)
    assert b.dispatch_pending() == 12
    assert b.pending() == 0
    assert b.critical_overflow  # sticky
    assert b.publish("low", priority=Priority.LOW)  # room again


def test_bus_rejects_bad_settings() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="capacity must be an int >= 1"):
            EventBus(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="critical_capacity must be an int >= 1"):
            EventBus(critical_capacity=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_interval_s must be > 0"):
        EventBus(poll_interval_s=0)
    assert EventBus().capacity == 10_000


# ---------------------------------------------------------------- dispatch order and thread


def test_critical_first_then_fifo() -> None:
    b = EventBus(carrier_provider=None)
    seen: list[str] = []
    b.subscribe("*", lambda e: seen.append(e.type))
    for name, prio in [
        ("n1", Priority.NORMAL),
        ("l1", Priority.LOW),
        ("c1", Priority.CRITICAL),
        ("h1", Priority.HIGH),
        ("c2", Priority.CRITICAL),
        ("n2", Priority.NORMAL),
    ]:
        b.publish(name, priority=prio)
    assert b.dispatch_pending() == 6
    assert seen == ["c1", "c2", "n1", "l1", "h1", "n2"]


def test_ids_and_timestamps_are_set_when_zero() -> None:
    ticks = iter(range(100, 200))
    b = EventBus(carrier_provider=None, clock=lambda: next(ticks))
    got: list[Event] = []
    b.subscribe("*", got.append)
    b.publish("a")
    b.publish("b")
    b.publish(Event("c", id=77, timestamp_ns=5))
    b.dispatch_pending()
    assert [(e.id, e.timestamp_ns) for e in got] == [(1, 100), (2, 101), (77, 5)]


def test_publish_an_event_or_a_type() -> None:
    b = EventBus(carrier_provider=None)
    got: list[Event] = []
    b.subscribe("*", got.append)
    assert b.publish("x", {"k": 1}, priority=Priority.HIGH, target_id="t")
    assert b.publish(Event("y", b"raw", priority=Priority.LOW))
    with pytest.raises(TypeError, match="takes no payload"):
        b.publish(Event("z"), {"k": 1})
    with pytest.raises(TypeError, match="takes no payload"):
        b.publish(Event("z"), priority=Priority.HIGH)
    with pytest.raises(EventError, match="at most 136"):
        b.publish("x", b"x" * 200)
    with pytest.raises(EventError, match="at most 32"):
        b.publish("x" * 40)
    b.dispatch_pending()
    assert [
        (e.type, e.json() if e.type == "x" else e.payload, e.priority, e.target_id) for e in got
    ] == [
        ("x", {"k": 1}, Priority.HIGH, "t"),
        ("y", b"raw", Priority.LOW, ""),
    ]


def test_dispatch_runs_on_the_bus_thread(bus: EventBus) -> None:
    threads: list[str] = []
    bus.subscribe("t", lambda e: threads.append(threading.current_thread().name))
    bus.publish("t")
    assert bus.flush()
    assert threads == ["mxrc-eventbus-test"]
    assert bus.running


def test_publish_never_waits_for_handlers(bus: EventBus) -> None:
    gate = threading.Event()
    started = threading.Event()

    def slow(e: Event) -> None:
        started.set()
        gate.wait(30)

    bus.subscribe("slow", slow)
    bus.publish("slow")
    assert started.wait(30)
    for i in range(100):  # the handler is stuck; publishing still returns at once
        assert bus.publish("other", i)
    assert bus.pending() == 100
    gate.set()
    assert bus.flush()


def test_many_publishers_every_event_once_in_order(bus: EventBus) -> None:
    n_threads, per = 4, 2000
    got: dict[int, list[int]] = {t: [] for t in range(n_threads)}
    lock = threading.Lock()

    def handler(e: Event) -> None:
        t, i = e.json()
        with lock:
            got[t].append(i)

    bus.subscribe("load", handler)
    barrier = threading.Barrier(n_threads)

    def publisher(t: int) -> None:
        barrier.wait()
        for i in range(per):
            assert bus.publish("load", [t, i], priority=Priority.HIGH)

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert bus.flush(60)
    assert got == {t: list(range(per)) for t in range(n_threads)}
    c = bus.counters()
    assert c.published[Priority.HIGH] == c.dispatched == c.delivered == n_threads * per
    assert sum(c.dropped.values()) == 0
    ids: list[int] = []  # unique per producer (this bus)
    sub = bus.subscribe("id", lambda e: ids.append(e.id))
    for _ in range(50):
        bus.publish("id")
    assert bus.flush()
    sub.cancel()
    assert len(set(ids)) == 50


def test_handler_may_publish_and_cancel(bus: EventBus) -> None:
    got: list[str] = []

    def ping(e: Event) -> None:
        got.append(e.type)
        if e.type == "ping":
            bus.publish("pong")
            sub.cancel()

    sub = bus.subscribe(["ping", "pong"], ping)
    other = bus.subscribe("pong", lambda e: got.append("other"))
    bus.publish("ping")
    assert bus.flush()
    assert got == ["ping", "other"]
    assert not sub.active
    assert bus.subscriptions == (other,)


# ---------------------------------------------------------------- subscriptions


def test_subscription_patterns_and_filters() -> None:
    b = EventBus(carrier_provider=None)
    seen: dict[str, list[str]] = {k: [] for k in ("exact", "prefix", "all", "multi", "filt")}
    b.subscribe("task.state_changed", lambda e: seen["exact"].append(e.type))
    b.subscribe("task.*", lambda e: seen["prefix"].append(e.type))
    b.subscribe("*", lambda e: seen["all"].append(e.type))
    b.subscribe(("rt.safe_mode", "seq*"), lambda e: seen["multi"].append(e.type))
    b.subscribe("*", lambda e: seen["filt"].append(e.type), filter=lambda e: e.target_id == "a1")
    for t, target in [
        ("task.state_changed", "a1"),
        ("task.created", ""),
        ("tasks", ""),
        ("rt.safe_mode", "a1"),
        ("sequence.done", ""),
    ]:
        b.publish(t, target_id=target)
    b.dispatch_pending()
    assert seen == {
        "exact": ["task.state_changed"],
        "prefix": ["task.state_changed", "task.created"],
        "all": ["task.state_changed", "task.created", "tasks", "rt.safe_mode", "sequence.done"],
        "multi": ["rt.safe_mode", "sequence.done"],
        "filt": ["task.state_changed", "rt.safe_mode"],
    }


def test_handlers_run_in_subscription_order() -> None:
    b = EventBus(carrier_provider=None)
    order: list[int] = []
    for i in range(5):
        b.subscribe("*" if i % 2 else "x", lambda e, i=i: order.append(i))
    b.publish("x")
    b.dispatch_pending()
    assert order == [0, 1, 2, 3, 4]


def test_cancel_and_context_manager() -> None:
    b = EventBus(carrier_provider=None)
    got: list[str] = []
    with b.subscribe("a", lambda e: got.append("ctx")) as sub:
        b.publish("a")
        b.dispatch_pending()
    assert not sub.active
    sub.cancel()  # idempotent
    b.publish("a")
    b.dispatch_pending()
    assert got == ["ctx"]
    assert b.counters().unhandled == 1
    assert "cancelled" in repr(sub)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "non-empty str"),
        ("*.x", r"'\*' is allowed only at the end"),
        ("a*b", "only at the end"),
        ("x" * 33, "would never match"),
        ((), "at least one"),
        ([3], "non-empty str"),
    ],
)
def test_subscribe_rejects_bad_patterns(pattern: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventBus().subscribe(pattern, print)  # type: ignore[arg-type]


def test_subscribe_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="handler must be callable"):
        EventBus().subscribe("a", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="filter must be callable"):
        EventBus().subscribe("a", print, filter=3)  # type: ignore[arg-type]


def test_a_raising_handler_never_stops_dispatch(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []

    def bad(e: Event) -> None:
        raise RuntimeError("boom")

    def bad_filter(e: Event) -> bool:
        raise KeyError("filter")

    bad_sub = bus.subscribe("x", bad)
    bus.subscribe("x", lambda e: got.append(e.json()))
    bus.subscribe("x", lambda e: got.append(-1), filter=bad_filter)
    with caplog.at_level(logging.ERROR, logger="mxrc.bus.events"):
        for i in range(10):
            bus.publish("x", i)
        assert bus.flush()
    assert got == list(range(10))
    assert bad_sub.errors == 10
    assert bad_sub.delivered == 0
    c = bus.counters()
    assert (c.handler_errors, c.dispatched, c.delivered) == (20, 10, 10)
    # logged, but not 20 times: the first few per subscription
    boom = [r for r in caplog.records if "RuntimeError: boom" in (r.exc_text or "")]
    assert 1 <= len(boom) <= 3
    assert "handler of <Subscription x" in boom[0].getMessage()
    assert bus.running


# ---------------------------------------------------------------- observers


class Recorder(BusObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def before_publish(self, event: Event) -> None:
        self.calls.append(("before_publish", event.type, event.id != 0))

    def after_publish(self, event: Event, admitted: bool) -> None:
        self.calls.append(("after_publish", event.type, admitted))

    def before_dispatch(self, event: Event, n_subscribers: int) -> None:
        self.calls.append(("before_dispatch", event.type, n_subscribers))

    def after_dispatch(self, event: Event, n_subscribers: int) -> None:
        self.calls.append(("after_dispatch", event.type, n_subscribers))


def test_observer_hooks() -> None:
    b = EventBus(1, carrier_provider=None)
    rec = Recorder()
    b.add_observer(rec)
    b.subscribe("a", lambda e: rec.calls.append(("handler", e.type)))
    b.subscribe("*", lambda e: None)
    b.subscribe("a", lambda e: None, filter=lambda e: False)
    assert b.publish("a", priority=Priority.HIGH)
    assert not b.publish("b", priority=Priority.HIGH)  # full
    b.dispatch_pending()
    assert b.publish("b", priority=Priority.HIGH)
    b.dispatch_pending()
    assert rec.calls == [
        ("before_publish", "a", True),
        ("after_publish", "a", True),
        ("before_publish", "b", True),
        ("after_publish", "b", False),
        ("before_dispatch", "a", 2),
        ("handler", "a"),
        ("after_dispatch", "a", 2),
        ("before_publish", "b", True),
        ("after_publish", "b", True),
        ("before_dispatch", "b", 1),
        ("after_dispatch", "b", 1),
    ]
    with pytest.raises(ValueError, match="already observes"):
        b.add_observer(rec)
    b.remove_observer(rec)
    with pytest.raises(ValueError, match="does not observe"):
        b.remove_observer(rec)
    b.publish("c")
    b.dispatch_pending()
    assert rec.calls[-1] == ("after_dispatch", "b", 1)


def test_a_raising_observer_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    class Bad(BusObserver):
        def before_publish(self, event: Event) -> None:
            raise RuntimeError("obs")

        def after_dispatch(self, event: Event, n_subscribers: int) -> None:
            raise RuntimeError("obs")

    b = EventBus(carrier_provider=None)
    b.add_observer(Bad())
    got: list[Event] = []
    b.subscribe("*", got.append)
    with caplog.at_level(logging.ERROR, logger="mxrc.bus.events"):
        assert b.publish("a")
        b.dispatch_pending()
    assert len(got) == 1
    assert b.counters().observer_errors == 2
    assert b.counters().dispatched == 1


# ---------------------------------------------------------------- lifecycle


def test_lifecycle_errors() -> None:
    b = EventBus(carrier_provider=None)
    with pytest.raises(RuntimeError, match="not started"):
        b.flush()
    b.start()
    with pytest.raises(RuntimeError, match="already started"):
        b.start()
    with pytest.raises(RuntimeError, match="own thread"):
        b.dispatch_pending()
    errors: list[BaseException] = []

    def flush_inside(e: Event) -> None:
        try:
            b.flush()
        except RuntimeError as exc:
            errors.append(exc)

    b.subscribe("f", flush_inside)
    b.publish("f")
    assert b.flush()
    assert "wait for itself" in str(errors[0])
    assert b.close()
    assert b.closed
    assert not b.running
    with pytest.raises(RuntimeError, match="closed"):
        b.start()
    assert b.close()  # idempotent
    assert "closed" in repr(b)


def test_close_drains_or_discards() -> None:
    got: list[int] = []
    b = EventBus(carrier_provider=None)
    b.subscribe("x", lambda e: got.append(e.json()))
    for i in range(3):
        b.publish("x", i)
    assert b.close()  # never started: drained on this thread
    assert got == [0, 1, 2]
    assert not b.publish("x", 3)  # closed: dropped and counted
    assert b.counters().dropped[Priority.NORMAL] == 1

    b2 = EventBus(carrier_provider=None)
    b2.subscribe("x", lambda e: got.append(e.json()))
    for i in range(3):
        b2.publish("x", i, priority=Priority.LOW)
    b2.publish("x", 9, priority=Priority.CRITICAL)
    assert b2.close(drain=False)
    assert got == [0, 1, 2]
    c = b2.counters()
    assert c.dropped[Priority.LOW] == 3
    assert c.dropped[Priority.CRITICAL] == 1
    assert not c.critical_overflow


def test_context_manager_starts_and_drains() -> None:
    got: list[int] = []
    with EventBus(carrier_provider=None) as b:
        assert b.running
        b.subscribe("x", lambda e: got.append(e.json()))
        for i in range(100):
            b.publish("x", i)
    assert got == list(range(100))
    assert not b.running


def test_close_from_a_handler(bus: EventBus) -> None:
    bus.subscribe("stop", lambda e: bus.close())
    bus.publish("stop")
    t = bus._thread
    assert t is not None
    t.join(30)
    assert not t.is_alive()


# ---------------------------------------------------------------- trace context


@pytest.fixture(params=["opentelemetry", "contextvars"])
def tc_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    before = tc.backend()
    if request.param == "opentelemetry":
        pytest.importorskip("opentelemetry.context")
    yield tc.set_backend(request.param)
    tc.set_backend(before)


def test_publish_attaches_the_current_context(tc_backend: str) -> None:
    seen: list[tuple[Event, tc.TraceContext | None]] = []
    with EventBus(name="tc") as b:
        b.subscribe("*", lambda e: seen.append((e, tc.current())))
        ctx = tc.TraceContext.new_root(sampled=True).child()
        with tc.use(ctx):
            b.publish("with")
            b.publish(Event("explicit", carrier=_trace_carrier()))  # kept as given
        b.publish("without")
        assert b.flush()
    (with_, in_with), (explicit, in_explicit), (without, in_without) = seen
    assert with_.carrier == ctx.to_carrier()
    assert with_.trace_id == ctx.trace_id
    # the handler ran with the publisher's context as the current one
    assert in_with is not None
    assert (in_with.trace_id, in_with.span_id, in_with.flags) == (
        ctx.trace_id,
        ctx.span_id,
        ctx.flags,
    )
    assert explicit.carrier == _trace_carrier()
    assert in_explicit is not None
    assert in_explicit.trace_id == bytes(range(1, 17))
    assert without.carrier is None
    assert in_without is None
    assert tc.current() is None


def test_unusual_flags_are_carried(tc_backend: str) -> None:
    ctx = tc.TraceContext(bytes(range(1, 17)), bytes(range(1, 9)), 0xFE)
    b = EventBus()
    got: list[tuple[Event, tc.TraceContext | None]] = []
    b.subscribe("*", lambda e: got.append((e, tc.current())))
    with tc.use(ctx):
        b.publish("f")
    b.dispatch_pending()
    assert got[0][0].carrier == ctx.to_carrier()
    assert got[0][0].carrier[-1] == 0xFE  # type: ignore[index]
    seen = got[0][1]
    assert seen is not None
    assert seen.flags == 0xFE


def test_hooks_can_be_replaced_or_disabled() -> None:
    ctx = tc.TraceContext.new_root()
    custom = _trace_carrier(0x01)
    b = EventBus(carrier_provider=lambda: custom, dispatch_context=None)
    got: list[tuple[Event, tc.TraceContext | None]] = []
    b.subscribe("*", lambda e: got.append((e, tc.current())))
    with tc.use(ctx):
        b.publish("a")
    b.dispatch_pending()
    assert got[0][0].carrier == custom
    assert got[0][1] is None  # no dispatch context

    off = EventBus(carrier_provider=None)
    off.subscribe("*", lambda e: got.append((e, None)))
    with tc.use(ctx):
        off.publish("b")
    off.dispatch_pending()
    assert got[1][0].carrier is None


def test_hook_failures_do_not_lose_events(caplog: pytest.LogCaptureFixture) -> None:
    def provider() -> bytes | None:
        raise RuntimeError("provider")

    def activator(carrier: bytes) -> ev.AbstractContextManager[object]:
        raise RuntimeError("activator")

    b = EventBus(carrier_provider=provider, dispatch_context=activator)
    got: list[Event] = []
    b.subscribe("*", got.append)
    with caplog.at_level(logging.WARNING, logger="mxrc.bus.events"):
        assert b.publish("a")
        assert b.publish(Event("b", carrier=_trace_carrier()))
        b.dispatch_pending()
    assert [(e.type, e.carrier) for e in got] == [("a", None), ("b", _trace_carrier())]
    assert "carrier_provider raised" in caplog.text
    assert "dispatch_context raised" in caplog.text


def test_default_hooks_directly(tc_backend: str) -> None:
    assert ev.current_carrier() is None
    ctx = tc.TraceContext.new_root()
    with tc.use(ctx):
        assert ev.current_carrier() == ctx.to_carrier()
    with ev.use_carrier(ctx.to_carrier()):
        now = tc.current()
        assert now is not None
        assert now.span_id == ctx.span_id
    assert tc.current() is None
    tc.reset_malformed_counts()
    with ev.use_carrier(bytes(range(1, 17)) + bytes(9)):  # no span id: malformed
        assert tc.current() is None
    assert tc.malformed_counts()["carrier"] == 1


def test_task_state_changes_reach_the_bus_with_their_context() -> None:
    from mxrc.tasks import Task, bus_publisher

    b = EventBus()
    got: list[tuple[Event, tc.TraceContext | None]] = []
    b.subscribe("task.*", lambda e: got.append((e, tc.current())))
    ctx = tc.TraceContext.new_root()
    task = Task(id="t1", publisher=bus_publisher(b), trace_context=ctx)
    task.start()
    task.fail("boom")
    b.dispatch_pending()
    assert [(e.type, e.json()["to"], e.priority, e.target_id) for e, _ in got] == [
        ("task.state_changed", "RUNNING", Priority.NORMAL, "t1"),
        ("task.state_changed", "FAILED", Priority.HIGH, "t1"),
    ]
    for e, current in got:
        assert e.carrier == ctx.to_carrier()
        assert current is not None
        assert current.span_id == ctx.span_id


# ---------------------------------------------------------------- transports


def test_in_memory_transport_is_a_transport() -> None:
    a, b = InMemoryTransport.pair(capacity=10, critical_capacity=1)
    assert isinstance(a, Transport)
    rec = Event("x").to_record()
    for _ in range(8):
        assert a.send(rec, Priority.HIGH)
    assert not a.send(rec, Priority.LOW)
    assert a.send(rec, Priority.NORMAL)
    assert not a.send(rec, Priority.NORMAL)
    assert a.send(rec, Priority.HIGH)
    assert not a.send(rec, Priority.HIGH)
    crit = Event("crit", priority=Priority.CRITICAL).to_record()
    assert a.send(crit, Priority.CRITICAL)
    assert not b.critical_overflow
    assert not a.send(crit, Priority.CRITICAL)
    assert b.critical_overflow
    assert (a.sent, a.dropped, b.pending(), a.pending()) == (11, 4, 11, 0)
    got = b.receive(3)
    assert got[0] == crit and got[1:] == [rec, rec]
    assert len(b.receive(100)) == 8
    assert b.receive(100) == []
    assert b.received == 11
    with pytest.raises(EventError, match="256 bytes"):
        a.send(b"short", Priority.LOW)
    with pytest.raises(ValueError, match="capacities must be >= 1"):
        InMemoryTransport(0)


def test_two_buses_exchange_events_both_ways() -> None:
    """An 'RT side' and an 'agent side' bus over a transport pair: ids, times, carriers kept."""
    rt_end, agent_end = InMemoryTransport.pair()
    agent = EventBus(name="agent", carrier_provider=None)
    rt = EventBus(name="rt", carrier_provider=None)
    agent.attach(agent_end, forward="cmd.*", name="rings")
    rt.attach(rt_end, forward=["rt.*", "alarm"])
    at_agent: list[Event] = []
    at_rt: list[Event] = []
    agent.subscribe("*", at_agent.append)
    rt.subscribe("*", at_rt.append)
    with agent, rt:
        up = Event(
            "rt.state",
            {"to": "SAFE_MODE"},
            priority=Priority.CRITICAL,
            target_id="ex1",
            carrier=_trace_carrier(0x03),
        )
        assert rt.publish(up)
        assert rt.publish("local.only")  # not forwarded
        assert agent.publish("cmd.stop", {"why": "test"}, priority=Priority.HIGH, target_id="ex1")
        for _ in range(3):  # each flush polls the other side once more
            assert rt.flush()
            assert agent.flush()
    by_type = {e.type: e for e in at_agent}
    assert set(by_type) == {"rt.state", "cmd.stop"}
    got_up = by_type["rt.state"]
    sent_up = next(e for e in at_rt if e.type == "rt.state")
    assert got_up == sent_up  # id, timestamp, priority, target, payload, carrier intact
    assert got_up.carrier == _trace_carrier(0x03)
    assert [e.type for e in at_rt] == ["rt.state", "local.only", "cmd.stop"]
    got_cmd = at_rt[2]
    assert got_cmd == by_type["cmd.stop"]
    assert got_cmd.json() == {"why": "test"}
    ca, cr = agent.counters(), rt.counters()
    assert ca.transports["rings"].received == 1
    assert ca.transports["rings"].forwarded == 1
    assert cr.transports["InMemoryTransport-0"].forwarded == 1
    assert cr.transports["InMemoryTransport-0"].received == 1
    # nothing was forwarded back to where it came from
    assert rt_end.pending() == agent_end.pending() == 0
    assert (rt_end.sent, agent_end.sent) == (1, 1)


def test_no_echo_between_forward_all_buses() -> None:
    a_end, b_end = InMemoryTransport.pair()
    a = EventBus(name="a", carrier_provider=None)
    b = EventBus(name="b", carrier_provider=None)
    a.attach(a_end, forward="*")
    b.attach(b_end, forward="*")
    got_b: list[str] = []
    b.subscribe("*", lambda e: got_b.append(e.type))
    a.publish("hello")
    for _ in range(5):
        a.dispatch_pending()
        b.dispatch_pending()
    assert got_b == ["hello"]
    assert (a_end.sent, b_end.sent) == (1, 0)


def test_receive_only_and_forward_filter() -> None:
    t_a, t_b = InMemoryTransport.pair()
    b = EventBus(carrier_provider=None)
    b.attach(t_a, receive=False, forward="*", forward_filter=lambda e: e.target_id == "rt")
    t_b.send(Event("ignored").to_record(), Priority.NORMAL)
    b.publish("x", target_id="rt")
    b.publish("y", target_id="other")
    b.dispatch_pending()
    assert [Event.from_record(r).type for r in t_b.receive(10)] == ["x"]
    assert t_a.pending() == 1  # never polled
    assert b.counters().unhandled == 1  # "y": no handler, not forwarded


def test_inbound_records_meet_admission_and_get_ids() -> None:
    t_a, t_b = InMemoryTransport.pair(capacity=100)
    b = EventBus(4, carrier_provider=None, clock=lambda: 42)
    b.attach(t_a)
    for i in range(6):
        t_b.send(Event("in", i, priority=Priority.HIGH).to_record(), Priority.HIGH)
    got: list[Event] = []
    b.subscribe("*", got.append)
    assert b.dispatch_pending() == 4
    assert [e.json() for e in got] == [0, 1, 2, 3]
    assert [(e.id, e.timestamp_ns) for e in got] == [(1, 42), (2, 42), (3, 42), (4, 42)]
    c = b.counters()
    assert c.transports["InMemoryTransport-0"].received == 6
    assert c.dropped[Priority.HIGH] == 2


def test_bad_records_and_failing_transports_are_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def receive(self, max_records: int) -> list[bytes]:
            self.calls += 1
            if self.calls == 1:
                raise OSError("ring gone")
            if self.calls == 2:
                return [bytes(256), b"short", Event("good").to_record()]
            return []

        def send(self, record: bytes, priority: Priority) -> bool:
            raise OSError("ring gone")

    broken = Broken()
    b = EventBus(name="b", carrier_provider=None)
    b.attach(broken, forward="*", name="broken")
    got: list[str] = []
    b.subscribe("*", lambda e: got.append(e.type))
    with caplog.at_level(logging.WARNING, logger="mxrc.bus.events"), b:
        assert b.flush()  # receive raises: logged
        assert b.flush()  # two invalid records, one good
        b.publish("out")  # send raises: counted as dropped
        assert b.flush()
    assert sorted(got) == ["good", "out"]
    t = b.counters().transports["broken"]
    # "good" came from the transport: never sent back to it; "out" failed to send
    assert (t.received, t.decode_errors, t.forwarded, t.forward_dropped) == (1, 2, 0, 1)
    assert "receive from transport 'broken' raised" in caplog.text
    assert "invalid record" in caplog.text
    assert "send to transport 'broken' raised" in caplog.text


def test_attach_errors() -> None:
    b = EventBus()
    with pytest.raises(TypeError, match="is not a Transport"):
        b.attach(object())  # type: ignore[arg-type]
    t = InMemoryTransport()
    b.attach(t, name="x")
    with pytest.raises(ValueError, match="already attached"):
        b.attach(t)
    with pytest.raises(ValueError, match="already has a transport named 'x'"):
        b.attach(InMemoryTransport(), name="x")
    with pytest.raises(ValueError, match="only at the end"):
        b.attach(InMemoryTransport(), forward="a*b")
    b.detach(t)
    with pytest.raises(ValueError, match="not attached"):
        b.detach(t)
    assert b.counters().transports == {}


def test_dispatch_thread_polls_transports_without_publishes() -> None:
    t_a, t_b = InMemoryTransport.pair()
    got = threading.Event()
    with EventBus(carrier_provider=None, poll_interval_s=0.001) as b:
        b.subscribe("wake", lambda e: got.set())
        b.attach(t_a)
        t_b.send(Event("wake").to_record(), Priority.NORMAL)
        assert got.wait(30)


# ---------------------------------------------------------------- metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_bus_collector_values() -> None:
    t_a, _t_b = InMemoryTransport.pair()
    b = EventBus(10, critical_capacity=1, name="main", carrier_provider=None)
    b.attach(t_a, forward="fwd", name="ring")
    b.subscribe("ok", lambda e: None)
    b.subscribe("bad", lambda e: 1 / 0)
    for _ in range(8):
        b.publish("ok", priority=Priority.HIGH)
    b.publish("low", priority=Priority.LOW)  # dropped
    b.publish("bad", priority=Priority.HIGH)
    b.publish("c", priority=Priority.CRITICAL)
    b.publish("c", priority=Priority.CRITICAL)  # overflow
    b.publish("fwd", priority=Priority.HIGH)  # fill 9 -> 10
    b.publish("ok", priority=Priority.HIGH)  # full: dropped
    reg = CollectorRegistry()
    reg.register(BusCollector(b))
    s = _samples(reg)
    base = (("bus", "main"), ("process", "agent"))

    def get(name: str, **labels: str) -> float:
        return s[(name, tuple(sorted((*base, *labels.items()))))]

    assert get("mxrc_bus_events_published_total", priority="high") == 10
    assert get("mxrc_bus_events_published_total", priority="critical") == 1
    assert get("mxrc_bus_events_dropped_total", priority="low") == 1
    assert get("mxrc_bus_events_dropped_total", priority="critical") == 1
    assert get("mxrc_bus_events_dropped_total", priority="high") == 1
    assert get("mxrc_bus_queue_depth", queue="events") == 10
    assert get("mxrc_bus_queue_depth", queue="critical") == 1
    assert get("mxrc_bus_queue_capacity", queue="events") == 10
    assert get("mxrc_bus_critical_overflow") == 1
    b.dispatch_pending()
    b.publish("fwd")
    b.dispatch_pending()
    s = _samples(reg)
    assert get("mxrc_bus_events_dispatched_total") == 12
    assert get("mxrc_bus_events_delivered_total") == 8
    assert get("mxrc_bus_handler_errors_total") == 1
    assert get("mxrc_bus_events_unhandled_total") == 1  # "c": no handler, not forwarded
    assert get("mxrc_bus_observer_errors_total") == 0
    assert get("mxrc_bus_transport_forwarded_total", transport="ring") == 2
    assert get("mxrc_bus_transport_dropped_total", transport="ring") == 0
    assert get("mxrc_bus_transport_received_total", transport="ring") == 0
    assert get("mxrc_bus_queue_depth", queue="events") == 0


def test_bus_collector_sources(caplog: pytest.LogCaptureFixture) -> None:
    b1, b2, same = EventBus(name="one"), EventBus(name="two"), EventBus(name="one")
    c = BusCollector(b1)
    c.add(b2, process="rt")
    assert c.sources == [b1, b2]
    with pytest.raises(ValueError, match="already a source"):
        c.add(b1)
    with pytest.raises(TypeError, match=r"must be an mxrc\.bus\.EventBus"):
        c.add(object())
    c.add(same)
    reg = CollectorRegistry()
    reg.register(c)
    with caplog.at_level(logging.WARNING, logger="mxrc.metrics"):
        s = _samples(reg)
        _samples(reg)
    assert caplog.text.count("two event buses labelled process='agent' bus='one'") == 1
    procs = {dict(k[1]).get("process") for k in s if k[0] == "mxrc_bus_critical_overflow"}
    assert procs == {"rt", "agent"}
    c.remove(same)
    with pytest.raises(ValueError, match="not a source"):
        c.remove(same)
    assert {m.name for m in c.describe()} >= {"mxrc_bus_events_published", "mxrc_bus_queue_depth"}


def test_promtool_accepts_the_bus_metrics() -> None:
    promtool = require_tool("promtool", "prometheus")
    t_a, _ = InMemoryTransport.pair()
    b = EventBus(name="main", carrier_provider=None)
    b.attach(t_a, forward="*")
    b.publish("x")
    b.dispatch_pending()
    reg = CollectorRegistry()
    reg.register(BusCollector(b))
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(reg).decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


# ---------------------------------------------------------------- misc

DOC = Path(__file__).parent.parent / "docs" / "eventbus.md"


def _doc_programs() -> list[str]:
    """The complete programs of docs/eventbus.md (python blocks that start with an import)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.M | re.S)
    return [b for b in blocks if b.startswith(("from ", "import "))]


def test_doc_examples_run() -> None:
    programs = _doc_programs()
    assert len(programs) >= 4
    for code in programs:
        proc = run_python(code, timeout=120)
        assert proc.returncode == 0, code + proc.stdout + proc.stderr
    assert "agent got rt.safe_mode" in run_python(programs[2]).stdout


def test_public_names() -> None:
    import mxrc.bus

    for name in ev.__all__:
        assert hasattr(ev, name), name
    for name in (
        "Event",
        "EventBus",
        "EventError",
        "Priority",
        "Transport",
        "InMemoryTransport",
        "EVENT_DTYPE",
        "admits",
    ):
        assert getattr(mxrc.bus, name) is getattr(ev, name)
        assert name in mxrc.bus.__all__
