"""The health HTTP server (mxrc.ha): status from real signals, the OpenAPI contract,
malformed requests, a connection flood, the bearer token, and `mxrc agent --http-port`."""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import pytest
import yaml
from helpers import child_ready, mxrc_env, small_segment, spawn_mxrc, spawn_python, wait_for

from mxrc.config import load_config
from mxrc.errors import ConfigError
from mxrc.ha import (
    CheckpointInfo,
    HealthMonitor,
    HealthServer,
    HealthStatus,
    HealthThresholds,
    StaticHaProvider,
    health_server_from_config,
    read_secret_file,
)
from mxrc.ha._health import MISS_RATE_CLEAR_RATIO, MissRateTracker
from mxrc.rt._perf import CycleStats

FAST = HealthThresholds(
    response_timeout_ms=150.0, stall_ms=500.0, max_deadline_miss_rate=0.05, window_s=1.0
)

_RT_CHILD = """
    import json, os, sys, time
    import mxrc
    from mxrc.bus import Segment

    seg = Segment.attach({instance!r})
    mode = {{"slow": False, "crit": 0, "spin": False}}

    def body(ctx):
        if mode["slow"]:
            time.sleep(0.005)
        if mode["spin"]:  # burn 1.2 ms of CPU in every 2 ms cycle (60 % of one CPU)
            end = time.perf_counter() + 0.0012
            while time.perf_counter() < end:
                pass
        while mode["crit"] > 0:
            mode["crit"] -= 1
            ctx.publish("rt.alarm", priority="CRITICAL")

    ex = mxrc.Executive(body, period_us=2000, segment=seg, name="main")
    ex.start()
    print(json.dumps({{"pid": os.getpid()}}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "slow":
            mode["slow"] = True
        elif cmd == "fast":
            mode["slow"] = False
        elif cmd == "crit":
            mode["crit"] = 50
        elif cmd == "spin":
            mode["spin"] = True
        print(json.dumps({{"ok": cmd}}), flush=True)
    ex.stop()
"""


# ---------------------------------------------------------------- the contract


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects -> JSON Schema (``nullable`` becomes a null type)."""
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True and "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


_CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "openapi" / "health.yaml"


@pytest.fixture(scope="module")
def contract() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(_CONTRACT.read_text(encoding="utf-8"))
    return spec


def _validate_schema(contract: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    components = _openapi_to_jsonschema(copy.deepcopy(contract["components"]))
    full = {**_openapi_to_jsonschema(copy.deepcopy(schema)), "components": components}
    jsonschema.Draft202012Validator(full).validate(body)


def _validate(contract: dict[str, Any], name: str, body: Any) -> None:
    _validate_schema(contract, {"$ref": f"#/components/schemas/{name}"}, body)


def _response_schema(contract: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The JSON body schema of an OpenAPI response object (``$ref`` to components resolved)."""
    ref = response.get("$ref")
    if ref is not None:
        response = contract["components"]["responses"][ref.rsplit("/", 1)[1]]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def _schema_for(contract: dict[str, Any], path: str, code: int) -> dict[str, Any]:
    """The body schema ``path`` declares for ``code``; fails when it declares no such status."""
    responses = contract["paths"][path]["get"]["responses"]
    assert str(code) in responses, f"{path} does not declare {code} (only {sorted(responses)})"
    return _response_schema(contract, responses[str(code)])


def _validate_response(contract: dict[str, Any], path: str, code: int, body: Any) -> None:
    """``body`` answered with ``code`` on ``path`` is what the contract declares for it."""
    _validate_schema(contract, _schema_for(contract, path, code), body)


