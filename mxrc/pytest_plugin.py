"""pytest plugin (``pytest11`` entry point ``mxrc``): the ``mxrc_cycles`` fixture for jitter tests.

``mxrc_cycles(body, cycles, **executive_kwargs)`` runs ``body`` for exactly
``cycles`` cycles on a new :class:`mxrc.Executive` (the keyword arguments go
to its constructor) — or runs an Executive the test built itself — and
returns the :class:`~mxrc.rt.CycleStats`. Check them with
:mod:`mxrc.testing`::

    from mxrc.testing import assert_late_share

    def test_controller_wakes_on_time(mxrc_cycles):
        stats = mxrc_cycles(controller, cycles=2000, period_us=1000)
        assert_late_share(stats, above_us=1000, at_most=0.01)

When the test also requests pytest-benchmark's ``benchmark`` fixture, the
run goes through ``benchmark.pedantic`` (one round, so the benchmark is used
and its time is the run's wall time, start to stop) and the latency report
(:meth:`mxrc.rt.PerfReport.to_dict`: percentiles, jitter, miss rate, late
shares) goes into ``benchmark.extra_info["mxrc"]``, which
``--benchmark-json`` and ``--benchmark-autosave`` save. Each run's text
report is attached to the test (shown when it fails) and a one-line summary
per run closes the session (not with ``-q``).

Import-light: pytest imports this module at the start of every session in an
environment where mxrc is installed, so it imports only pytest and the
standard library (``mxrc/__init__.py`` loads its attributes lazily); the
executive and the compiled core load when a test first runs cycles. Disable with ``-p no:mxrc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mxrc.rt import CycleStats, Executive, PerfReport

__all__ = ["DEFAULT_LATE_THRESHOLDS_US", "CycleRun", "CycleRunner", "mxrc_cycles"]

#: Late-share thresholds of the report (ARCHITECTURE §6: share later than 100 µs and 1 ms).
DEFAULT_LATE_THRESHOLDS_US: tuple[float, ...] = (100.0, 1000.0)


@dataclass(frozen=True)
class CycleRun:
    """One run of :class:`CycleRunner`: the executive, its final stats and their report."""

    nodeid: str
    executive: Executive
    stats: CycleStats
    report: PerfReport


# one line per run for the session's closing summary (a string: no histogram kept)
_SUMMARIES = pytest.StashKey[list[str]]()


class CycleRunner:
    """The value of the ``mxrc_cycles`` fixture: call it to run a body for N cycles."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._benchmarked = False
        self.runs: list[CycleRun] = []
        """Every run of this test, in order (``runs[-1].executive`` for its state)."""

    def __call__(
        self,
        body: object,
        cycles: int,
        *,
        late_thresholds_us: Sequence[float] = DEFAULT_LATE_THRESHOLDS_US,
        **executive_kwargs: Any,
    ) -> CycleStats:
        """Run ``body`` for exactly ``cycles`` cycles; return the final stats.

        ``body``: anything :class:`mxrc.Executive` accepts (Python callable,
        ``NativeBody``, ``BuiltinBody``, C function pointer), with
        ``executive_kwargs`` for its constructor (``period_us``, ``cpus``,
        ``policy``, ``priority``, ...); or an Executive that has not started
        (then no keyword arguments). ``late_thresholds_us``: the late-share
        entries of the report. Raises what :meth:`mxrc.Executive.run` raises
        (``BodyError`` for a failed body, ``PrivilegeError`` for a refused
        setup step).
        """
        __tracebackhide__ = True  # a failure points at the test, then into the executive
        from mxrc.rt import Executive
        from mxrc.rt._perf import build_report

        if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
            raise ValueError(f"mxrc_cycles: cycles must be an int >= 1, got {cycles!r}")
        if isinstance(body, Executive):
            if executive_kwargs:
                raise TypeError(
                    "mxrc_cycles: got an Executive and executive settings "
                    f"({', '.join(sorted(executive_kwargs))}); pass the settings to the "
                    "Executive's constructor, or pass the body instead of an Executive"
                )
            ex = body
        else:
            ex = Executive(body, **executive_kwargs)
        bench = self._benchmark()
        if bench is None:
            stats = ex.run(cycles)
        else:
            if self._benchmarked:
                pytest.fail(
                    "mxrc_cycles: this test requests pytest-benchmark's `benchmark` fixture, "
                    "which records one measurement per test, and already ran cycles once; "
                    "put each run in its own test (e.g. @pytest.mark.parametrize)",
                    pytrace=False,
                )
            self._benchmarked = True
            # One round: a cycle run is itself the repetition; pedantic also
            # marks the fixture as used (pytest-benchmark warns otherwise).
            stats = bench.pedantic(ex.run, args=(cycles,), rounds=1, iterations=1)
        report = build_report(stats, late_thresholds_us=late_thresholds_us)
        if bench is not None:
            bench.extra_info["mxrc"] = report.to_dict()
        node = self._request.node
        self.runs.append(CycleRun(node.nodeid, ex, stats, report))
        self._request.config.stash.setdefault(_SUMMARIES, []).append(
            _summary_line(node.nodeid, report)
        )
        if isinstance(node, pytest.Item):  # shown with the test's failure
            node.add_report_section("call", f"mxrc cycles {report.name!r}", report.to_text())
        return stats

    def _benchmark(self) -> Any:
        """pytest-benchmark's fixture when this test requests it, else None."""
        if "benchmark" not in self._request.fixturenames:
            return None
        fixture = self._request.getfixturevalue("benchmark")
        # a project's own fixture named "benchmark" is left alone
        if not (hasattr(fixture, "pedantic") and hasattr(fixture, "extra_info")):
            return None
        return fixture


@pytest.fixture
def mxrc_cycles(request: pytest.FixtureRequest) -> CycleRunner:
    """Run a cycle body for N cycles on an mxrc Executive; returns its CycleStats.

    ``mxrc_cycles(body, cycles, **executive_kwargs)``; with pytest-benchmark's
    ``benchmark`` also requested, the report lands in
    ``benchmark.extra_info["mxrc"]``. See :mod:`mxrc.pytest_plugin`.
    """
    return CycleRunner(request)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    summaries = config.stash.get(_SUMMARIES, [])
    if not summaries or config.option.verbose < 0:
        return
    terminalreporter.write_sep("-", "mxrc cycle runs (wake-up latency in us)")
    for line in summaries:
        terminalreporter.write_line(line)


def _summary_line(nodeid: str, r: PerfReport) -> str:
    wake = r.wake_latency_us
    late = " ".join(f">{k} {v:.4f}" for k, v in r.late_share.items())
    return (
        f"{nodeid} [{r.name}] {r.cycle_count} cycles of {r.period_us:g} us: "
        f"p50 {wake['p50']:.1f} p99 {wake['p99']:.1f} p99.9 {wake['p999']:.1f} "
        f"max {wake['max']:.1f}, jitter {r.jitter_us:.1f}, late {late}, "
        f"misses {r.deadline_miss_count}"
    )
