"""The agent: RingTransport, mxrc.Agent, `mxrc agent`, `mxrc run --agent`, ring metrics and status.

Real processes throughout: an RT process (an Executive with a Python body publishing
events and polling commands) and an agent process exchange events both ways with their
trace carriers intact; killing the agent puts the RT side in SAFE_MODE, a new agent
brings it back; drops show in `mxrc status` and `mxrc metrics`; wrong-layout segments
are refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import child_ready, run_mxrc, small_segment, spawn_mxrc, spawn_python
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mxrc
from mxrc import tracecontext
from mxrc._native import _core
from mxrc.agent import Agent, AgentError
from mxrc.bus import Event, EventBus, Priority, RingTransport, Segment, segment_path
from mxrc.bus._events import FLAG_JSON
from mxrc.metrics import RtCollector
from mxrc.tracecontext import TraceContext

CRITICAL, HIGH, NORMAL, LOW = 0, 1, 2, 3


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)


def _carrier(ctx: TraceContext) -> bytes:
    return ctx.to_carrier()


def _reap(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, *, grace: float = 0.0
) -> tuple[str, str]:
    """Close its stdin, give it ``grace`` seconds to exit, then ``sig``; its output."""
    if proc.stdin is not None:
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.stdin = None
    if grace:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out or "", err or ""


def _spawn_agent(*args: str) -> subprocess.Popen[str]:
    return spawn_mxrc("agent", *args)


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# ---------------------------------------------------------------- the JSON flag


def test_json_flag_in_the_header_and_the_record() -> None:
    header = (Path(mxrc.get_include()) / "mxrc.h").read_text()
    assert re.search(r"#define MXRC_EVENT_FLAG_JSON 0x01u", header)
    assert FLAG_JSON == 0x01
    js = Event("a.b", {"x": 1})
    raw = Event("a.b", b"\x00\x01")
    declared = Event("a.b", b'{"x":1}', is_json=True)
    assert (js.is_json, raw.is_json, declared.is_json, Event("e").is_json) == (
        True,
        False,
        True,
        False,
    )
    assert js.to_record()[17] == FLAG_JSON and raw.to_record()[17] == 0
    back = Event.from_record(js.to_record())
    assert back.is_json and back.json() == {"x": 1}
    assert not Event.from_record(raw.to_record()).is_json
    # other flag bits stay reserved and ignored
    rec = bytearray(js.to_record())
    rec[17] = 0x80
    assert not Event.from_record(bytes(rec)).is_json
    # the flag is metadata: equality follows the bytes
    assert declared == js and hash(declared) == hash(js)


# ---------------------------------------------------------------- RingTransport


def test_ring_transport_receives_critical_first_and_sends_with_admission(instance: str) -> None:
    with small_segment(instance) as seg:
        slot = seg.claim_stats("main")
        rings = seg.rings("main")
        t = RingTransport(rings)
        assert t.name == "ring set 0" and t.rings.slot_index == 0
        assert t.receive(8) == []
        rings.publish_event(Event("n.one").to_record(), NORMAL)
        rings.publish_event(Event("c.one", priority=CRITICAL).to_record(), CRITICAL)
        rings.event.push(Event("short").to_record()[:64])  # a truncated record: padded
        assert t.pending() == 3
        got = [Event.from_record(r) for r in t.receive(8)]
        assert [e.type for e in got] == ["c.one", "n.one", "short"]
        assert (t.received, t.received_critical) == (3, 1)
        assert t.receive(0) == []
        # send: command ring of 16, NORMAL admitted below 90 % (14 records), HIGH up to full
        sent = [t.send(Event(f"cmd.{i}").to_record(), Priority.NORMAL) for i in range(16)]
        assert sent.count(True) == 15 and sent[-1] is False
        assert t.send(Event("cmd.high").to_record(), Priority.HIGH)
        assert not t.send(Event("cmd.full").to_record(), Priority.HIGH)
        assert (t.sent, t.dropped) == (16, 2)
        first = rings.poll_command()
        assert first is not None and Event.from_record(first).type == "cmd.0"
        c = rings.command.counters()
        assert c.dropped == 2 and c.dropped_by_priority[NORMAL] == 1
        with pytest.raises(TypeError, match="RingSet"):
            RingTransport(slot)  # type: ignore[arg-type]


def test_ring_transport_joins_two_buses_over_a_segment(instance: str) -> None:
    """The EventBus transport protocol over the rings: RT-side records in, commands out."""
    with small_segment(instance) as seg:
        seg.claim_stats("main")
        rings = seg.rings("main")
        bus = EventBus(name="agent")
        got: list[Event] = []
        bus.subscribe("rt.*", got.append)
        bus.attach(RingTransport(rings), forward="cmd.*", name="main")
        ctx = TraceContext.new_root()
        rings.publish_event(Event("rt.hello", {"n": 1}, carrier=_carrier(ctx)).to_record(), NORMAL)
        with bus:
            bus.publish("cmd.go", {"speed": 2})
            _wait(lambda: got and bus.counters().transports["main"].forwarded, 5, "both ways")
        assert got[0].trace_id == ctx.trace_id and got[0].json() == {"n": 1}
        cmd = rings.poll_command()
        assert cmd is not None
        e = Event.from_record(cmd)
        assert e.type == "cmd.go" and e.json() == {"speed": 2} and e.is_json


# ---------------------------------------------------------------- Agent, in process


def test_agent_drains_dispatches_sends_and_beats(instance: str) -> None:
    with small_segment(instance) as seg:
        seg.claim_stats("main")
        rings = seg.rings("main")
        logs: list[tuple[str, bytes]] = []
        spans: list[bytes] = []
        agent = Agent(
            seg,
            heartbeat_interval_ms=20,
            log_sink=lambda name, recs: logs.extend((name, r) for r in recs),
            span_sink=lambda name, recs: spans.extend(recs),
        )
        assert agent.generation == 0 and not agent.running
        assert seg.agent_heartbeat().pid == 0
        got: list[tuple[Event, bytes | None]] = []
        handled = threading.Event()

        def echo(e: Event) -> None:
            # the handler runs in the event's trace context: send() picks it up
            current = tracecontext.current()
            got.append((e, None if current is None else current.trace_id))
            agent.send("cmd.echo", e.json())
            handled.set()

        with agent:
            assert agent.running and agent.generation == 1
            hb = seg.agent_heartbeat()
            assert hb.pid == os.getpid() and hb.generation == 1
            agent.subscribe("rt.*", echo)
            ctx = TraceContext.new_root()
            rings.publish_event(
                Event("rt.ping", {"n": 7}, carrier=_carrier(ctx)).to_record(), NORMAL
            )
            rings.log.push(b"log line")
            rings.span.push(b"span")
            assert handled.wait(5)
            _wait(lambda: logs and spans, 5, "log and span records")
            first = seg.agent_heartbeat().heartbeat_ns
            _wait(lambda: seg.agent_heartbeat().heartbeat_ns > first, 5, "a later heartbeat")
            c = agent.counters()
        assert got[0][0].type == "rt.ping" and got[0][1] == ctx.trace_id
        assert logs == [("main", b"log line")] and spans == [b"span"]
        echoed = rings.poll_command()
        assert echoed is not None
        e = Event.from_record(echoed)
        assert e.type == "cmd.echo" and e.json() == {"n": 7}
        assert e.trace_id == ctx.trace_id  # carrier intact RT -> agent -> RT
        assert e.id >> 48 == 1 and e.timestamp_ns > 0  # agent generation, own sequence
        assert c.beats >= 2 and c.events_received == 1 and c.commands_sent == 1
        assert (c.log_records, c.span_records, c.sink_errors) == (1, 1, 0)
        assert c.executives["main"].rings["event"].popped == 1
        assert c.executives["main"].slot_index == 0
        # stopped: the pid is cleared, the last beat stays (goes stale for the RT side)
        hb = seg.agent_heartbeat()
        assert hb.pid == 0 and hb.heartbeat_ns > 0 and hb.generation == 1
        assert not agent.running
        agent.stop()  # idempotent
        with pytest.raises(AgentError, match="one-shot"):
            agent.start()


def test_agent_finds_cycle_threads_claimed_later_and_forwards(instance: str) -> None:
    with small_segment(instance) as seg:
        agent = Agent(seg, forward="cmd.*", rescan_interval_s=0.02)
        with agent:
            assert agent.executives() == []
            with pytest.raises(LookupError, match="no cycle thread has claimed"):
                agent.send("cmd.x")
            seg.claim_stats("a")
            seg.claim_stats("b")
            _wait(lambda: agent.executives() == ["a", "b"], 5, "both slots")
            with pytest.raises(LookupError, match=r"cycle threads \['a', 'b'\]"):
                agent.send("cmd.x")
            with pytest.raises(LookupError, match="no cycle thread named 'c'"):
                agent.send("cmd.x", executive="c")
            assert agent.send("cmd.to_b", executive="b", priority=Priority.HIGH)
            # forwarded from the agent's bus to every cycle thread
            agent.bus.publish("cmd.all", [1, 2])
            agent.bus.flush()
        a, b = seg.rings("a"), seg.rings("b")
        assert [Event.from_record(r).type for r in b.command.drain()] == ["cmd.to_b", "cmd.all"]
        assert [Event.from_record(r).type for r in a.command.drain()] == ["cmd.all"]


def test_agent_sink_errors_are_counted(instance: str) -> None:
    def broken(name: str, records: object) -> None:
        raise RuntimeError("sink down")

    with small_segment(instance) as seg:
        seg.claim_stats("main")
        seg.rings("main").log.push(b"x")
        with Agent(seg, log_sink=broken) as agent:
            _wait(lambda: agent.counters().sink_errors == 1, 5, "the sink error")
            assert agent.counters().log_records == 1


def test_agent_refuses_a_second_live_agent_unless_takeover(instance: str) -> None:
    with small_segment(instance) as seg:
        child = spawn_python(
            f"""
            import json, sys
            from mxrc.agent import Agent
            a = Agent({instance!r}).start()
            print(json.dumps({{"generation": a.generation}}), flush=True)
            sys.stdin.read()
            a.stop()
            """
        )
        try:
            assert child_ready(child)["generation"] == 1
            with pytest.raises(AgentError, match=f"already has a live agent: pid {child.pid}"):
                Agent(seg).start()
            with Agent(seg, takeover=True) as second:
                assert second.generation == 2
                assert seg.agent_heartbeat().pid == os.getpid()
        finally:
            _reap(child, grace=15)


def test_agent_argument_errors(instance: str) -> None:
    with pytest.raises(mxrc.SegmentError, match="does not exist"):
        Agent(instance)
    with small_segment(instance) as seg:
        with pytest.raises(TypeError, match=r"instance name or an mxrc\.bus\.Segment"):
            Agent(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="heartbeat_interval_ms"):
            Agent(seg, heartbeat_interval_ms=0)
        with pytest.raises(ValueError, match="drain_interval_s"):
            Agent(seg, drain_interval_s=0)
        with pytest.raises(TypeError, match="log_sink"):
            Agent(seg, log_sink=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'\\*' is allowed only at the end"):
            Agent(seg, forward="a*b")
        # the heartbeat settings come from the configuration
        cfg = mxrc.load_config(None, check_host=False)
        a = Agent(seg, config=cfg)
        assert (a.heartbeat_interval_ms, a.heartbeat_timeout_ms) == (100, 500)
        assert "not started" in repr(a)


def test_agent_in_a_python_body_process_warns(
    instance: str, caplog: pytest.LogCaptureFixture
) -> None:
    with small_segment(instance) as seg:
        ex = mxrc.Executive(lambda ctx: None, period_us=5000, segment=seg, name="py")
        with ex, caplog.at_level("WARNING", logger="mxrc.agent"), Agent(seg):
            pass
    assert "with a Python body" in caplog.text and "'py'" in caplog.text


# ---------------------------------------------------------------- mxrc agent


def test_mxrc_agent_missing_segment_exits_1(instance: str) -> None:
    proc = run_mxrc("agent", "--instance", instance, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"no instance {instance!r} is running" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("version", [1, 3])
def test_mxrc_agent_refuses_a_wrong_layout_segment(instance: str, version: int) -> None:
    header = struct.pack("<QIIQQ", _core.bus.MAGIC, version, 256, 4096, 1)
    Path(segment_path(instance)).write_bytes(header + bytes(4096))
    proc = run_mxrc("agent", "--instance", instance, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert f"has layout v{version}, this mxrc reads v2" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(mxrc.SegmentError, match=f"layout v{version}"):
        Agent(instance)


def test_mxrc_agent_refuses_a_foreign_file(instance: str) -> None:
    Path(segment_path(instance)).write_bytes(b"not a segment" * 100)
    proc = run_mxrc("agent", "--instance", instance, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "is not an mxrc segment" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_mxrc_agent_serves_until_a_signal(instance: str, sig: int) -> None:
    with small_segment(instance) as seg:
        seg.claim_stats("main")
        rings = seg.rings("main")
        proc = _spawn_agent("--instance", instance, "--events")
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"mxrc agent: instance {instance!r}"), line + _reap(proc)[1]
            assert "agent generation 1" in line and f"pid {proc.pid}" in line
            assert "heartbeat every 100 ms (RT timeout 500 ms); cycle threads: main" in line
            hb = seg.agent_heartbeat()
            assert hb.pid == proc.pid and hb.generation == 1
            ctx = TraceContext.new_root()
            ev = Event("rt.alarm", {"axis": 2}, priority=Priority.CRITICAL, carrier=_carrier(ctx))
            rings.publish_event(ev.to_record(), CRITICAL)
            printed = json.loads(proc.stdout.readline())
            assert printed["type"] == "rt.alarm" and printed["priority"] == "CRITICAL"
            assert printed["payload"] == {"axis": 2}
            assert printed["trace_id"] == ctx.trace_id.hex()
            first = seg.agent_heartbeat().heartbeat_ns
            _wait(lambda: seg.agent_heartbeat().heartbeat_ns > first, 5, "a later heartbeat")
        finally:
            _, err = _reap(proc, sig)
        assert proc.returncode == 0, err
        assert "mxrc agent: stopped after" in err and "1 events received" in err
        assert seg.agent_heartbeat().pid == 0


def test_mxrc_agent_exits_when_the_owner_dies(instance: str) -> None:
    owner = spawn_python(
        f"""
        import json, sys
        from mxrc.bus import Segment
        seg = Segment.create({instance!r}, max_stats=1, datastore_bytes=0)
        print(json.dumps({{}}), flush=True)
        sys.stdin.read()
        """
    )
    child_ready(owner)
    agent = _spawn_agent("--instance", instance)
    try:
        assert agent.stdout is not None
        assert "mxrc agent:" in agent.stdout.readline()
        owner.kill()
        owner.communicate(timeout=10)
        agent.wait(timeout=15)
    finally:
        _, err = _reap(agent)
        _reap(owner)
    assert agent.returncode == 1, err
    assert "is gone: the instance stopped" in err


def test_mxrc_agent_exits_1_when_its_health_server_dies(instance: str) -> None:
    # the serving loop fails at once (its idle sweep raises); the agent must not beat on
    # without /health: it exits 1 so that `mxrc supervise` restarts it
    with small_segment(instance) as seg:
        agent = spawn_python(
            f"""
            import sys
            from mxrc.agent._cli import AgentOptions, run_agent
            from mxrc.ha._http import HealthServer

            def broken(self, sel, now):
                raise RuntimeError("injected failure")

            HealthServer._expire = broken
            opts = AgentOptions(instance={instance!r}, http_port=0)
            sys.exit(run_agent(opts, sys.stdout, sys.stderr))
            """
        )
        try:
            agent.wait(timeout=30)
        finally:
            out, err = _reap(agent)
        assert agent.returncode == 1, out + err
        assert "health server on http://127.0.0.1:" in out
        assert re.search(
            r"mxrc agent: the health server's serving loop on http://127\.0\.0\.1:\d+ failed "
            r"\(RuntimeError: injected failure\); nothing serves /health and /metrics: exiting "
            r"so that the agent is restarted",
            err,
        ), err
        assert seg.agent_heartbeat().pid == 0  # it detached: a new agent may attach at once


def test_mxrc_agent_dies_with_its_parent(instance: str) -> None:
    with small_segment(instance) as seg:
        parent = spawn_python(
            f"""
            import json, subprocess, sys, os
            p = subprocess.Popen([sys.executable, "-m", "mxrc", "agent", "--instance",
                                  {instance!r}, "--parent-pid", str(os.getpid())],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(json.dumps({{"agent": p.pid}}), flush=True)
            sys.stdin.read()
            """
        )
        try:
            pid = child_ready(parent)["agent"]
            _wait(lambda: seg.agent_heartbeat().pid == pid, 30, "the agent's attach")
            parent.kill()
            parent.communicate(timeout=10)
            # its parent died: PR_SET_PDEATHSIG stops it (it detaches cleanly)
            _wait(lambda: _pid_gone(pid), 15, "the orphaned agent to exit")
            assert seg.agent_heartbeat().pid == 0
        finally:
            _reap(parent)


def test_mxrc_agent_help() -> None:
    proc = run_mxrc("agent", "--help", timeout=60)
    assert proc.returncode == 0
    for flag in ("--instance", "--config", "--events", "--takeover"):
        assert flag in proc.stdout
    assert "--parent-pid" not in proc.stdout


# ---------------------------------------------------------------- drops in status and metrics


def _fill_with_drops(seg: Segment) -> None:
    """Offer 20 NORMAL events to an event ring of 16 (this process is its only producer)."""
    seg.claim_stats("main")
    rings = seg.rings("main")
    for i in range(20):
        rings.publish_event(Event(f"rt.e{i}").to_record(), NORMAL)
    for _ in range(6):
        rings.publish_event(Event("rt.c", priority=CRITICAL).to_record(), CRITICAL)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_ring_drops_and_the_agent_in_metrics(instance: str) -> None:
    with small_segment(instance) as seg:
        _fill_with_drops(seg)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(RtCollector(seg, process="cell"))
        s = _samples(generate_latest(registry).decode())

        def v(name: str, **labels: str) -> float:
            return s[(name, frozenset({"process": "cell", **labels}.items()))]

        ev = {"executive": "main", "ring": "event"}
        assert v("mxrc_bus_ring_pushed_total", **ev) == 20
        # NORMAL is admitted while the fill is below 90 %: 15 of 16, then dropped
        assert v("mxrc_bus_ring_dropped_total", **ev) == 5
        assert v("mxrc_bus_ring_admission_dropped_total", priority="normal", **ev) == 5
        assert v("mxrc_bus_ring_depth", **ev) == 15
        assert v("mxrc_bus_ring_capacity", **ev) == 16
        crit = {"executive": "main", "ring": "critical"}
        assert v("mxrc_bus_ring_dropped_total", **crit) == 2
        assert v("mxrc_bus_ring_critical_overflow", executive="main") == 1
        assert v("mxrc_bus_ring_capacity", executive="main", ring="command") == 16
        # no agent yet: no age, pid 0
        assert ("mxrc_bus_agent_heartbeat_age_seconds", frozenset({("process", "cell")})) not in s
        assert v("mxrc_bus_agent_pid") == 0
        with Agent(seg):
            s = _samples(generate_latest(registry).decode())
            assert v("mxrc_bus_agent_pid") == os.getpid()
            assert 0 <= v("mxrc_bus_agent_heartbeat_age_seconds") < 60
            assert v("mxrc_bus_agent_attaches_total") == 1


def test_ring_drops_and_the_agent_in_mxrc_status_and_mxrc_metrics(instance: str) -> None:
    with small_segment(instance) as seg:
        _fill_with_drops(seg)
        proc = run_mxrc("status", "--instance", instance, "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["agent"] == {
            "pid": 0,
            "alive": False,
            "generation": 0,
            "heartbeat_age_s": None,
        }
        assert data["critical_overflow"] is True
        t = data["threads"][0]
        assert t["ring_drops"] == 7 and t["critical_overflow"] is True
        assert t["rings"]["event"]["dropped"] == 5 and t["rings"]["event"]["size"] == 15
        assert t["rings"]["event"]["dropped_by_priority"]["normal"] == 5
        text = run_mxrc("status", "--instance", instance, timeout=60).stdout
        assert "agent: none has attached yet" in text
        assert "rings (waiting/capacity dropped): log 0/16 0, span 0/16 0, event 15/16 5" in text
        assert "CRITICAL OVERFLOW" in text
        with Agent(seg):
            text = run_mxrc("status", "--instance", instance, timeout=60).stdout
            assert f"agent: pid {os.getpid()}, generation 1, last heartbeat" in text
            metrics = run_mxrc("metrics", "--instance", instance, timeout=60)
            assert metrics.returncode == 0, metrics.stderr
            s = _samples(metrics.stdout)
            key = frozenset({"process": "rt", "executive": "main", "ring": "event"}.items())
            assert s[("mxrc_bus_ring_dropped_total", key)] == 5
            assert s[("mxrc_bus_agent_pid", frozenset({("process", "rt")}))] == os.getpid()
        text = run_mxrc("status", "--instance", instance, timeout=60).stdout
        assert "agent: none attached (generation 1 stopped; last heartbeat" in text


# ---------------------------------------------------------------- RT process + agent process

_RT_CHILD = """
    import json, sys, time
    import mxrc
    from mxrc.bus import Segment
    from mxrc.tracecontext import TraceContext

    seg = Segment.create({instance!r}, max_stats=2, datastore_bytes=0)
    n_events = {n_events}
    sent, received = [], []

    def body(ctx):
        k = ctx.cycle
        if k % 5 == 0 and len(sent) < n_events:
            tc = TraceContext.new_root()
            ok = ctx.publish("rt.ping", {{"n": len(sent)}}, carrier=tc.to_carrier())
            sent.append((len(sent), tc.trace_id.hex(), ok))
        ev = ctx.poll_event()
        while ev is not None:
            trace = None if ev.trace_id is None else ev.trace_id.hex()
            received.append((ev.type, ev.json(), trace))
            ev = ctx.poll_event()

    ex = mxrc.Executive(body, period_us=2000, segment=seg, name="main",
                        agent_timeout_ms={timeout_ms})
    print(json.dumps({{"ready": True}}), flush=True)
    cmd = sys.stdin.readline()
    ex.start()
    print(json.dumps({{"started": True}}), flush=True)
    while True:
        cmd = sys.stdin.readline().strip()
        if cmd == "report" or not cmd:
            break
    ex.stop()
    print(json.dumps({{"sent": sent, "received": received}}), flush=True)
    sys.stdin.read()
    seg.close()
"""

_AGENT_CHILD = """
    import json, sys
    from mxrc.agent import Agent

    agent = Agent({instance!r}, heartbeat_interval_ms=50)
    seen = []

    def echo(e):
        seen.append((e.type, e.json(), None if e.trace_id is None else e.trace_id.hex()))
        if e.type == "rt.ping":
            agent.send("cmd.pong", e.json())   # in the event's trace context

    agent.subscribe("rt.*", echo)
    agent.start()
    print(json.dumps({{"generation": agent.generation}}), flush=True)
    sys.stdin.readline()
    agent.bus.flush()
    print(json.dumps({{"seen": seen, "counters": agent.counters().commands_sent}}), flush=True)
    agent.stop()
"""


def _has_watchdog() -> bool:
    import inspect

    from mxrc.rt import Executive

    return "agent_timeout_ms" in inspect.signature(Executive.__init__).parameters and hasattr(
        _core.cycle.CycleContext, "publish"
    )


needs_ex = pytest.mark.skipif(
    not _has_watchdog(), reason="the executive's bus routing and agent watchdog are not built"
)


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _rt_state(seg: Segment) -> str:
    return seg.stats("main").state.name


@needs_ex
def test_two_processes_exchange_events_both_ways_with_carriers(instance: str) -> None:
    rt = spawn_python(_RT_CHILD.format(instance=instance, n_events=40, timeout_ms=500))
    agent = None
    try:
        assert child_ready(rt)["ready"]
        agent = spawn_python(_AGENT_CHILD.format(instance=instance))
        assert child_ready(agent)["generation"] == 1
        _send(rt, "start")
        assert child_ready(rt)["started"]
        with Segment.attach(instance) as seg:
            command = seg.rings("main").command
            # every pong pushed by the agent and taken by the cycle thread
            _wait(lambda: command.counters().popped >= 40, 60, "the pongs")
            assert _rt_state(seg) == "RUNNING"
        _send(agent, "report")
        agent_side = child_ready(agent)
        _send(rt, "report")
        rt_side = child_ready(rt)
    finally:
        for p in (agent, rt):
            if p is not None:
                _reap(p, grace=15)
    sent = rt_side["sent"]
    assert len(sent) == 40 and all(ok for _, _, ok in sent)
    trace_of = {n: trace for n, trace, _ in sent}
    pings = [s for s in agent_side["seen"] if s[0] == "rt.ping"]
    assert [p[1]["n"] for p in pings] == list(range(40))  # order kept, none lost
    for _, payload, trace in pings:
        assert trace == trace_of[payload["n"]]  # RT -> agent: carrier intact
    pongs = [r for r in rt_side["received"] if r[0] == "cmd.pong"]
    assert [p[1]["n"] for p in pongs] == list(range(40))
    for _, payload, trace in pongs:
        assert trace == trace_of[payload["n"]]  # agent -> RT: the same trace
    # the cycle thread's own state events reached the agent too
    assert any(s[0] == "rt.state_changed" for s in agent_side["seen"])


@needs_ex
def test_killing_the_agent_enters_safe_mode_and_a_new_agent_restores_running(
    instance: str,
) -> None:
    timeout_ms = 300
    rt = spawn_python(_RT_CHILD.format(instance=instance, n_events=0, timeout_ms=timeout_ms))
    agents: list[subprocess.Popen[str]] = []
    try:
        assert child_ready(rt)["ready"]
        agents.append(spawn_python(_AGENT_CHILD.format(instance=instance)))
        child_ready(agents[0])
        _send(rt, "start")
        child_ready(rt)
        with Segment.attach(instance) as seg:
            _wait(lambda: seg.stats("main").cycle_count > 50, 30, "cycles")
            assert _rt_state(seg) == "RUNNING"
            agents[0].kill()
            killed = time.monotonic()
            agents[0].communicate(timeout=10)
            _wait(lambda: _rt_state(seg) == "SAFE_MODE", 10, "SAFE_MODE after the kill")
            took = time.monotonic() - killed
            # the configured timeout plus a loose margin (a 2-vCPU VM under load)
            assert took < timeout_ms / 1000 + 3.0, took
            age = seg.agent_heartbeat().age_ns()
            assert age is not None and age > timeout_ms * 1e6
            agents.append(spawn_python(_AGENT_CHILD.format(instance=instance)))
            assert child_ready(agents[1])["generation"] == 2
            _wait(lambda: _rt_state(seg) == "RUNNING", 10, "RUNNING with the new agent")
        _send(agents[1], "report")
        seen = child_ready(agents[1])["seen"]
        types = [s[0] for s in seen]
        # the second agent drained what the RT side published meanwhile
        assert "rt.safe_mode_entered" in types and "rt.safe_mode_exited" in types
        entered = next(s for s in seen if s[0] == "rt.safe_mode_entered")
        assert entered[1]["reason"] == "agent"
    finally:
        for p in [*agents, rt]:
            _reap(p, grace=15)


# ---------------------------------------------------------------- mxrc run --agent


def _run_instance(tag: str) -> str:
    return f"test-agent-run-{tag}-{os.getpid()}"


@pytest.mark.privileged
@needs_ex
@pytest.mark.parametrize("mode", ["process", "thread", "none"])
def test_mxrc_run_with_each_agent_mode_leaves_nothing_behind(tmp_path: Path, mode: str) -> None:
    inst = _run_instance(mode)
    report = tmp_path / "r.json"
    proc = run_mxrc(
        "run",
        "--cycles",
        "1500",
        "--instance",
        inst,
        "--agent",
        mode,
        "--json-report",
        str(report),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    agent = data["run"]["agent"]
    assert agent["mode"] == mode
    assert data["cycle_count"] == 1500
    expect = "no agent" if mode == "none" else f"agent {mode} pid {agent['pid']}"
    assert expect in proc.stderr
    if mode == "process":
        assert agent["pid"] != os.getpid() and agent["generation"] == 1
        assert _pid_gone(agent["pid"])  # stopped before the segment went
    assert "warning" not in proc.stderr
    assert not Path(segment_path(inst)).exists()


@pytest.mark.privileged
@needs_ex
def test_mxrc_run_agent_watchdog_keeps_running_while_the_agent_beats() -> None:
    """A spawned agent keeps the loop RUNNING; its pid shows in the segment during the run."""
    inst = _run_instance("live")
    proc = spawn_mxrc("run", "--cycles", "1000000", "--instance", inst)
    try:
        _wait(lambda: Path(segment_path(inst)).exists(), 30, "the segment")
        with Segment.attach(inst) as seg:
            _wait(lambda: "main" in seg.stats_names(), 30, "the executive")
            _wait(lambda: seg.stats("main").cycle_count > 1500, 30, "cycles")
            assert _rt_state(seg) == "RUNNING"
            hb = seg.agent_heartbeat()
            assert hb.pid not in (0, proc.pid) and not _pid_gone(hb.pid)
            agent_pid = hb.pid
    finally:
        _reap(proc, signal.SIGINT)
        if proc.returncode != 130:
            Segment.remove(inst, force=True)
    assert proc.returncode == 130
    _wait(lambda: _pid_gone(agent_pid), 10, "the agent to be gone")
    assert not Path(segment_path(inst)).exists()


@pytest.mark.privileged
@needs_ex
def test_mxrc_run_reports_an_agent_killed_during_the_run() -> None:
    inst = _run_instance("killed")
    # a run long enough to outlast a starved test; ended by SIGINT once in SAFE_MODE
    proc = spawn_mxrc("run", "--cycles", "1000000", "--instance", inst)
    try:
        _wait(lambda: Path(segment_path(inst)).exists(), 30, "the segment")
        with Segment.attach(inst) as seg:
            _wait(lambda: "main" in seg.stats_names(), 30, "the executive")
            _wait(lambda: seg.stats("main").cycle_count > 300, 30, "cycles")
            agent_pid = seg.agent_heartbeat().pid
            os.kill(agent_pid, signal.SIGKILL)
            _wait(lambda: _rt_state(seg) == "SAFE_MODE", 10, "SAFE_MODE")
    finally:
        _out, err = _reap(proc, signal.SIGINT)
        if proc.returncode != 130:
            Segment.remove(inst, force=True)
    assert proc.returncode == 130, err
    assert f"warning: the agent process (pid {agent_pid}) exited during the run" in err
    assert "SAFE_MODE" in err
    assert not Path(segment_path(inst)).exists()


def test_mxrc_run_reports_an_agent_that_fails_to_start(
    instance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from mxrc._run import _AgentProcess

    monkeypatch.setattr(sys, "executable", "/bin/false")
    err = io.StringIO()
    with small_segment(instance) as seg:
        cfg = mxrc.load_config(None, check_host=False)
        assert _AgentProcess.spawn(seg, cfg, err) is None
    assert re.search(r"the agent process \(pid \d+\) exited with code 1", err.getvalue())


def test_mxrc_run_refuses_a_thread_agent_with_a_python_body() -> None:
    proc = run_mxrc("run", "--cycles", "10", "--tier", "python", "--agent", "thread", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--agent thread is refused with --tier python" in proc.stderr
    assert "GIL" in proc.stderr and "--force-agent-thread" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.privileged
@needs_ex
def test_mxrc_run_forced_thread_agent_with_a_python_body_warns_loudly() -> None:
    inst = _run_instance("forced")
    proc = run_mxrc(
        "run",
        "--cycles",
        "300",
        "--tier",
        "python",
        "--agent",
        "thread",
        "--force-agent-thread",
        "--instance",
        inst,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: --force-agent-thread with --tier python" in proc.stderr
    assert "GIL" in proc.stderr
    assert not Path(segment_path(inst)).exists()


def test_run_options_agent_validation() -> None:
    from mxrc._run import RunOptions

    assert RunOptions().agent == "process"
    with pytest.raises(ValueError, match="--agent must be process, thread or none"):
        RunOptions(agent="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refused with --tier python"):
        RunOptions(tier="python", agent="thread")
    assert RunOptions(tier="python", agent="thread", force_agent_thread=True).agent == "thread"
    assert RunOptions(tier="native", agent="thread").agent == "thread"


def test_agent_module_docstring_example_is_importable() -> None:
    code = textwrap.dedent(
        """
        import mxrc, mxrc.agent
        assert mxrc.Agent is mxrc.agent.Agent
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert out.stdout.strip() == "ok"