def test_contract_is_a_valid_openapi_document(contract: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(contract)
    assert set(contract["paths"]) == {
        "/health",
        "/health/ready",
        "/health/live",
        "/health/details",
        "/metrics",
    }


def test_contract_declares_the_errors_of_every_path(contract: dict[str, Any]) -> None:
    protected = {"/health/details", "/metrics"}
    for path, item in contract["paths"].items():
        codes = set(item["get"]["responses"])
        assert {"200", "400", "405", "408", "503"} <= codes, (path, codes)
        assert ("401" in codes) == (path in protected), (path, codes)
    # every error response is referenced; NotFound is for paths not listed (info says so)
    text = _CONTRACT.read_text(encoding="utf-8")
    for name in contract["components"]["responses"]:
        assert name == "NotFound" or f"#/components/responses/{name}" in text, name


# ---------------------------------------------------------------- helpers


def _get(url: str, *, token: str | None = None, timeout: float = 10) -> tuple[int, Any, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            code, raw, ctype = r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        code, raw, ctype = e.code, e.read(), e.headers["Content-Type"]
    body: Any = json.loads(raw) if ctype.startswith("application/json") else raw.decode()
    return code, body, ctype


def _raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def segment(instance: str) -> Iterator[Any]:
    seg = small_segment(instance)
    yield seg
    seg.close()


@pytest.fixture
def rt_child(instance: str, segment: Any) -> Iterator[tuple[subprocess.Popen[str], int]]:
    child = spawn_python(_RT_CHILD.format(instance=instance))
    try:
        pid = child_ready(child)["pid"]
        yield child, pid
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.communicate(timeout=10)


def _command(child: subprocess.Popen[str], cmd: str) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(cmd + "\n")
    child.stdin.flush()
    assert json.loads(child.stdout.readline()) == {"ok": cmd}


@pytest.fixture
def server(segment: Any) -> Iterator[HealthServer]:
    provider = StaticHaProvider()
    monitor = HealthMonitor(segment, thresholds=FAST, provider=provider)
    srv = HealthServer(monitor, port=0, sample_interval_s=0.05, idle_timeout_s=1.0, cache_s=0.0)
    with srv:
        yield srv


def _status(srv: HealthServer) -> str:
    return str(_get(srv.url + "/health")[1]["status"])


# ---------------------------------------------------------------- status from real signals


def test_every_endpoint_matches_the_contract(
    contract: dict[str, Any], server: HealthServer, rt_child: Any
) -> None:
    assert isinstance(server.monitor.provider, StaticHaProvider)
    server.monitor.provider.restarts = 2
    server.monitor.provider.checkpoint = CheckpointInfo("/x/ckpt.json", time.time() - 3, 1234)
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY")
    for path in ("/health", "/health/ready", "/health/live", "/health/details"):
        code, body, ctype = _get(server.url + path)
        assert code == 200 and ctype == "application/json", (path, body)
        _validate_response(contract, path, 200, body)
    _, health, _ = _get(server.url + "/health")
    assert health["pid"] == rt_child[1] and health["restart_count"] == 2
    # a reason is given exactly when it is not HEALTHY (a busy VM may miss deadlines)
    assert ("error_message" in health) == (health["status"] != "HEALTHY"), health
    _, details, _ = _get(server.url + "/health/details")
    assert details["rt_performance"]["cycle_count"] > 0
    assert details["failover"]["restart_count"] == 2
    assert details["failover"]["checkpoint_age_seconds"] >= 3
    from mxrc.rt._topology import numa_topology

    if len(numa_topology()) < 2:  # every page is local on a one-node host
        assert details["numa_binding"]["local_memory_percent"] == 100.0
    code, text, ctype = _get(server.url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    # HEALTHY, or DEGRADED when this VM misses deadlines (as /health above)
    assert re.search(r'^mxrc_process_health_status\{process="rt"\} [23]\.0$', text, re.M), text
    assert 'mxrc_process_restart_count_total{process="rt"} 2.0' in text
    assert 'mxrc_failover_checkpoint_size_bytes{process="rt"} 1234.0' in text
    assert "mxrc_failover_checkpoint_age_seconds{" in text
    assert "mxrc_rt_cycle_count_total{" in text  # RtCollector over the segment
    assert "mxrc_bus_ring_" in text


def test_no_cycle_thread_is_starting_and_503(
    contract: dict[str, Any], server: HealthServer
) -> None:
    code, body, _ = _get(server.url + "/health")
    assert code == 503 and body["status"] == "STARTING"
    _validate_response(contract, "/health", 503, body)
    _validate(contract, "ProcessHealthStatus", body)
    code, ready, _ = _get(server.url + "/health/ready")
    assert code == 503 and ready["ready"] is False
    _validate_response(contract, "/health/ready", 503, ready)
    _validate(contract, "ReadinessStatus", ready)
    code, live, _ = _get(server.url + "/health/live")
    assert code == 503 and live["alive"] is False
    _validate_response(contract, "/health/live", 503, live)
    _validate(contract, "LivenessStatus", live)
    text = _get(server.url + "/metrics")[1]
    assert 'mxrc_process_health_status{process="rt"} 1.0' in text
    assert "mxrc_failover_checkpoint_age_seconds{" not in text  # no checkpoint: absent


def test_sigstopped_rt_process_is_unhealthy_while_it_lives(
    contract: dict[str, Any], server: HealthServer, rt_child: Any
) -> None:
    child, pid = rt_child
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY")
    os.kill(pid, signal.SIGSTOP)
    try:
        _wait_for(lambda: _status(server) == "UNHEALTHY", "UNHEALTHY after SIGSTOP")
        code, body, _ = _get(server.url + "/health")
        assert code == 503 and "stalled" in body["error_message"], body
        _validate(contract, "ProcessHealthStatus", body)
        assert body["response_time_ms"] > FAST.stall_ms
        code, live, _ = _get(server.url + "/health/live")
        assert code == 503 and live["alive"] is False
        os.kill(pid, 0)  # the process lives: only its loop is hung
        assert child.poll() is None
        text = _get(server.url + "/metrics")[1]
        assert 'mxrc_process_health_status{process="rt"} 4.0' in text
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait_for(lambda: _status(server) in ("HEALTHY", "DEGRADED"), "recovery after SIGCONT")


def test_killed_rt_process_is_unhealthy(server: HealthServer, rt_child: Any) -> None:
    child, _ = rt_child
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY")
    child.kill()
    child.wait(10)
    _wait_for(lambda: _status(server) in ("UNHEALTHY", "STOPPED"), "UNHEALTHY after SIGKILL")
    code, body, _ = _get(server.url + "/health")
    assert code == 503, body


def test_deadline_misses_degrade_over_the_window_then_recover(
    server: HealthServer, rt_child: Any
) -> None:
    child, _ = rt_child
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY")
    _command(child, "slow")
    _wait_for(lambda: _status(server) == "DEGRADED", "DEGRADED while missing deadlines")
    body = _get(server.url + "/health")[1]
    assert "misses deadlines" in body["error_message"]
    assert _get(server.url + "/health")[0] == 200  # DEGRADED still serves
    _command(child, "fast")
    # the rate is windowed (1 s here), not cumulative: it heals although misses stay counted
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY again after the window")
    assert _get(server.url + "/health")[1]["deadline_miss_count"] > 0


def test_critical_ring_overflow_is_unhealthy(server: HealthServer, rt_child: Any) -> None:
    child, _ = rt_child
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY")
    _command(child, "crit")  # 50 CRITICAL events into a 4-record ring nobody drains
    _wait_for(lambda: _status(server) == "UNHEALTHY", "UNHEALTHY after the overflow")
    assert "CRITICAL" in _get(server.url + "/health")[1]["error_message"]


def test_ready_waits_for_state_recovery(
    contract: dict[str, Any], server: HealthServer, rt_child: Any
) -> None:
    provider = server.monitor.provider
    assert isinstance(provider, StaticHaProvider)
    _wait_for(lambda: _get(server.url + "/health/ready")[0] == 200, "ready")
    provider.state = "RECOVERY_IN_PROGRESS"
    code, body, _ = _get(server.url + "/health/ready")
    assert code == 503 and body["ready"] is False, body
    assert body["message"] == "state recovery in progress"
    assert all(body["details"].values())  # initialised: only the restore is missing
    _validate_response(contract, "/health/ready", 503, body)
    assert _get(server.url + "/health")[0] == 200  # serving, just not ready
    provider.state = "NORMAL"
    code, body, _ = _get(server.url + "/health/ready")
    assert code == 200 and body["ready"] is True, body


def test_cpu_and_memory_limits_degrade_naming_the_process(segment: Any, rt_child: Any) -> None:
    child, pid = rt_child
    limits = dataclasses.replace(FAST, cpu_percent_limit=20.0, memory_mb_limit=1.0)
    mon = HealthMonitor(segment, thresholds=limits)
    _wait_for(lambda: mon.evaluate().threads != (), "a claimed cycle thread")
    report = mon.evaluate()
    assert report.status is HealthStatus.DEGRADED, report
    # every Python process holds more than 1 MiB resident: the RT and the agent (this) one
    assert any(
        re.fullmatch(rf"RT process pid {pid} uses \d+ MiB \(limit 1 MiB\)", r)
        for r in report.reasons
    ), report.reasons
    me = os.getpid()
    assert any(
        re.fullmatch(rf"agent process pid {me} uses \d+ MiB \(limit 1 MiB\)", r)
        for r in report.reasons
    ), report.reasons
    assert not any("% CPU" in r and f"pid {pid}" in r for r in report.reasons)
    _command(child, "spin")  # CPU % is measured over >= 1 s
    cpu = re.compile(rf"RT process pid {pid} uses (\d+) % CPU \(limit 20 %\)")

    def over_cpu() -> bool:
        return any(cpu.fullmatch(r) for r in mon.evaluate().reasons)

    _wait_for(over_cpu, "the RT process over the CPU limit")
    assert mon.evaluate().status is HealthStatus.DEGRADED


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (the main thread stops first; the cycle thread
    may still finish a cycle and write a newer heartbeat)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] != "T":
                return False
    return True


def test_an_old_heartbeat_responds_slowly_then_stalls(segment: Any, rt_child: Any) -> None:
    _, pid = rt_child
    fake_now_ns: list[int] = []
    mon = HealthMonitor(
        segment,
        thresholds=FAST,
        monotonic_ns=lambda: fake_now_ns[0] if fake_now_ns else time.monotonic_ns(),
    )
    _wait_for(lambda: mon.evaluate().status is HealthStatus.HEALTHY, "HEALTHY")
    os.kill(pid, signal.SIGSTOP)  # the heartbeat stops where it is (the fixture resumes it)
    _wait_for(lambda: _stopped(pid), "the RT process to stop")
    stats = segment.stats("main")
    period_ms = stats.period_ns / 1e6
    # older than period + response_timeout_ms (150), younger than period + stall_ms (500)
    fake_now_ns.append(stats.heartbeat_ns + stats.period_ns + 300_000_000)
    report = mon.evaluate()
    assert report.status is HealthStatus.DEGRADED, report.reasons
    slow = (
        f"cycle thread 'main' responds slowly: heartbeat {period_ms + 300:.0f} ms old "
        f"(limit {period_ms + FAST.response_timeout_ms:.0f} ms)"
    )
    assert slow in report.reasons, report.reasons
    assert mon.health_body(report)["response_time_ms"] == pytest.approx(period_ms + 300)
    assert mon.live_body(report)[0] is True  # slow, still advancing
    fake_now_ns[0] += 300_000_000  # now beyond the stall limit
    report = mon.evaluate()
    assert report.status is HealthStatus.UNHEALTHY
    assert any("stalled" in r for r in report.reasons), report.reasons


def _feed(tracker: MissRateTracker, t: float, cycles: int, misses: int, start: int = 1) -> None:
    stats = SimpleNamespace(start_ns=start, cycle_count=cycles, deadline_miss_count=misses)
    tracker.add("main", cast(CycleStats, stats), t)


def test_miss_rate_hysteresis_enters_above_the_limit_and_clears_at_80_percent() -> None:
    th = HealthThresholds(max_deadline_miss_rate=0.01, window_s=100.0, min_window_cycles=100)
    tracker = MissRateTracker(th)
    assert MISS_RATE_CLEAR_RATIO == 0.8 and tracker.clear_rate == pytest.approx(0.008)
    _feed(tracker, 0, 0, 0)
    _feed(tracker, 1, 1000, 10)  # 0.010: at the limit, not above
    assert tracker.exceeded("main") is None
    _feed(tracker, 2, 2000, 22)  # 0.011: above
    assert tracker.exceeded("main") == pytest.approx(0.011)
    assert tracker.reason("main", 0.011).endswith("(limit 0.01)")
    _feed(tracker, 3, 3000, 27)  # 0.009: under the limit, above the clear level: still over
    assert tracker.exceeded("main") == pytest.approx(0.009)
    assert tracker.reason("main", 0.009).endswith("(limit 0.01), clears at 0.008")
    _feed(tracker, 4, 4000, 32)  # 0.008: at the clear level: fine again
    assert tracker.exceeded("main") is None
    message = tracker.cleared("main", 0.008)
    assert message == (
        "cycle thread 'main' deadline-miss rate 0.008000 over the last 100 s (limit 0.01), "
        "cleared at or below 0.008"
    )
    _feed(tracker, 5, 5000, 45)  # 0.009 from below: the band does not enter
    assert tracker.exceeded("main") is None
    _feed(tracker, 6, 6000, 67)  # 0.01117: above again
    assert tracker.exceeded("main") == pytest.approx(67 / 6000)
    _feed(tracker, 7, 6050, 67, start=2)  # a new cycle thread in the slot: a new window
    assert tracker.exceeded("main") is None and tracker.rate("main") is None


def test_miss_rate_messages_keep_the_supervisors_prefixes() -> None:
    th = HealthThresholds(max_deadline_miss_rate=0.05, window_s=1.5)
    tracker = MissRateTracker(th)
    for rate in (0.06, 0.045):  # above the limit, and in the band
        assert re.match(
            r"cycle thread 'main' misses deadlines: rate ([\d.]+) over the last 1.5 s "
            r"\(limit 0.05\)",
            tracker.reason("main", rate),
        )
    assert re.match(
        r"cycle thread 'main' deadline-miss rate ([\d.]+) over the last 1.5 s \(limit 0.05\)",
        tracker.cleared("main", 0.0),
    )
    upstream = MissRateTracker(HealthThresholds(max_deadline_miss_rate=0.0001))
    assert upstream.reason("main", 0.00009).endswith("(limit 0.0001), clears at 0.00008")


def test_manual_intervention_and_a_failing_provider(segment: Any, rt_child: Any) -> None:
    class Broken:
        def restart_count(self) -> int:
            raise RuntimeError("boom")

        def ha_state(self) -> str | None:
            return None

        def last_checkpoint(self) -> CheckpointInfo | None:
            return None

    provider = StaticHaProvider(state="MANUAL_INTERVENTION", restarts=5)
    mon = HealthMonitor(segment, thresholds=FAST, provider=provider)
    _wait_for(lambda: mon.evaluate().status is not HealthStatus.STARTING, "a running loop")
    report = mon.evaluate()
    assert report.status is HealthStatus.UNHEALTHY and report.restart_count == 5
    assert any("MANUAL_INTERVENTION" in r for r in report.reasons)
    broken = HealthMonitor(segment, thresholds=FAST, provider=Broken())
    assert any("provider failed" in r for r in broken.evaluate().reasons)
    with pytest.raises(TypeError, match="HaProvider"):
        HealthMonitor(segment, provider=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stall_ms": 0}, "stall_ms must be a number > 0"),
        ({"max_deadline_miss_rate": 5}, "ratio within"),
        ({"window_s": "x"}, "window_s"),
        ({"min_window_cycles": 0}, "min_window_cycles"),
    ],
)
def test_thresholds_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HealthThresholds(**kwargs)


def test_thresholds_from_config() -> None:
    cfg = load_config(None, check_host=False)
    th = HealthThresholds.from_config(cfg)
    assert th.stall_ms == 3 * 1000 and th.response_timeout_ms == 500
    assert th.max_deadline_miss_rate == cfg.perf_monitor.rt.thresholds.max_deadline_miss_rate


# ---------------------------------------------------------------- the HTTP side


@pytest.mark.parametrize(
    ("request_bytes", "code", "check"),
    [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, {"error": "Not Found", "path": "/nope"}),
        (
            b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            {"error": "Method Not Allowed", "method": "POST"},
        ),
        (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405, {"error": "Method Not Allowed"}),
        (b"garbage\r\n\r\n", 400, {"error": "Bad Request"}),
        (b"GET /health HTTP/2.0\r\n\r\n", 400, {"error": "Bad Request"}),
        (b"GET health HTTP/1.1\r\n\r\n", 400, {"error": "Bad Request"}),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400, {"error": "Bad Request"}),
        (b"\x00\xff\xfe junk \x01\r\n\r\n", 400, {"error": "Bad Request"}),
        (b"GET /health HTTP/1.1\r\nX: " + b"a" * 10000, 400, {"error": "Bad Request"}),
    ],
)
def test_bad_requests_get_json_errors(
    contract: dict[str, Any],
    server: HealthServer,
    request_bytes: bytes,
    code: int,
    check: dict[str, str],
) -> None:
    got, body = _raw(server.port, request_bytes)
    assert got == code and check.items() <= body.items(), body
    if code == 404:  # a path the contract does not list: its NotFound response
        schema = _response_schema(contract, contract["components"]["responses"]["NotFound"])
        _validate_schema(contract, schema, body)
    else:  # any listed path may answer it: each must declare it
        for path in contract["paths"]:
            _validate_response(contract, path, code, body)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_a_request_cut_off_by_a_half_close_is_answered_400(
    contract: dict[str, Any], server: HealthServer
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        s.shutdown(socket.SHUT_WR)
        code, body = _parse(_read_all(s))
    assert code == 400 and body["error"] == "Bad Request", body
    assert body["message"].startswith("incomplete request header: 22 bytes before the client")
    assert "ending with an empty line (CRLF CRLF)" in body["message"]
    _validate_response(contract, "/health", 400, body)


def test_a_header_that_never_ends_is_answered_408_and_silence_is_closed(
    contract: dict[str, Any], server: HealthServer
) -> None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as partial,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle,
    ):
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        code, body = _parse(_read_all(partial))  # after idle_timeout_s (1 s)
        assert idle.recv(1) == b""  # sent nothing: closed without a word
    assert code == 408 and body["error"] == "Request Timeout", body
    assert body["message"].startswith("incomplete request header: 31 bytes in 1 s, expected")
    _validate_response(contract, "/health", 408, body)


