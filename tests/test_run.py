"""`mxrc run`: argument handling, exit codes, the demo run end to end (JSON report,
segment owned and removed, Ctrl-C), stats read from another process during a run."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import cli_main, run_mxrc, spawn_mxrc

from mxrc._run import RunOptions, format_progress

REPORT_FIELDS = ("wake_latency_us", "body_start_latency_us", "exec_time_us")
SUMMARY_KEYS = {"min", "avg", "p50", "p99", "p999", "max"}


@pytest.fixture(autouse=True)
def _no_mxrc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MXRC_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--cycles", "0"],
        ["run", "--cycles", "many"],
        ["run", "--period-us", "-5"],
        ["run", "--tier", "cuda"],
        ["run", "--config", "/nonexistent/mxrc-config"],
        ["run", "--bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, _, err = cli_main(*argv)
    assert code == 2
    assert "mxrc" in err and "error" in err


def test_period_out_of_range_is_a_usage_error() -> None:
    code, _, err = cli_main("run", "--period-us", "5")
    assert code == 2
    assert "--period-us must be within 10..10000000" in err


def test_invalid_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "perf_monitor.json").write_text('{"rt": {"cycle_time_us": "fast"}}')
    code, _, err = cli_main("run", "--config", str(tmp_path), "--cycles", "10")
    assert code == 2
    assert "configuration error" in err and "perf_monitor.json" in err


def test_help_lists_run_and_doctor_still_works() -> None:
    code, out, _ = cli_main("--help")
    assert code == 0 and "run" in out and "doctor" in out
    code, out, _ = cli_main("run", "--help")
    assert code == 0
    for flag in ("--config", "--cycles", "--period-us", "--tier", "--json-report", "--instance"):
        assert flag in out
    code, _, _ = cli_main("doctor", "--help")
    assert code == 0


def test_run_options_validate() -> None:
    assert RunOptions().tier == "native"
    with pytest.raises(ValueError, match="cycles"):
        RunOptions(cycles=0)
    with pytest.raises(ValueError, match="tier"):
        RunOptions(tier="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        RunOptions(period_us=20_000_000)


def test_format_progress() -> None:
    line = format_progress(2500, 5000, 3, 2.5)
    assert "2500/5000" in line and "50.0%" in line
    assert "deadline misses 3" in line and "2.5 s left" in line
    assert "s left" in format_progress(0, 5000, 0, 0.0)
    assert len(line) < 78  # fits a terminal line with the carriage return


def test_unprivileged_falls_back_to_sched_other_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mxrc._capabilities as caps_mod
    from mxrc._capabilities import Capability
    from mxrc._run import _privilege_overrides
    from mxrc.config import load_config

    def fake_caps(**_: object) -> dict[str, Capability]:
        return {
            "sched_fifo": Capability("sched_fifo", False, "RLIMIT_RTPRIO is 0"),
            "mlock": Capability("mlock", False, "RLIMIT_MEMLOCK is 64 KiB"),
        }

    monkeypatch.setattr(caps_mod, "capabilities", fake_caps)
    err = io.StringIO()
    overrides = _privilege_overrides(load_config(None), err)
    assert overrides == {"allow_sched_other_fallback": True, "lock_memory": False}
    text = err.getvalue()
    assert "SCHED_FIFO is not available (RLIMIT_RTPRIO is 0)" in text
    assert "SCHED_OTHER" in text and "without mlockall" in text

    def ok_caps(**_: object) -> dict[str, Capability]:
        return {
            "sched_fifo": Capability("sched_fifo", True, "ok"),
            "mlock": Capability("mlock", True, "ok"),
        }

    monkeypatch.setattr(caps_mod, "capabilities", ok_caps)
    err = io.StringIO()
    assert _privilege_overrides(load_config(None), err) == {}
    assert err.getvalue() == ""


# --- end to end (a real executive: root for SCHED_FIFO on CPU 1) -------------------


def _instance(tag: str) -> str:
    return f"test-run-{tag}-{os.getpid()}"


@pytest.mark.privileged
@pytest.mark.parametrize("tier", ["native", "python"])
def test_run_writes_the_json_report(tmp_path: Path, tier: str) -> None:
    report = tmp_path / "r.json"
    inst = _instance(tier)
    proc = run_mxrc(
        "run", "--cycles", "1500", "--tier", tier, "--json-report", str(report), "--instance", inst
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert data["cycle_count"] == 1500
    assert 0 <= data["deadline_miss_count"] <= 1500
    assert data["deadline_miss_rate"] == pytest.approx(data["deadline_miss_count"] / 1500)
    assert data["jitter_us"] >= 0
    for key in REPORT_FIELDS:
        summary = data[key]
        assert set(summary) >= SUMMARY_KEYS
        assert summary["min"] <= summary["p50"] <= summary["p99"] <= summary["p999"]
        assert summary["p999"] <= summary["max"] * 1.04  # bucket bound, ~3 % precision
    # the demo ran in that tier and followed its setpoint
    run = data["run"]
    assert run["tier"] == tier and run["instance"] == inst
    assert run["demo"]["steps"] == 1500
    assert run["demo"]["rms_error_m"] < 0.01 * run["demo"]["amplitude_m"]
    # a readable report with a text histogram went to stdout
    assert "wake-up latency" in proc.stdout and "#" in proc.stdout
    assert "tracking error over 1500 steps" in proc.stdout
    # the segment is gone
    assert not Path(f"/dev/shm/mxrc-{inst}").exists()


def _cycle_count(seg: object) -> int:
    try:
        return int(seg.stats("main").cycle_count)  # type: ignore[attr-defined]
    except LookupError:
        return 0


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.privileged
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stats_are_readable_from_another_process_and_ctrl_c_cleans_up(signum: int) -> None:
    from mxrc.bus import Segment

    inst = _instance(f"sig{signum}")
    shm = Path(f"/dev/shm/mxrc-{inst}")
    proc = spawn_mxrc("run", "--cycles", "1000000", "--instance", inst)
    try:
        _wait_for(shm, 30)
        with Segment.attach(inst) as seg:
            deadline = time.monotonic() + 30
            first = _cycle_count(seg)
            while first == 0:  # the segment exists before the executive claims its block
                assert time.monotonic() < deadline, "the run never started cycling"
                time.sleep(0.05)
                first = _cycle_count(seg)
            time.sleep(0.3)
            later = seg.stats("main")
            assert later.cycle_count > first  # a live loop seen from this process
            assert not later.torn
            # histogram buckets are relaxed counters: within a cycle of the count
            assert abs(later.wake_latency.count - later.cycle_count) <= 2
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            Segment.remove(inst, force=True)  # a killed owner leaves its segment behind
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "wake-up latency" in out  # the partial report is still printed
    assert not shm.exists()


@pytest.mark.privileged
def test_instance_in_use_is_a_runtime_error() -> None:
    from mxrc.bus import Segment

    inst = _instance("busy")
    with Segment.create(inst):
        proc = run_mxrc("run", "--cycles", "10", "--instance", inst, timeout=60)
    assert proc.returncode == 1
    assert "--instance" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_instance_name_is_a_usage_error() -> None:
    proc = run_mxrc("run", "--cycles", "10", "--instance", "no/slashes", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


class _Terminal(io.StringIO):
    """A captured stdout that claims to be a terminal, so the progress line is shown."""

    def isatty(self) -> bool:
        return True


def test_progress_mode_runs_exactly_n_cycles(tmp_path: Path) -> None:
    from mxrc._run import run_demo

    report = tmp_path / "r.json"
    out, err = _Terminal(), io.StringIO()
    opts = RunOptions(cycles=300, tier="native", json_report=str(report), instance=_instance("tty"))
    assert run_demo(opts, out, err) == 0, err.getvalue()
    assert "\r" in out.getvalue()  # the progress line was drawn
    assert json.loads(report.read_text())["cycle_count"] == 300
