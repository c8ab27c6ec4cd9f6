"""The simulated clock: an executive on virtual time, deterministic and faster than real time.

Every expected count below follows from the loop's rules (releases at
``k·period + phase``, deadline miss = body end > release + deadline, skip =
jump to the first release after the clock) and the virtual time the bodies
consume; nothing depends on how fast this machine is.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import importlib.util
import os
import shutil
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mxrc._include import get_include
from mxrc._native import _core
from mxrc.errors import BodyError, UnsupportedError
from mxrc.rt._bodies import BuiltinBody, NativeBody
from mxrc.rt._executive import Executive
from mxrc.rt._perf import CycleStats, LatencyHistogram
from mxrc.rt._state import RtState

MS = 1_000_000


def _comparable(stats: CycleStats) -> dict[str, Any]:
    """Every field of a snapshot as plain values, except the cycle thread's (real) tid."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, LatencyHistogram):
            value = (
                value.counts.tolist(),
                value.count,
                value.sum_ns,
                value.min_ns,
                value.max_ns,
                value.overflow,
            )
        out[f.name] = value
    del out["tid"]
    return out


def _plan_body(plan: dict[int, int]) -> Any:
    """A Python body that consumes plan[ctx.cycle] virtual ns (0 for other cycles)."""

    def body(ctx: Any) -> None:
        ns = plan.get(ctx.cycle, 0)
        if ns:
            ctx.sim_advance(ns)

    return body


def _sim(body: object, **kwargs: Any) -> Executive:
    kwargs.setdefault("period_us", 1000)
    return Executive(body, clock="simulated", **kwargs)


# --------------------------------------------------------------- determinism


def _busy_python_body(ctx: Any) -> None:
    # consumes 0..1.3 ms of virtual time, a different amount every cycle
    ctx.sim_advance((ctx.cycle * 7919 * 1000) % 1_300_000)


def test_python_body_runs_are_identical() -> None:
    quiet = _sim(_busy_python_body, name="det").run(3000)
    # the second run competes for the GIL with a busy Python thread: real waits, same stats
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        contended = _sim(_busy_python_body, name="det").run(3000)
    finally:
        stop.set()
        spinner.join()
    runs = [quiet, contended]
    assert _comparable(quiet) == _comparable(contended)
    st = runs[0]
    # the run really exercised misses and skipped releases, on virtual time only
    assert st.deadline_miss_count > 0 and st.skipped_release_count > 0
    assert st.start_ns == 0
    assert st.state is RtState.SHUTDOWN
    assert st.minor_faults == 0 and st.involuntary_ctx_switches == 0  # rusage not sampled
    assert st.gil_wait.count == 0 and st.gil_contended_cycles == 0  # GIL wait not recorded
    assert st.body_start_latency.count == st.cycle_count == 3000
    assert st.wake_latency.max_ns == 0  # skip: every release happens after the clock


def test_builtin_body_runs_are_identical_and_exact() -> None:
    # sleep_ns consumes virtual time on a simulated clock: 1.5 ms per 1 ms period
    runs = [_sim(BuiltinBody("sleep_ns", 1_500_000)).run(1000) for _ in range(2)]
    assert _comparable(runs[0]) == _comparable(runs[1])
    st = runs[0]
    assert st.cycle_count == st.deadline_miss_count == 1000
    # every cycle ends 0.5 ms after the next release: that one is skipped (not after the last)
    assert st.skipped_release_count == 999
    assert st.max_consecutive_misses == 1000
    assert st.exec_time.min_ns == st.exec_time.max_ns == 1_500_000
    assert st.heartbeat_ns == 999 * 2 * MS  # releases 0, 2, 4, ... ms
    assert st.wake_latency.max_ns == 0


def test_run_is_much_faster_than_real_time() -> None:
    t0 = time.monotonic()
    st = _sim(_plan_body({})).run(20_000)  # 20 s of virtual time at 1 ms
    elapsed = time.monotonic() - t0
    assert st.cycle_count == 20_000
    assert st.heartbeat_ns == 19_999 * MS
    assert elapsed < 10, f"20 000 simulated cycles took {elapsed:.1f} s"


# --------------------------------------------------------------- exact counts


