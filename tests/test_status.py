"""`mxrc status`: a running instance read from another process (text, JSON, --watch,
Ctrl-C), instance listing, and clear errors and exit codes for missing, stale, foreign
and other-version segments."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import cli_main, run_mxrc, spawn_mxrc

from mxrc._status import (
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    StatusOptions,
    list_instances,
    run_status,
    thread_placement,
)
from mxrc.bus import Segment
from mxrc.rt import BuiltinBody, Executive, allowed_cpus

SUMMARY_KEYS = {"min", "avg", "p50", "p99", "p999", "max"}


@pytest.fixture(autouse=True)
def _no_mxrc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MXRC_"):
            monkeypatch.delenv(key)


def _instance(tag: str) -> str:
    return f"test-status-{tag}-{os.getpid()}"


def _wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def live_instance() -> Iterator[tuple[str, Executive]]:
    """An instance owned by this process with a running executive (default setup)."""
    inst = _instance("live")
    with Segment.create(inst) as seg:
        ex = Executive(BuiltinBody(), period_us=1000, name="main", segment=seg)
        ex.start()
        assert ex.wait(20, timeout=10)
        try:
            yield inst, ex
        finally:
            ex.stop()


# --------------------------------------------------------------- reading a live instance


def test_status_reads_a_live_executive_from_another_process(
    live_instance: tuple[str, Executive],
) -> None:
    inst, ex = live_instance
    proc = run_mxrc("status", "--instance", inst, "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    data = json.loads(proc.stdout)
    assert data["instance"] == inst and data["owner_pid"] == os.getpid()
    assert data["owner_alive"] is True and data["layout_version"] >= 1
    (t,) = data["threads"]
    assert t["name"] == "main" and t["state"] == "RUNNING" and t["slot_state"] == "claimed"
    assert t["pid"] == os.getpid() and t["tid"] == ex.tid
    assert 20 <= t["cycle_count"] <= ex.cycles
    assert t["period_us"] == 1000.0 and t["deadline_us"] == 1000.0
    for key in ("wake_latency_us", "body_start_latency_us", "exec_time_us"):
        assert set(t[key]) >= SUMMARY_KEYS
        assert t[key]["min"] <= t[key]["p50"] <= t[key]["p99"] <= t[key]["max"] * 1.04
    assert set(t["late_share"]) == {"100us", "1000us"}
    assert 0 <= t["deadline_miss_rate"] <= 1
    assert 0 <= t["heartbeat_age_s"] < 30 and t["stalled"] is False
    placement = t["placement"]
    assert placement["cpu"] in placement["cpus_allowed"]
    assert placement["policy"] == "SCHED_OTHER" and placement["priority"] == 0
    assert set(placement["cpus_allowed"]) == set(os.sched_getaffinity(ex.tid or 0))


def test_text_output_names_what_an_operator_needs(live_instance: tuple[str, Executive]) -> None:
    inst, ex = live_instance
    proc = run_mxrc("status", "--instance", inst)
    assert proc.returncode == EXIT_OK, proc.stderr
    out = proc.stdout
    assert f"instance {inst!r}: /dev/shm/mxrc-{inst}" in out
    assert f"owner pid {os.getpid()} (alive)" in out
    assert f'cycle thread "main": RUNNING, pid {os.getpid()}, tid {ex.tid} on CPU ' in out
    assert "SCHED_OTHER 0" in out
    for text in (
        "cycles ",
        "heartbeat ",
        "deadline misses ",
        "miss rate ",
        "late wake-ups (share of cycles): > 100us",
        "wake-up latency",
        "body-start latency",
        "execution time",
        "p99.9",
    ):
        assert text in out


def test_watch_refreshes_with_a_windowed_miss_rate(live_instance: tuple[str, Executive]) -> None:
    inst, _ = live_instance
    proc = run_mxrc(
        "status", "--instance", inst, "--watch", "--count", "3", "--interval", "0.2", "--json"
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(frames) == 3
    counts = [f["threads"][0]["cycle_count"] for f in frames]
    assert counts[0] < counts[1] < counts[2]  # live
    assert frames[0]["threads"][0]["window_deadline_miss_rate"] is None
    for frame in frames[1:]:
        t = frame["threads"][0]
        assert 0 <= t["window_deadline_miss_rate"] <= 1
        assert t["window_s"] == pytest.approx(0.2, abs=0.15)


def test_watch_text_and_ctrl_c_exits_0(live_instance: tuple[str, Executive]) -> None:
    inst, _ = live_instance
    proc = spawn_mxrc("status", "--instance", inst, "--watch", "--interval", "0.1")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("--- ") and "Ctrl-C to stop" in lines[0]
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_OK, err
    assert "Traceback" not in err
    assert out.count('cycle thread "main": RUNNING') >= 2  # refreshed


def test_in_process_watch_refreshes(live_instance: tuple[str, Executive]) -> None:
    inst, _ = live_instance
    out, err = io.StringIO(), io.StringIO()
    ticks = []

    def sleep(s: float) -> None:
        ticks.append(s)
        time.sleep(s)

    code = run_status(
        StatusOptions(instance=inst, watch=True, count=2, interval_s=0.05), out, err, sleep=sleep
    )
    assert code == EXIT_OK, err.getvalue()
    assert ticks == [0.05]
    assert out.getvalue().count("--- ") == 2
    assert "in the last 0." in out.getvalue()  # the windowed rate on the second frame


@pytest.mark.privileged
def test_status_reads_a_live_mxrc_run(tmp_path: Path) -> None:
    """The issue's scenario: `mxrc run --instance X` in one process, `mxrc status` in another."""
    inst = _instance("run")
    shm = Path(f"/dev/shm/mxrc-{inst}")
    run = spawn_mxrc("run", "--instance", inst, "--cycles", "100000")
    try:
        _wait_until(shm.exists, 30, "the segment")

        def cycles() -> int:
            proc = run_mxrc("status", "--instance", inst, "--json")
            if proc.returncode != 0:
                return 0
            threads = json.loads(proc.stdout)["threads"]
            return int(threads[0]["cycle_count"]) if threads else 0

        _wait_until(lambda: cycles() > 0, 30, "the run cycling")
        proc = run_mxrc("status", "--instance", inst, "--json")
        assert proc.returncode == EXIT_OK, proc.stderr
        data = json.loads(proc.stdout)
        assert data["owner_pid"] == run.pid and data["owner_alive"]
        (t,) = data["threads"]
        assert t["state"] == "RUNNING" and t["pid"] == run.pid and t["tid"] > 0
        assert t["placement"]["policy"] == "SCHED_FIFO" and t["placement"]["priority"] == 40
        assert t["placement"]["cpus_allowed"] == [max(allowed_cpus())]
        assert t["placement"]["cpu"] == max(allowed_cpus())
        text = run_mxrc("status", "--instance", inst)
        assert text.returncode == EXIT_OK
        assert f"pid {run.pid}, tid {t['tid']} on CPU {max(allowed_cpus())}" in text.stdout
        assert "SCHED_FIFO 40" in text.stdout
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
            Segment.remove(inst, force=True)
    assert run.returncode == 130
    gone = run_mxrc("status", "--instance", inst)
    assert gone.returncode == EXIT_NOT_RUNNING
    assert "no instance" in gone.stderr and "does not exist" in gone.stderr


