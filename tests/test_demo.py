"""The demo control task of `mxrc run`: the axis + PID tracks its setpoint, and the
Python and native (C++) implementations do the same math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mxrc._native import _core
from mxrc.demo import (
    STATE_SIZE,
    AxisDemo,
    AxisParams,
    _axis,
    axis_step,
    native_axis_step,
    new_state,
    setpoint,
    tracking_error,
)


def test_layout_matches_the_native_side() -> None:
    assert _core.demo.STATE_SIZE == STATE_SIZE
    indices = [v for k, v in vars(_axis).items() if k.startswith("I_")]
    assert len(set(indices)) == len(indices)
    assert max(indices) < STATE_SIZE


def test_python_and_native_agree_over_many_cycles() -> None:
    for params in (AxisParams(), AxisParams(mass_kg=0.5, kp=800.0, ki=0.0, kd=40.0)):
        py_state = new_state(1e-3, params)
        native_state = py_state.copy()
        for _ in range(5000):
            axis_step(py_state)
        native_axis_step(native_state, 5000)
        np.testing.assert_allclose(native_state, py_state, rtol=1e-9, atol=1e-12)
        assert native_state[_axis.I_STEP] == 5000


def test_the_native_step_refuses_a_wrong_buffer() -> None:
    with pytest.raises(ValueError, match="float64"):
        _core.demo.axis_step(np.zeros(STATE_SIZE - 1), 1)
    with pytest.raises(BufferError):
        _core.demo.axis_step(np.zeros(STATE_SIZE).tobytes(), 1)  # read-only


def test_axis_tracks_the_setpoint() -> None:
    s = new_state(1e-3)
    native_axis_step(s, 4000)  # two periods of the 0.5 Hz setpoint
    err = tracking_error(s)
    assert err.steps == 4000
    amplitude = AxisParams().amplitude_m
    assert err.rms_error_m < 0.01 * amplitude
    assert err.max_abs_error_m < 0.02 * amplitude
    # It really moved: the setpoint swept the full amplitude and the axis followed.
    s2 = new_state(1e-3)
    native_axis_step(s2, 1000)  # half a period: at the top
    assert s2[_axis.I_LAST_SETPOINT_M] == pytest.approx(amplitude, rel=1e-3)
    assert s2[_axis.I_POSITION_M] == pytest.approx(amplitude, rel=0.05)


def test_an_unstable_gain_is_visible_in_the_tracking_error() -> None:
    s = new_state(1e-3, AxisParams(kp=4000.0, kd=-50.0))  # negative damping
    native_axis_step(s, 2000)
    assert tracking_error(s).max_abs_error_m > 0.05


def test_setpoint_is_smooth_and_bounded() -> None:
    assert setpoint(0.0, 0.1, 0.5) == 0.0
    assert setpoint(1.0, 0.1, 0.5) == pytest.approx(0.1)
    values = [setpoint(t / 1000, 0.1, 0.5) for t in range(4000)]
    assert min(values) >= 0.0 and max(values) <= 0.1 + 1e-15


def test_new_state_refuses_a_bad_period() -> None:
    with pytest.raises(ValueError):
        new_state(0.0)


def test_axis_demo_bodies() -> None:
    demo = AxisDemo(1000)
    body = demo.python_body()
    for _ in range(10):
        body(None)
    assert demo.tracking_error().steps == 10
    with pytest.raises(ValueError, match="tier"):
        demo.body("cuda")  # type: ignore[arg-type]
    text = demo.tracking_error().to_text()
    assert "rms" in text and "µm" in text
    assert math.isfinite(demo.tracking_error().to_dict()["rms_error_m"])


def test_both_tiers_on_an_executive_track_the_same_trajectory() -> None:
    from mxrc.rt._executive import Executive

    states = {}
    for tier in ("native", "python"):
        demo = AxisDemo(1000)
        stats = Executive(demo.body(tier), period_us=1000, name=f"demo-{tier}").run(600)
        assert stats.cycle_count == 600
        assert stats.body_error_count == 0
        states[tier] = demo.state.copy()
        assert demo.tracking_error().steps == 600
    np.testing.assert_allclose(states["native"], states["python"], rtol=1e-9, atol=1e-12)


def test_the_native_body_refuses_a_null_state() -> None:
    from mxrc.errors import BodyError
    from mxrc.rt._bodies import NativeBody
    from mxrc.rt._executive import Executive

    body = NativeBody(_core.demo.native_axis_body_address(), user_data=0)
    with pytest.raises(BodyError) as info:
        Executive(body, period_us=1000, name="demo-null").run(5)
    assert info.value.code == 1
