"""mxrc's pytest plugin (mxrc_cycles fixture) and mxrc.testing's assertion helpers.

The plugin is exercised the way users meet it: pytest sessions in a fresh
process (pytester subprocess runs) that load it through its entry point, with
and without pytest-benchmark; the helpers' messages are checked on synthetic
stats, so the numbers in them are exact.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_python

import mxrc.pytest_plugin
from mxrc._native import _core
from mxrc.pytest_plugin import CycleRunner
from mxrc.rt._perf import CycleStats, LatencyHistogram
from mxrc.rt._state import RtState
from mxrc.testing import assert_jitter, assert_late_share, assert_miss_rate, assert_percentile

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timing  # real executives run (loose bounds only)

EXAMPLE_DIR = Path(__file__).parent.parent / "docs" / "examples" / "jitter_suite"

# Inner sessions turn every warning into an error, as this project does (so a
# pytest-benchmark "fixture not used" warning would fail them). The rewrite
# warning comes from pytest's handling of scikit-build-core's editable finder.
_INI = """
[pytest]
addopts = -p no:cacheprovider
filterwarnings =
    error
    ignore:Module already imported so cannot be rewritten; _editable_skbc_mxrc
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(_INI)
    return pytester


# ------------------------------------------------------------ loading


def test_entry_point_loads_the_plugin(pytestconfig: pytest.Config) -> None:
    eps = importlib.metadata.entry_points(group="pytest11")
    assert {ep.name: ep.value for ep in eps}.get("mxrc") == "mxrc.pytest_plugin"
    # this very session loaded it through the entry point
    assert pytestconfig.pluginmanager.get_plugin("mxrc") is mxrc.pytest_plugin


def test_plugin_module_imports_only_pytest_and_the_standard_library() -> None:
    # Loaded by file, apart from the mxrc package, to see what the module itself imports.
    code = f"""
        import importlib.util, json, sys
        import pytest
        before = set(sys.modules)
        spec = importlib.util.spec_from_file_location("probe", {mxrc.pytest_plugin.__file__!r})
        mod = importlib.util.module_from_spec(spec)
        sys.modules["probe"] = mod
        spec.loader.exec_module(mod)
        new = sorted({{m.split(".")[0] for m in set(sys.modules) - before}} - {{"probe"}})
        print(json.dumps(new))
        """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout.strip().splitlines()[-1])
    allowed = set(sys.stdlib_module_names) | {"pytest", "_pytest", "pluggy"}
    assert set(new) <= allowed, f"imported at load time: {sorted(set(new) - allowed)}"


# ------------------------------------------------------------ the fixture


