"""Task / Sequence / Action: transition tables, events, cascades, serialisation."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from typing import Any

import pytest

from mxrc import tracecontext as tc
from mxrc.tasks import (
    ACTION_TRANSITIONS,
    SCHEMA_VERSION,
    SEQUENCE_TRANSITIONS,
    TASK_TRANSITIONS,
    Action,
    InvalidTransitionError,
    RunState,
    Sequence,
    StateChange,
    Task,
    TaskMode,
    TaskModelError,
    TaskState,
    from_dict,
    publish_errors,
)


class Recorder:
    def __init__(self) -> None:
        self.changes: list[StateChange] = []
        self.contexts: list[tc.TraceContext | None] = []

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)
        self.contexts.append(tc.current())

    def summary(self) -> list[tuple[str, str, str, str, str]]:
        return [(c.kind, c.id, c.from_state, c.to_state, c.trigger) for c in self.changes]


def _in_state(node: Any, state: Any) -> Any:
    """A copy of node restored in ``state`` (through the serialised form)."""
    data = node.to_dict()
    data["state"] = state.value
    return from_dict(data)


# ------------------------------------------------------------------------------- tables


def test_states_and_modes_are_upstreams() -> None:
    assert [s.value for s in TaskState] == [
        "IDLE",
        "SCHEDULED",
        "RUNNING",
        "PAUSED",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert [m.value for m in TaskMode] == ["ONCE", "PERIODIC", "TRIGGERED"]
    assert [s.value for s in RunState] == [
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
    ]
    assert set(TASK_TRANSITIONS) == set(TaskState)
    assert set(SEQUENCE_TRANSITIONS) == set(RunState) and ACTION_TRANSITIONS is SEQUENCE_TRANSITIONS
    for state in RunState:
        assert (not SEQUENCE_TRANSITIONS[state]) == state.terminal


@pytest.mark.parametrize(
    ("make", "table", "states"),
    [
        (lambda: Task("t", mode="PERIODIC", period_s=1.0), TASK_TRANSITIONS, TaskState),
        (lambda: Sequence("s"), SEQUENCE_TRANSITIONS, RunState),
        (lambda: Action("a"), ACTION_TRANSITIONS, RunState),
    ],
    ids=["task", "sequence", "action"],
)
def test_every_pair_follows_the_table(make: Any, table: Any, states: Any) -> None:
    for src, dst in itertools.product(states, states):
        node = _in_state(make(), src)
        rec = Recorder()
        node.publisher = rec
        if dst in table[src]:
            change = node.transition(dst)
            assert node.state is dst
            assert change.trigger == table[src][dst]
            assert rec.summary() == [(node.kind, node.id, src.value, dst.value, change.trigger)]
        else:
            with pytest.raises(InvalidTransitionError) as info:
                node.transition(dst)
            err = info.value
            assert isinstance(err, ValueError)
            assert (err.from_state, err.to_state) == (src, dst)
            assert err.allowed == tuple(table[src])
            assert f"{src.value} -> {dst.value}" in str(err)
            assert node.kind in str(err) and repr(node.id) in str(err)
            assert node.state is src and rec.changes == []


def test_invalid_transition_message_names_allowed_states() -> None:
    action = Action("a1")
    action.start()
    action.complete()
    with pytest.raises(InvalidTransitionError, match="COMPLETED is terminal"):
        action.start()
    task = Task("t1")
    with pytest.raises(
        InvalidTransitionError,
        match=r"IDLE -> PAUSED; allowed from IDLE: SCHEDULED \(schedule\), RUNNING \(start\), "
        r"CANCELLED \(cancel\)",
    ):
        task.pause()


def test_transition_by_name_and_custom_trigger() -> None:
    rec = Recorder()
    action = Action("a1", publisher=rec)
    action.transition("RUNNING", trigger="operator:go")
    assert action.state is RunState.RUNNING and rec.changes[-1].trigger == "operator:go"
    with pytest.raises(TaskModelError, match="unknown state 'DONE'"):
        action.transition("DONE")
    with pytest.raises(TaskModelError, match="trigger"):
        action.transition(RunState.COMPLETED, trigger="Has Spaces")
    with pytest.raises(TaskModelError, match="trigger"):
        action.transition(RunState.COMPLETED, trigger="x" * 25)
    assert action.state is RunState.RUNNING


# ------------------------------------------------------------------------------- modes


def test_mode_requirements() -> None:
    with pytest.raises(TaskModelError, match="PERIODIC task needs period_s"):
        Task("t", mode=TaskMode.PERIODIC)
    with pytest.raises(TaskModelError, match="TRIGGERED task needs trigger_event"):
        Task("t", mode="TRIGGERED")
    with pytest.raises(TaskModelError, match="period_s is only for PERIODIC"):
        Task("t", period_s=1.0)
    with pytest.raises(TaskModelError, match="trigger_event is only for TRIGGERED"):
        Task("t", mode="PERIODIC", period_s=1.0, trigger_event="x")
    with pytest.raises(TaskModelError, match="finite number of seconds"):
        Task("t", mode="PERIODIC", period_s=float("nan"))
    with pytest.raises(TaskModelError, match="unknown mode"):
        Task("t", mode="SOMETIMES")
    assert Task("t", mode="TRIGGERED", trigger_event="part.arrived").mode is TaskMode.TRIGGERED


def test_once_task_cannot_reschedule_but_periodic_can() -> None:
    once = Task("once")
    once.start()
    with pytest.raises(InvalidTransitionError, match="only PERIODIC and TRIGGERED"):
        once.reschedule()
    periodic = Task("tick", mode="PERIODIC", period_s=0.1)
    periodic.schedule()
    for _ in range(3):
        periodic.start()
        periodic.pause()
        periodic.resume()  # a resume is not a new run
        periodic.reschedule()
    assert periodic.run_count == 3 and periodic.state is TaskState.SCHEDULED
    trig = Task("on-part", mode="TRIGGERED", trigger_event="part.arrived")
    trig.start()
    trig.reschedule()
    assert trig.state is TaskState.SCHEDULED


def test_reset_clears_the_error() -> None:
    task = Task("t")
    task.start()
    task.fail(RuntimeError("gripper jammed"))
    assert task.error == "RuntimeError: gripper jammed"
    task.reset()
    assert task.state is TaskState.IDLE and task.error is None


# ------------------------------------------------------------------------------- events


def test_events_have_type_payload_and_fit_an_mxrc_event() -> None:
    rec = Recorder()
    task = Task("pick-1", publisher=rec)
    task.start()
    change = rec.changes[0]
    assert change.type == "task.state_changed"
    assert change.payload == {"id": "pick-1", "from": "IDLE", "to": "RUNNING", "trigger": "start"}
    assert json.loads(change.payload_json()) == change.payload
    assert change.timestamp_ns > 0
    # the longest payload: 32-byte id, 9-letter states, a parent_ trigger of 24 + 7
    worst = StateChange("sequence", "x" * 32, "CANCELLED", "SCHEDULED", "parent_" + "y" * 24, 1)
    assert len(worst.payload_json()) <= 136
    with pytest.raises(TaskModelError, match="1 to 32"):
        Task("x" * 33)
    with pytest.raises(TaskModelError, match="id"):
        Action("has space")


def test_publisher_is_inherited_from_the_nearest_parent() -> None:
    rec = Recorder()
    own = Recorder()
    a1 = Action("a1")
    a2 = Action("a2", publisher=own)
    task = Task("t", publisher=rec, sequences=[Sequence("s", actions=[a1, a2])])
    a1.start()
    a2.start()
    assert [c.id for c in rec.changes] == ["a1"]
    assert [c.id for c in own.changes] == ["a2"]
    assert task.find("a2") is a2 and task.find("s") is task.sequence("s")
    assert a1.effective_publisher() is rec


def test_a_raising_publisher_is_logged_and_the_change_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(change: StateChange) -> None:
        raise RuntimeError("bus gone")

    before = publish_errors()
    action = Action("a1", publisher=broken)
    with caplog.at_level(logging.ERROR, logger="mxrc.tasks"):
        action.start()
    assert action.state is RunState.RUNNING
    assert publish_errors() == before + 1
    assert "action.state_changed" in caplog.text and "bus gone" in caplog.text


def test_changes_carry_the_trace_context() -> None:
    rec = Recorder()
    root = tc.TraceContext.new_root()
    task = Task("t", publisher=rec, trace_context=root)
    seq = task.add_sequence(Sequence("s", actions=[Action("a")]))
    task.start()
    seq.start()  # inherits the task's context
    assert [c.trace for c in rec.changes] == [root, root]
    assert rec.contexts == [root, root]  # the publisher runs with it current
    plain = Action("b", publisher=rec)
    ambient = tc.TraceContext.new_root()
    with tc.use(ambient):
        plain.start()  # no own context: the caller's
    assert rec.changes[-1].trace == ambient
    plain.cancel()
    assert rec.changes[-1].trace is None


# ------------------------------------------------------------------------------- cascades


def _tree(rec: Recorder) -> Task:
    return Task(
        "t",
        publisher=rec,
        sequences=[
            Sequence("s1", actions=[Action("a1"), Action("a2"), Action("a3")]),
            Sequence("s2", actions=[Action("b1")]),
        ],
    )


def test_cancelling_a_task_ends_everything_below_first() -> None:
    rec = Recorder()
    task = _tree(rec)
    task.start()
    s1 = task.sequence("s1")
    s1.start()
    s1.action("a1").start()
    s1.action("a1").complete({"picked": True})
    s1.action("a2").start()
    rec.changes.clear()
    task.cancel()
    assert rec.summary() == [
        ("action", "a2", "RUNNING", "CANCELLED", "parent_cancel"),
        ("action", "a3", "PENDING", "CANCELLED", "parent_cancel"),
        ("sequence", "s1", "RUNNING", "CANCELLED", "parent_cancel"),
        ("action", "b1", "PENDING", "CANCELLED", "parent_cancel"),
        ("sequence", "s2", "PENDING", "CANCELLED", "parent_cancel"),
        ("task", "t", "RUNNING", "CANCELLED", "cancel"),
    ]
    assert s1.action("a1").state is RunState.COMPLETED  # ended ones stay as they were
    assert s1.action("a1").result == {"picked": True}


def test_failing_a_task_fails_running_sequences_and_cancels_pending_ones() -> None:
    rec = Recorder()
    task = _tree(rec)
    task.start()
    task.sequence("s1").start()
    task.sequence("s1").action("a1").start()
    task.fail("estop")
    states = {n.id: n.state.value for n in task.walk()}
    assert states == {
        "t": "FAILED",
        "s1": "FAILED",
        "a1": "FAILED",
        "a2": "CANCELLED",
        "a3": "CANCELLED",
        "s2": "CANCELLED",
        "b1": "CANCELLED",
    }
    assert task.error == "estop"


def test_sequence_timeout_and_completion() -> None:
    rec = Recorder()
    seq = Sequence("s", actions=[Action("a1", timeout_s=0.5), Action("a2")], publisher=rec)
    seq.start()
    a1 = seq.next_action()
    assert a1 is not None and a1.id == "a1" and seq.current_action is a1
    a1.start()
    assert seq.next_action() is seq.action("a2") and seq.current_action is a1
    assert a1.started_at_ns is not None
    assert not a1.overdue(a1.started_at_ns + 400_000_000)
    assert a1.overdue(a1.started_at_ns + 600_000_000)
    seq.timeout()
    assert [(c.id, c.to_state, c.trigger) for c in rec.changes[-3:]] == [
        ("a1", "TIMEOUT", "parent_timeout"),
        ("a2", "CANCELLED", "parent_timeout"),
        ("s", "TIMEOUT", "timeout"),
    ]
    assert seq.current_action is None and a1.finished_at_ns is not None

    early = Sequence("e", actions=[Action("x"), Action("y")])
    early.start()
    early.action("x").start()
    with pytest.raises(InvalidTransitionError, match="x still RUNNING"):
        early.complete()
    early.action("x").complete()
    early.complete()  # y never ran: it is skipped
    assert early.action("y").state is RunState.CANCELLED
    with pytest.raises(TaskModelError, match="no actions can be added"):
        early.add(Action("z"))


def test_tree_membership_rules() -> None:
    a = Action("a")
    seq = Sequence("s", actions=[a])
    with pytest.raises(TaskModelError, match="already belongs"):
        Sequence("other", actions=[a])
    with pytest.raises(TaskModelError, match="already has an object with id 'a'"):
        seq.add(Action("a"))
    task = Task("t", sequences=[seq])
    with pytest.raises(TaskModelError, match="already has an object with id 's'"):
        task.add_sequence(Sequence("s"))
    with pytest.raises(TaskModelError, match="task 't' already has an object with id 'a'"):
        task.add_sequence(Sequence("s2", actions=[Action("a")]))
    with pytest.raises(TaskModelError, match="id 't'"):
        seq.add(Action("t"))  # unique across the whole task, not only the sequence
    task.start()
    task.complete()
    with pytest.raises(TaskModelError, match="reset"):
        task.add_sequence(Sequence("s3"))
    with pytest.raises(KeyError):
        task.find("nope")


def test_concurrent_transitions_have_one_winner() -> None:
    for _ in range(20):
        rec = Recorder()
        action = Action("a", publisher=rec)
        action.start()
        barrier = threading.Barrier(8)
        wins: list[str] = []
        lock = threading.Lock()

        def attempt(
            i: int,
            action: Action = action,
            barrier: threading.Barrier = barrier,
            wins: list[str] = wins,
            lock: threading.Lock = lock,
        ) -> None:
            barrier.wait()
            try:
                if i % 2:
                    action.cancel()
                else:
                    action.complete(i)
            except InvalidTransitionError:
                return
            with lock:
                wins.append(action.state.value)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(wins) == 1
        assert len(rec.changes) == 2 and rec.changes[-1].to_state == wins[0]


# ------------------------------------------------------------------------------- serialisation


def _busy_task() -> Task:
    ctx = tc.TraceContext.from_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", "congo=t61rcWkgMzE", strict=True
    )
    task = Task("weld-job", "Weld seam 3", mode="PERIODIC", period_s=2.5, trace_context=ctx)
    seq = task.add_sequence(Sequence("run-1", timeout_s=30))
    seq.add(Action("move", params={"target": [0.1, 0.2, -0.3], "speed": 0.5}, timeout_s=5))
    seq.add(Action("weld", params={"current_a": 120, "gas": None, "ok": True}))
    task.schedule()
    task.start()
    seq.start()
    seq.action("move").start()
    seq.action("move").complete({"reached": [0.1, 0.2, -0.3]})
    seq.action("weld").start()
    seq.action("weld").fail(ValueError("arc lost"))
    seq.fail("weld failed")
    return task


def test_round_trip_is_json_safe_and_exact() -> None:
    task = _busy_task()
    data = task.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert data["schema_version"] == SCHEMA_VERSION == 1
    restored = from_dict(json.loads(text))
    assert isinstance(restored, Task)
    assert restored.to_dict() == data
    assert restored.state is TaskState.RUNNING and restored.run_count == 1
    assert restored.trace_context == task.trace_context
    weld = restored.find("weld")
    assert isinstance(weld, Action) and weld.error == "ValueError: arc lost"
    assert weld.state is RunState.FAILED
    assert restored.sequence("run-1").action("move").result == {"reached": [0.1, 0.2, -0.3]}
    assert Sequence.from_dict(data["sequences"][0]).to_dict() == data["sequences"][0]
    act = data["sequences"][0]["actions"][0]
    assert Action.from_dict(act).to_dict() == act


def test_restored_objects_keep_working_and_publish_nothing_on_restore() -> None:
    rec = Recorder()
    restored = Task.from_dict(_busy_task().to_dict(), publisher=rec)
    assert rec.changes == []
    restored.reschedule()
    assert rec.summary() == [("task", "weld-job", "RUNNING", "SCHEDULED", "reschedule")]
    seq = restored.sequence("run-1")
    with pytest.raises(InvalidTransitionError):
        seq.start()  # FAILED is terminal, also after a restore


def test_values_must_be_json_safe() -> None:
    with pytest.raises(TaskModelError, match="JSON-safe"):
        Action("a", params={"x": float("nan")})
    with pytest.raises(TaskModelError, match="round trip"):
        Action("a", params={"x": (1, 2)})
    with pytest.raises(TaskModelError, match="JSON-safe"):
        Action("a", params={"x": object()})
    action = Action("a")
    action.start()
    with pytest.raises(TaskModelError, match="result"):
        action.complete({1: "int key"})
    assert action.state is RunState.RUNNING  # refused before the transition
    params = {"x": [1]}
    copy = Action("b", params=params)
    params["x"].append(2)
    assert copy.params == {"x": [1]}  # a private copy


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=2), r"\['schema_version'\] is 2: this mxrc reads"),
        (lambda d: d.update(kind="job"), r"'kind'\] is 'job'"),
        (lambda d: d.pop("run_count"), "missing key"),
        (lambda d: d.update(colour="red"), "unknown key"),
        (lambda d: d.update(state="DONE"), r"task\['state'\]: expected one of IDLE"),
        (lambda d: d.update(run_count="1"), r"\['run_count'\]: expected an integer"),
        (lambda d: d.update(mode="SOMETIMES"), r"task: task 'weld-job': unknown mode"),
        (
            lambda d: d["sequences"][0]["actions"][1].update(state="DONE"),
            r"task\['sequences'\]\[0\]\['actions'\]\[1\]\['state'\]: expected one of PENDING",
        ),
        (
            lambda d: d["sequences"][0]["actions"][0].update(id="bad id"),
            r"task\['sequences'\]\[0\]\['actions'\]\[0\]: action id 'bad id' is invalid",
        ),
        (
            lambda d: d["sequences"][0]["actions"][1].update(id="move"),
            r"task\['sequences'\]\[0\]\['actions'\]\[1\]: sequence 'run-1' already has an "
            "object with id 'move'",
        ),
        (lambda d: d["trace"].update(traceparent="junk"), r"task\['trace'\]: traceparent"),
        (lambda d: d.update(sequences={}), r"\['sequences'\]: expected a list"),
    ],
)
def test_from_dict_errors_name_the_key_path(mutate: Any, message: str) -> None:
    data = _busy_task().to_dict()
    mutate(data)
    with pytest.raises(TaskModelError, match=message):
        from_dict(data)


def test_from_dict_refuses_non_dicts() -> None:
    with pytest.raises(TaskModelError, match="expected a dict"):
        from_dict([])  # type: ignore[arg-type]
    with pytest.raises(TaskModelError, match="'kind'"):
        from_dict({"kind": "job"})


# ------------------------------------------------------------------------------- EventBus


def test_state_changes_travel_on_the_eventbus_with_their_carrier() -> None:
    from mxrc.bus import Event, EventBus, Priority
    from mxrc.tasks import bus_publisher

    received: list[tuple[Event, tc.TraceContext | None]] = []
    root = tc.TraceContext.new_root()
    with EventBus(64, name="tasks-test") as bus:
        bus.subscribe("task.*", lambda ev: received.append((ev, tc.current())))
        bus.subscribe("action.*", lambda ev: received.append((ev, tc.current())))
        task = Task("pick-7", publisher=bus_publisher(bus), trace_context=root)
        action = task.add_sequence(Sequence("s", actions=[Action("grip")])).action("grip")
        task.start()
        action.start()
        action.fail("no part")
        assert bus.flush(10)
    events = [ev for ev, _ in received]
    assert [(e.type, e.target_id) for e in events] == [
        ("task.state_changed", "pick-7"),
        ("action.state_changed", "grip"),
        ("action.state_changed", "grip"),
    ]
    assert events[0].json() == {"id": "pick-7", "from": "IDLE", "to": "RUNNING", "trigger": "start"}
    assert events[2].priority == Priority.HIGH and events[0].priority == Priority.NORMAL
    assert all(e.carrier == root.to_carrier() for e in events)
    assert all(ctx == root for _, ctx in received)  # handlers run in the publisher's trace