# --------------------------------------------------------------- several / no instances


def test_several_instances_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _instance("list-a"), _instance("list-b")
    with Segment.create(a) as sa, Segment.create(b):
        slot = sa.claim_stats("main")
        proc = run_mxrc(
            "status",
        )
        assert proc.returncode == EXIT_OK, proc.stderr
        assert "mxrc instances" in proc.stdout and "mxrc status --instance NAME" in proc.stdout
        line_a = next(line for line in proc.stdout.splitlines() if a in line)
        assert str(os.getpid()) in line_a and "alive" in line_a and "main INIT 0 cycles" in line_a
        assert b in proc.stdout
        data = json.loads(run_mxrc("status", "--json").stdout)
        rows = {row["instance"]: row for row in data["instances"]}
        assert rows[a]["owner_alive"] is True and rows[a]["threads"][0]["name"] == "main"
        assert rows[b]["threads"] == []
        del slot
    # MXRC_INSTANCE picks one, like `mxrc run`
    monkeypatch.setenv("MXRC_INSTANCE", a)
    code, _, err = cli_main("status")
    assert code == EXIT_NOT_RUNNING and f"no instance {a!r}" in err


def test_the_only_instance_is_shown_and_none_is_exit_1(
    monkeypatch: pytest.MonkeyPatch, live_instance: tuple[str, Executive]
) -> None:
    import mxrc._status as status_mod

    inst, _ = live_instance
    monkeypatch.setattr(status_mod, "list_instances", lambda shm_dir="": [inst])
    code, out, err = cli_main("status")
    assert code == EXIT_OK, err
    assert f"instance {inst!r}" in out
    monkeypatch.setattr(status_mod, "list_instances", lambda shm_dir="": [])
    code, out, err = cli_main("status")
    assert code == EXIT_NOT_RUNNING
    assert "no mxrc instance is running" in err and out == ""