def test_fixture_runs_bodies_and_passes_settings(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_runs="""
        import pytest
        from mxrc.rt import BuiltinBody, Executive, RtState

        def test_python_body(mxrc_cycles):
            seen = []
            stats = mxrc_cycles(lambda ctx: seen.append(ctx.cycle), 50, period_us=2000,
                                name="ctl", overrun="run_late")
            assert stats.cycle_count == 50 == len(seen)
            assert seen == list(range(50))
            assert stats.name == "ctl" and stats.period_ns == 2_000_000
            assert stats.gil_wait.count == 50
            run = mxrc_cycles.runs[-1]
            assert run.stats is stats and run.executive.state is RtState.SHUTDOWN
            assert run.report.cycle_count == 50

        def test_builtin_body_and_late_thresholds(mxrc_cycles):
            stats = mxrc_cycles(BuiltinBody("noop"), cycles=30, period_us=500,
                                late_thresholds_us=(50, 5000))
            assert stats.cycle_count == 30 and stats.gil_wait.count == 0
            assert set(mxrc_cycles.runs[-1].report.late_share) == {"50us", "5000us"}

        def test_an_executive_built_by_the_test(mxrc_cycles):
            ex = Executive(period_us=1000, name="multi")
            ex.add_action(BuiltinBody(), every=2)
            stats = mxrc_cycles(ex, 20)
            assert stats.name == "multi" and stats.cycle_count == 20
            assert ex.state is RtState.SHUTDOWN

        def test_several_runs_in_one_test(mxrc_cycles):
            a = mxrc_cycles(BuiltinBody(), 10, name="a")
            b = mxrc_cycles(BuiltinBody(), 20, name="b")
            assert (a.cycle_count, b.cycle_count) == (10, 20)
            assert [r.stats.name for r in mxrc_cycles.runs] == ["a", "b"]

        def test_misuse_is_explained(mxrc_cycles):
            with pytest.raises(TypeError, match="pass the settings to the Executive"):
                mxrc_cycles(Executive(BuiltinBody()), 10, period_us=500)
            with pytest.raises(ValueError, match="cycles must be an int >= 1, got 0"):
                mxrc_cycles(BuiltinBody(), 0)
            assert mxrc_cycles.runs == []
        """
    )
    result = suite.runpytest_subprocess()
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "*- mxrc cycle runs (wake-up latency in us) -*",
            "test_runs.py::test_python_body [[]ctl] 50 cycles of 2000 us: p50 * p99 * "
            "jitter *, late >100us * >1000us *, misses *",
            "test_runs.py::test_several_runs_in_one_test [[]b] 20 cycles of 1000 us: *",
        ]
    )
    quiet = suite.runpytest_subprocess("-q", "-k", "builtin")
    quiet.assert_outcomes(passed=1, deselected=4)
    assert "mxrc cycle runs" not in quiet.stdout.str()


_BENCH_TESTS = """
from mxrc.rt import BuiltinBody

def test_benchmarked_run(mxrc_cycles, benchmark):
    stats = mxrc_cycles(BuiltinBody(), 200, period_us=500, name="bench")
    assert stats.cycle_count == 200
    benchmark.extra_info["mine"] = 1  # the test's own entries stay

def test_two_runs_with_benchmark(mxrc_cycles, benchmark):
    mxrc_cycles(BuiltinBody(), 10)
    mxrc_cycles(BuiltinBody(), 10)
"""


def test_benchmark_gets_the_report_in_extra_info(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_bench=_BENCH_TESTS)
    out = suite.path / "bench.json"
    result = suite.runpytest_subprocess(f"--benchmark-json={out}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*mxrc_cycles: this test requests pytest-benchmark's `benchmark` fixture, which "
            "records one measurement per test, and already ran cycles once; put each run in "
            "its own test*",
        ]
    )
    # no "fixture was not used" warning (it would be an error here), and a clean summary
    assert "PytestBenchmarkWarning" not in result.stdout.str()
    [bench] = [
        b for b in json.loads(out.read_text())["benchmarks"] if b["name"] == "test_benchmarked_run"
    ]
    assert bench["stats"]["rounds"] == 1
    assert bench["stats"]["min"] > 200 * 500e-6 * 0.5  # its time is the run's wall time
    info = bench["extra_info"]
    assert info["mine"] == 1
    report = info["mxrc"]
    assert report["name"] == "bench" and report["cycle_count"] == 200
    assert report["period_us"] == 500.0
    for key in ("wake_latency_us", "body_start_latency_us", "exec_time_us"):
        assert set(report[key]) >= {"p50", "p99", "p999", "max"}
        assert 0 < report[key]["p50"] <= report[key]["p99"] <= report[key]["p999"]
    assert set(report["late_share"]) == {"100us", "1000us"}
    assert all(0.0 <= v <= 1.0 for v in report["late_share"].values())
    assert 0.0 <= report["deadline_miss_rate"] <= 1.0
    assert report["jitter_us"] >= 0.0


def test_benchmark_disabled_or_skipped(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_bench=_BENCH_TESTS)
    disabled = suite.runpytest_subprocess("--benchmark-disable", "-k", "benchmarked")
    disabled.assert_outcomes(passed=1, deselected=1)  # the run happens, unmeasured
    assert "mxrc cycle runs" in disabled.stdout.str()
    skipped = suite.runpytest_subprocess("--benchmark-skip")
    skipped.assert_outcomes(skipped=2)