def test_deadline_misses_are_counted_exactly() -> None:
    # deadline 0.5 ms < period: a 0.6 ms body misses its deadline but overruns nothing
    plan = {3: 600_000, 17: 600_000, 18: 400_000, 50: 500_000, 51: 500_001}
    st = _sim(_plan_body(plan), deadline_us=500).run(100)
    assert st.deadline_miss_count == 3  # cycles 3, 17, 51 (50 ends exactly on its deadline)
    assert st.max_consecutive_misses == 1
    assert st.skipped_release_count == 0
    assert st.exec_time.count == 100
    assert st.exec_time.sum_ns == sum(plan.values())
    assert st.wake_latency.max_ns == 0


def test_skip_policy_counts() -> None:
    # 2.5 ms bodies on cycles 10 and 40 (release indices) at a 1 ms period
    plan = {10: 2_500_000, 40: 2_500_000}
    releases: list[int] = []

    def body(ctx: Any) -> None:
        releases.append(ctx.cycle)
        _plan_body(plan)(ctx)

    st = _sim(body, overrun="skip").run(100)
    assert st.cycle_count == 100
    assert st.deadline_miss_count == 2
    assert st.max_consecutive_misses == 1
    # each overrun ends at r + 2.5 ms: releases r+1 and r+2 are skipped
    assert st.skipped_release_count == 4
    assert 11 not in releases and 12 not in releases and 13 in releases
    assert 41 not in releases and 42 not in releases and releases[-1] == 103
    assert st.wake_latency.max_ns == 0


def test_run_late_policy_counts() -> None:
    plan = {10: 2_500_000, 40: 2_500_000}
    releases: list[tuple[int, int, int]] = []

    def body(ctx: Any) -> None:
        releases.append((ctx.cycle, ctx.release_ns, ctx.wake_ns))
        _plan_body(plan)(ctx)

    st = _sim(body, overrun="run_late").run(100)
    assert st.cycle_count == 100 and st.skipped_release_count == 0
    # cycle 10 ends at 12.5 ms: 11 (deadline 12 ms) misses too, 12 (deadline 13 ms) does not
    assert st.deadline_miss_count == 4
    assert st.max_consecutive_misses == 2
    assert releases[11] == (11, 11 * MS, 12_500_000)
    assert releases[12] == (12, 12 * MS, 12_500_000)
    assert releases[13] == (13, 13 * MS, 13 * MS)
    # wake latencies 1.5 and 0.5 ms, twice each; the rest 0
    assert st.wake_latency.count == 100
    assert st.wake_latency.sum_ns == 2 * (1_500_000 + 500_000)
    assert st.wake_latency_mean_ns == pytest.approx(40_000)


# --------------------------------------------------------------- the context


def test_context_on_a_simulated_clock() -> None:
    seen: list[tuple[int, int, int, int, int, bool]] = []

    def body(ctx: Any) -> None:
        before = ctx.now_ns()
        ctx.sim_advance(123)
        seen.append(
            (ctx.cycle, ctx.release_ns, ctx.wake_ns, before, ctx.now_ns(), bool(ctx.simulated))
        )

    ex = _sim(body, period_us=2000)
    assert ex.clock == "simulated"
    st = ex.run(3)
    assert seen == [
        (0, 0, 0, 0, 123, True),
        (1, 2 * MS, 2 * MS, 2 * MS, 2 * MS + 123, True),
        (2, 4 * MS, 4 * MS, 4 * MS, 4 * MS + 123, True),
    ]
    assert st.start_ns == 0 and st.heartbeat_ns == 4 * MS


def test_sim_advance_rejects_negative_time() -> None:
    def body(ctx: Any) -> None:
        ctx.sim_advance(-1)

    with pytest.raises(BodyError) as info:
        _sim(body).run(5)
    assert isinstance(info.value.__cause__, ValueError)
    assert "must be >= 0" in str(info.value.__cause__)


def test_sim_advance_on_a_real_clock_is_unsupported() -> None:
    seen: list[bool] = []

    def body(ctx: Any) -> None:
        seen.append(bool(ctx.simulated))
        ctx.sim_advance(1)

    with pytest.raises(BodyError) as info:
        Executive(body, period_us=1000).run(5)
    assert seen == [False]
    cause = info.value.__cause__
    assert isinstance(cause, UnsupportedError)
    assert "clock='simulated'" in str(cause)


def test_real_clock_now_ns_is_monotonic() -> None:
    seen: list[tuple[int, int]] = []

    def body(ctx: Any) -> None:
        seen.append((ctx.wake_ns, ctx.now_ns()))

    ex = Executive(body, period_us=1000)
    assert ex.clock == "monotonic"
    ex.run(3)
    t = time.monotonic_ns()
    for wake, now in seen:
        assert 0 < wake <= now <= t


