"""``mxrc supervise`` with real processes, and sd_notify against real datagram sockets."""

from __future__ import annotations

import itertools
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import mxrc_env, wait_for
from supervised_helpers import NotifyListener, Supervised, write_config

from mxrc.ha._checkpoint import CheckpointStore
from mxrc.ha._sdnotify import NOTIFY_ENV, SdNotifier, child_environment, parse_notify_address
from mxrc.ha._supervisor import SupervisorStateFile
from mxrc.rt._placement import pid_alive
from mxrc.testing import SupervisedProcess

# ------------------------------------------------------------------ sd_notify


def test_parse_notify_address() -> None:
    assert parse_notify_address("@foo") == "\0foo"
    assert parse_notify_address("/run/systemd/notify") == "/run/systemd/notify"
    for bad in ("relative/path", "@", "vsock:2:1234", ""):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET="):
            parse_notify_address(bad)


def test_notify_abstract_socket_messages(listener: NotifyListener) -> None:
    env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "3000000", "OTHER": "x"}
    n = SdNotifier(env)
    assert env == {"OTHER": "x"}  # removed: children must not inherit them
    assert n.enabled and n.watchdog_interval_s == 1.5
    assert n.ready("NORMAL: restored")
    assert n.watchdog()
    assert n.status("two\nlines")
    assert n.stopping()
    deadline = time.monotonic() + 10
    while len(listener.drain()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    got = [m for _, m in listener.drain()]
    assert got == [
        "READY=1\nSTATUS=NORMAL: restored",
        "WATCHDOG=1",
        "STATUS=two lines",
        "STOPPING=1",
    ]
    with pytest.raises(ValueError, match="not one KEY=VALUE line"):
        n.notify("READY")
    n.close()


def test_notify_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    lst = NotifyListener(path)
    try:
        n = SdNotifier({"NOTIFY_SOCKET": path})
        assert n.watchdog_interval_s is None
        assert n.ready()
        assert lst.wait_for(lambda m: m == "READY=1")
    finally:
        lst.close()
    os.unlink(path)  # the receiver is gone: a send fails quietly, later ones retry
    assert not n.watchdog()
    lst2 = NotifyListener(path)
    try:
        assert n.watchdog()
        assert lst2.wait_for(lambda m: m == "WATCHDOG=1")
    finally:
        lst2.close()
        n.close()


def test_notify_without_socket_and_bad_values() -> None:
    n = SdNotifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    bad = SdNotifier({"NOTIFY_SOCKET": "nope", "WATCHDOG_USEC": "abc"})
    assert not bad.enabled and bad.error is not None and "WATCHDOG_USEC='abc'" in bad.error
    assert bad.watchdog_interval_s is None
    other = SdNotifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None  # the watchdog is for another process
    mine = SdNotifier({"WATCHDOG_USEC": "100", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 50e-6
    assert child_environment({"NOTIFY_SOCKET": "@x", "WATCHDOG_PID": "1", "A": "b"}) == {"A": "b"}
    assert set(NOTIFY_ENV) == {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


# ------------------------------------------------------------------ supervisor processes


def demo_step(instance: str) -> int:
    from mxrc.bus import DataStore, Segment

    seg = Segment.attach(instance)
    try:
        value = DataStore.from_segment(seg).read("demo.axis")
        return int(value[12])  # type: ignore[index]
    finally:
        seg.close()


def generation(instance: str) -> int:
    from mxrc.bus import Segment

    seg = Segment.attach(instance)
    try:
        return seg.generation
    finally:
        seg.close()


def test_ready_watchdog_and_clean_child_environment(
    supervised: Callable[..., Supervised], listener: NotifyListener, instance: str
) -> None:
    sup = supervised()
    rt = sup.rt_pid()
    agent = sup.agent_pid()
    ready = listener.wait_for(lambda m: m.startswith("READY=1"))
    assert f"RT pid {rt} beats" in ready
    # WATCHDOG=1 at half of WATCHDOG_USEC (0.4 s) while within policy
    listener.wait_for(lambda m: m == "WATCHDOG=1")

    def pings() -> list[float]:
        return [t for t, m in listener.drain() if m == "WATCHDOG=1"]

    assert wait_for(lambda: len(pings()) >= 8, 30, 0.02)
    times = pings()
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    median = gaps[len(gaps) // 2]
    assert 0.1 <= median <= 0.3, gaps  # 0.2 s nominal: not every tick, not at the limit
    for pid in (rt, agent):
        with open(f"/proc/{pid}/environ", "rb") as fh:
            names = {e.split(b"=", 1)[0] for e in fh.read().split(b"\0") if e}
        assert not names & {b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"WATCHDOG_PID"}, pid
    assert generation(instance) == 1


def test_sigkill_of_rt_restarts_it_with_a_new_generation_and_state_continues(
    supervised: Callable[..., Supervised], listener: NotifyListener, instance: str
) -> None:
    sup = supervised()
    rt = sup.rt_pid()
    listener.wait_for(lambda m: m.startswith("READY=1"))
    assert wait_for(lambda: demo_step(instance) > 200, 30, 0.02)
    step_before_kill = demo_step(instance)
    os.kill(rt, signal.SIGKILL)
    sup.wait_line(rf"RT process \(pid {rt}\) was killed by signal 9")
    sup.wait_line(r"NORMAL -> RECOVERY_IN_PROGRESS")
    start = len(sup.lines)
    new = sup.rt_pid(start=start)
    assert new != rt
    m = sup.wait_line(r"demo axis resumed at step (\d+)", start=start)
    resumed = int(m.group(1))  # continues from the live data store, not from zero
    assert step_before_kill <= resumed < step_before_kill + 5000
    assert demo_step(instance) >= resumed
    sup.wait_line(r"RECOVERY_IN_PROGRESS -> NORMAL", start=start)
    assert generation(instance) == 2
    state = SupervisorStateFile(instance)
    assert state.restart_count() == 1 and state.ha_state() == "NORMAL"
    data = state.read()
    assert data is not None and data["rt_pid"] == new and data["generation"] == 2
    assert wait_for(lambda: demo_step(instance) > resumed + 100, 30, 0.02)
    listener.wait_for(lambda m: m.startswith("STATUS=NORMAL"))


def test_sigstop_hang_is_detected_and_restarted(
    supervised: Callable[..., Supervised], instance: str
) -> None:
    sup = supervised()
    rt = sup.rt_pid()
    sup.wait_line(r"ready: RT process")
    os.kill(rt, signal.SIGSTOP)
    try:
        m = sup.wait_line(rf"RT process \(pid {rt}\) is hung: its heartbeat did not move")
        assert "failure_threshold x health_check_interval_ms = 0.3 s" in m.string
        new = sup.rt_pid(start=len(sup.lines) - 1)
        assert new != rt
        assert wait_for(lambda: not pid_alive(rt), 30, 0.02)  # the stopped process was SIGKILLed
        sup.wait_line(r"RECOVERY_IN_PROGRESS -> NORMAL")
        assert generation(instance) == 2
    finally:
        if pid_alive(rt):
            os.kill(rt, signal.SIGKILL)


CRASHER = """\
import sys


def crash(segment, config):
    sys.exit(3)
"""


def test_crash_loop_stops_at_the_limit(
    supervised: Callable[..., Supervised],
    listener: NotifyListener,
    tmp_path: Path,
    instance: str,
) -> None:
    (tmp_path / "crashapp.py").write_text(CRASHER)
    sup = supervised("--no-agent", "--", "crashapp:crash", pythonpath=str(tmp_path))
    m = sup.wait_line(r"CRITICAL: giving up on the RT process: (\d+) restarts within 60 s")
    assert m.group(1) == "3"
    sup.wait_line(r"-> MANUAL_INTERVENTION: restart limit reached")
    started = [line for line in sup.lines if "RT process started" in line]
    exited = [
        line
        for line in sup.lines
        if re.match(r"mxrc supervise: RT process \(pid \d+\) exited", line)
    ]
    assert len(started) == 4 and len(exited) == 4  # first start + 3 restarts
    listener.wait_for(lambda msg: msg.startswith("STATUS=MANUAL_INTERVENTION"))
    state = SupervisorStateFile(instance)
    assert state.ha_state() == "MANUAL_INTERVENTION" and state.restart_count() == 3
    # no READY (never restored), and the watchdog stops: systemd may act on the instance
    listener.drain()
    t_limit = time.monotonic()
    time.sleep(1.0)
    late = [m for t, m in listener.drain() if t > t_limit + 0.1 and m == "WATCHDOG=1"]
    assert late == []
    assert not any(m.startswith("READY=1") for _, m in listener.seen)
    assert sup.proc.poll() is None  # the supervisor stays up, reporting the state
    time.sleep(0.3)
    assert sum("RT process started" in line for line in sup.lines) == 4


def test_orderly_shutdown_order(
    supervised: Callable[..., Supervised], listener: NotifyListener, instance: str
) -> None:
    sup = supervised()
    rt = sup.rt_pid()
    agent = sup.agent_pid()
    sup.wait_line(r"ready: RT process")
    assert sup.stop() == 0
    text = "\n".join(sup.lines)
    i_rt = text.index(f"RT process stopped (pid {rt}, code 0)")
    i_agent = text.index(f"agent stopped (pid {agent})")
    i_seg = text.index("segment removed (/dev/shm/mxrc-")
    assert i_rt < i_agent < i_seg
    assert "NORMAL -> SHUTDOWN" in text
    assert not pid_alive(rt) and not pid_alive(agent)
    assert not os.path.exists(f"/dev/shm/mxrc-{instance}")
    assert not SupervisorStateFile(instance).path.exists()
    listener.wait_for(lambda m: m.startswith("STOPPING=1"))


def test_bad_entrypoint_and_config_are_usage_errors(tmp_path: Path, instance: str) -> None:
    from helpers import run_mxrc

    r = run_mxrc("supervise", "--instance", instance, "--", "no_such_module_xyz:main")
    assert r.returncode == 2
    assert "entry point 'no_such_module_xyz:main': no module 'no_such_module_xyz'" in r.stderr
    r = run_mxrc("supervise", "--instance", instance, "--", "nocolon")
    assert r.returncode == 2 and "is not of the form module:function" in r.stderr
    r = run_mxrc("supervise", "--instance", instance, "--", "a:b", "c:d")
    assert r.returncode == 2 and "expected one ENTRYPOINT" in r.stderr
    from_config = write_config(tmp_path / "entry", entrypoint="no_such_module_xyz:run")
    r = run_mxrc("supervise", "--config", str(from_config), "--instance", instance)
    assert r.returncode == 2 and "entry point 'no_such_module_xyz:run'" in r.stderr
    r = run_mxrc("supervise", "--config", str(tmp_path / "entry"), "--instance", instance, "--x")
    assert r.returncode == 2
    cfg = tmp_path / "bad"
    cfg.mkdir()
    (cfg / "failover_policy.json").write_text('{"rt": {"max_restart_count": 0}}')
    r = run_mxrc("supervise", "--config", str(cfg), "--instance", instance)
    assert r.returncode == 2 and "configuration error" in r.stderr


def test_segment_in_use_is_refused(instance: str) -> None:
    from helpers import run_mxrc

    from mxrc.bus import Segment

    with Segment.create(instance, max_stats=1, datastore_bytes=0):
        r = run_mxrc("supervise", "--no-agent", "--instance", instance)
    assert r.returncode == 1
    assert f"cannot create the segment of instance {instance!r}" in r.stderr


def _supervise_token(tmp_path: Path, instance: str, token: Path) -> Any:
    from helpers import run_mxrc

    cfg = write_config(tmp_path / "tokcfg", health_server={"bearer_token_file": token.name})
    return run_mxrc("supervise", "--config", str(cfg), "--instance", instance, timeout=60)


def test_a_bad_bearer_token_file_is_a_configuration_error_before_the_segment(
    tmp_path: Path, instance: str
) -> None:
    token = tmp_path / "tokcfg" / "health.token"
    token.parent.mkdir()
    token.write_text("s3cret\n")
    token.chmod(0o644)
    r = _supervise_token(tmp_path, instance, token)
    assert r.returncode == 2, r.stderr
    assert f"bearer_token_file '{token}'" in r.stderr
    assert "accessible by group or others (mode 0644)" in r.stderr
    assert "mode 0600, holding one token" in r.stderr and "owned by" in r.stderr
    assert "segment /dev/shm" not in r.stderr  # refused before the segment was created
    assert not os.path.exists(f"/dev/shm/mxrc-{instance}")
    assert not SupervisorStateFile(instance).path.exists()
    token.chmod(0o600)
    token.write_text("")
    r = _supervise_token(tmp_path, instance, token)
    assert r.returncode == 2 and "must hold one token" in r.stderr and str(token) in r.stderr
    token.unlink()
    r = _supervise_token(tmp_path, instance, token)
    assert r.returncode == 2 and "cannot read the bearer token file" in r.stderr
    if os.geteuid() == 0:  # a file another user owns could be changed by that user
        token.write_text("s3cret")
        token.chmod(0o600)
        os.chown(token, 65534, 65534)
        r = _supervise_token(tmp_path, instance, token)
        assert r.returncode == 2 and "is owned by uid 65534, not by this user" in r.stderr
    assert not os.path.exists(f"/dev/shm/mxrc-{instance}")


def test_an_agent_exiting_with_a_configuration_error_makes_supervise_exit_2(
    tmp_path: Path, instance: str, listener: NotifyListener
) -> None:
    token = tmp_path / "cfg" / "health.token"
    cfg = write_config(tmp_path / "cfg", health_server={"bearer_token_file": token.name})
    token.write_text("s3cret")
    token.chmod(0o600)  # good when the supervisor checks it ...
    # ... bad when the agent reads it: the agent's interpreter waits for `go` at start-up
    go = tmp_path / "go"
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "if sys.argv[1:2] == ['agent']:\n"
        f"    while not os.path.exists({str(go)!r}):\n"
        "        time.sleep(0.01)\n"
    )
    sup = Supervised(instance, cfg, listener, pythonpath=str(tmp_path))
    try:
        sup.wait_line(r"instance '.*': segment ")
        token.chmod(0o644)
        go.touch()
        sup.proc.wait(60)
    finally:
        code = sup.stop()
    assert code == 2, sup.lines
    text = "\n".join(sup.lines)
    assert "exited with code 2" in text and f"chmod 600 {token}" in text
    assert "configuration error: the agent refused the configuration" in text
    assert "RT process started" not in text
    assert not os.path.exists(f"/dev/shm/mxrc-{instance}")


def test_state_file_provider_ignores_missing_corrupt_and_stale_files(tmp_path: Path) -> None:
    state = SupervisorStateFile("x", tmp_path)
    assert state.read() is None and state.restart_count() == 0 and state.ha_state() is None
    assert state.last_checkpoint() is None
    state.path.write_text("{not json")
    assert state.read() is None
    state.path.write_text("[1, 2]")
    assert state.read() is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    body = {"supervisor_pid": int(dead.stdout), "restart_count": 4, "ha_state": "NORMAL"}
    state.path.write_text(json.dumps(body))
    assert state.read() is None  # its supervisor is gone
    body["supervisor_pid"] = os.getpid()
    state.path.write_text(json.dumps(body))
    assert state.restart_count() == 4 and state.ha_state() == "NORMAL"
    body.update(restart_count=-1, ha_state="BOGUS")
    state.path.write_text(json.dumps(body))
    assert state.restart_count() == 0 and state.ha_state() is None


def test_children_die_with_a_killed_supervisor(
    supervised: Callable[..., Supervised], instance: str
) -> None:
    sup = supervised()
    rt = sup.rt_pid()
    agent = sup.agent_pid()
    sup.wait_line(r"ready: RT process")
    sup.proc.kill()  # no orderly shutdown: the parent-death signal takes the children down
    sup.proc.wait()
    assert wait_for(lambda: not pid_alive(rt) and not pid_alive(agent), 30, 0.02)
    state = SupervisorStateFile(instance)
    assert state.path.exists() and state.read() is None  # left behind, but stale
    state.path.unlink()


def test_a_dead_agent_is_restarted(supervised: Callable[..., Supervised], instance: str) -> None:
    from mxrc.bus import Segment

    sup = supervised()
    agent = sup.agent_pid()
    sup.wait_line(r"ready: RT process")
    os.kill(agent, signal.SIGKILL)
    start = len(sup.lines)
    sup.wait_line(r"restarting the agent in 0.05 s \(restart 1/3 in this window\)", start=start)
    new = sup.agent_pid(start=start)
    assert new != agent
    seg = Segment.attach(instance)
    try:
        assert wait_for(lambda: seg.agent_heartbeat().pid == new, 30, 0.02)
    finally:
        seg.close()
    state = SupervisorStateFile(instance)
    assert wait_for(lambda: (state.read() or {}).get("agent_pid") == new, 30, 0.02)
    # NORMAL once the RT process also sees the new agent (it may have entered SAFE_MODE
    # while the agent was down, > 500 ms under load)
    assert wait_for(lambda: state.ha_state() == "NORMAL", 30, 0.02), state.read()


def agent_beats(instance: str, pid: int) -> bool:
    """The agent ``pid`` is the segment's agent and its heartbeat moves."""
    from mxrc.bus import Segment

    seg = Segment.attach(instance)
    try:
        first = seg.agent_heartbeat()
        time.sleep(0.3)
        second = seg.agent_heartbeat()
    finally:
        seg.close()
    return first.pid == second.pid == pid and second.heartbeat_ns > first.heartbeat_ns


def test_a_stopped_agent_puts_the_node_in_safe_mode_is_killed_and_restarted(
    supervised: Callable[..., Supervised], instance: str
) -> None:
    sup = supervised()
    rt = sup.rt_pid()
    agent = sup.agent_pid()
    sup.wait_line(r"ready: RT process")
    os.kill(agent, signal.SIGSTOP)  # hung, not dead: its heartbeat goes stale
    try:
        start = len(sup.lines)
        m = sup.wait_line(r"HA state \w+ -> SAFE_MODE: cycle thread 'main'", start=start)
        assert "agent's heartbeat is stale" in m.string  # the RT process's agent watchdog
        m = sup.wait_line(rf"the agent \(pid {agent}\) is hung: its heartbeat did not move")
        assert "(failure_threshold x health_check_interval_ms = 0.3 s); killing it" in m.string
        assert wait_for(lambda: not pid_alive(agent), 30, 0.02)  # SIGKILLed although stopped
        sup.wait_line(r"restarting the agent in 0.05 s \(restart 1/3 in this window\)")
        new = sup.agent_pid(start=start)
        assert new != agent
        assert agent_beats(instance, new)
        sup.wait_line(r"HA state SAFE_MODE -> NORMAL: the RT process left SAFE_MODE", start=start)
    finally:
        if pid_alive(agent):
            os.kill(agent, signal.SIGKILL)
    state = SupervisorStateFile(instance)
    assert wait_for(lambda: (state.read() or {}).get("agent_pid") == new, 30, 0.02)
    assert state.ha_state() == "NORMAL" and state.restart_count() == 0
    assert (state.read() or {})["rt_pid"] == rt  # the RT process was not touched
    assert not any("restarting the RT process" in line for line in sup.lines)


# An application whose body overruns its deadline while data store slot test.slow is
# true, and which runs without the agent watchdog (the RT side never enters SAFE_MODE).
SLOWAPP = """\
import sys
import time


def run(segment, config):
    from mxrc._run import _privilege_overrides
    from mxrc.bus import DataStore
    from mxrc.rt._executive import Executive

    ds = DataStore.from_segment(segment)
    ds.define("test.slow", "bool")
    ds.write("test.slow", False)
    read = ds.read
    late_s = 1.5 * config.perf_monitor.rt.cycle_time_us / 1e6

    def body(ctx):
        if read("test.slow"):
            time.sleep(late_s)  # ends after release + deadline: a deadline miss

    overrides = _privilege_overrides(config, sys.stderr)
    overrides["agent_timeout_ms"] = None
    executive = Executive.from_config(config, body, segment=segment, **overrides)
    executive.start()
    try:
        while not executive.wait(timeout=1.0):
            pass
    finally:
        executive.stop()
"""
SLOW_PERF = {
    "cycle_time_us": 5000,
    "deadline_us": 5000,
    "window_s": 1.5,
    "thresholds": {"max_deadline_miss_rate": 0.05},
}


def set_slow(instance: str, slow: bool) -> None:
    from mxrc.bus import DataStore, Segment

    seg = Segment.attach(instance)
    try:
        DataStore.from_segment(seg).write("test.slow", slow)
    finally:
        seg.close()


def test_a_windowed_deadline_miss_rate_makes_the_node_degraded_and_back(
    supervised: Callable[..., Supervised], instance: str, tmp_path: Path
) -> None:
    (tmp_path / "slowapp.py").write_text(SLOWAPP)
    port = _free_port()
    sup = supervised(
        "--",
        "slowapp:run",
        pythonpath=str(tmp_path),
        perf=SLOW_PERF,
        env={"MXRC_HTTP_PORT": str(port)},
    )
    rt = sup.rt_pid()
    sup.wait_line(r"ready: RT process")
    state = SupervisorStateFile(instance)
    assert wait_for(lambda: state.ha_state() == "NORMAL", 30, 0.02), state.read()  # on time
    start = len(sup.lines)
    set_slow(instance, True)
    m = sup.wait_line(
        r"HA state NORMAL -> DEGRADED: cycle thread 'main' misses deadlines: rate ([\d.]+) "
        r"over the last 1.5 s \(limit 0.05\)",
        start=start,
    )
    assert float(m.group(1)) > 0.05
    data = state.read()
    assert data is not None and data["ha_state"] == "DEGRADED"
    assert "misses deadlines" in data["ha_reason"]
    # the agent's health server judges with the same rule (its own window, sampled every
    # 0.1 s and cached for 0.05 s: it may cross the limit a moment later)
    answers: list[tuple[int, dict[str, Any]]] = []

    def agent_says_degraded() -> bool:
        answers.append(_get_json(f"http://127.0.0.1:{port}/health"))
        return answers[-1][1].get("status") == "DEGRADED"

    assert wait_for(agent_says_degraded, 10, 0.05), answers[-3:]
    code, body = answers[-1]
    assert code == 200, body
    assert "misses deadlines" in body["error_message"] and "limit 0.05" in body["error_message"]
    start = len(sup.lines)
    set_slow(instance, False)  # once a window passes without misses: NORMAL again
    m = sup.wait_line(
        r"HA state DEGRADED -> NORMAL: recovered: cycle thread 'main' deadline-miss rate "
        r"([\d.]+) over the last 1.5 s \(limit 0.05\)",
        start=start,
    )
    assert float(m.group(1)) <= 0.05
    assert state.ha_state() == "NORMAL"
    assert (state.read() or {})["rt_pid"] == rt and state.restart_count() == 0


def test_a_down_agent_makes_the_node_degraded_until_a_new_one_beats(
    supervised: Callable[..., Supervised], instance: str, tmp_path: Path
) -> None:
    (tmp_path / "slowapp.py").write_text(SLOWAPP)
    # a long restart delay keeps the agent down (and the node DEGRADED) for 1.5 s
    sup = supervised("--", "slowapp:run", pythonpath=str(tmp_path), restart_delay_ms=1500)
    agent = sup.agent_pid()
    sup.wait_line(r"ready: RT process")
    start = len(sup.lines)
    os.kill(agent, signal.SIGKILL)
    m = sup.wait_line(r"HA state NORMAL -> DEGRADED: (.*)", start=start)
    assert m.group(1) == (
        f"the agent (pid {agent}) was killed by signal 9; restarting it: /health, /metrics "
        "and log draining are not served until a new agent beats"
    )
    state = SupervisorStateFile(instance)
    assert state.ha_state() == "DEGRADED"
    new = sup.agent_pid(start=start)
    sup.wait_line(rf"HA state DEGRADED -> NORMAL: recovered: the agent \(pid {new}\) beats")
    assert state.ha_state() == "NORMAL"
    # a hung agent too: SIGSTOP -> killed -> DEGRADED -> restarted -> NORMAL, no SAFE_MODE
    time.sleep(1.0)  # past the new agent's start-up grace
    start = len(sup.lines)
    os.kill(new, signal.SIGSTOP)
    try:
        m = sup.wait_line(r"HA state NORMAL -> DEGRADED: (.*)", start=start)
        assert m.group(1).startswith(f"the agent (pid {new}) is hung: its heartbeat did not move")
        assert wait_for(lambda: not pid_alive(new), 30, 0.02)
        third = sup.agent_pid(start=start)
        sup.wait_line(rf"HA state DEGRADED -> NORMAL: recovered: the agent \(pid {third}\) beats")
    finally:
        if pid_alive(new):
            os.kill(new, signal.SIGKILL)
    assert not any("-> SAFE_MODE" in line for line in sup.lines), sup.lines
    assert state.restart_count() == 0  # RT restarts only


def test_checkpoints_carry_the_state_across_a_new_segment(
    supervised: Callable[..., Supervised], instance: str, tmp_path: Path
) -> None:
    ckdir = tmp_path / "checkpoints"
    first = supervised("--checkpoint-dir", str(ckdir))
    first.wait_line(r"data store resumed: 0 slots live, 0 from no checkpoint")
    first.wait_line(r"ready: RT process")
    assert wait_for(lambda: demo_step(instance) > 300, 30, 0.02)
    step_before_stop = demo_step(instance)
    assert first.stop() == 0
    m = re.search(r"checkpoint written at shutdown \((ckpt-\S+\.json)\)", "\n".join(first.lines))
    assert m is not None and (ckdir / m.group(1)).is_file()
    # The supervisor's shutdown checkpoint carries the RT process's parts; the RT
    # process's own last one (SIGTERM came after) is the newest.
    newest = CheckpointStore(ckdir).load_newest()
    assert newest is not None and newest.name > m.group(1)
    assert (newest.writer, newest.reason, newest.app_state) == ("rt", "stopped", {"runs": 1})
    assert not os.path.exists(f"/dev/shm/mxrc-{instance}")  # the live data store is gone
    second = supervised("--checkpoint-dir", str(ckdir))
    second.wait_line(rf"data store resumed: 0 slots live, 1 from checkpoint {newest.name}")
    second.wait_line(rf"restored from {newest.name}: 0 tasks, 0 events, application state yes")
    resumed = int(second.wait_line(r"demo axis resumed at step (\d+) \(run 2\)").group(1))
    assert resumed >= step_before_stop  # continues from the checkpoint, not from zero
    second.wait_line(r"ready: RT process")
    rt = second.rt_pid()
    os.kill(rt, signal.SIGKILL)  # now the live slot is valid: it wins over the checkpoint
    start = len(second.lines)
    second.wait_line(r"data store resumed: 1 slots live, 0 from checkpoint", start=start)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_supervised_agent_serves_health_with_restarts_and_checkpoints(
    supervised: Callable[..., Supervised], listener: NotifyListener, tmp_path: Path
) -> None:
    port = _free_port()
    sup = supervised("--checkpoint-dir", str(tmp_path / "ckpt"), env={"MXRC_HTTP_PORT": str(port)})
    rt = sup.rt_pid()
    listener.wait_for(lambda m: m.startswith("READY=1"))
    base = f"http://127.0.0.1:{port}"

    def served() -> bool:
        try:
            return _get_json(f"{base}/health/live")[0] == 200
        except OSError:
            return False

    assert wait_for(served, 30, 0.02)
    code, body = _get_json(f"{base}/health")
    assert code == 200 and body["status"] in ("HEALTHY", "DEGRADED"), body
    os.kill(rt, signal.SIGKILL)
    sup.wait_line(r"RECOVERY_IN_PROGRESS -> NORMAL")

    def restart_counted() -> bool:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return any(
            line.startswith("mxrc_process_restart_count_total") and line.endswith(" 1.0")
            for line in text.splitlines()
        )

    assert wait_for(restart_counted, 30, 0.02)
    code, details = _get_json(f"{base}/health/details")
    assert code == 200
    failover = details["failover"]
    assert failover["restart_count"] == 1
    assert failover["last_checkpoint"] is not None  # the supervisor's newest checkpoint
    assert failover["checkpoint_age_seconds"] >= 0


def test_rt_restart_waits_restart_delay_ms(
    supervised: Callable[..., Supervised], instance: str
) -> None:
    sup = supervised("--no-agent", restart_delay_ms=600)
    rt = sup.rt_pid()
    sup.wait_line(r"ready: RT process")
    start = len(sup.lines)
    killed = time.monotonic()
    os.kill(rt, signal.SIGKILL)
    sup.wait_line(r"restarting the RT process in 0.6 s \(restart 1/3 in this window\)", start=start)
    new = sup.rt_pid(start=start)
    waited = time.monotonic() - killed
    assert new != rt
    assert 0.6 <= waited < 30, waited  # not at once: the policy's delay first


def test_an_rt_failure_after_the_agent_gave_up_restarts_rt_and_keeps_manual_intervention(
    supervised: Callable[..., Supervised], instance: str
) -> None:
    sup = supervised()
    sup.wait_line(r"ready: RT process")
    rt = sup.rt_pid()
    start = 0
    for n in range(1, 5):  # the first start + 3 restarts use up the agent's policy
        agent = sup.agent_pid(start=start)
        start = len(sup.lines)
        os.kill(agent, signal.SIGKILL)
        if n < 4:
            sup.wait_line(rf"restarting the agent in 0.05 s \(restart {n}/3", start=start)
    sup.wait_line(r"-> MANUAL_INTERVENTION: agent restart limit reached", start=start)
    m = sup.wait_line(r"CRITICAL: giving up on the agent \((.*)\): 3 restarts", start=start)
    assert m.group(1) == f"the agent (pid {agent}) was killed by signal 9"
    start = len(sup.lines)
    os.kill(rt, signal.SIGKILL)  # the supervisor is still the RT process's restarter
    sup.wait_line(r"HA state stays MANUAL_INTERVENTION", start=start)
    new = sup.rt_pid(start=start)
    assert new != rt
    state = SupervisorStateFile(instance)
    assert wait_for(lambda: (state.read() or {}).get("rt_pid") == new, 30, 0.02)
    assert state.ha_state() == "MANUAL_INTERVENTION" and state.restart_count() == 1
    assert sup.returncode is None
    assert sup.stop() == 0, sup.lines[-20:]
    assert not any("Traceback" in line for line in sup.lines), sup.lines


def test_ready_is_resent_until_the_notify_socket_takes_it(tmp_path: Path, instance: str) -> None:
    path = str(tmp_path / "notify")  # nobody listens yet: READY=1 fails (ENOENT)
    cfg = write_config(tmp_path / "cfg")
    env = mxrc_env() | {"NOTIFY_SOCKET": path}
    with SupervisedProcess(cfg, instance=instance, args=["--no-agent"], env=env) as sup:
        sup.wait_line(r"ready: RT process")
        late = NotifyListener(path)  # the service manager is back
        try:
            ready = late.wait_for(lambda m: m.startswith("READY=1"))
            assert "NORMAL: RT pid" in ready
        finally:
            late.close()


def test_a_bad_notify_socket_is_reported_and_the_instance_still_runs(
    tmp_path: Path, instance: str
) -> None:
    cfg = write_config(tmp_path / "cfg")
    env = mxrc_env() | {"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "400000"}
    with SupervisedProcess(cfg, instance=instance, args=["--no-agent"], env=env) as sup:
        m = sup.wait_line(r"warning: systemd notification is off: (.*)")
        assert "NOTIFY_SOCKET='vsock:2:1234' is not supported" in m.group(1)
        assert "expected an absolute socket path or an abstract address" in m.group(1)
        sup.wait_line(r"ready: RT process")
