"""The demo control task of ``mxrc run``: a simulated axis with a PID controller.

:class:`AxisDemo` holds the task's state (one float64 numpy array, layout in
:mod:`mxrc.demo._axis`) and hands out a body for either tier: a Python
callable (tier 3) or the native body compiled into mxrc's core (tier 2,
called without the GIL, the array's address as its user data). Both do the
same math, so a run in either tier tracks the same trajectory.
"""

from __future__ import annotations

from typing import Any, Literal

from mxrc.demo._axis import (
    STATE_SIZE,
    AxisParams,
    StateArray,
    TrackingError,
    axis_step,
    new_state,
    setpoint,
    tracking_error,
)
from mxrc.demo._supervised import supervised_entrypoint

__all__ = [
    "STATE_SIZE",
    "AxisDemo",
    "AxisParams",
    "Tier",
    "TrackingError",
    "axis_step",
    "native_axis_step",
    "new_state",
    "setpoint",
    "supervised_entrypoint",
    "tracking_error",
]

Tier = Literal["python", "native"]


def native_axis_step(state: StateArray, steps: int = 1) -> None:
    """Run ``steps`` cycles of the native (C++) demo math on ``state`` in place."""
    from mxrc._native import _core

    _core.demo.axis_step(state, steps)


class AxisDemo:
    """One simulated axis + PID, stepped once per cycle.

    ``period_us`` is the cycle period (the controller's sample time).
    """

    def __init__(self, period_us: int, params: AxisParams | None = None) -> None:
        self.period_us = int(period_us)
        self.state: StateArray = new_state(self.period_us * 1e-6, params)

    def python_body(self) -> Any:
        """A Python cycle body ``body(ctx) -> None`` stepping this axis."""
        state = self.state
        step = axis_step

        def demo_axis_body(ctx: object) -> None:
            step(state)

        return demo_axis_body

    def native_body(self) -> Any:
        """A native cycle body (``mxrc.rt._bodies.NativeBody``) stepping this axis.

        The body points at this object's state array: keep the ``AxisDemo``
        alive while an executive runs it.
        """
        from mxrc._native import _core
        from mxrc.rt._bodies import NativeBody

        return NativeBody(
            _core.demo.native_axis_body_address(), user_data=int(self.state.ctypes.data)
        )

    def body(self, tier: Tier) -> Any:
        """The body for ``tier`` ("python" or "native")."""
        if tier == "python":
            return self.python_body()
        if tier == "native":
            return self.native_body()
        raise ValueError(f"tier must be 'python' or 'native', got {tier!r}")

    def tracking_error(self) -> TrackingError:
        """How well the axis followed the setpoint so far."""
        return tracking_error(self.state)