def test_a_failing_handler_answers_503_as_declared(
    contract: dict[str, Any], server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(server, "report", boom)
    monkeypatch.setattr(server, "_metrics_text", boom)
    for path in contract["paths"]:
        code, body, _ = _get(server.url + path)
        assert code == 503 and body == {
            "error": "Service Unavailable",
            "message": "RuntimeError: boom",
        }, (path, body)
        _validate_response(contract, path, 503, body)
    assert server.errors == len(contract["paths"])


def test_flood_of_connections_and_idle_sockets(server: HealthServer, rt_child: Any) -> None:
    _wait_for(lambda: _status(server) == "HEALTHY", "HEALTHY")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    half = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    try:
        for s in half:
            s.sendall(b"GET /health HTTP/1.1\r\n")  # a request that never completes
        # 300 clients at once, while the 400 idle and half-sent connections are open
        with concurrent.futures.ThreadPoolExecutor(300) as pool:
            codes = list(pool.map(lambda _: _get(server.url + "/health")[0], range(600)))
        assert codes == [200] * 600
        # after idle_timeout_s (1 s): idle connections are closed, half-sent ones get a 408
        for s in idle:
            s.settimeout(10)
            assert s.recv(1) == b""
        for s in half:
            s.settimeout(10)
            assert _parse(_read_all(s))[0] == 408
    finally:
        for s in [*idle, *half]:
            s.close()
    assert _get(server.url + "/health")[0] == 200


def test_listen_backlog_is_large(server: HealthServer) -> None:
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # State Recv-Q Send-Q ...: Send-Q of a listening socket is its backlog
    assert int(out[2]) >= 1024, out


def test_binds_loopback_by_default(segment: Any) -> None:
    srv = HealthServer(HealthMonitor(segment), port=0)
    with srv:
        assert srv.address[0] == "127.0.0.1"
    with pytest.raises(ValueError, match="port"):
        HealthServer(HealthMonitor(segment), port=70000)


def test_a_dead_serving_loop_is_reported(segment: Any) -> None:
    srv = HealthServer(HealthMonitor(segment), port=0, idle_timeout_s=1.0)

    def broken(sel: object, now: float) -> None:
        raise RuntimeError("injected failure")

    srv._expire = broken  # type: ignore[method-assign]  # runs every loop iteration
    assert srv.failure is None  # not started
    with srv:
        assert wait_for(lambda: srv.failure is not None, 20), "the loop did not fail"
        assert srv.failure == (
            f"the health server's serving loop on {srv.url} failed (RuntimeError: injected "
            "failure); nothing serves /health and /metrics"
        )
    assert srv.failure is None  # closed on purpose


def test_port_in_use_is_a_clear_error(segment: Any, server: HealthServer) -> None:
    other = HealthServer(HealthMonitor(segment), port=server.port)
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{server.port}.*MXRC_HTTP_PORT"):
        other.start()


def test_bearer_token_protects_details_and_metrics(contract: dict[str, Any], segment: Any) -> None:
    srv = HealthServer(HealthMonitor(segment, thresholds=FAST), port=0, token="s3cret")
    with srv:
        for path in ("/health/details", "/metrics"):
            code, body, _ = _get(srv.url + path)
            assert code == 401 and body["error"] == "Unauthorized"
            _validate_response(contract, path, 401, body)
            assert _get(srv.url + path, token="wrong")[0] == 401
            assert _get(srv.url + path, token="s3cret")[0] == 200
        assert _get(srv.url + "/health")[0] == 503  # open (STARTING: no loop yet)
        assert _get(srv.url + "/health/live")[0] == 503


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"{token}.*mode 0644.*chmod 600 {token}"):
        read_secret_file(token)
    token.chmod(0o600)
    assert read_secret_file(token) == "abc123"
    token.write_text("")
    with pytest.raises(ConfigError, match="one token"):
        read_secret_file(token)
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret_file(tmp_path / "missing")
    if os.geteuid() == 0:  # another user could change the token: refused, even mode 0600
        token.write_text("abc123")
        os.chown(token, 65534, 65534)
        with pytest.raises(ConfigError, match="owned by uid 65534, not by this user"):
            read_secret_file(token)


