"""The executive's loop, state machine, policies and Python API (tier 1: C++ bodies built in)."""

from __future__ import annotations

import ctypes
import itertools
import logging
import time
from pathlib import Path

import pytest
from helpers import run_python

from mxrc.errors import BodyError
from mxrc.pytest_plugin import CycleRunner
from mxrc.rt._affinity import allowed_cpus
from mxrc.rt._bodies import BuiltinBody, NativeBody, NotNativeError, classify_body
from mxrc.rt._executive import Executive
from mxrc.rt._state import RtState
from mxrc.testing import assert_miss_rate

pytestmark = pytest.mark.timing

# the cycle thread goes to the highest allowed CPU (CPU 1 here; CPU 0 stays free)
RT_CPU = max(allowed_cpus())


def tier_one(*bodies: tuple[str, int, int, int], **kwargs: object) -> Executive:
    """An Executive running C++ (tier 1) bodies built into the core."""
    bodies = bodies or (("noop", 0, 1, 0),)
    ex = Executive(**kwargs)  # type: ignore[arg-type]
    for kind, arg, every, offset in bodies:
        ex.add_action(BuiltinBody(kind, arg), every=every, offset=offset)
    return ex


def _consistent(st, cycles: int) -> None:  # type: ignore[no-untyped-def]
    assert st.cycle_count == cycles
    assert st.wake_latency.count == cycles
    assert st.body_start_latency.count == cycles
    assert st.exec_time.count == cycles
    assert not st.torn


def test_tier1_run_counts_cycles_and_histograms_agree(mxrc_cycles: CycleRunner) -> None:
    ex = tier_one(period_us=1000, cpus=[RT_CPU])
    st = mxrc_cycles(ex, 2000)  # mxrc's pytest plugin: ex.run(2000), report kept with the test
    _consistent(st, 2000)
    assert st.gil_wait.count == 0  # no Python body
    assert ex.state is RtState.SHUTDOWN
    assert ex.cycles == 2000
    assert_miss_rate(st, at_most=0.1)
    # the loop really sleeps to its releases: 2000 cycles of 1 ms take >= ~2 s
    assert st.wake_latency.min_ns >= 0
    assert st.period_ns == 1_000_000


def test_loop_keeps_period_without_drift() -> None:
    ex = tier_one(period_us=500)
    t0 = time.monotonic()
    ex.run(1000)
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed <= 5.0  # 1000 x 0.5 ms; a loop that never sleeps ends at once


def test_slow_body_misses_are_counted() -> None:
    # The body sleeps 1.5 ms in a 1 ms period: every cycle ends after its deadline.
    ex = tier_one(("sleep_ns", 1_500_000, 1, 0), period_us=1000, overrun="skip")
    st = ex.run(200)
    assert st.cycle_count == 200
    assert st.deadline_miss_count == 200
    assert st.max_consecutive_misses == 200
    assert st.skipped_release_count >= 150  # each overrun skips >= 1 release
    assert st.exec_time.min_ns >= 1_400_000


def test_run_late_keeps_every_release() -> None:
    ex = tier_one(("sleep_ns", 1_500_000, 1, 0), period_us=1000, overrun="run_late")
    st = ex.run(100)
    assert st.skipped_release_count == 0
    assert st.deadline_miss_count == 100
    # late releases pile up: wake latency grows with the backlog (at least 0.5 ms per cycle)
    assert st.wake_latency.max_ns > 20_000_000


def test_deadline_shorter_than_period() -> None:
    ex = tier_one(("sleep_ns", 400_000, 1, 0), period_us=2000, deadline_us=300)
    st = ex.run(50)
    assert st.deadline_miss_count == 50
    assert st.deadline_ns == 300_000


def test_stop_is_prompt_with_a_long_period() -> None:
    ex = tier_one(period_us=1_000_000)
    ex.start()
    assert ex.state in (RtState.READY, RtState.RUNNING)
    time.sleep(0.05)
    t0 = time.monotonic()
    assert ex.stop()
    assert time.monotonic() - t0 < 0.5
    assert ex.state is RtState.SHUTDOWN