def test_invalid_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="clock must be one of"):
        Executive(_plan_body({}), clock="virtual")  # type: ignore[arg-type]


# --------------------------------------------------------------- control


def test_request_stop_from_the_body() -> None:
    def body(ctx: Any) -> None:
        if ctx.cycle == 49:
            ctx.request_stop()

    ex = _sim(body)
    ex.start()
    ex.wait(timeout=10)
    st = ex.stats()
    assert st.cycle_count == 50 and st.state is RtState.SHUTDOWN
    assert st.heartbeat_ns == 49 * MS


def test_pause_from_the_body() -> None:
    ex: Executive

    def body(ctx: Any) -> None:
        if ctx.cycle == 20:
            ex.pause()  # applied at the next cycle boundary

    ex = _sim(body)
    st = ex.run(100)
    assert st.cycle_count == 21  # bodies of cycles 0..20; 79 paused iterations
    assert ex.cycles == 100
    assert st.heartbeat_ns == 99 * MS  # paused iterations still heart-beat, on virtual time


def test_safe_mode_from_the_body() -> None:
    safe_runs: list[int] = []

    def body(ctx: Any) -> None:
        if ctx.cycle == 30:
            ctx.request_safe_mode()

    ex = _sim(body, safe_mode_body=lambda ctx: safe_runs.append(ctx.cycle))
    st = ex.run(100)
    assert safe_runs == list(range(31, 100))
    assert st.cycle_count == 100


def test_phase_adjustment() -> None:
    ex: Executive
    releases: list[int] = []

    def body(ctx: Any) -> None:
        releases.append(ctx.release_ns)
        if ctx.cycle == 10:
            ex.adjust_phase(250_000)

    ex = _sim(body)
    ex.run(20)
    gaps = np.diff(releases).tolist()
    # the cycle after the adjustment is period + Δ after the one before, as on a real clock
    assert gaps == [MS] * 11 + [MS + 250_000] + [MS] * 7
    assert releases[12] == 12 * MS + 250_000


# --------------------------------------------------------------- thread setup


def test_thread_setup_is_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default configuration asks for SCHED_FIFO 80, a pinned core and locked memory.
    monkeypatch.delenv("MXRC_CONFIG_DIR", raising=False)
    seen: list[tuple[int, set[int], int]] = []

    def body(ctx: Any) -> None:
        seen.append(
            (os.sched_getscheduler(0), os.sched_getaffinity(0), _core.sched.get_timer_slack_ns())
        )

    ex = Executive.from_config(None, body, clock="simulated")
    assert ex.clock == "simulated"
    st = ex.run(5)
    assert st.cycle_count == 5 and not ex.sched_fallback
    policy, cpus, slack = seen[0]
    assert policy == os.SCHED_OTHER
    assert cpus == os.sched_getaffinity(0)  # inherited from this thread, not pinned
    assert slack == _core.sched.get_timer_slack_ns()  # not set to 1 ns either


def test_python_gc_is_left_alone() -> None:
    import gc

    enabled: list[bool] = []
    _sim(lambda ctx: enabled.append(gc.isenabled())).run(3)
    assert enabled == [gc.isenabled()] * 3


# --------------------------------------------------------------- C ABI (native body)

_SIM_BODY_C = textwrap.dedent(
    """
    #include <errno.h>
    #include <stddef.h>
    #include "mxrc.h"

    /* ctx->user: int64 slots. [0] plan length n  [1] calls  [2] ABI problems
     * [3] last sim_advance result  [4] clock mismatches  [5] sim_advance(-1)
     * [6] clock_ns(NULL)  [7] clock_ns at the last body start
     * [8 .. 8+n) virtual ns to consume on cycle i */
    int mxrc_sim_body(const mxrc_cycle_ctx* ctx) {
      int64_t* s = (int64_t*)ctx->user;
      s[1] += 1;
      if (!MXRC_API_VERSION_AT_LEAST(ctx->api, 2) || ctx->api->clock_ns == NULL ||
          ctx->api->sim_advance == NULL) {
        s[2] += 1;
        return 3;
      }
      int64_t ns = ctx->cycle < (uint64_t)s[0] ? s[8 + ctx->cycle] : 0;
      int64_t before = ctx->api->clock_ns(ctx);
      s[7] = before;
      s[5] = ctx->api->sim_advance(ctx, -1);
      s[6] = ctx->api->clock_ns(NULL);
      s[3] = ctx->api->sim_advance(ctx, ns);
      if (s[3] == 0 && (ctx->api->clock_ns(ctx) != before + ns || before != ctx->wake_ns)) {
        s[4] += 1;
      }
      return 0;
    }
    """
)


