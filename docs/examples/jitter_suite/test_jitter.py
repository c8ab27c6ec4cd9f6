"""An example jitter suite: each test runs a cycle body for N cycles and checks its latency.

Run in this directory:

    python3 -m pytest                                  # pass/fail, a summary line per run
    python3 -m pytest --benchmark-json=jitter.json     # + each benchmarked run's report saved

The bounds are loose enough for a shared CI virtual machine; on a tuned host
(isolated cores, SCHED_FIFO) tighten them. Never bound the maximum on a VM.
"""

from __future__ import annotations

import os

import pytest

from mxrc.pytest_plugin import CycleRunner
from mxrc.rt import BuiltinBody, allowed_cpus
from mxrc.testing import assert_late_share, assert_miss_rate, assert_percentile

# The loop gets the highest allowed CPU; the others stay free for the rest.
RT_CPU = max(allowed_cpus())


class Integrator:
    """A tiny controller as a Python-tier body: state kept between cycles."""

    def __init__(self) -> None:
        self.x = 0.0

    def __call__(self, ctx: object) -> None:
        self.x += 0.001 * (1.0 - self.x)


def test_python_controller_wakes_on_time(mxrc_cycles: CycleRunner) -> None:
    stats = mxrc_cycles(Integrator(), cycles=2000, period_us=1000, cpus=[RT_CPU])
    assert_late_share(stats, above_us=1000, at_most=0.05)
    assert_miss_rate(stats, at_most=0.05)


def test_cpp_body_latency_percentiles(mxrc_cycles: CycleRunner, benchmark: object) -> None:
    # With pytest-benchmark's fixture requested, the run's latency report is
    # saved in the benchmark's extra_info["mxrc"] (--benchmark-json).
    stats = mxrc_cycles(BuiltinBody("noop"), cycles=2000, period_us=500, cpus=[RT_CPU])
    assert_percentile(stats, "wake_latency", q=50, at_most_us=250)
    assert_percentile(stats, "exec_time", q=99, at_most_us=200)


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root or CAP_SYS_NICE")
def test_python_controller_under_sched_fifo(mxrc_cycles: CycleRunner) -> None:
    stats = mxrc_cycles(
        Integrator(), cycles=2000, period_us=1000, cpus=[RT_CPU], policy="SCHED_FIFO", priority=50
    )
    assert_late_share(stats, above_us=1000, at_most=0.02)
    assert_percentile(stats, "body_start_latency", q=50, at_most_us=250)