def test_context_manager_stops_and_joins() -> None:
    with tier_one(period_us=1000) as ex:
        assert ex.wait(cycles=20, timeout=5)
        tid = ex.tid
        assert tid is not None and tid > 0
    assert ex.state is RtState.SHUTDOWN
    assert not Path(f"/proc/self/task/{tid}").exists()


def test_one_shot() -> None:
    ex = tier_one(period_us=1000)
    ex.run(5)
    with pytest.raises(RuntimeError, match="one-shot"):
        ex.start()


def test_pause_resume_keeps_heartbeat_without_body() -> None:
    calls: list[int] = []
    ex = Executive(lambda ctx: calls.append(ctx.cycle), period_us=1000)
    ex.start()
    try:
        assert ex.wait(cycles=50, timeout=5)
        ex.pause()
        deadline = time.monotonic() + 2
        while ex.state is not RtState.PAUSED and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ex.state is RtState.PAUSED
        n_paused = len(calls)
        hb0 = ex.stats().heartbeat_ns
        it0 = ex.cycles
        time.sleep(0.1)
        assert len(calls) == n_paused  # no body while paused
        assert ex.cycles > it0 + 20  # still waking
        assert ex.stats().heartbeat_ns > hb0  # still heart-beating
        ex.resume()
        assert ex.wait(cycles=ex.cycles + 20, timeout=5)
        assert ex.state is RtState.RUNNING
        assert len(calls) > n_paused
    finally:
        ex.stop()


def test_safe_mode_runs_the_safe_body() -> None:
    normal: list[int] = []
    safe: list[int] = []
    ex = Executive(
        lambda ctx: normal.append(ctx.cycle),
        safe_mode_body=lambda ctx: safe.append(ctx.cycle),
        period_us=1000,
    )
    with ex:
        assert ex.wait(cycles=20, timeout=5)
        ex.enter_safe_mode()
        assert ex.wait(cycles=ex.cycles + 30, timeout=5)
        assert ex.state is RtState.SAFE_MODE
        assert safe
        first_safe = safe[0]
        assert all(c < first_safe for c in normal)  # normal body stopped when safe mode began
        ex.exit_safe_mode()
        n = len(safe)
        assert ex.wait(cycles=ex.cycles + 20, timeout=5)
        assert ex.state is RtState.RUNNING
        assert len(safe) <= n + 1
        assert normal[-1] > first_safe


def test_init_hooks_run_on_the_cycle_thread_before_the_first_cycle() -> None:
    import threading

    seen: list[tuple[str, int]] = []
    ex = Executive(lambda ctx: seen.append(("body", threading.get_native_id())), period_us=1000)
    ex.add_init_hook(lambda: seen.append(("hook1", threading.get_native_id())))
    ex.add_init_hook(lambda: seen.append(("hook2", threading.get_native_id())))
    ex.run(3)
    assert [s[0] for s in seen] == ["hook1", "hook2", "body", "body", "body"]
    assert len({s[1] for s in seen}) == 1
    assert seen[0][1] != threading.get_native_id()


def test_failing_init_hook_fails_start() -> None:
    ran: list[int] = []

    def hook() -> None:
        raise RuntimeError("no hardware")

    ex = Executive(lambda ctx: ran.append(1), period_us=1000)
    ex.add_init_hook(hook)
    with pytest.raises(RuntimeError, match="no hardware"):
        ex.start()
    assert ran == []
    assert ex.state is RtState.ERROR
    with pytest.raises(RuntimeError, match="one-shot"):
        ex.start()


def test_multi_rate_slots() -> None:
    log: list[tuple[str, int]] = []
    ex = Executive(lambda ctx: log.append(("base", ctx.cycle)), period_us=1000, overrun="run_late")
    ex.add_action(lambda ctx: log.append(("slow", ctx.cycle)), every=3, offset=1)
    ex.add_action(lambda ctx: log.append(("slot", ctx.slot)), every=3, offset=1)
    ex.run(12)
    slow = [c for n, c in log if n == "slow"]
    assert slow == [1, 4, 7, 10]
    assert [c for n, c in log if n == "slot"] == [1, 1, 1, 1]
    # registration order inside a cycle
    i = log.index(("slow", 4))
    assert log[i - 1] == ("base", 4) and log[i + 1] == ("slot", 1)
    with pytest.raises(ValueError, match="offset"):
        ex2 = Executive(lambda ctx: None)
        ex2.add_action(lambda ctx: None, every=2, offset=2)