def test_server_from_config_reads_a_relative_token_file(segment: Any, tmp_path: Path) -> None:
    (tmp_path / "failover_policy.json").write_text(
        json.dumps({"health_server": {"port": 0, "bearer_token_file": "tok"}})
    )
    (tmp_path / "tok").write_text("t0k")
    (tmp_path / "tok").chmod(0o600)
    cfg = load_config(tmp_path, environ={}, check_host=False)
    with health_server_from_config(segment, cfg).start() as srv:
        assert srv.token_required
        assert _get(srv.url + "/metrics", token="t0k")[0] == 200
    (tmp_path / "tok").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        health_server_from_config(segment, cfg)


# ---------------------------------------------------------------- in the agent


def test_agent_serves_health_on_http_port(
    contract: dict[str, Any], instance: str, segment: Any, rt_child: Any
) -> None:
    agent = spawn_mxrc("agent", "--instance", instance, "--http-port", "0")
    try:
        assert agent.stdout is not None
        status_line = agent.stdout.readline()
        assert "agent generation" in status_line, status_line + agent.stderr.read()
        line = agent.stdout.readline()
        assert "health server on http://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        _wait_for(lambda: _get(url + "/health")[0] == 200, "agent health 200")
        body = _get(url + "/health")[1]
        _validate(contract, "ProcessHealthStatus", body)
        assert body["pid"] == rt_child[1]
        text = _get(url + "/metrics")[1]
        assert "mxrc_process_health_status" in text and "mxrc_bus_agent_" in text
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=20)
    assert agent.returncode == 0


