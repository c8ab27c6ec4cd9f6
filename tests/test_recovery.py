"""mxrc.ha.Recovery: a supervised RT process restores tasks, the EventBus queue and the
application's state, and writes complete checkpoints; the supervisor carries those parts
forward in its own checkpoints."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from helpers import small_segment, wait_for
from supervised_helpers import Supervised

from mxrc.bus import DataStore, EventBus, Priority
from mxrc.config import load_config
from mxrc.ha import CheckpointError, CheckpointStore, Recovery, writer_for_segment
from mxrc.ha._recovery import accepts_recovery
from mxrc.rt import Executive, RtState
from mxrc.tasks import Action, Sequence, Task


def _three(a: object, b: object, c: object) -> None: ...


def _two(a: object, b: object) -> None: ...


def _varargs(*args: object) -> None: ...


def _two_and_keyword(a: object, b: object, *, c: object = None) -> None: ...


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (_three, True),
        (_two, False),
        (_varargs, True),
        (_two_and_keyword, False),
        (partial(_three, 1), False),
    ],
)
def test_accepts_recovery_counts_positional_parameters(
    fn: Callable[..., object], expected: bool
) -> None:
    assert accepts_recovery(fn) is expected


def _config(tmp_path: Path, **rt: object) -> Any:
    directory = tmp_path / "cfg"
    directory.mkdir(exist_ok=True)
    (directory / "failover_policy.json").write_text(json.dumps({"rt": rt}))
    return load_config(directory)


def _job() -> Task:
    return Task("job", sequences=[Sequence("s", actions=[Action("a", "move", params={"x": 1.5})])])


def test_checkpointing_writes_complete_checkpoints_that_a_new_process_restores(
    tmp_path: Path, instance: str
) -> None:
    cfg = _config(tmp_path)
    ckdir = tmp_path / "ckpt"
    with small_segment(instance) as seg:
        ds = DataStore.from_segment(seg)
        ds.define("count", int)

        def body(ctx: object) -> None:
            ds["count"] = ds["count"] + 1  # type: ignore[operator]

        first = Recovery(seg, cfg, ckdir)
        assert first.load() is None
        assert first.restore().tasks == ()  # nothing to restore yet
        with pytest.raises(RuntimeError, match="already called"):
            first.restore()
        bus = EventBus()  # not started: its events stay queued
        bus.publish("axis.moved", {"pos": 1.25})
        bus.publish("estop", b"\x01", priority=Priority.CRITICAL)
        tasks = [_job()]
        app = {"setpoint": -0.0, "starts": 1}
        ex = Executive(body, period_us=1000, segment=seg, name="main")
        ex.start()
        try:
            with first.checkpointing(
                ex, tasks=lambda: tasks, eventbus=bus, save_hook=lambda: app
            ) as writer:
                assert writer is not None
                assert wait_for(lambda: writer.written == 1)
                assert CheckpointStore(ckdir).load_newest().reason == "started"  # type: ignore[union-attr]
                writer._poll_s = 0.005  # see the state transitions quickly
                ex.enter_safe_mode()
                assert wait_for(lambda: writer.written >= 2)
                ex.exit_safe_mode()
                assert wait_for(lambda: writer.written >= 3)
                app["starts"] = 7  # the last checkpoint has the newest application state
        finally:
            ex.stop()
        reasons = [cp.reason for cp in CheckpointStore(ckdir).iter_valid()]
        assert reasons == ["stopped", "SAFE_MODE->RUNNING", "RUNNING->SAFE_MODE", "started"]

        second = Recovery(seg, cfg, ckdir, restarted=True)
        cp = second.load()
        assert cp is not None and cp.reason == "stopped" and cp.writer == "rt"
        assert cp.executive is not None and cp.executive["state"] == "RUNNING"
        assert not second.safe_mode_at_checkpoint
        resumed = second.resume_datastore()
        assert resumed is not None and resumed.live == ("count",)  # the live slot wins
        fresh = EventBus()
        got: list[object] = []
        report = second.restore(eventbus=fresh, restore_hook=got.append)
        assert [t.to_dict() for t in report.tasks] == [tasks[0].to_dict()]
        assert report.events == 2 and fresh.pending() == 2
        assert [e.type for e in fresh.pending_events()] == ["estop", "axis.moved"]
        assert got == [{"setpoint": -0.0, "starts": 7}]
        assert str(got[0]["setpoint"]) == "-0.0"  # type: ignore[index]


def test_a_checkpoint_taken_in_safe_mode_keeps_the_restarted_executive_safe(
    tmp_path: Path, instance: str
) -> None:
    cfg = _config(tmp_path)
    ckdir = tmp_path / "ckpt"
    with small_segment(instance) as seg:
        ex = Executive(lambda ctx: None, period_us=1000, segment=seg, name="main")
        ex.start()
        try:
            with Recovery(seg, cfg, ckdir).checkpointing(ex):
                ex.enter_safe_mode()
                assert wait_for(lambda: ex.state == RtState.SAFE_MODE)
        finally:
            ex.stop()
        second = Recovery(seg, cfg, ckdir, restarted=True)
        second.load()
        assert second.safe_mode_at_checkpoint
        ex2 = Executive(lambda ctx: None, period_us=1000, segment=seg, name="again")
        ex2.start()
        try:
            with second.checkpointing(ex2):
                assert wait_for(lambda: ex2.state == RtState.SAFE_MODE)
                time.sleep(0.05)
                assert ex2.state == RtState.SAFE_MODE  # stays: leaving it is the operator's call
        finally:
            ex2.stop()


@pytest.mark.parametrize(
    ("executive", "sticky"),
    [
        ({"state": "SAFE_MODE", "safe_mode_reasons": ["requested"]}, True),
        ({"state": "SAFE_MODE", "safe_mode_reasons": ["agent", "body_error"]}, True),
        ({"state": "SAFE_MODE"}, True),  # reasons unknown: stay safe
        ({"state": "SAFE_MODE", "safe_mode_reasons": ["agent"]}, False),  # re-derived live
        ({"state": "RUNNING", "safe_mode_reasons": []}, False),
    ],
)
def test_which_safe_modes_a_restart_keeps(
    tmp_path: Path, instance: str, executive: dict[str, Any], sticky: bool
) -> None:
    cfg = _config(tmp_path)
    CheckpointStore(tmp_path / "ckpt").write({"executive": executive})
    with small_segment(instance) as seg:
        rec = Recovery(seg, cfg, tmp_path / "ckpt", restarted=True)
        rec.load()
        assert rec.safe_mode_at_checkpoint is sticky


def test_a_failing_restore_hook_names_the_checkpoint(tmp_path: Path, instance: str) -> None:
    cfg = _config(tmp_path)
    written = CheckpointStore(tmp_path / "ckpt").write({"app": {"state": 1}})
    with small_segment(instance) as seg:
        rec = Recovery(seg, cfg, tmp_path / "ckpt")
        rec.load()

        def hook(state: object) -> None:
            raise KeyError("runs")

        with pytest.raises(CheckpointError, match=f"restoring {written.path} failed: KeyError"):
            rec.restore(restore_hook=hook)


def test_a_deeply_nested_newest_file_is_skipped_not_a_crash(
    tmp_path: Path, instance: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    good = CheckpointStore(tmp_path / "ckpt").write({"app": {"state": 1}})
    deep = tmp_path / "ckpt" / "ckpt-00000000-000000000002.json"
    deep.write_text("[" * 200_000 + "]" * 200_000, encoding="ascii")
    with small_segment(instance) as seg:
        rec = Recovery(seg, cfg, tmp_path / "ckpt")
        cp = rec.load()  # a RecursionError must not escape into the RT process's start
    assert cp is not None and cp.path == good.path
    assert rec.store is not None and rec.store.last_checkpoint() is not None
    assert "cannot read the checkpoints" not in capsys.readouterr().err


def test_without_state_recovery_nothing_is_written_or_restored(
    tmp_path: Path, instance: str
) -> None:
    cfg = _config(tmp_path, enable_state_recovery=False, checkpoint_interval_sec=0)
    ckdir = tmp_path / "ckpt"
    with small_segment(instance) as seg:
        rec = Recovery(seg, cfg, ckdir)
        assert rec.store is None and rec.load() is None
        ex = Executive(lambda ctx: None, period_us=1000, segment=seg, name="main")
        ex.start()
        try:
            with rec.checkpointing(ex, save_hook=lambda: 1) as writer:
                assert writer is None
        finally:
            ex.stop()
    assert not ckdir.exists() or not list(ckdir.glob("ckpt-*"))


def test_supervisor_checkpoints_carry_the_rt_processs_parts_forward(
    tmp_path: Path, instance: str
) -> None:
    cfg = _config(tmp_path)
    ckdir = tmp_path / "ckpt"
    with small_segment(instance) as seg:
        ds = DataStore.from_segment(seg)
        ds.define("x", float)
        ds["x"] = 2.5
        side = writer_for_segment(seg, ckdir, interval_s=0)
        alone = side.write_now("periodic")
        assert alone.writer == "supervisor" and alone.carried_from is None
        assert alone.tasks == () and not alone.has_app_state

        bus = EventBus()
        bus.publish("pending", 1)
        ex = Executive(lambda ctx: None, period_us=1000, segment=seg, name="main")
        ex.start()
        try:
            rec = Recovery(seg, cfg, ckdir)
            with rec.checkpointing(
                ex, tasks=lambda: [_job()], eventbus=bus, save_hook=lambda: {"k": 3}
            ) as writer:
                assert writer is not None
                assert wait_for(lambda: writer.written == 1)  # started
                ex.enter_safe_mode()
                assert wait_for(lambda: writer.written == 2)  # RUNNING->SAFE_MODE
                rt_written = CheckpointStore(ckdir).load_newest()
                assert rt_written is not None and rt_written.writer == "rt"
                assert rt_written.executive["safe_mode_reasons"] == ["requested"]  # type: ignore[index]
                ds["x"] = 4.0
                carried = side.write_now("periodic")
        finally:
            ex.stop()
        assert carried.writer == "supervisor" and carried.carried_from == rt_written.name
        assert carried.tasks == rt_written.tasks
        assert carried.events == rt_written.events
        assert carried.has_app_state and carried.app_state == {"k": 3}
        assert carried.datastore is not None and carried.datastore["x"].value == 4.0  # its own
        # the stats block has no SAFE_MODE reasons: they come from the RT process's file
        assert carried.executive is not None and carried.executive["state"] == "SAFE_MODE"
        assert carried.executive["safe_mode_reasons"] == ["requested"]


APP = """\
import sys, json, time
from mxrc.bus import EventBus
from mxrc.rt import Executive
from mxrc.tasks import Task