def test_phase_adjust_shifts_releases() -> None:
    releases: list[int] = []
    ex = Executive(lambda ctx: releases.append(ctx.release_ns), period_us=1000, overrun="run_late")
    with ex:
        assert ex.wait(cycles=10, timeout=5)
        ex.adjust_phase(300_000)
        assert ex.wait(cycles=ex.cycles + 10, timeout=5)
    diffs = [b - a for a, b in itertools.pairwise(releases)]
    assert diffs.count(1_300_000) == 1
    assert all(d in (1_000_000, 1_300_000) for d in diffs)
    start = releases[0]
    assert all((r - start) % 1_000_000 in (0, 300_000) for r in releases)


@pytest.mark.parametrize("policy", ["stop", "safe_mode", "continue"])
def test_native_error_return_under_each_policy(policy: str) -> None:
    ex = tier_one(("fail_at", 5, 1, 0), period_us=1000, on_error=policy, overrun="run_late")
    if policy == "stop":
        with pytest.raises(BodyError) as info:
            ex.run(50)
        assert info.value.cycle == 5
        assert info.value.code == 7
        assert ex.state is RtState.ERROR
        assert ex.cycles == 6
        assert ex.stats().body_error_count == 1
    else:
        st = ex.run(50)
        assert st.body_error_count == 1
        assert ex.cycles == 50
        expected = RtState.ERROR if policy == "stop" else RtState.SHUTDOWN
        assert ex.state is expected


def test_python_exception_under_each_policy() -> None:
    def bad(ctx):  # type: ignore[no-untyped-def]
        if ctx.cycle == 3:
            raise ValueError("sensor")

    ex = Executive(bad, period_us=1000, overrun="run_late")
    with pytest.raises(BodyError) as info:
        ex.run(20)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.cycle == 3
    assert ex.state is RtState.ERROR

    safe: list[int] = []
    ex = Executive(
        bad,
        period_us=1000,
        overrun="run_late",
        on_error="safe_mode",
        safe_mode_body=lambda c: safe.append(c.cycle),
    )
    st = ex.run(20)
    assert st.body_error_count == 1
    assert safe and safe[0] == 4

    ex = Executive(lambda ctx: 1 / 0, period_us=1000, on_error="continue")
    st = ex.run(20)
    assert st.body_error_count == 20
    assert isinstance(ex.body_error, ZeroDivisionError)


def test_body_can_request_stop_and_safe_mode() -> None:
    def body(ctx):  # type: ignore[no-untyped-def]
        if ctx.cycle == 4:
            ctx.request_safe_mode()

    safe: list[int] = []

    def safe_body(ctx):  # type: ignore[no-untyped-def]
        safe.append(ctx.cycle)
        if ctx.cycle == 9:
            ctx.request_stop()

    ex = Executive(body, safe_mode_body=safe_body, period_us=1000, overrun="run_late")
    ex.start()
    try:
        assert ex.wait(timeout=5)
    finally:
        ex.stop()
    assert ex.state is RtState.SHUTDOWN
    assert safe == [5, 6, 7, 8, 9]