def test_agent_refuses_a_token_file_others_can_read(
    instance: str, segment: Any, tmp_path: Path
) -> None:
    (tmp_path / "failover_policy.json").write_text(
        json.dumps({"health_server": {"bearer_token_file": str(tmp_path / "tok")}})
    )
    (tmp_path / "tok").write_text("t0k")
    (tmp_path / "tok").chmod(0o604)
    agent = spawn_mxrc("agent", "--instance", instance, "--config", str(tmp_path), "--http")
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 2, err
    assert f"chmod 600 {tmp_path / 'tok'}" in err


_FD_LIMITED_SERVER = """
    import json, resource, sys
    from mxrc.bus import Segment
    from mxrc.ha import HealthMonitor, HealthServer

    seg = Segment.create({instance!r}, max_stats=1, datastore_bytes=0)
    srv = HealthServer(HealthMonitor(seg), port=0, idle_timeout_s=60).start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    print(json.dumps({{"port": srv.port}}), flush=True)
    sys.stdin.readline()
    srv.close()
    seg.close()
"""


def test_out_of_file_descriptors_sheds_the_oldest_idle_connection(instance: str) -> None:
    child = spawn_python(_FD_LIMITED_SERVER.format(instance=instance))
    idle: list[socket.socket] = []
    try:
        port = child_ready(child)["port"]
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        code, body, _ = _get(f"http://127.0.0.1:{port}/health", timeout=20)
        assert code == 503 and body["status"] == "STARTING"
    finally:
        for s in idle:
            s.close()
        _, err = child.communicate("\n", timeout=20)
    assert child.returncode == 0, err
    assert "accept failed" in err


