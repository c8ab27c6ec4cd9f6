"""`mxrc metrics`: a live instance's exposition from another process, printed or served."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from helpers import require_tool, run_mxrc, spawn_mxrc
from prometheus_client.parser import text_string_to_metric_families

from mxrc.bus import Segment
from mxrc.rt import BuiltinBody, Executive


@pytest.fixture
def live_instance() -> Iterator[tuple[str, Executive]]:
    inst = f"test-metrics-cmd-{os.getpid()}"
    with Segment.create(inst) as seg:
        ex = Executive(BuiltinBody(), period_us=1000, name="main", segment=seg)
        ex.start()
        assert ex.wait(50, timeout=10)
        try:
            yield inst, ex
        finally:
            ex.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_prints_the_exposition_of_a_live_instance(live_instance: tuple[str, Executive]) -> None:
    inst, ex = live_instance
    before = ex.stats().cycle_count
    proc = run_mxrc("metrics", "--instance", inst)
    after = ex.stats().cycle_count
    assert proc.returncode == 0, proc.stderr
    samples = _samples(proc.stdout)
    labels = (("executive", "main"), ("process", "rt"))
    cycles = samples[("mxrc_rt_cycle_count_total", labels)]
    assert before <= cycles <= after
    # the histogram's count is the same run's cycle count (one snapshot)
    assert samples[("mxrc_rt_cycle_time_us_count", labels)] == cycles


def test_seconds_units_pass_promtool(live_instance: tuple[str, Executive]) -> None:
    promtool = require_tool("promtool", "prometheus")
    inst, _ = live_instance
    proc = run_mxrc("metrics", "--instance", inst, "--units", "seconds", "--process", "robot")
    assert proc.returncode == 0, proc.stderr
    assert 'process="robot"' in proc.stdout
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=proc.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_serves_until_ctrl_c(live_instance: tuple[str, Executive]) -> None:
    inst, _ = live_instance
    proc = spawn_mxrc("metrics", "--instance", inst, "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
        assert "mxrc_rt_cycle_count_total" in body
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_missing_instance_exits_1() -> None:
    proc = run_mxrc("metrics", "--instance", f"test-metrics-none-{os.getpid()}")
    assert proc.returncode == 1
    assert proc.stderr.startswith("mxrc metrics: no instance")
    assert proc.stdout == ""


def test_bad_port_is_a_usage_error() -> None:
    proc = run_mxrc("metrics", "--port", "70000")
    assert proc.returncode == 2
    assert "expected a port in 0..65535" in proc.stderr
