"""Per-operation cost of one demo control step (axis + PID) in each tier.

Run: python -m pytest bench/test_bench_demo.py --benchmark-only
(name the interpreter with the numbers: `python -VV`, PGO or not).
"""

from __future__ import annotations

import pytest

from mxrc.demo import AxisDemo, axis_step, native_axis_step, new_state

pytestmark = pytest.mark.benchmark(group="demo-step")


def test_python_step(benchmark) -> None:  # type: ignore[no-untyped-def]
    s = new_state(1e-3)
    benchmark(axis_step, s)


def test_python_body_call(benchmark) -> None:  # type: ignore[no-untyped-def]
    body = AxisDemo(1000).python_body()
    benchmark(body, None)


def test_native_step_via_binding(benchmark) -> None:  # type: ignore[no-untyped-def]
    # includes the pybind11 call and buffer acquisition; the cycle thread calls
    # the C function directly
    s = new_state(1e-3)
    benchmark(native_axis_step, s, 1)


def test_native_1000_steps_via_binding(benchmark) -> None:  # type: ignore[no-untyped-def]
    s = new_state(1e-3)
    benchmark(native_axis_step, s, 1000)
