"""mxrc.testing.SupervisedProcess: `mxrc supervise` in a child process for integration tests.

(The supervisor's own behaviour is tested in test_supervisor.py, through this class.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from supervised_helpers import NotifyListener, write_config

from mxrc.testing import SupervisedProcess

pytestmark = pytest.mark.privileged


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's environment as the default child environment: FIFO priority 40
    (tests stay <= 50), no other MXRC_ settings."""
    for name in [k for k in os.environ if k.startswith("MXRC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MXRC_RT_PRIORITY", "40")


def test_lines_entry_point_rt_pid_and_an_orderly_stop(
    tmp_path: Path, instance: str, quiet_env: None
) -> None:
    cfg = write_config(tmp_path / "cfg")
    entry = "mxrc.demo:supervised_entrypoint"
    with SupervisedProcess(cfg, instance=instance, entrypoint=entry, args=["--no-agent"]) as sup:
        m = sup.wait_line(r"RT process started \(pid (\d+), entry point (\S+)\)")
        assert m.group(2) == entry
        assert sup.rt_pid() == int(m.group(1))
        sup.wait_line(r"ready: RT process")
        assert sup.returncode is None
        assert os.path.exists(f"/dev/shm/mxrc-{instance}")
    assert sup.returncode == 0  # SIGTERM: an orderly shutdown
    assert sup.stop() == 0  # a second stop only reports
    # every line up to the end is collected: the shutdown, RT process first, then the segment
    stopped = next(i for i, line in enumerate(sup.lines) if "RT process stopped" in line)
    assert "segment removed" in sup.lines[-1] and stopped < len(sup.lines) - 1, sup.lines
    assert not os.path.exists(f"/dev/shm/mxrc-{instance}")


def test_a_missing_line_names_the_pattern_and_shows_the_last_lines(
    tmp_path: Path, instance: str, quiet_env: None
) -> None:
    with SupervisedProcess(write_config(tmp_path / "cfg"), instance=instance) as sup:
        sup.wait_line(r"ready: RT process")
        with pytest.raises(AssertionError) as err:
            sup.wait_line(r"never said", timeout=0.3)
    text = str(err.value)
    assert "no line matching 'never said' within 0.3 s" in text
    assert "ready: RT process" in text  # the lines so far


def test_a_supervisor_that_exits_ends_the_wait_at_once(
    tmp_path: Path, instance: str, quiet_env: None
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "failover_policy.json").write_text("{not json")
    sup = SupervisedProcess(cfg, instance=instance)
    try:
        with pytest.raises(AssertionError) as err:
            sup.wait_line(r"ready: RT process", timeout=60)
    finally:
        code = sup.stop()
    assert code == 2
    text = str(err.value)
    assert "(it exited with 2)" in text
    assert "failover_policy.json" in text and "malformed JSON" in text


def test_the_default_environment_does_not_notify_this_process_s_service_manager(
    tmp_path: Path, instance: str, quiet_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path / "cfg")
    listener = NotifyListener()
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        with SupervisedProcess(cfg, instance=instance, args=["--no-agent"]) as sup:
            sup.wait_line(r"ready: RT process")
        assert listener.drain() == []
        # an explicit environment is used as given: the same supervisor notifies
        env = dict(os.environ)
        with SupervisedProcess(cfg, instance=instance, args=["--no-agent"], env=env) as sup:
            sup.wait_line(r"ready: RT process")
            assert listener.wait_for(lambda m: m.startswith("READY=1"))
    finally:
        listener.close()


def test_the_documented_crash_test_runs_as_written(
    tmp_path: Path, instance: str, quiet_env: None
) -> None:
    """docs/supervisor.md's example, with the demo as the application."""
    from mxrc.ha import SupervisorStateFile

    cfg = write_config(tmp_path / "cfg")
    entry = "mxrc.demo:supervised_entrypoint"
    args = ["--checkpoint-dir", str(tmp_path / "ckpt"), "--no-agent"]
    with SupervisedProcess(cfg, instance=instance, entrypoint=entry, args=args) as sup:
        sup.wait_line(r"ready: RT process")
        first = sup.rt_pid()
        start = len(sup.lines)
        os.kill(first, signal.SIGKILL)
        sup.wait_line(r"HA state RECOVERY_IN_PROGRESS -> NORMAL", start=start)
        assert sup.rt_pid(start=start) != first
        assert SupervisorStateFile(instance).restart_count() == 1
    assert sup.returncode == 0
