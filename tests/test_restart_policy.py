"""Restart policy (fixed window anchored at the first restart) on a fake clock, and the
HA state machine's transitions."""

from __future__ import annotations

import pytest

from mxrc.config import load_config
from mxrc.ha._policy import RestartPolicy
from mxrc.ha._state import (
    TRANSITIONS,
    HaState,
    HaStateMachine,
    HaTransition,
    InvalidTransitionError,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(clock: FakeClock, count: int = 3, window: float = 60.0) -> RestartPolicy:
    return RestartPolicy(count, window, 0.25, clock=clock)


def test_allows_max_restarts_within_the_window_then_gives_up() -> None:
    clock = FakeClock()
    p = policy(clock)
    for i in range(3):
        d = p.on_failure()
        assert d.restart and d.delay_s == 0.25 and d.restarts_in_window == i + 1
        clock.now += 10
    clock.now = 1000.0 + 59.999  # still inside the window anchored at the first restart
    d = p.on_failure()
    assert not d.restart
    assert "3 restarts within 60 s" in d.reason and "max_restart_count 3" in d.reason
    assert p.gave_up and p.restart_count == 3
    clock.now += 3600  # giving up is final until reset()
    assert not p.on_failure().restart
    assert p.on_failure().reason == "already gave up"


def test_window_edge_exactly_at_window_end_opens_a_new_window() -> None:
    clock = FakeClock()
    p = policy(clock)
    for _ in range(3):
        assert p.on_failure().restart
    clock.now = 1060.0  # first restart + window: the window has passed
    d = p.on_failure()
    assert d.restart and d.restarts_in_window == 1 and d.window_remaining_s == 60.0
    assert p.restart_count == 4 and not p.gave_up


def test_window_is_anchored_at_the_first_restart_not_sliding() -> None:
    clock = FakeClock()
    p = policy(clock)
    assert p.on_failure().restart  # t=1000 anchors the window
    clock.now = 1050.0
    assert p.on_failure().restart
    clock.now = 1059.0
    d = p.on_failure()
    assert d.restart and d.window_remaining_s == pytest.approx(1.0)
    clock.now = 1061.0  # a sliding window would still count 1050 and 1059 → refuse
    d = p.on_failure()
    assert d.restart and d.restarts_in_window == 1


def test_restarts_in_window_decays_and_reset_clears_give_up() -> None:
    clock = FakeClock()
    p = policy(clock, count=1, window=10)
    assert p.on_failure().restart
    assert p.restarts_in_window == 1
    assert not p.on_failure().restart and p.gave_up
    p.reset()
    assert not p.gave_up and p.restarts_in_window == 0
    assert p.on_failure().restart
    assert p.restart_count == 2  # a counter: reset keeps it
    clock.now += 10
    assert p.restarts_in_window == 0


def test_from_config_defaults() -> None:
    role = load_config(None).failover_policy.rt
    p = RestartPolicy.from_config(role, clock=FakeClock())
    assert (p.max_restart_count, p.restart_window_s, p.restart_delay_s) == (5, 60.0, 0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 60.0, 0.1), "max_restart_count must be >= 1"),
        ((1, 0.0, 0.1), "restart_window_s must be > 0"),
        ((1, 60.0, -1.0), "restart_delay_s must be >= 0"),
        ((1, float("nan"), 0.1), "restart_window_s must be > 0"),
    ],
)
def test_bad_arguments_are_named(args: tuple[int, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestartPolicy(*args)
    with pytest.raises(TypeError, match="max_restart_count must be an int"):
        RestartPolicy(True)


def test_state_machine_transitions_and_history() -> None:
    clock = FakeClock()
    seen: list[HaTransition] = []
    sm = HaStateMachine(clock=clock, listener=seen.append)
    assert sm.state is HaState.NORMAL
    assert sm.transition(HaState.NORMAL) is None
    sm.transition(HaState.RECOVERY_IN_PROGRESS, "rt died")
    clock.now += 1
    sm.transition(HaState.MANUAL_INTERVENTION, "restart limit")
    assert [t.to_state for t in seen] == [
        HaState.RECOVERY_IN_PROGRESS,
        HaState.MANUAL_INTERVENTION,
    ]
    assert seen[1].at_s == 1001.0 and seen[1].reason == "restart limit"
    with pytest.raises(InvalidTransitionError, match="MANUAL_INTERVENTION cannot go to DEGRADED"):
        sm.transition(HaState.DEGRADED, "x")
    assert not sm.can_transition(HaState.SAFE_MODE)
    sm.transition(HaState.NORMAL, "operator")
    sm.transition(HaState.SHUTDOWN, "SIGTERM")
    with pytest.raises(InvalidTransitionError, match="allowed from SHUTDOWN: none"):
        sm.transition(HaState.NORMAL)
    assert len(sm.history) == 4


def test_manual_intervention_exits_only_to_normal_or_shutdown() -> None:
    assert TRANSITIONS[HaState.MANUAL_INTERVENTION] == {HaState.NORMAL, HaState.SHUTDOWN}
    assert TRANSITIONS[HaState.SHUTDOWN] == frozenset()
    assert set(TRANSITIONS) == set(HaState)
    for state in HaState:
        if state is not HaState.SHUTDOWN:
            assert HaState.SHUTDOWN in TRANSITIONS[state]