def test_works_without_pytest_benchmark(suite: pytest.Pytester) -> None:
    suite.makeconftest(
        """
        import pytest

        @pytest.fixture
        def benchmark():
            return "a project's own fixture of that name"
        """
    )
    suite.makepyfile(
        test_plain="""
        import sys
        from mxrc.rt import BuiltinBody

        def test_run(mxrc_cycles):
            assert mxrc_cycles(BuiltinBody(), 20).cycle_count == 20

        def test_unrelated_benchmark_fixture_is_left_alone(mxrc_cycles, benchmark):
            assert mxrc_cycles(BuiltinBody(), 20).cycle_count == 20
            assert "pytest_benchmark" not in sys.modules
        """
    )
    result = suite.runpytest_subprocess("-p", "no:benchmark")
    result.assert_outcomes(passed=2)


def test_failures_are_readable(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_fail="""
        from mxrc.rt import BuiltinBody
        from mxrc.testing import assert_late_share, assert_percentile

        def test_late(mxrc_cycles):
            stats = mxrc_cycles(BuiltinBody(), 100, period_us=1000, name="loop")
            assert_late_share(stats, above_us=0, at_most=0.01)

        def test_percentile(mxrc_cycles):
            stats = mxrc_cycles(BuiltinBody(), 100, period_us=1000)
            assert_percentile(stats, "wake_latency", q=99, at_most_us=0.001)

        def test_body_error(mxrc_cycles):
            def body(ctx):
                if ctx.cycle == 3:
                    raise RuntimeError("sensor gone")
            mxrc_cycles(body, 10)
        """
    )
    result = suite.runpytest_subprocess()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            # the failing line of the test, not the helper's internals
            ">       assert_late_share(stats, above_us=0, at_most=0.01)",
            "E       AssertionError: wake-up latency above 0 us: 100 of 100 cycles (100 %); "
            "allowed at most 1 % (1 cycle)",
            "E         executive 'loop' (SHUTDOWN): 100 cycles, period 1000 us, deadline 1000 us",
            "E         wake-up latency (us): min * p50 * p99 * p99.9 * max *",
            "E         jitter * us; deadline misses * (rate *); skipped releases *",
            "test_fail.py:6: AssertionError",
            # the run's full report is attached to the failure
            "*- Captured mxrc cycles 'loop' call -*",
            'cycle thread "loop" (SHUTDOWN): 100 cycles, period 1000 us, deadline 1000 us',
            "wake-up latency histogram (us):",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            '>       assert_percentile(stats, "wake_latency", q=99, at_most_us=0.001)',
            "E       AssertionError: wake-up latency p99 is * us over 100 cycles; "
            "allowed at most 0.001 us",
            "E         (percentiles are histogram bucket upper bounds: at most ~3 % above the "
            "true value)",
        ]
    )
    result.stdout.fnmatch_lines(
        ["E   *BodyError: executive 'main': body raised RuntimeError: sensor gone in cycle 3*"]
    )
    out = result.stdout.str()
    assert "def assert_late_share" not in out  # helper frames are hidden
    assert "def _histogram" not in out


@pytest.mark.slow
def test_example_suite_runs(suite: pytest.Pytester, tmp_path: Path) -> None:
    for f in ("test_jitter.py", "pytest.ini"):
        shutil.copy(EXAMPLE_DIR / f, suite.path / f)
    out = tmp_path / "jitter.json"
    result = suite.runpytest_subprocess(f"--benchmark-json={out}", "-rs")
    # the SCHED_FIFO test runs only as root (conftest marks privileged tests likewise)
    fifo_ran = os.geteuid() == 0
    result.assert_outcomes(passed=3 if fifo_ran else 2, skipped=0 if fifo_ran else 1)
    [bench] = json.loads(out.read_text())["benchmarks"]
    assert bench["name"] == "test_cpp_body_latency_percentiles"
    assert bench["extra_info"]["mxrc"]["cycle_count"] == 2000


