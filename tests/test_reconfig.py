"""Live re-configuration (SC-015): re-pinning and re-prioritising a running cycle thread
from the API and from a watched cpu_affinity.json; invalid changes are rejected and the
old settings stay. Read back from /proc/<pid>/task/<tid>/status while cycles keep counting."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxrc.config import ConfigError
from mxrc.errors import CpuNotAllowedError, PrivilegeError, UnsupportedError
from mxrc.rt import (
    BuiltinBody,
    ConfigWatcher,
    Executive,
    LiveSettings,
    ReconfigEvent,
    RtState,
    _reconfig,
    allowed_cpus,
    read_live_settings,
)

ALLOWED = sorted(allowed_cpus())
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two allowed CPUs")
# the loop starts on the highest allowed CPU and is moved to the lowest and back
HIGH, LOW = ALLOWED[-1], ALLOWED[0]
NOT_ALLOWED = max(ALLOWED) + 1
DEADLINE = {"runtime_us": 100, "deadline_us": 500, "period_us": 1000}
PRIO = 40  # tests keep SCHED_FIFO priorities <= 50 (PITFALLS: leave room for the system)


@pytest.fixture(autouse=True)
def _no_mxrc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MXRC_"):
            monkeypatch.delenv(key)


def _proc_status(tid: int, key: str, pid: int | None = None) -> str:
    text = Path(f"/proc/{pid or os.getpid()}/task/{tid}/status").read_text()
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{key} not in the status of thread {tid}")


def _cpus_allowed(tid: int, pid: int | None = None) -> str:
    return _proc_status(tid, "Cpus_allowed_list", pid)


def _last_cpu(tid: int) -> int:
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[36])


def _wait_until(cond: object, timeout: float, what: str) -> float:
    """Poll ``cond()`` until true; the seconds it took."""
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        assert time.monotonic() - t0 < timeout, f"{what} did not happen within {timeout} s"
        time.sleep(0.01)
    return time.monotonic() - t0


def _keeps_cycling(ex: Executive, more: int = 50) -> None:
    target = ex.cycles + more
    assert ex.wait(target, timeout=10), "the loop stopped cycling"
    assert ex.state is RtState.RUNNING


@pytest.fixture
def fifo_loop() -> Iterator[Executive]:
    """A running SCHED_FIFO loop (C++ noop body, 1 ms) pinned to the highest allowed CPU."""
    ex = Executive(BuiltinBody(), period_us=1000, cpus=[HIGH], policy="SCHED_FIFO", priority=PRIO)
    ex.start()
    assert ex.wait(20, timeout=10)
    try:
        yield ex
    finally:
        ex.stop()


@pytest.fixture
def plain_loop() -> Iterator[Executive]:
    """A running loop with the default (unprivileged) setup."""
    ex = Executive(BuiltinBody(), period_us=1000)
    ex.start()
    assert ex.wait(5, timeout=10)
    try:
        yield ex
    finally:
        ex.stop()


# --------------------------------------------------------------- API


@pytest.mark.privileged
@needs_two_cpus
def test_set_affinity_repins_the_running_thread_and_cycles_keep_counting(
    fifo_loop: Executive,
) -> None:
    ex = fifo_loop
    tid = ex.tid
    assert tid is not None
    assert _cpus_allowed(tid) == str(HIGH)
    before = ex.cycles
    settings = ex.set_affinity([LOW])
    assert settings == LiveSettings(frozenset({LOW}), "SCHED_FIFO", PRIO)
    assert _cpus_allowed(tid) == str(LOW)  # the kernel's view, from outside
    assert ex.tid == tid  # the same thread, not a restart
    _keeps_cycling(ex)
    _wait_until(lambda: _last_cpu(tid) == LOW, 5, "running on the new CPU")
    st = ex.stats()
    assert st.cycle_count > before and st.tid == tid
    assert ex.set_affinity([HIGH]).cpus == {HIGH}
    assert _cpus_allowed(tid) == str(HIGH)
    _keeps_cycling(ex)
    assert ex.state is RtState.RUNNING


@pytest.mark.privileged
def test_reconfigure_changes_policy_and_priority_live(fifo_loop: Executive) -> None:
    ex = fifo_loop
    tid = ex.tid
    assert tid is not None
    assert ex.reconfigure(priority=PRIO + 5) == LiveSettings(
        frozenset({HIGH}), "SCHED_FIFO", PRIO + 5
    )
    assert os.sched_getparam(tid).sched_priority == PRIO + 5
    assert ex.reconfigure(policy="SCHED_RR").policy == "SCHED_RR"  # keeps the RT priority
    assert os.sched_getscheduler(tid) == os.SCHED_RR
    assert os.sched_getparam(tid).sched_priority == PRIO + 5
    assert ex.reconfigure(policy="SCHED_OTHER") == LiveSettings(frozenset({HIGH}), "SCHED_OTHER", 0)
    assert os.sched_getscheduler(tid) == os.SCHED_OTHER
    assert ex.reconfigure(policy="fifo", priority=PRIO).policy == "SCHED_FIFO"
    assert ex.live_settings() == read_live_settings(tid)
    _keeps_cycling(ex)


@pytest.mark.privileged
def test_invalid_api_changes_are_refused_before_anything_changes(fifo_loop: Executive) -> None:
    ex = fifo_loop
    old = ex.live_settings()
    with pytest.raises(CpuNotAllowedError, match=f"CPU {NOT_ALLOWED} is not allowed"):
        ex.reconfigure(cpus=[LOW, NOT_ALLOWED], priority=PRIO + 1)
    with pytest.raises(ValueError, match=r"priority 120 is out of range for SCHED_FIFO.*1\.\.99"):
        ex.reconfigure(cpus=[LOW], priority=120)
    with pytest.raises(ValueError, match="empty"):
        ex.set_affinity([])
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        ex.reconfigure(policy="SCHED_FAST")
    with pytest.raises(UnsupportedError, match="SCHED_DEADLINE cannot be changed live"):
        ex.reconfigure(policy="SCHED_DEADLINE")
    with pytest.raises(TypeError, match="priority must be int"):
        ex.reconfigure(priority="high")  # type: ignore[arg-type]
    assert ex.live_settings() == old
    ex.reconfigure(policy="SCHED_OTHER")
    with pytest.raises(ValueError, match=r"switching to SCHED_FIFO needs a priority \(1\.\.99\)"):
        ex.reconfigure(policy="SCHED_FIFO")
    _keeps_cycling(ex)


@pytest.mark.privileged
@needs_two_cpus
def test_a_refused_scheduling_change_undoes_the_repin(
    fifo_loop: Executive, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = fifo_loop
    tid = ex.tid
    assert tid is not None
    old = ex.live_settings()

    def refuse(*args: object, **kwargs: object) -> None:
        # what the kernel answers inside a cgroup without RT runtime (PITFALLS)
        raise PrivilegeError(1, "cannot set SCHED_FIFO priority 45: Operation not permitted")

    monkeypatch.setattr(_reconfig, "set_scheduler", refuse)
    with pytest.raises(PrivilegeError):
        ex.reconfigure(cpus=[LOW], priority=PRIO + 5)
    assert ex.live_settings() == old
    assert _cpus_allowed(tid) == str(HIGH)
    _keeps_cycling(ex)


def test_api_needs_a_running_cycle_thread() -> None:
    ex = Executive(BuiltinBody(), period_us=1000)
    with pytest.raises(RuntimeError, match="not started"):
        ex.set_affinity([0])
    with pytest.raises(RuntimeError, match="not started"):
        ConfigWatcher(ex, "/")
    ex.run(3)
    with pytest.raises(RuntimeError, match="has ended"):
        ex.reconfigure(priority=0)
    with pytest.raises(RuntimeError, match="has ended"):
        ex.watch_config("/")


def test_unprivileged_live_settings_are_read_back(plain_loop: Executive) -> None:
    tid = plain_loop.tid
    assert tid is not None
    live = plain_loop.live_settings()
    assert live.policy == "SCHED_OTHER" and live.priority == 0
    assert live.cpus == frozenset(os.sched_getaffinity(tid))
    assert live.describe().startswith("CPUs ")
    assert live.to_dict()["policy"] == "SCHED_OTHER"
    # a no-op change changes nothing and is allowed unprivileged
    assert plain_loop.reconfigure(cpus=live.cpus) == live


# --------------------------------------------------------------- watching a directory


def _write(path: Path, data: object) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _watch(ex: Executive, directory: Path) -> tuple[ConfigWatcher, queue.Queue[ReconfigEvent]]:
    events: queue.Queue[ReconfigEvent] = queue.Queue()
    return ex.watch_config(directory, interval_s=0.1, on_event=events.put), events


def _next(events: queue.Queue[ReconfigEvent], timeout: float = 5.0) -> ReconfigEvent:
    return events.get(timeout=timeout)


@pytest.mark.privileged
@needs_two_cpus
def test_a_changed_cpu_affinity_json_repins_within_5_s_without_stopping(
    fifo_loop: Executive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ex = fifo_loop
    tid = ex.tid
    assert tid is not None
    _write(tmp_path / "cpu_affinity.json", {"rt": {"cpu_cores": [HIGH], "priority": PRIO}})
    watcher, events = _watch(ex, tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="mxrc.rt.reconfig"):
            before = ex.cycles
            _write(tmp_path / "cpu_affinity.json", {"rt": {"cpu_cores": [LOW], "priority": 45}})
            took = _wait_until(lambda: _cpus_allowed(tid) == str(LOW), 5.0, "the re-pin")
            event = _next(events)
        assert took <= 5.0  # SC-015
        assert event.kind == "applied"
        assert event.before == LiveSettings(frozenset({HIGH}), "SCHED_FIFO", PRIO)
        assert event.after == LiveSettings(frozenset({LOW}), "SCHED_FIFO", 45)
        assert os.sched_getparam(tid).sched_priority == 45
        assert ex.tid == tid and ex.state is RtState.RUNNING
        _keeps_cycling(ex)
        assert ex.cycles > before
        assert watcher.applied == 1 and watcher.rejected == 0
        record = next(r for r in caplog.records if r.name == "mxrc.rt.reconfig")
        assert record.levelno == logging.INFO
        assert "now runs with CPUs" in record.getMessage()
        assert "cpu_affinity.json" in record.getMessage()
    finally:
        assert watcher.stop()


@pytest.mark.privileged
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"rt": {"cpu_cores": [0],}}', "malformed JSON"),
        ({"rt": {"priority": "high"}}, "rt.priority"),
        ({"rt": {"cpu_cores": [NOT_ALLOWED]}}, f"CPU {NOT_ALLOWED} is not in the set"),
        ({"rt": {"prioirty": 45}}, "did you mean 'priority'"),
        ({"rt": {"policy": "SCHED_OTHER", "priority": 45}}, "rt.priority"),
        (
            {"rt": {"policy": "SCHED_DEADLINE", "deadline": DEADLINE}},
            "SCHED_DEADLINE cannot be applied to a running cycle thread",
        ),
    ],
    ids=["bad-json", "schema", "cpu-not-allowed", "unknown-key", "cross-field", "deadline"],
)
def test_an_invalid_change_is_rejected_with_a_logged_config_error_and_old_settings_stay(
    fifo_loop: Executive,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: object,
    expected: str,
) -> None:
    ex = fifo_loop
    tid = ex.tid
    assert tid is not None
    good = {"rt": {"cpu_cores": [HIGH], "priority": PRIO}}
    _write(tmp_path / "cpu_affinity.json", good)
    watcher, events = _watch(ex, tmp_path)
    try:
        old = ex.live_settings()
        with caplog.at_level(logging.INFO, logger="mxrc.rt.reconfig"):
            _write(tmp_path / "cpu_affinity.json", content)
            event = _next(events)
        assert event.kind == "rejected"
        assert isinstance(event.error, ConfigError)
        assert expected in str(event.error)
        assert "cpu_affinity.json" in str(event.error)  # names the file
        assert ex.live_settings() == old  # the old settings stay
        assert _cpus_allowed(tid) == str(HIGH)
        _keeps_cycling(ex)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        message = errors[0].getMessage()
        assert "rejected the change of" in message and "ConfigError" in message
        assert expected in message and f"keeping {old.describe()}" in message
        assert watcher.rejected == 1
        # the next valid edit is applied again
        _write(tmp_path / "cpu_affinity.json", {"rt": {"cpu_cores": [HIGH], "priority": 44}})
        assert _next(events).kind == "applied"
        assert os.sched_getparam(tid).sched_priority == 44
    finally:
        watcher.stop()


@pytest.mark.privileged
def test_numa_and_non_live_keys_are_reported_as_next_start(
    fifo_loop: Executive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ex = fifo_loop
    _write(tmp_path / "cpu_affinity.json", {"rt": {"cpu_cores": [HIGH], "priority": PRIO}})
    watcher, events = _watch(ex, tmp_path)
    try:
        old = ex.live_settings()
        with caplog.at_level(logging.INFO, logger="mxrc.rt.reconfig"):
            _write(tmp_path / "numa_binding.json", {"rt": {"memory_policy": "PREFERRED"}})
            event = _next(events)
            assert event.kind == "not_live"
            assert "next start" in event.message and "numa_binding.json" in event.file
            _write(
                tmp_path / "cpu_affinity.json",
                {"rt": {"cpu_cores": [HIGH], "priority": PRIO, "thread_name": "renamed"}},
            )
            event = _next(events)
        assert event.kind == "unchanged"
        assert "rt.thread_name changed but is not applied live" in event.message
        assert ex.live_settings() == old
        assert any(r.levelno == logging.WARNING for r in caplog.records)
    finally:
        watcher.stop()


@pytest.mark.privileged
def test_environment_overrides_still_beat_the_file(fifo_loop: Executive, tmp_path: Path) -> None:
    ex = fifo_loop
    tid = ex.tid
    assert tid is not None
    events: queue.Queue[ReconfigEvent] = queue.Queue()
    watcher = ConfigWatcher(
        ex, tmp_path, interval_s=0.1, environ={"MXRC_RT_PRIORITY": "42"}, on_event=events.put
    ).start()
    try:
        _write(tmp_path / "cpu_affinity.json", {"rt": {"cpu_cores": [HIGH], "priority": 48}})
        event = _next(events)
        assert event.kind == "applied"
        assert os.sched_getparam(tid).sched_priority == 42
        assert "MXRC_RT_PRIORITY overrides rt.priority" in event.message
    finally:
        watcher.stop()


def test_a_change_is_acted_on_once_it_has_settled(plain_loop: Executive, tmp_path: Path) -> None:
    """Driven by hand (no thread): a half-written file is not read on the look that
    first sees it change; a rewrite with the same bytes is not a change."""
    ex = plain_loop
    live = ex.live_settings()
    policy = {"rt": {"policy": "SCHED_OTHER", "cpu_cores": sorted(live.cpus)}}
    watcher = ConfigWatcher(ex, tmp_path, interval_s=0.1)
    assert watcher.poll() == []
    _write(tmp_path / "cpu_affinity.json", policy)
    assert watcher.poll() == []  # seen changing: looked at again next time
    (event,) = watcher.poll()
    assert event.kind == "unchanged" and event.after == live
    _write(tmp_path / "cpu_affinity.json", policy)  # same bytes, new mtime
    assert watcher.poll() == []
    assert watcher.poll() == []
    batch = {"rt": {"policy": "SCHED_BATCH", "cpu_cores": sorted(live.cpus)}}
    _write(tmp_path / "cpu_affinity.json", batch)  # allowed unprivileged
    assert watcher.poll() == []
    (event,) = watcher.poll()
    assert event.kind == "applied"
    assert event.after == LiveSettings(live.cpus, "SCHED_BATCH", 0)
    assert ex.live_settings().policy == "SCHED_BATCH"
    assert watcher.applied == 1


def test_watcher_arguments_are_checked(plain_loop: Executive, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config directory to watch"):
        ConfigWatcher(plain_loop, None, environ={})
    with pytest.raises(ValueError, match="not a directory"):
        ConfigWatcher(plain_loop, tmp_path / "missing")
    with pytest.raises(ValueError, match="interval_s"):
        ConfigWatcher(plain_loop, tmp_path, interval_s=0)
    watcher = ConfigWatcher(plain_loop, None, environ={"MXRC_CONFIG_DIR": str(tmp_path)})
    assert watcher.directory == tmp_path


def test_the_watcher_thread_ends_with_the_executive(tmp_path: Path) -> None:
    ex = Executive(BuiltinBody(), period_us=1000)
    ex.start()
    watcher = ex.watch_config(tmp_path, interval_s=0.05)
    assert watcher.running
    ex.stop()
    _wait_until(lambda: not watcher.running, 5, "the watcher thread ending")


# --------------------------------------------------------------- `mxrc run --config DIR`


@pytest.mark.privileged
@needs_two_cpus
def test_mxrc_run_applies_a_config_change_to_its_running_loop(tmp_path: Path) -> None:
    from mxrc.bus import Segment

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    _write(cfg / "cpu_affinity.json", {"rt": {"cpu_cores": [HIGH], "priority": PRIO}})
    inst = f"test-reconfig-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXRC_")}
    proc = subprocess.Popen(
        # ended by SIGINT: a run longer than the test however slow the machine
        [
            sys.executable,
            "-m",
            "mxrc",
            "run",
            "--config",
            str(cfg),
            "--instance",
            inst,
            "--cycles",
            "10000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env=env,
    )
    lines: list[str] = []  # its stderr, read as it comes: the watcher says when it watches
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
    reader.start()
    try:
        _wait_until(lambda: Path(f"/dev/shm/mxrc-{inst}").exists(), 30, "the segment")
        with Segment.attach(inst) as seg:

            def cycles() -> int:
                try:
                    return seg.stats("main").cycle_count
                except LookupError:
                    return 0

            _wait_until(lambda: cycles() > 10, 30, "the run cycling")
            tid = seg.stats("main").tid
            assert _cpus_allowed(tid, proc.pid) == str(HIGH)
            _wait_until(lambda: any("watching" in line for line in lines), 30, "the watcher")
            _write(cfg / "cpu_affinity.json", {"rt": {"cpu_cores": [LOW], "priority": PRIO}})
            _wait_until(lambda: _cpus_allowed(tid, proc.pid) == str(LOW), 15, "the re-pin")
            n = cycles()
            _wait_until(lambda: cycles() > n + 50, 10, "cycles after the re-pin")
            assert seg.stats("main").tid == tid
            _write(cfg / "cpu_affinity.json", '{"rt": {"cpu_cores": [LOW]')
            time.sleep(1.5)
            assert _cpus_allowed(tid, proc.pid) == str(LOW)
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            Segment.remove(inst, force=True)
        reader.join(10)
        stderr.close()
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "watching" in err and "cpu_affinity.json" in err
    assert f"now runs with CPUs {LOW}, SCHED_FIFO {PRIO}" in err
    assert "rejected the change of" in err and "malformed JSON" in err
    assert "Traceback" not in err


def test_a_simulated_clock_executive_refuses_live_changes(tmp_path: Path) -> None:
    ex = Executive(BuiltinBody(), period_us=1000, clock="simulated")
    ex.start()
    try:
        with pytest.raises(UnsupportedError, match="simulated clock"):
            ex.set_affinity([LOW])
        with pytest.raises(UnsupportedError, match="simulated clock"):
            ex.watch_config(tmp_path)
        with pytest.raises(UnsupportedError, match="simulated clock"):
            ConfigWatcher(ex, tmp_path)
        assert ex.live_settings().policy == "SCHED_OTHER"  # reading is fine
    finally:
        ex.stop()
