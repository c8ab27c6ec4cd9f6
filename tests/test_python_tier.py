"""Tier 3: Python bodies on the C++ cycle thread (one thread state, GIL per call)."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import pytest
from helpers import run_python

from mxrc.pytest_plugin import CycleRunner
from mxrc.rt._affinity import allowed_cpus
from mxrc.rt._executive import Executive
from mxrc.rt._perf import CycleStats
from mxrc.rt._state import RtState
from mxrc.testing import assert_percentile

pytestmark = pytest.mark.timing

# the cycle thread goes to the highest allowed CPU (CPU 1 here; CPU 0 stays free)
RT_CPU = max(allowed_cpus())


def test_python_body_stats_are_consistent(mxrc_cycles: CycleRunner) -> None:
    cycles: list[int] = []
    st = mxrc_cycles(lambda ctx: cycles.append(ctx.cycle), 2000, period_us=1000, cpus=[RT_CPU])
    assert len(cycles) == 2000
    assert all(b > a for a, b in itertools.pairwise(cycles))
    # overrun policy "skip": a host pause skips releases, and the cycle index jumps over them
    assert cycles[-1] == 1999 + st.skipped_release_count
    assert st.cycle_count == 2000
    assert st.wake_latency.count == st.body_start_latency.count == st.exec_time.count == 2000
    assert st.gil_wait.count == 2000  # measured on every Python call
    assert not st.torn


def test_one_thread_state_for_the_whole_run() -> None:
    idents: set[int] = set()
    natives: set[int] = set()

    def body(ctx: object) -> None:
        idents.add(threading.get_ident())
        natives.add(threading.get_native_id())

    ex = Executive(body, period_us=1000)
    ex.run(200)
    assert len(natives) == 1
    assert natives != {threading.get_native_id()}
    # a thread state created per call would show as a fresh "dummy" thread
    # each time; one persistent state keeps one ident
    assert len(idents) == 1


def test_context_fields() -> None:
    seen: list[tuple[int, int, int, int, int]] = []

    def body(ctx) -> None:  # type: ignore[no-untyped-def]
        seen.append((ctx.cycle, ctx.release_ns, ctx.wake_ns, ctx.deadline_ns, ctx.period_ns))
        assert ctx.state == int(RtState.RUNNING)
        assert ctx.now_ns() >= ctx.wake_ns

    ex = Executive(body, period_us=2000, overrun="run_late", deadline_us=1500)
    ex.run(20)
    for i, (cycle, release, wake, deadline, period) in enumerate(seen):
        assert cycle == i
        assert wake >= release
        assert deadline == release + 1_500_000
        assert period == 2_000_000
        if i:
            assert release - seen[i - 1][1] == 2_000_000


def _run_beside_a_busy_thread(**kwargs: object) -> CycleStats:
    stop = threading.Event()

    def hog() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=hog, name="hog")
    t.start()
    try:
        return Executive(lambda ctx: None, period_us=2000, **kwargs).run(200)  # type: ignore[arg-type]
    finally:
        stop.set()
        t.join()


def test_gil_wait_is_measured_when_another_thread_is_busy() -> None:
    # with Python's own switch interval (5 ms) the body waits for the hog
    st = _run_beside_a_busy_thread(gil_switch_interval_us=None)
    assert st.gil_contended_cycles > 20
    assert st.gil_wait.max_ns > 1_000_000
    assert st.body_start_latency.percentile(0.5) > st.wake_latency.percentile(0.5)


def test_short_switch_interval_bounds_the_gil_wait_and_is_restored() -> None:
    before = sys.getswitchinterval()
    st = _run_beside_a_busy_thread()  # default: 100 µs while running
    assert sys.getswitchinterval() == before
    # a broken mechanism waits ~5 ms (Python's interval) on most cycles
    assert_percentile(st, "gil_wait", q=50, at_most_us=2500)
    assert st.gil_contended_cycles > 0  # the hog really competed


def test_executive_dropped_while_running_is_joined() -> None:
    ex = Executive(lambda ctx: None, period_us=1000)
    ex.start()
    tid = ex.tid
    ref = weakref.ref(ex)
    ex._core.request_stop()
    ex.stop()
    del ex
    assert ref() is None or ref().state is RtState.SHUTDOWN  # type: ignore[union-attr]
    assert not Path(f"/proc/self/task/{tid}").exists()


_CTRL_C_CHILD = """
import json, sys
from mxrc.rt._executive import Executive
ex = Executive(lambda ctx: None, period_us=1000)
ex.add_init_hook(lambda: print("ready", flush=True))
try:
    ex.run(cycles=10**9)
except KeyboardInterrupt:
    print(json.dumps({"state": ex.state.name, "cycles": ex.cycles}), flush=True)
    raise
"""


def test_ctrl_c_stops_run_with_keyboard_interrupt() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert elapsed < 2.0
    assert "KeyboardInterrupt" in err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["state"] == "SHUTDOWN"
    assert result["cycles"] > 50
    assert proc.returncode != 0


def test_interpreter_exit_joins_a_running_executive() -> None:
    code = textwrap.dedent(
        """
        from mxrc.rt._executive import Executive
        ex = Executive(lambda ctx: sum(range(10)), period_us=1000)
        ex.start()
        ex.wait(cycles=50, timeout=5)
        print("leaving", flush=True)
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "leaving" in proc.stdout
    assert "Fatal" not in proc.stderr


def test_last_reference_dropped_on_the_cycle_thread_does_not_crash() -> None:
    # The body drops the last reference to its own executive and collects:
    # the executive is destroyed on its own cycle thread, which cannot join
    # itself. It must stop cleanly instead of crashing or deadlocking.
    code = textwrap.dedent(
        """
        import gc, time
        from mxrc.rt._executive import Executive
        box = {}
        def body(ctx):
            if ctx.cycle == 20:
                box.clear()
                gc.collect()
        ex = Executive(body, period_us=1000, freeze_gc=False)
        box["ex"] = ex
        ex.start()
        tid = ex.tid
        del ex
        time.sleep(0.3)
        import os
        print("gone" if not os.path.exists(f"/proc/self/task/{tid}") else "running", flush=True)
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "gone"