@pytest.fixture(scope="module")
def sim_body(tmp_path_factory: pytest.TempPathFactory) -> int:
    """Address of the C body above, compiled by cffi in API mode."""
    cffi = pytest.importorskip("cffi")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    tmp = tmp_path_factory.mktemp("sim_body")
    ffi = cffi.FFI()
    ffi.cdef(
        "typedef struct mxrc_cycle_ctx mxrc_cycle_ctx; int mxrc_sim_body(const mxrc_cycle_ctx*);"
    )
    ffi.set_source("_mxrc_test_sim_body", _SIM_BODY_C, include_dirs=[get_include()])
    so = ffi.compile(tmpdir=str(tmp))
    spec = importlib.util.spec_from_file_location("_mxrc_test_sim_body", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return int(mod.ffi.cast("uintptr_t", mod.ffi.addressof(mod.lib, "mxrc_sim_body")))


def _slots(plan: list[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    s = np.zeros(8 + len(plan), dtype=np.int64)
    s[0] = len(plan)
    s[8:] = plan
    return s


@pytest.mark.slow
def test_native_body_on_a_simulated_clock(sim_body: int) -> None:
    plan = [0] * 200
    for cycle in (5, 6, 90):
        plan[cycle] = 1_200_000  # overruns a 1 ms period
    plan[120] = 999_999  # just within the deadline
    results = []
    for _ in range(2):
        s = _slots(plan)
        st = _sim(NativeBody(sim_body, s.ctypes.data), overrun="run_late").run(200)
        assert s[1] == 200 and s[2] == 0 and s[4] == 0
        assert s[3] == 0 and s[5] == errno.EINVAL and s[6] == -1
        results.append(st)
    assert _comparable(results[0]) == _comparable(results[1])
    st = results[0]
    # run_late: 5 ends at 6.2 ms, 6 starts at 6.2 and ends at 7.4 ms (> 7), 7 starts at 7.4
    # and ends there (< 8): misses 5, 6, 90 only
    assert st.deadline_miss_count == 3
    assert st.max_consecutive_misses == 2
    assert st.exec_time.sum_ns == sum(plan)
    assert st.wake_latency.sum_ns == 200_000 + 400_000 + 200_000


@pytest.mark.slow
def test_native_body_on_a_real_clock(sim_body: int) -> None:
    s = _slots([])
    t0 = time.monotonic_ns()
    Executive(NativeBody(sim_body, s.ctypes.data), period_us=1000).run(5)
    assert s[1] == 5 and s[2] == 0
    assert s[3] == errno.ENOTSUP  # no virtual clock to advance
    assert s[6] == -1
    assert t0 < s[7] <= time.monotonic_ns()  # clock_ns is CLOCK_MONOTONIC


def test_api_table_version() -> None:
    assert _core.cycle.ABI_VERSION == 3
    # the new entries came out of the reserved space: the table keeps its size
    pointers = 4 + 2 + 9 + 17  # version 1, version 2, version 3, reserved
    assert pointers * ctypes.sizeof(ctypes.c_void_p) + 8 == _core.cycle.API_SIZE


# --------------------------------------------------------------- thread-setup keywords


def test_thread_setup_keywords_are_checked_in_one_place() -> None:
    slot = _core.bus.private_stats("kw")
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        _core.cycle.Executive(slot, bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="cpus must be a list of ints, got str"):
        _core.cycle.Executive(slot, cpus="0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"apply_thread_setup\(\): priority must be an int"):
        _core.sched.apply_thread_setup(priority="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'cpu'"):
        _core.sched.apply_thread_setup(cpu=[0])  # type: ignore[call-arg]


def test_builtin_sleep_is_real_time_on_a_real_clock() -> None:
    st = Executive(BuiltinBody("sleep_ns", 200_000), period_us=1000).run(5)
    assert st.exec_time.min_ns >= 200_000
    assert st.start_ns > 0


def test_docs_page_example_runs(project_root: Path) -> None:
    """The first example of docs/simulated-clock.md runs as shown."""
    text = (project_root / "docs" / "simulated-clock.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/simulated-clock.md", "exec"), namespace)