def test_mxrc_http_port_alone_turns_the_server_on(instance: str, segment: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**mxrc_env(), "MXRC_HTTP_PORT": str(port)}
    agent = subprocess.Popen(
        [sys.executable, "-m", "mxrc", "agent", "--instance", instance],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env=env,
    )
    try:
        assert agent.stdout is not None
        agent.stdout.readline()
        line = agent.stdout.readline()
        assert f"health server on http://127.0.0.1:{port} " in line, line
        code, body, _ = _get(f"http://127.0.0.1:{port}/health/live")
        assert code == 503 and body["alive"] is False  # no cycle thread yet
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=20)
    assert agent.returncode == 0


def test_agent_reports_the_supervisors_restarts_and_state(
    instance: str, segment: Any, rt_child: Any
) -> None:
    from mxrc.ha._supervisor import state_file_path

    state = state_file_path(instance)
    state.write_text(
        json.dumps(
            {"supervisor_pid": os.getpid(), "restart_count": 3, "ha_state": "MANUAL_INTERVENTION"}
        )
    )
    agent = spawn_mxrc("agent", "--instance", instance, "--http-port", "0")
    try:
        assert agent.stdout is not None
        agent.stdout.readline()
        url = agent.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
        code, body, _ = _get(url + "/health")
        assert code == 503 and body["status"] == "UNHEALTHY", body
        assert body["restart_count"] == 3 and "MANUAL_INTERVENTION" in body["error_message"]
        text = _get(url + "/metrics")[1]
        assert 'mxrc_process_restart_count_total{process="rt"} 3.0' in text
        assert 'mxrc_process_health_status{process="rt"} 4.0' in text
    finally:
        state.unlink()
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=20)
    assert agent.returncode == 0
