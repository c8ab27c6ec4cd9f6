"""The executive uses the bus: C table ds_* / publish_event / poll_event, Python
ctx.publish / ctx.poll_event, data store snapshots at cycle boundaries, the agent
watchdog and the loop's own state-change events (docs/executive.md, "The bus
from a body").
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mxrc._include import get_include
from mxrc._native import _core
from mxrc.bus import DataStore, Event, Priority, Segment, admits
from mxrc.errors import BodyError, UnsupportedError
from mxrc.rt._bodies import BuiltinBody, NativeBody
from mxrc.rt._executive import Executive
from mxrc.rt._state import RtState
from mxrc.tracecontext import TraceContext

NATIVE_DIR = Path(__file__).parent / "native"
_COUNTER = itertools.count()

# generous bounds: the watchdog reacts within one cycle of the timeout; a
# loaded CI machine may still take a while to show it
WAIT_S = 10.0


def _instance(tag: str) -> str:
    return f"exbus-{os.getpid()}-{tag}-{next(_COUNTER)}"


@pytest.fixture
def segment() -> Iterator[Segment]:
    seg = Segment.create(_instance("seg"), max_stats=4, event_ring_capacity=1024)
    try:
        yield seg
    finally:
        seg.close()


def _until(cond: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _events(ex: Executive, ring: str = "event") -> list[Event]:
    rings = ex.rings
    assert rings is not None
    return [Event.from_record(r) for r in rings.ring(ring).drain()]


def _state_changes(events: list[Event]) -> list[tuple[str, str, str]]:
    out = []
    for e in events:
        if e.type == "rt.state_changed":
            d = e.json()
            out.append((d["from"], d["to"], d["trigger"]))
    return out


class _Beater:
    """Writes the agent heartbeat every `interval` seconds while `beating` is set."""

    def __init__(self, seg: Segment, interval: float = 0.01) -> None:
        self.seg = seg
        self.interval = interval
        self.beating = threading.Event()
        self.beating.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-agent-beat", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.beating.is_set():
                self.seg.beat_agent()
            time.sleep(self.interval)

    def __enter__(self) -> _Beater:
        self.seg.attach_agent()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------ a native body through the C table


@dataclass(frozen=True)
class _BusBody:
    so: Path  # the compiled extension
    address: int  # of mxrc_bus_body


@pytest.fixture(scope="module")
def bus_body(tmp_path_factory: pytest.TempPathFactory) -> _BusBody:
    """tests/native/bus_body.c compiled by cffi in API mode."""
    cffi = pytest.importorskip("cffi")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    tmp = tmp_path_factory.mktemp("bus_body")
    ffi = cffi.FFI()
    ffi.cdef(
        "typedef struct mxrc_cycle_ctx mxrc_cycle_ctx;\n"
        "int mxrc_bus_body(const mxrc_cycle_ctx* ctx);"
    )
    ffi.set_source(
        "_mxrc_test_bus_body",
        (NATIVE_DIR / "bus_body.c").read_text(),
        include_dirs=[get_include()],
    )
    so = ffi.compile(tmpdir=str(tmp))
    spec = importlib.util.spec_from_file_location("_mxrc_test_bus_body", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    address = int(mod.ffi.cast("uintptr_t", mod.ffi.addressof(mod.lib, "mxrc_bus_body")))
    return _BusBody(Path(so), address)


def _native(bus_body: _BusBody, counters: ctypes.Array[ctypes.c_int64]) -> NativeBody:
    return NativeBody(bus_body.address, ctypes.addressof(counters))


def _define(ds: DataStore) -> None:
    ds.define("pos", float)
    ds.define("gain", float)
    ds.define("count", int)
    ds.define("vec", "f64array", capacity=4)
    ds.define("sum", float)


def test_native_body_uses_the_data_store_and_exchanges_events(
    bus_body: _BusBody, segment: Segment
) -> None:
    c = (ctypes.c_int64 * 16)()
    c[15] = 50  # a tick every 50 cycles
    ex = Executive(_native(bus_body, c), period_us=1000, segment=segment, name="nat")
    ds = ex.datastore
    assert ds is not None
    _define(ds)
    ds.write("gain", 2.0)
    ds.write("vec", [1.0, 2.0, 3.0, 4.5])
    carrier = TraceContext.new_root(sampled=True).to_carrier()
    with ex:
        _until(lambda: c[0] >= 5, what="the first cycles")
        rings = ex.rings
        assert rings is not None
        # agent -> RT: commands with carriers, payloads and priorities
        sent = [
            Event("cmd.move", {"to": 1.5}, carrier=carrier, priority=Priority.HIGH),
            Event("cmd.raw", b"\x00\x01\x02", priority=Priority.LOW),
        ]
        for e in sent:
            assert rings.command.push(e.to_record())
        _until(lambda: c[8] >= 2, what="the body to poll both commands")
        assert ex.wait(cycles=ex.cycles + 120, timeout=WAIT_S)
        pos, version = ds.read_versioned("pos")
        count = ds.read("count")
    st = ex.stats()
    assert c[11] == 0  # every version-3 entry is in the table
    assert [c[1], c[2], c[3], c[4]] == [0, 1, 2, 3]  # slot indices in definition order
    assert c[5] == -errno.ENOENT
    assert c[6] == 0 and c[7] == 0 and c[13] == 0
    assert c[14] == 32  # 4 elements of the f64 array
    assert c[12] == errno.EAGAIN  # the command ring is empty again
    assert c[9] == 0 and c[10] == 0
    assert ds.read("sum") == pytest.approx(10.5)
    assert isinstance(pos, float) and pos % 2.0 == 0.0 and version >= 2  # gain * cycle
    assert 0 < count <= st.cycle_count

    events = _events(ex)
    echoes = [e for e in events if e.type == "body.echo"]
    assert [(e.target_id, e.payload, e.priority, e.carrier) for e in echoes] == [
        ("cmd.move", sent[0].payload, Priority.HIGH, carrier),
        ("cmd.raw", b"\x00\x01\x02", Priority.LOW, None),
    ]
    assert echoes[0].is_json and echoes[0].json() == {"to": 1.5}
    ticks = [e for e in events if e.type == "body.tick"]
    assert ticks
    cycles = [int.from_bytes(e.payload, sys.byteorder) for e in ticks]
    assert all(k % 50 == 0 for k in cycles) and cycles == sorted(cycles)
    # id = slot index << 48 | per-executive sequence; timestamps on the executive's clock
    slot_index = ex.rings.slot_index  # type: ignore[union-attr]
    assert all(e.id >> 48 == slot_index for e in events)
    seqs = [e.id & ((1 << 48) - 1) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1
    stamps = [e.timestamp_ns for e in events]
    assert stamps == sorted(stamps)
    assert st.start_ns - 10**9 < stamps[0] <= stamps[-1] <= time.monotonic_ns()


def test_native_body_without_a_bus_gets_enoent(bus_body: _BusBody) -> None:
    c = (ctypes.c_int64 * 16)()
    c[15] = 1
    ex = Executive(_native(bus_body, c), period_us=1000)
    assert ex.datastore is None and ex.rings is None
    ex.run(5)
    assert c[0] == 5 and c[11] == 0
    assert c[1] == c[5] == -errno.ENOENT
    assert c[6] == c[7] == c[13] == errno.ENOENT
    assert c[10] == errno.ENOENT and c[12] == errno.ENOENT


def test_native_body_with_a_private_data_store(bus_body: _BusBody) -> None:
    ds = DataStore.private(max_slots=8, arena_bytes=1024)
    _define(ds)
    ds.write("gain", 0.5)
    c = (ctypes.c_int64 * 16)()
    ex = Executive(_native(bus_body, c), period_us=1000, datastore=ds, overrun="run_late")
    assert ex.datastore is ds and ex.rings is None
    ex.run(10)
    assert ds.read("pos") == pytest.approx(0.5 * 9)
    assert ds.read("count") == 10
    assert c[10] == 0 and c[12] == errno.ENOENT  # no rings: poll_event ENOENT


def test_rt_writes_take_the_ebusy_path(bus_body: _BusBody) -> None:
    ds = DataStore.private(max_slots=8, arena_bytes=1024)
    _define(ds)
    c = (ctypes.c_int64 * 16)()
    ex = Executive(_native(bus_body, c), period_us=1000, datastore=ds)
    with ds.write_scope("pos"):  # another writer holds the slot
        ex.start()
        try:
            _until(lambda: c[0] >= 3, what="cycles while the slot is held")
            assert c[6] == errno.EBUSY  # the cycle thread did not wait
        finally:
            ex.stop()


# ------------------------------------------------------------ a Python body


def test_python_body_publishes_and_polls(segment: Segment) -> None:
    got: list[Event] = []
    parent = TraceContext.new_root(sampled=True)

    def body(ctx: Any) -> None:
        if ctx.cycle == 3:
            assert ctx.has_bus
            assert ctx.publish("py.hello", {"cycle": ctx.cycle}) is True
            assert ctx.publish("py.low", b"raw", priority="low", target_id="axis-1")
            assert ctx.publish("py.crit", None, priority=Priority.CRITICAL)
            assert ctx.publish("py.traced", [1, 2], priority=1, carrier=parent.to_carrier())
        ev = ctx.poll_event()
        while ev is not None:
            got.append(ev)
            ev = ctx.poll_event()

    ex = Executive(body, period_us=1000, segment=segment, overrun="run_late")
    rings = ex.rings
    assert rings is not None
    command = Event("cmd.stop", {"now": True}, carrier=parent.to_carrier(), target_id="x")
    assert rings.command.push(command.to_record())
    ex.run(10)
    assert [(e.type, e.json(), e.target_id, e.carrier) for e in got] == [
        ("cmd.stop", {"now": True}, "x", parent.to_carrier())
    ]
    events = [e for e in _events(ex) if e.type.startswith("py.")]
    assert [e.type for e in events] == ["py.hello", "py.low", "py.traced"]
    hello, low, traced = events
    assert hello.json() == {"cycle": 3} and hello.is_json and hello.priority is Priority.NORMAL
    assert low.payload == b"raw" and not low.is_json and low.priority is Priority.LOW
    assert low.target_id == "axis-1"
    assert traced.carrier == parent.to_carrier() and traced.priority is Priority.HIGH
    assert all(e.id != 0 and e.timestamp_ns > 0 for e in events)
    crit = _events(ex, "critical")
    assert [e.type for e in crit] == ["py.crit"] and crit[0].priority is Priority.CRITICAL


def test_python_body_publish_attaches_the_current_trace_context(segment: Segment) -> None:
    from mxrc import tracecontext

    ctx_trace = TraceContext.new_root(sampled=True)

    def body(ctx: Any) -> None:
        with tracecontext.use(ctx_trace):
            ctx.publish("py.in_span")
        ctx.publish("py.no_span")

    ex = Executive(body, period_us=1000, segment=segment)
    ex.run(1)
    events = {e.type: e for e in _events(ex)}
    assert events["py.in_span"].carrier == ctx_trace.to_carrier()
    assert events["py.no_span"].carrier is None


def test_python_publish_without_a_segment_is_a_body_error() -> None:
    def body(ctx: Any) -> None:
        assert not ctx.has_bus
        ctx.publish("x.y")

    with pytest.raises(BodyError) as info:
        Executive(body, period_us=1000).run(3)
    assert isinstance(info.value.__cause__, UnsupportedError)
    assert "segment=" in str(info.value.__cause__)


def test_python_publish_checks_the_event(segment: Segment) -> None:
    from mxrc.bus import EventError

    errors: list[BaseException] = []

    def body(ctx: Any) -> None:
        for bad in (
            lambda: ctx.publish("x" * 33),
            lambda: ctx.publish("x.y", priority="URGENT"),
            lambda: ctx.publish("x.y", b"\x00" * 137),
            lambda: ctx.publish("x.y", carrier=b"short"),
        ):
            try:
                bad()
            except EventError as exc:
                errors.append(exc)

    ex = Executive(body, period_us=1000, segment=segment)
    ex.run(1)
    assert len(errors) == 4
    assert "URGENT" in str(errors[1]) and "136" in str(errors[2])


def test_publish_from_another_thread_is_refused(segment: Segment) -> None:
    kept: list[Any] = []
    ex = Executive(kept.append, period_us=1000, segment=segment)
    with ex:
        _until(lambda: bool(kept), what="a cycle")
        with pytest.raises(RuntimeError, match="cycle thread"):
            kept[0].publish("x.y")
        with pytest.raises(RuntimeError, match="cycle thread"):
            kept[0].poll_event()


def test_full_ring_drops_by_priority(segment: Segment) -> None:
    admitted: list[tuple[str, bool]] = []

    def body(ctx: Any) -> None:
        if ctx.cycle == 0:
            for _ in range(1100):
                admitted.append(("LOW", ctx.publish("fill.low", priority="LOW")))
            admitted.append(("NORMAL", ctx.publish("fill.normal")))
            admitted.append(("HIGH", ctx.publish("fill.high", priority="HIGH")))

    ex = Executive(body, period_us=1000, segment=segment)
    ex.run(1)
    lows = [ok for p, ok in admitted if p == "LOW"]
    # LOW is admitted below 80 % of 1024; the loop's two state changes came first
    room = sum(1 for fill in range(1024) if admits(Priority.LOW, fill, 1024))
    assert sum(lows) == room - 2
    assert dict(admitted[-2:]) == {"NORMAL": True, "HIGH": True}
    counters = ex.rings.counters()["event"]  # type: ignore[union-attr]
    assert counters.dropped_by_priority[Priority.LOW] == 1100 - sum(lows)


# ------------------------------------------------------------ snapshots at the cycle boundary


def test_snapshots_are_taken_at_a_cycle_boundary(segment: Segment) -> None:
    ds_box: list[DataStore] = []

    def body(ctx: Any) -> None:
        ds = ds_box[0]
        k = float(ctx.cycle)
        ds.write("k", ctx.cycle)
        ds.write("vec", [k] * 8)

    ex = Executive(body, period_us=500, segment=segment, overrun="run_late")
    ds = ex.datastore
    assert ds is not None
    ds.define("k", int)
    ds.define("vec", "f64array", capacity=8)
    ds_box.append(ds)
    snaps = []
    with ex:
        _until(lambda: ex.cycles >= 5, what="the first cycles")
        for _ in range(20):
            snaps.append(ds.snapshot(timeout=WAIT_S))
    for s in snaps:
        k = s.values["k"]
        assert not s.torn
        assert list(s.values["vec"]) == [float(k)] * 8  # never half a cycle
        # taken before cycle `s.cycle`'s bodies: the values cycle s.cycle - 1 left
        assert s.cycle == k + 1
    assert [s.cycle for s in snaps] == sorted(s.cycle for s in snaps)


def test_snapshot_on_a_simulated_clock_uses_virtual_time() -> None:
    ds = DataStore.private()
    ds.define("x", float)
    token: list[int] = []

    def body(ctx: Any) -> None:
        ds.write("x", float(ctx.cycle))
        if ctx.cycle == 10:
            token.append(ds.request_snapshot())
        ctx.sim_advance(1000)

    ex = Executive(body, period_us=100, clock="simulated", datastore=ds)
    ex.run(20)
    snap = ds.read_snapshot(token[0], timeout=1)
    assert snap.cycle == 11 and snap.values["x"] == 10.0
    assert snap.taken_ns == 11 * 100_000  # the release of cycle 11, virtual ns


# ------------------------------------------------------------ the agent watchdog


def _wait_state(ex: Executive, state: RtState, what: str = "") -> None:
    _until(lambda: ex.state is state, what=f"{state.name} {what}")


def test_watchdog_enters_and_leaves_safe_mode(segment: Segment) -> None:
    ran: list[str] = []
    ex = Executive(
        lambda ctx: ran.append("normal"),
        safe_mode_body=lambda ctx: ran.append("safe"),
        period_us=1000,
        segment=segment,
        agent_timeout_ms=100,
    )
    assert ex.agent_watchdog and ex.agent_timeout_ms == 100
    with _Beater(segment) as beat, ex:
        assert ex.wait(cycles=200, timeout=WAIT_S)  # beating: stays RUNNING
        assert ex.state is RtState.RUNNING and ex.safe_mode_reasons == frozenset()
        beat.beating.clear()
        _wait_state(ex, RtState.SAFE_MODE, "after the heartbeat stopped")
        last_beat = segment.agent_heartbeat().heartbeat_ns
        assert ex.safe_mode_reasons == {"agent"}
        n_safe = ran.count("safe")
        _until(lambda: ran.count("safe") > n_safe, what="the safe body")
        beat.beating.set()
        _wait_state(ex, RtState.RUNNING, "after the heartbeat resumed")
        assert ex.safe_mode_reasons == frozenset()
    events = _events(ex)
    assert _state_changes(events) == [
        ("INIT", "READY", "start"),
        ("READY", "RUNNING", "start"),
        ("RUNNING", "SAFE_MODE", "agent"),
        ("SAFE_MODE", "RUNNING", "agent"),
        ("RUNNING", "SHUTDOWN", "stop"),
    ]
    entered = [e for e in events if e.type == "rt.safe_mode_entered"]
    exited = [e for e in events if e.type == "rt.safe_mode_exited"]
    assert [e.json() for e in entered] == [{"reason": "agent", "timeout_ms": 100}]
    assert len(exited) == 1 and exited[0].json()["downtime_ms"] > 0
    assert all(e.priority is Priority.HIGH and e.is_json for e in entered + exited)
    # not before the timeout: entered when the last beat was more than 100 ms old
    assert entered[0].timestamp_ns - last_beat > 100_000_000
    assert entered[0].timestamp_ns < exited[0].timestamp_ns


def test_requested_safe_mode_outlives_a_fresh_agent(segment: Segment) -> None:
    ex = Executive(BuiltinBody("noop"), period_us=1000, segment=segment, agent_timeout_ms=80)
    with _Beater(segment) as beat, ex:
        assert ex.wait(cycles=20, timeout=WAIT_S)
        ex.enter_safe_mode()
        _until(lambda: ex.safe_mode_reasons == {"requested"}, what="requested safe mode")
        assert ex.state is RtState.SAFE_MODE
        beat.beating.clear()
        _until(lambda: "agent" in ex.safe_mode_reasons, what="the stale agent")
        assert ex.safe_mode_reasons == {"requested", "agent"}
        beat.beating.set()
        _until(lambda: ex.safe_mode_reasons == {"requested"}, what="the fresh agent")
        assert ex.wait(cycles=ex.cycles + 30, timeout=WAIT_S)
        assert ex.state is RtState.SAFE_MODE  # the request still holds it
        ex.exit_safe_mode()
        _wait_state(ex, RtState.RUNNING, "after exit_safe_mode")
    changes = _state_changes(_events(ex))
    assert changes[2:] == [
        ("RUNNING", "SAFE_MODE", "request"),
        ("SAFE_MODE", "RUNNING", "request"),
        ("RUNNING", "SHUTDOWN", "stop"),
    ]


def test_exit_safe_mode_waits_for_a_stale_agent(segment: Segment) -> None:
    ex = Executive(BuiltinBody("noop"), period_us=1000, segment=segment, agent_timeout_ms=60)
    with _Beater(segment) as beat, ex:
        beat.beating.clear()
        _wait_state(ex, RtState.SAFE_MODE, "with a stale agent")
        ex.exit_safe_mode()
        assert ex.wait(cycles=ex.cycles + 30, timeout=WAIT_S)
        assert ex.state is RtState.SAFE_MODE and ex.safe_mode_reasons == {"agent"}
        beat.beating.set()
        _wait_state(ex, RtState.RUNNING, "once the agent beats")


def test_an_agent_that_never_beats_gets_one_timeout(segment: Segment) -> None:
    ex = Executive(BuiltinBody("noop"), period_us=1000, segment=segment, agent_timeout_ms=150)
    assert segment.agent_heartbeat().heartbeat_ns == 0
    ex.start()
    try:
        _wait_state(ex, RtState.SAFE_MODE, "without any agent")
        assert ex.safe_mode_reasons == {"agent"}
        segment.beat_agent()  # a first beat: fresh
        _wait_state(ex, RtState.RUNNING, "after a first beat")
    finally:
        ex.stop()
    (entered,) = [e for e in _events(ex) if e.type == "rt.safe_mode_entered"]
    assert entered.timestamp_ns - ex.stats().start_ns > 150_000_000  # one timeout from start


def test_a_paused_executive_returns_to_paused(segment: Segment) -> None:
    ex = Executive(BuiltinBody("noop"), period_us=1000, segment=segment, agent_timeout_ms=60)
    with _Beater(segment) as beat, ex:
        ex.pause()
        _wait_state(ex, RtState.PAUSED)
        beat.beating.clear()
        _wait_state(ex, RtState.SAFE_MODE, "from PAUSED")
        beat.beating.set()
        _wait_state(ex, RtState.PAUSED, "back")
        # pause/resume while in SAFE_MODE pick the state it returns to
        ex.enter_safe_mode()
        _wait_state(ex, RtState.SAFE_MODE)
        ex.resume()
        assert ex.wait(cycles=ex.cycles + 5, timeout=WAIT_S)
        assert ex.state is RtState.SAFE_MODE
        ex.exit_safe_mode()
        _wait_state(ex, RtState.RUNNING, "after resume + exit")


def test_body_error_safe_mode_is_its_own_reason(segment: Segment) -> None:
    ex = Executive(
        BuiltinBody("fail_at", 20),
        period_us=1000,
        segment=segment,
        on_error="safe_mode",
        overrun="run_late",
        agent_timeout_ms=5000,
    )
    with _Beater(segment), ex:
        _wait_state(ex, RtState.SAFE_MODE, "after the body error")
        assert ex.safe_mode_reasons == {"body_error"}
        ex.exit_safe_mode()
        _wait_state(ex, RtState.RUNNING)
    events = _events(ex)
    assert ("RUNNING", "SAFE_MODE", "body_error") in _state_changes(events)
    entered = [e.json() for e in events if e.type == "rt.safe_mode_entered"]
    assert entered == [{"reason": "body_error"}]


def test_watchdog_is_off_by_default_and_on_a_simulated_clock(segment: Segment) -> None:
    ex = Executive(BuiltinBody("noop"), period_us=1000, segment=segment)
    assert not ex.agent_watchdog and ex.agent_timeout_ms is None
    ex.run(150)  # no agent, no watchdog: never SAFE_MODE
    assert ex.stats().cycle_count == 150
    sim = Executive(
        BuiltinBody("noop"),
        period_us=1000,
        segment=segment,
        name="sim",
        clock="simulated",
        agent_timeout_ms=1,
    )
    assert not sim.agent_watchdog
    sim.run(5000)
    assert sim.stats().cycle_count == 5000
    assert ("RUNNING", "SAFE_MODE", "agent") not in _state_changes(_events(sim))


def test_agent_timeout_checks() -> None:
    with pytest.raises(ValueError, match="segment="):
        Executive(BuiltinBody("noop"), agent_timeout_ms=100)
    with pytest.raises(ValueError, match=">= 0"):
        Executive(BuiltinBody("noop"), agent_timeout_ms=-1)
    with pytest.raises(TypeError, match="agent_timeout_ms"):
        Executive(BuiltinBody("noop"), agent_timeout_ms="100")  # type: ignore[arg-type]
    assert Executive(BuiltinBody("noop"), agent_timeout_ms=0).agent_timeout_ms is None
    with pytest.raises(TypeError, match="DataStore"):
        Executive(BuiltinBody("noop"), datastore=object())  # type: ignore[arg-type]


def test_core_executive_checks_its_bus_arguments(segment: Segment) -> None:
    slot = _core.bus.private_stats("core")
    with pytest.raises(ValueError, match="agent_segment"):
        _core.cycle.Executive(slot, agent_timeout_ns=1000)
    with pytest.raises(TypeError, match="RingSet"):
        _core.cycle.Executive(slot, rings=object())
    with pytest.raises(TypeError, match="Segment"):
        _core.cycle.Executive(slot, agent_segment=object(), agent_timeout_ns=1)
    with pytest.raises(TypeError, match="DataStore"):
        _core.cycle.Executive(slot, datastore=object())
    core = _core.cycle.Executive(
        slot,
        rings=segment.ring_set(3).core,
        datastore=DataStore.private(),
        agent_segment=segment,
        agent_timeout_ns=10**8,
    )
    assert core.agent_watchdog and core.agent_timeout_ns == 10**8
    assert core.rings is not None and core.datastore is not None
    assert core.safe_mode_reasons == 0 and core.loop_events == 0


def test_from_config_maps_the_agent_timeout(segment: Segment) -> None:
    from mxrc.config import MxrcConfig

    cfg = MxrcConfig()
    no_priv = {"policy": "SCHED_OTHER", "priority": 0, "lock_memory": False}
    with_seg = Executive.from_config(cfg, BuiltinBody("noop"), segment=segment, **no_priv)
    assert with_seg.agent_timeout_ms == cfg.failover_policy.rt.agent_heartbeat_timeout_ms == 500
    assert with_seg.datastore is not None and with_seg.rings is not None
    without = Executive.from_config(cfg, BuiltinBody("noop"), **no_priv)
    assert without.agent_timeout_ms is None and without.datastore is None
    off = Executive.from_config(
        cfg, BuiltinBody("noop"), segment=segment, name="off", agent_timeout_ms=None, **no_priv
    )
    assert off.agent_timeout_ms is None


def test_segment_without_a_data_store() -> None:
    seg = Segment.create(_instance("nods"), max_stats=1, datastore_bytes=0)
    try:
        ex = Executive(BuiltinBody("noop"), segment=seg)
        assert ex.datastore is None and ex.rings is not None
    finally:
        seg.close()


# ------------------------------------------------------------ the loop never allocates


_ALLOC_CHILD = """
import ctypes, importlib.util, json, sys, threading, time
from mxrc.bus import Event, Segment
from mxrc.rt._bodies import NativeBody
from mxrc.rt._executive import Executive
probe = ctypes.CDLL(None)
probe.mxrc_alloc_count.restype = ctypes.c_ulong
spec = importlib.util.spec_from_file_location("_mxrc_test_bus_body", {so!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
address = int(mod.ffi.cast("uintptr_t", mod.ffi.addressof(mod.lib, "mxrc_bus_body")))
counters = (ctypes.c_int64 * 16)()
counters[15] = 3
seg = Segment.create({instance!r}, max_stats=1)
ex = Executive(NativeBody(address, ctypes.addressof(counters)), period_us=1000, segment=seg,
               agent_timeout_ms=40)
ds = ex.datastore
for name, kind, cap in (("pos", float, None), ("gain", float, None), ("count", int, None),
                        ("vec", "f64array", 4), ("sum", float, None)):
    ds.define(name, kind, cap)
rings = ex.rings
seg.attach_agent()
ex.start()
ex.wait(cycles=100, timeout=10)      # warm-up
probe.mxrc_alloc_watch(ex.tid)
before = ex.cycles
states = set()
deadline = time.monotonic() + 20
beating = True
flips = 0
while ex.cycles < before + 1500 and time.monotonic() < deadline:
    if beating:
        seg.beat_agent()
    if (ex.cycles - before) % 300 < 2 and flips < 8:
        beating = not beating
        flips += 1
    ds.request_snapshot()
    rings.command.push(Event("cmd.ping", {{"n": ex.cycles}}).to_record())
    rings.event.drain()
    states.add(ex.state.name)
    time.sleep(0.01)
cycle_calls = probe.mxrc_alloc_count()
cycles = ex.cycles - before
probe.mxrc_alloc_watch(0)
seg.beat_agent()
ex.stop()
seg.close()
print(json.dumps({{"cycle_calls": cycle_calls, "cycles": cycles, "states": sorted(states),
                  "polled": counters[8]}}))
"""


@pytest.mark.slow
def test_the_bus_path_does_not_allocate(bus_body: _BusBody, tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None
    out = tmp_path / "liballoc_counter.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(NATIVE_DIR / "alloc_counter.c")],
        check=True,
        timeout=60,
    )
    code = _ALLOC_CHILD.format(so=str(bus_body.so), instance=_instance("alloc"))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, LD_PRELOAD=str(out)),
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["cycles"] >= 1000
    assert r["polled"] > 0
    assert {"RUNNING", "SAFE_MODE"} <= set(r["states"])  # the watchdog flipped inside the window
    assert r["cycle_calls"] == 0


def test_the_doc_example_compiles(tmp_path: Path) -> None:
    """The C body of docs/executive.md ("Native bodies: the C table") compiles cleanly."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    doc = (Path(__file__).parent.parent / "docs" / "executive.md").read_text()
    section = doc.split("### Native bodies: the C table", 1)[1]
    code = section.split("```c\n", 1)[1].split("```", 1)[0]
    src = tmp_path / "body.c"
    src.write_text(code)
    proc = subprocess.run(
        [
            cc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-variable",
            "-Wno-empty-body",
            "-fsyntax-only",
            f"-I{get_include()}",
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_state_seen_in_the_stats_block_has_its_events_in_the_ring(segment: Segment) -> None:
    """The cycle thread emits rt.state_changed and rt.safe_mode_* before it publishes the
    state in the stats block: an observer that sees SAFE_MODE (or RUNNING again) there and
    drains the ring at once finds the event announcing it. (Probabilistic against the old
    order, where the window was the few instructions between the two; 40 round trips.)"""
    ex = Executive(BuiltinBody("noop"), period_us=1000, segment=segment, agent_timeout_ms=2000)
    rings = ex.rings
    assert rings is not None
    ring = rings.ring("event")
    seen: list[str] = []

    def observe(state: RtState, event: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while segment.stats("main").state is not state:
            assert time.monotonic() < deadline, f"no {state.name} in the stats block"
        seen.extend(Event.from_record(r).type for r in ring.drain())  # at once
        assert event in seen, (state, seen)
        seen.clear()

    with _Beater(segment), ex:
        assert ex.wait(cycles=20, timeout=WAIT_S)
        ring.drain()
        for _ in range(40):
            ex.enter_safe_mode()
            observe(RtState.SAFE_MODE, "rt.safe_mode_entered")
            ex.exit_safe_mode()
            observe(RtState.RUNNING, "rt.safe_mode_exited")
