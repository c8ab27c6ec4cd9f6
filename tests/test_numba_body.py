"""A numba ``cfunc`` as a native body: reads its context, writes into a numpy array through
``ctx->user``, calls the function table (``mxrc.numba``), and needs no GIL."""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import carray, cfunc

from mxrc._native import _core
from mxrc.errors import BodyError
from mxrc.numba import (
    API,
    BODY_SIGNATURE,
    CTX,
    as_pointer,
    clock_ns,
    context,
    now_ns,
    request_stop,
    sim_advance,
    state,
)
from mxrc.rt._bodies import NativeBody, classify_body
from mxrc.rt._executive import Executive
from mxrc.rt._state import RtState

# out[] slots the body writes (int64): see _body_fn
CALLS, LAST_CYCLE, EARLY, STATE, STOP_AT, FAIL_AT, SLOT_ERR, PERIOD = range(8)


def _body_fn(ctx_ptr):
    ctx = context(ctx_ptr)
    out = carray(as_pointer(ctx.user, np.int64), 8)
    out[CALLS] += 1
    out[LAST_CYCLE] = ctx.cycle
    out[PERIOD] = ctx.period_ns
    if now_ns(ctx_ptr) < ctx.release_ns or ctx.wake_ns < ctx.release_ns:
        out[EARLY] += 1
    if ctx.slot != ctx.cycle % ctx.every:
        out[SLOT_ERR] += 1
    out[STATE] = state(ctx_ptr)
    if out[STOP_AT] != 0 and ctx.cycle == out[STOP_AT]:
        request_stop(ctx_ptr)
    if out[FAIL_AT] != 0 and ctx.cycle == out[FAIL_AT]:
        return 9
    return 0


@pytest.fixture(scope="module")
def body() -> Any:
    """_body_fn compiled (at first use, not at collection: numba takes seconds)."""
    return cfunc(BODY_SIGNATURE)(_body_fn)


@pytest.fixture(scope="module")
def sim_body() -> Any:
    return cfunc(BODY_SIGNATURE)(_sim_body_fn)


def _spec(body: Any, out: np.ndarray) -> NativeBody:
    # JIT code lies in no shared object: the caller vouches for it (verified=True)
    return NativeBody(body.address, out.ctypes.data, verified=True)


def test_record_layout_matches_the_core() -> None:
    assert CTX.size == _core.cycle.CTX_SIZE
    assert CTX.offset("user") == 56 and CTX.offset("api") == 64
    assert API.offset("request_stop") == 32 and API.offset("sim_advance") == 48
    assert API.size <= _core.cycle.API_SIZE


def test_numba_cfunc_is_classified_native(body: Any) -> None:
    spec = classify_body(body)
    assert spec.kind == "native" and spec.address == body.address
    assert spec.description == "native numba cfunc"


@pytest.mark.slow
def test_numba_body_writes_through_ctx_user_without_the_gil(body: Any) -> None:
    out = np.zeros(8, dtype=np.int64)
    ex = Executive(_spec(body, out), period_us=1000, overrun="run_late")
    ex.start()
    # This thread keeps the GIL busy meanwhile: a native body must not care.
    t_end = time.monotonic() + 0.3
    x = 0
    while time.monotonic() < t_end:
        x += 1
    assert ex.wait(cycles=1000, timeout=10)
    ex.stop()
    st = ex.stats()
    assert out[CALLS] == st.cycle_count == ex.cycles >= 1000
    assert out[LAST_CYCLE] == st.cycle_count - 1  # run_late: no release skipped
    assert out[EARLY] == 0 and out[SLOT_ERR] == 0
    assert out[STATE] == int(RtState.RUNNING)
    assert out[PERIOD] == 1_000_000
    assert st.gil_wait.count == 0  # never asked for the GIL


def test_numba_body_request_stop_and_error_return(body: Any) -> None:
    out = np.zeros(8, dtype=np.int64)
    out[STOP_AT] = 20
    ex = Executive(_spec(body, out), period_us=500, overrun="run_late")
    ex.start()
    assert ex.wait(timeout=10)
    assert ex.state is RtState.SHUTDOWN
    assert out[LAST_CYCLE] == 20  # stopped after the cycle that asked

    failing = np.zeros(8, dtype=np.int64)
    failing[FAIL_AT] = 7
    with pytest.raises(BodyError) as info:
        Executive(_spec(body, failing), period_us=500, overrun="run_late").run(100)
    assert info.value.code == 9 and info.value.cycle == 7


# ------------------------------------------------------------ simulated clock

LATE_EVERY = 10  # cycles on which the body consumes more than a period


def _sim_body_fn(ctx_ptr):
    ctx = context(ctx_ptr)
    out = carray(as_pointer(ctx.user, np.int64), 4)
    out[0] += 1
    if ctx.cycle % LATE_EVERY == 0:
        out[1] += sim_advance(ctx_ptr, ctx.period_ns * 3 // 2)  # 0 when accepted
    out[2] = clock_ns(ctx_ptr)
    out[3] = sim_advance(ctx_ptr, -1)  # EINVAL
    return 0


def _sim_run(sim_body: Any, cycles: int) -> tuple[np.ndarray, dict[str, object]]:
    out = np.zeros(4, dtype=np.int64)
    st = Executive(_spec(sim_body, out), period_us=1000, overrun="run_late", clock="simulated").run(
        cycles
    )
    snapshot = {k: v for k, v in vars(st).items() if k not in ("tid", "retries", "torn")}
    for name in ("wake_latency", "body_start_latency", "exec_time", "gil_wait"):
        h = getattr(st, name)
        snapshot[name] = (h.count, h.sum_ns, h.min_ns, h.max_ns, h.counts.tobytes())
    return out, snapshot


def test_numba_body_on_the_simulated_clock_is_deterministic(sim_body: Any) -> None:
    cycles = 2000
    out, first = _sim_run(sim_body, cycles)
    assert out[0] == cycles
    assert out[1] == 0  # every sim_advance accepted
    assert out[3] == 22  # EINVAL for a negative advance
    # the body's late cycles are exactly the misses: 1.5 periods > the 1-period deadline
    assert first["deadline_miss_count"] == cycles // LATE_EVERY
    # virtual time: the last cycle's clock is about `cycles` periods from 0, not wall time
    assert (cycles - 2) * 1_000_000 <= out[2] <= cycles * 1_000_000
    _, second = _sim_run(sim_body, cycles)
    assert first == second


def test_sim_advance_is_refused_on_the_real_clock(sim_body: Any) -> None:
    out = np.zeros(4, dtype=np.int64)
    Executive(_spec(sim_body, out)).run(1)
    assert out[1] == 95  # ENOTSUP


# ------------------------------------------------------------ a capsule around a numba body


def test_numba_body_handed_over_in_a_capsule(body: Any) -> None:
    """The capsule route a C/C++ program takes (docs/embedding.md), with a numba body."""
    new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
        ("PyCapsule_New", ctypes.pythonapi)
    )
    set_context = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p)(
        ("PyCapsule_SetContext", ctypes.pythonapi)
    )
    name = b"mxrc.body"  # kept alive by this frame while the capsule lives
    out = np.zeros(8, dtype=np.int64)
    capsule = new(body.address, name, None)
    assert set_context(capsule, out.ctypes.data) == 0
    st = Executive(capsule, period_us=500, overrun="run_late").run(50)
    assert out[CALLS] == st.cycle_count == 50