def test_list_instances_reads_the_shm_directory(tmp_path: Path) -> None:
    for name in ("mxrc-a", "mxrc-b.1", "other", "mxrc-"):
        (tmp_path / name).write_bytes(b"")
    assert list_instances(str(tmp_path)) == ["a", "b.1"]
    assert list_instances(str(tmp_path / "missing")) == []


# --------------------------------------------------------------- errors and exit codes


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--interval", "0"],
        ["status", "--interval", "soon"],
        ["status", "--interval", "0.01"],
        ["status", "--count", "0"],
        ["status", "--bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, _, err = cli_main(*argv)
    assert code == EXIT_USAGE
    assert "error" in err or "mxrc status:" in err


def test_bad_instance_name_is_a_usage_error() -> None:
    code, _, err = cli_main("status", "--instance", "no/slashes")
    assert code == EXIT_USAGE
    assert "instance" in err
    proc = run_mxrc("status", "--instance", "no/slashes")
    assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr


def test_missing_instance_exits_1_naming_the_segment() -> None:
    inst = _instance("missing")
    proc = run_mxrc("status", "--instance", inst)
    assert proc.returncode == EXIT_NOT_RUNNING
    assert f"no instance {inst!r} is running: /dev/shm/mxrc-{inst} does not exist" in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


@pytest.fixture
def shm_file() -> Iterator[tuple[str, Path]]:
    inst = _instance("file")
    path = Path(f"/dev/shm/mxrc-{inst}")
    try:
        yield inst, path
    finally:
        path.unlink(missing_ok=True)


def test_foreign_segment_exits_3(shm_file: tuple[str, Path]) -> None:
    inst, path = shm_file
    path.write_bytes(b"not mxrc" * 512)
    proc = run_mxrc("status", "--instance", inst)
    assert proc.returncode == EXIT_UNREADABLE
    assert f"cannot read {path}" in proc.stderr and "not an mxrc segment" in proc.stderr
    assert "bad magic" in proc.stderr and "Traceback" not in proc.stderr


def test_other_layout_version_exits_3(shm_file: tuple[str, Path]) -> None:
    inst, path = shm_file
    source = _instance("real")
    with Segment.create(source) as seg:
        raw = bytearray(Path(seg.path).read_bytes())
    struct.pack_into("<I", raw, 8, 99)  # layout_version follows the 8-byte magic
    path.write_bytes(bytes(raw))
    proc = run_mxrc("status", "--instance", inst)
    assert proc.returncode == EXIT_UNREADABLE
    assert "layout v99" in proc.stderr and "Traceback" not in proc.stderr


def test_stale_segment_is_shown_and_exits_1() -> None:
    inst = _instance("stale")
    # an owner that dies without closing leaves its segment behind (like a SIGKILL)
    code = (
        "import os\nfrom mxrc.bus import Segment\n"
        f"s = Segment.create({inst!r}); slot = s.claim_stats('main')\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/", timeout=60)
    try:
        proc = run_mxrc("status", "--instance", inst)
        assert proc.returncode == EXIT_NOT_RUNNING
        assert "GONE: the instance is not running (stale segment)" in proc.stdout
        assert "reclaims the segment" in proc.stderr
        data = json.loads(run_mxrc("status", "--instance", inst, "--json").stdout)
        assert data["owner_alive"] is False
    finally:
        Segment.remove(inst)


def test_watch_ends_with_exit_1_when_the_owner_goes() -> None:
    inst = _instance("ends")
    seg = Segment.create(inst)
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    watcher = threading.Thread(
        target=lambda: result.append(
            run_status(StatusOptions(instance=inst, watch=True, interval_s=0.05), out, err)
        )
    )
    watcher.start()
    time.sleep(0.3)
    seg.close()  # the owner ends: its lock is released and the name unlinked
    watcher.join(10)
    assert result == [EXIT_NOT_RUNNING]
    assert "is not running: its owner" in err.getvalue()


# --------------------------------------------------------------- /proc reader


def test_thread_placement_of_this_thread() -> None:
    p = thread_placement(os.getpid(), threading.get_native_id())
    assert p is not None
    assert p.cpus_allowed == frozenset(os.sched_getaffinity(0))
    assert p.cpu in p.cpus_allowed
    assert p.policy == "SCHED_OTHER" and p.priority == 0
    assert thread_placement(os.getpid(), 2**22 + 12345) is None
    assert thread_placement(0, 1) is None


def test_thread_placement_parses_a_comm_with_parentheses(tmp_path: Path) -> None:
    task = tmp_path / "10" / "task" / "11"
    task.mkdir(parents=True)
    fields = ["S"] + ["0"] * 35 + ["3", "42", "1"] + ["0"] * 13
    (task / "stat").write_text(f"11 (a) (b c) {' '.join(fields)}\n")
    (task / "status").write_text("Name:\tx\nCpus_allowed_list:\t2-3\n")
    p = thread_placement(10, 11, procfs_root=str(tmp_path))
    assert p is not None
    assert (p.cpu, p.priority, p.policy, p.cpus_allowed) == (3, 42, "SCHED_FIFO", {2, 3})


def test_status_options_validate() -> None:
    assert StatusOptions().interval_s == 1.0
    with pytest.raises(ValueError, match="--interval"):
        StatusOptions(interval_s=0.0)
    with pytest.raises(ValueError, match="--count"):
        StatusOptions(count=0)


def test_help_lists_status() -> None:
    code, out, _ = cli_main("--help")
    assert code == 0 and "status" in out
    code, out, _ = cli_main("status", "--help")
    assert code == 0
    for flag in ("--instance", "--watch", "--interval", "--count", "--json"):
        assert flag in out


def test_a_simulated_clock_run_has_no_heartbeat_age() -> None:
    inst = _instance("sim")
    with Segment.create(inst) as seg:
        ex = Executive(BuiltinBody(), period_us=1000, clock="simulated", segment=seg)
        ex.run(500)  # virtual time: done at once
        proc = run_mxrc("status", "--instance", inst, "--json")
        assert proc.returncode == EXIT_OK, proc.stderr
        (t,) = json.loads(proc.stdout)["threads"]
        assert t["simulated_clock"] is True and t["heartbeat_age_s"] is None
        assert t["cycle_count"] == 500 and t["state"] == "SHUTDOWN" and not t["stalled"]
        text = run_mxrc("status", "--instance", inst).stdout
        assert "simulated clock (virtual times)" in text