def test_fixture_on_the_simulated_clock_gives_exact_numbers(mxrc_cycles: CycleRunner) -> None:
    # this session's own fixture; the clock setting passes through to the Executive
    def body(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.sim_advance(1_700_000 if ctx.cycle % 100 == 99 else 300_000)  # 10 overruns

    stats = mxrc_cycles(body, 1000, period_us=1000, overrun="run_late", clock="simulated")
    assert_miss_rate(stats, at_most=0.01)
    with pytest.raises(AssertionError, match=r"^deadline misses: 10 of 1000 cycles \(1 %\)"):
        assert_miss_rate(stats, at_most=0.005)
    # the 9 cycles after an overrun (the last one has none) wake 0.7 ms late
    assert_late_share(stats, above_us=100, at_most=0.009)
    with pytest.raises(AssertionError, match=r"above 100 us: 9 of 1000 cycles"):
        assert_late_share(stats, above_us=100, at_most=0.008)
    assert_percentile(stats, "wake_latency", q=100, at_most_us=700)
    assert mxrc_cycles.runs[-1].executive.clock == "simulated"


# ------------------------------------------------------------ assertion helpers


def _hist(values_ns: list[int]) -> LatencyHistogram:
    counts = np.zeros(_core.bus.BUCKET_COUNT, dtype=np.uint64)
    for v in values_ns:
        counts[_core.bus.bucket_index(v)] += 1
    counts.setflags(write=False)
    return LatencyHistogram(
        counts=counts,
        count=len(values_ns),
        sum_ns=sum(values_ns),
        min_ns=min(values_ns, default=0),
        max_ns=max(values_ns, default=0),
    )


def _stats(wake_ns: list[int], *, exec_ns: list[int] | None = None, misses: int = 0) -> CycleStats:
    n = len(wake_ns)
    mean = sum(wake_ns) / n if n else 0.0
    var = sum((v - mean) ** 2 for v in wake_ns) / n if n else 0.0
    wake = _hist(wake_ns)
    return CycleStats(
        name="ctl",
        tid=1,
        state=RtState.SHUTDOWN,
        period_ns=1_000_000,
        deadline_ns=800_000,
        start_ns=0,
        heartbeat_ns=0,
        cycle_count=n,
        deadline_miss_count=misses,
        consecutive_misses=0,
        max_consecutive_misses=min(misses, 2),
        skipped_release_count=0,
        body_error_count=0,
        minor_faults=0,
        involuntary_ctx_switches=0,
        gil_contended_cycles=0,
        wake_latency_mean_ns=mean,
        wake_latency_var_ns2=var,
        wake_latency=wake,
        body_start_latency=wake,
        exec_time=_hist(exec_ns if exec_ns is not None else [1_000] * n),
        gil_wait=LatencyHistogram.empty(),
    )


# 90 cycles woke 10 µs late, 10 cycles 500 µs late
LATE = _stats([10_000] * 90 + [500_000] * 10, exec_ns=[50_000] * 97 + [900_000] * 3, misses=3)


def test_late_share_passes_and_fails_with_the_numbers() -> None:
    assert_late_share(LATE, above_us=100, at_most=0.10)
    assert_late_share(LATE, above_periods=0.1, at_most=0.10)  # 0.1 period = 100 µs
    assert_late_share(LATE, above_us=600, at_most=0.0)
    with pytest.raises(AssertionError) as info:
        assert_late_share(LATE, above_us=100, at_most=0.05)
    msg = str(info.value)
    assert msg.splitlines()[0] == (
        "wake-up latency above 100 us: 10 of 100 cycles (10 %); allowed at most 5 % (5 cycles)"
    )
    assert "executive 'ctl' (SHUTDOWN): 100 cycles, period 1000 us, deadline 800 us" in msg
    assert "wake-up latency (us): min 10.0" in msg
    assert "deadline misses 3 (rate 0.03)" in msg
    with pytest.raises(AssertionError, match=r"above 0.1 period \(100 us\): 10 of 100"):
        assert_late_share(LATE, above_periods=0.1, at_most=0.01)
    with pytest.raises(AssertionError, match=r"^execution time above 100 us: 3 of 100 cycles"):
        assert_late_share(LATE, above_us=100, at_most=0.0, metric="exec_time")


def test_percentile_passes_and_fails_with_the_numbers() -> None:
    assert_percentile(LATE, q=50, at_most_us=11)
    assert_percentile(LATE, "wake_latency", q=90, at_most_us=11)
    with pytest.raises(AssertionError) as info:
        assert_percentile(LATE, "wake_latency", q=99, at_most_us=100)
    first = str(info.value).splitlines()[0]
    p99 = LATE.wake_latency.percentile(0.99) / 1e3
    assert 500 <= p99 <= 500 * 1.035  # a bucket's upper bound: at most ~3 % above
    assert first == f"wake-up latency p99 is {p99:.1f} us over 100 cycles; allowed at most 100 us"
    with pytest.raises(AssertionError) as info:
        assert_percentile(LATE, "exec_time", q=99, at_most_us=100)
    msg = str(info.value)
    assert msg.startswith("execution time p99 is ")
    assert "  execution time (us): min 50.0" in msg  # the checked metric's distribution too


def test_miss_rate_and_jitter() -> None:
    assert_miss_rate(LATE, at_most=0.03)
    with pytest.raises(AssertionError) as info:
        assert_miss_rate(LATE, at_most=0.01)
    assert str(info.value).splitlines()[0] == (
        "deadline misses: 3 of 100 cycles (3 %) ended after their deadline of 800 us; "
        "allowed at most 1 % (1 cycle), max consecutive 2"
    )
    jitter_us = LATE.jitter_ns / 1e3  # 10 % at +490 µs: stddev 147 µs
    assert jitter_us == pytest.approx(147.0)
    assert_jitter(LATE, at_most_us=150)
    with pytest.raises(AssertionError, match=r"^jitter .* is 147.0 us over 100 cycles; allowed"):
        assert_jitter(LATE, at_most_us=100)


def test_helper_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"q is a percentile in percent .* did you mean q=99\?"):
        assert_percentile(LATE, q=0.99, at_most_us=100)
    with pytest.raises(ValueError, match="q is a percentile"):
        assert_percentile(LATE, q=101, at_most_us=100)
    with pytest.raises(ValueError, match=r"at_most is a ratio within 0..1 \(0.01 = 1 %\), got 5"):
        assert_late_share(LATE, above_us=100, at_most=5)
    with pytest.raises(ValueError, match="at_most_us must be a number >= 0"):
        assert_percentile(LATE, q=99, at_most_us=float("nan"))
    with pytest.raises(TypeError, match="exactly one of above_us= or above_periods="):
        assert_late_share(LATE, at_most=0.1)
    with pytest.raises(TypeError, match="exactly one of"):
        assert_late_share(LATE, above_us=1, above_periods=1, at_most=0.1)
    with pytest.raises(ValueError, match="metric must be one of wake_latency, body_start"):
        assert_percentile(LATE, "latency", q=99, at_most_us=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected CycleStats"):
        assert_miss_rate(LATE.wake_latency, at_most=0.1)  # type: ignore[arg-type]


def test_nothing_to_check_is_a_failure_not_a_pass() -> None:
    with pytest.raises(AssertionError, match=r"GIL wait: no samples .* \(only Python bodies"):
        assert_percentile(LATE, "gil_wait", q=99, at_most_us=1000)
    empty = _stats([])
    with pytest.raises(AssertionError, match="ran no cycle"):
        assert_miss_rate(empty, at_most=1.0)
    with pytest.raises(AssertionError, match="wake-up latency: no samples"):
        assert_late_share(empty, above_us=100, at_most=1.0)


def test_helpers_take_an_executive() -> None:
    from mxrc.rt import BuiltinBody, Executive

    ex = Executive(BuiltinBody(), period_us=500)
    ex.run(20)
    assert_miss_rate(ex, at_most=1.0)  # reads ex.stats()
    assert_percentile(ex, "exec_time", q=50, at_most_us=10_000)