def main(segment, config, recovery):
    state = {"starts": 0}
    bus = EventBus()  # never started here: its events stay queued, as in a busy agent
    report = recovery.restore(eventbus=bus, restore_hook=state.update)
    state["starts"] += 1
    bus.publish("app.started", {"start": state["starts"]})
    tasks = list(report.tasks) or [Task("job")]
    executive = Executive.from_config(config, lambda ctx: None, segment=segment,
                                      agent_timeout_ms=None)
    executive.start()
    try:
        with recovery.checkpointing(executive, tasks=lambda: tasks, eventbus=bus,
                                    save_hook=lambda: dict(state)) as writer:
            while writer.written == 0:  # the "started" checkpoint holds this start
                time.sleep(0.01)
            print("APP " + json.dumps({"starts": state["starts"], "events": bus.pending(),
                  "tasks": [t.id for t in tasks], "restarted": recovery.restarted}),
                  file=sys.stderr, flush=True)
            while not executive.wait(timeout=1.0):
                pass
    finally:
        executive.stop()
"""


@pytest.mark.privileged
def test_a_killed_rt_process_comes_back_with_its_tasks_events_and_application_state(
    supervised: Callable[..., Supervised],
    tmp_path: Path,
    instance: str,
) -> None:
    (tmp_path / "recoveryapp.py").write_text(APP)
    ckdir = tmp_path / "ckpt"
    sup = supervised(
        "--no-agent",
        "--checkpoint-dir",
        str(ckdir),
        "--",
        "recoveryapp:main",
        pythonpath=str(tmp_path),
    )
    first = json.loads(sup.wait_line(r"APP (.*)").group(1))
    assert first == {"starts": 1, "events": 1, "tasks": ["job"], "restarted": False}
    rt = sup.rt_pid()
    mark = len(sup.lines)
    os.kill(rt, signal.SIGKILL)
    sup.wait_line(r"restored from ckpt-\S+: 1 tasks, 1 events, application state yes", start=mark)
    second = json.loads(sup.wait_line(r"APP (.*)", start=mark).group(1))
    assert second == {"starts": 2, "events": 2, "tasks": ["job"], "restarted": True}
    assert sup.stop() == 0
    # The supervisor's shutdown checkpoint carried the parts the RT process wrote last;
    # the RT process's own last one ("stopped") is newest.
    valid = list(CheckpointStore(ckdir).iter_valid())
    assert valid[0].writer == "rt" and valid[0].reason == "stopped"
    assert valid[0].app_state == {"starts": 2}
    shutdown = [cp for cp in valid if cp.reason == "shutdown"]
    assert shutdown and shutdown[0].writer == "supervisor"
    assert shutdown[0].carried_from is not None and shutdown[0].app_state == {"starts": 2}
