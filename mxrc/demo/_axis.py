"""A simulated axis with a PID position controller: the demo control task.

The whole task lives in one float64 numpy array (:data:`STATE_SIZE` words):
parameters, the plant state, the controller state and the tracking-error
accumulators, at the indices named ``I_*`` below. The Python body
(:func:`axis_step`) and the native body (``csrc/src/demo_axis.cpp``, called
without the GIL with the array's address as its user pointer) do the same
math on the same layout, so either tier can drive the same array.

Time inside the task is ``step · dt`` (its own step counter), not the wall
clock: a run is deterministic and both tiers can be compared step by step.

Plant: ``m·a = u − b·v − Fc·tanh(v / v_eps)`` (mass, viscous and smoothed
Coulomb friction), semi-implicit Euler. Controller: PID on the position error
with the derivative on the error (the setpoint is smooth: no kick), output saturation and a clamped
integral (anti-windup). Setpoint: ``x_ref(t) = A·(1 − cos(2π f t)) / 2``, a
smooth back-and-forth move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "I_AMPLITUDE_M",
    "I_COULOMB_N",
    "I_DT_S",
    "I_FREQ_HZ",
    "I_INTEGRAL",
    "I_INTEGRAL_LIMIT",
    "I_KD",
    "I_KI",
    "I_KP",
    "I_LAST_ERROR_M",
    "I_LAST_FORCE_N",
    "I_LAST_SETPOINT_M",
    "I_MASS_KG",
    "I_MAX_ABS_ERROR_M",
    "I_POSITION_M",
    "I_PREV_ERROR_M",
    "I_STEP",
    "I_SUM_SQ_ERROR",
    "I_U_MAX_N",
    "I_VELOCITY_MPS",
    "I_VEPS_MPS",
    "I_VISCOUS_NSPM",
    "STATE_SIZE",
    "AxisParams",
    "StateArray",
    "TrackingError",
    "axis_step",
    "new_state",
    "setpoint",
    "tracking_error",
]

# --- parameters (written by new_state, read by the step) ---
I_MASS_KG = 0
I_VISCOUS_NSPM = 1  # viscous friction, N·s/m
I_COULOMB_N = 2  # Coulomb friction force, N
I_VEPS_MPS = 3  # tanh smoothing velocity of the Coulomb term, m/s
I_KP = 4
I_KI = 5
I_KD = 6
I_U_MAX_N = 7  # actuator saturation, N
I_INTEGRAL_LIMIT = 8  # |integral of error| clamp, m·s
I_DT_S = 9
I_AMPLITUDE_M = 10
I_FREQ_HZ = 11
# --- state ---
I_STEP = 12
I_POSITION_M = 13
I_VELOCITY_MPS = 14
I_INTEGRAL = 15
I_PREV_ERROR_M = 16
# --- outputs and accumulators ---
I_LAST_SETPOINT_M = 17
I_LAST_ERROR_M = 18
I_LAST_FORCE_N = 19
I_SUM_SQ_ERROR = 20
I_MAX_ABS_ERROR_M = 21

STATE_SIZE = 24
"""Words of the state array (two spare words at the end)."""

StateArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AxisParams:
    """Plant and controller parameters (SI units in the names)."""

    mass_kg: float = 2.0
    viscous_nspm: float = 5.0
    coulomb_n: float = 1.5
    veps_mps: float = 1e-3
    kp: float = 4000.0
    ki: float = 20000.0
    kd: float = 150.0
    u_max_n: float = 200.0
    integral_limit: float = 0.01
    amplitude_m: float = 0.1
    freq_hz: float = 0.5


def new_state(dt_s: float, params: AxisParams | None = None) -> StateArray:
    """A fresh state array for a task stepped every ``dt_s`` seconds (the period)."""
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    p = params or AxisParams()
    s = np.zeros(STATE_SIZE, dtype=np.float64)
    s[I_MASS_KG] = p.mass_kg
    s[I_VISCOUS_NSPM] = p.viscous_nspm
    s[I_COULOMB_N] = p.coulomb_n
    s[I_VEPS_MPS] = p.veps_mps
    s[I_KP] = p.kp
    s[I_KI] = p.ki
    s[I_KD] = p.kd
    s[I_U_MAX_N] = p.u_max_n
    s[I_INTEGRAL_LIMIT] = p.integral_limit
    s[I_DT_S] = dt_s
    s[I_AMPLITUDE_M] = p.amplitude_m
    s[I_FREQ_HZ] = p.freq_hz
    return s


def setpoint(t_s: float, amplitude_m: float, freq_hz: float) -> float:
    """The reference position at time ``t_s``."""
    return amplitude_m * 0.5 * (1.0 - math.cos(2.0 * math.pi * freq_hz * t_s))


def axis_step(s: StateArray) -> None:
    """One control cycle on state array ``s``: setpoint, PID, plant update, error stats.

    Mirrors ``mxrc_demo_axis_step`` in ``csrc/src/demo_axis.cpp`` operation by
    operation (keep them in step).
    """
    dt = float(s[I_DT_S])
    step = float(s[I_STEP])
    t = step * dt
    ref = setpoint(t, float(s[I_AMPLITUDE_M]), float(s[I_FREQ_HZ]))
    x = float(s[I_POSITION_M])
    v = float(s[I_VELOCITY_MPS])
    err = ref - x
    # PID: integral clamped (anti-windup), derivative on the error.
    lim = float(s[I_INTEGRAL_LIMIT])
    integral = min(max(float(s[I_INTEGRAL]) + err * dt, -lim), lim)
    d_err = (err - float(s[I_PREV_ERROR_M])) / dt if step > 0.0 else 0.0
    u = float(s[I_KP]) * err + float(s[I_KI]) * integral + float(s[I_KD]) * d_err
    u_max = float(s[I_U_MAX_N])
    u = min(max(u, -u_max), u_max)
    # Plant: semi-implicit Euler.
    friction = float(s[I_VISCOUS_NSPM]) * v + float(s[I_COULOMB_N]) * math.tanh(
        v / float(s[I_VEPS_MPS])
    )
    a = (u - friction) / float(s[I_MASS_KG])
    v_new = v + a * dt
    s[I_PREV_ERROR_M] = err
    s[I_VELOCITY_MPS] = v_new
    s[I_POSITION_M] = x + v_new * dt
    s[I_INTEGRAL] = integral
    s[I_STEP] = step + 1.0
    s[I_LAST_SETPOINT_M] = ref
    s[I_LAST_ERROR_M] = err
    s[I_LAST_FORCE_N] = u
    s[I_SUM_SQ_ERROR] += err * err
    abs_err = abs(err)
    s[I_MAX_ABS_ERROR_M] = max(float(s[I_MAX_ABS_ERROR_M]), abs_err)


@dataclass(frozen=True)
class TrackingError:
    """How well the axis followed its setpoint over the steps run so far."""

    steps: int
    rms_error_m: float
    max_abs_error_m: float
    final_position_m: float
    final_setpoint_m: float
    amplitude_m: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "steps": self.steps,
            "rms_error_m": self.rms_error_m,
            "max_abs_error_m": self.max_abs_error_m,
            "final_position_m": self.final_position_m,
            "final_setpoint_m": self.final_setpoint_m,
            "amplitude_m": self.amplitude_m,
        }

    def to_text(self) -> str:
        """One readable line."""
        return (
            f"tracking error over {self.steps} steps: rms {self.rms_error_m * 1e6:.1f} µm, "
            f"max {self.max_abs_error_m * 1e6:.1f} µm "
            f"(setpoint moves 0 .. {self.amplitude_m * 1e3:g} mm)"
        )


def tracking_error(s: StateArray) -> TrackingError:
    """The tracking error accumulated in state array ``s``."""
    steps = int(s[I_STEP])
    rms = math.sqrt(float(s[I_SUM_SQ_ERROR]) / steps) if steps else 0.0
    return TrackingError(
        steps=steps,
        rms_error_m=rms,
        max_abs_error_m=float(s[I_MAX_ABS_ERROR_M]),
        final_position_m=float(s[I_POSITION_M]),
        final_setpoint_m=float(s[I_LAST_SETPOINT_M]),
        amplitude_m=float(s[I_AMPLITUDE_M]),
    )