def test_several_executives_each_with_own_stats() -> None:
    a = tier_one(period_us=1000, name="a")
    b = tier_one(period_us=2000, name="b")
    a.start()
    b.start()
    try:
        assert a.wait(cycles=100, timeout=5)
        assert b.wait(cycles=50, timeout=5)
    finally:
        a.stop()
        b.stop()
    assert a.tid != b.tid
    sa, sb = a.stats(), b.stats()
    assert sa.period_ns == 1_000_000 and sb.period_ns == 2_000_000
    assert sa.cycle_count >= 100 and sb.cycle_count >= 50


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="period_us"):
        Executive(lambda c: None, period_us=0)
    with pytest.raises(ValueError, match="overrun"):
        Executive(lambda c: None, overrun="never")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        Executive(lambda c: None, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one body"):
        Executive().start()
    with pytest.raises(ValueError, match="priority"):
        Executive(lambda c: None, policy="SCHED_FIFO", priority=120)
    with pytest.raises(TypeError, match="cycle body"):
        Executive(object())


# ------------------------------------------------------------ body classification


def test_ctypes_callback_is_refused() -> None:
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
    cb = proto(lambda p: 0)
    with pytest.raises(NotNativeError, match="ctypes CFUNCTYPE"):
        Executive(cb)
    # its raw address is refused too (dladdr finds no shared object)
    address = ctypes.cast(cb, ctypes.c_void_p).value
    assert address
    with pytest.raises(NotNativeError, match="not inside any loaded shared object"):
        Executive(NativeBody(address))


def test_cffi_callback_is_refused() -> None:
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    cb = ffi.callback("int(void*)", lambda p: 0)
    with pytest.raises(NotNativeError, match=r"ffi\.callback"):
        Executive(cb)


def test_c_function_from_a_library_is_native() -> None:
    libc = ctypes.CDLL(None)
    spec = classify_body(libc.abs)
    assert spec.kind == "native"
    assert "libc" in spec.description
    assert classify_body(lambda c: None).kind == "python"


def test_other_python_threads_warned(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="busy-helper")
    t.start()
    try:
        with caplog.at_level(logging.WARNING, logger="mxrc.rt"):
            Executive(lambda c: None, period_us=1000).run(3)
    finally:
        stop.set()
        t.join()
    assert any("busy-helper" in r.getMessage() for r in caplog.records)


def test_gc_frozen_and_disabled_while_running_then_restored() -> None:
    import gc

    assert gc.isenabled()
    seen: list[bool] = []
    ex = Executive(lambda c: seen.append(gc.isenabled()), period_us=1000)
    with ex:
        assert ex.wait(cycles=5, timeout=5)
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # the frozen objects are collectable again
    assert seen and not any(seen)


def test_an_application_freeze_is_left_in_place() -> None:
    import gc

    keep = [object() for _ in range(10)]
    gc.freeze()  # the application's own freeze (e.g. before forking workers)
    try:
        frozen = gc.get_freeze_count()
        Executive(lambda c: None, period_us=1000).run(5)
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
    del keep


def test_stats_in_a_segment_read_from_another_process_while_running() -> None:
    import json
    import os
    import textwrap

    from mxrc.bus import Segment

    instance = f"test-exec-{os.getpid()}"
    seg = Segment.create(instance)
    try:
        ex = Executive(lambda ctx: None, period_us=1000, name="loop", segment=seg)
        with ex:
            assert ex.wait(cycles=50, timeout=5)
            code = textwrap.dedent(
                f"""
                import json, time
                from mxrc.bus import Segment
                seg = Segment.attach({instance!r})
                a = seg.stats("loop")
                time.sleep(0.2)
                b = seg.stats("loop")
                print(json.dumps({{"a": a.cycle_count, "b": b.cycle_count, "state": b.state.name,
                                  "torn": a.torn or b.torn, "tid": b.tid,
                                  "hist": b.wake_latency.count}}))
                seg.close()
                """
            )
            proc = run_python(code, timeout=60)
            assert proc.returncode == 0, proc.stderr
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            tid = ex.tid
        assert r["b"] > r["a"] >= 50  # the loop kept running while being read
        assert r["state"] == "RUNNING"
        assert r["tid"] == tid
        assert not r["torn"]
        assert r["hist"] == r["b"]  # one consistent snapshot
        final = ex.stats()
        assert final.state is RtState.SHUTDOWN
        assert final.wake_latency.count == final.cycle_count
    finally:
        seg.close()


def test_start_with_cycles_stops_by_itself_after_exactly_n() -> None:
    ex = Executive(BuiltinBody(), period_us=1000)
    ex.start(cycles=50)
    try:
        assert ex.wait(timeout=10)  # the thread ends by itself
    finally:
        ex.stop()
    assert ex.stats().cycle_count == 50
    assert ex.state is RtState.SHUTDOWN
    with pytest.raises(ValueError, match="cycles"):
        Executive(BuiltinBody(), period_us=1000).start(cycles=0)
