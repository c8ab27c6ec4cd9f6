"""config/systemd/mxrc@.service: `systemd-analyze verify` passes, and the directives
a real-time instance needs are there while the ones that break it are not.

`systemd-analyze verify` works without systemd as PID 1 (this container): it
loads the unit files and their dependencies from disk. It fails (exit 1) for a
command that is not executable, and only *warns* (exit 0, on stderr) for an
unknown key, so a clean verify here means exit 0 and no output at all. Two
runs: the shipped file byte for byte under ``--root`` (a tree holding the
system's unit directory, the unit and the installed ``mxrc`` script at the
unit's ExecStart path), and a copy whose ExecStart names the installed
``mxrc`` script on the host's own unit paths. A negative control shows both
failure modes are caught.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from helpers import mxrc_env

UNIT_NAME = "mxrc@.service"
INSTANCE_UNIT = "mxrc@cell-a.service"
EXEC_PATH = "/opt/mxrc/bin/mxrc"
EXEC_START = (
    f"{EXEC_PATH} supervise --config /etc/mxrc/%i --instance %i"
    " --checkpoint-dir /var/lib/mxrc/%i/checkpoints"
)

REQUIRED = {
    ("Service", "Type"): "notify",
    ("Service", "NotifyAccess"): "main",
    ("Service", "ExecStart"): EXEC_START,
    ("Service", "Restart"): "on-failure",
    ("Service", "RestartPreventExitStatus"): "2",
    ("Service", "KillMode"): "mixed",
    ("Service", "User"): "mxrc",
    ("Service", "LimitMEMLOCK"): "infinity",
    ("Service", "LimitRTPRIO"): "95",
    ("Service", "ProtectSystem"): "strict",
    ("Service", "ProtectHome"): "yes",
    ("Service", "PrivateTmp"): "yes",
    ("Service", "NoNewPrivileges"): "yes",
}
FORBIDDEN = (
    # the cgroup v2 cpu controller cannot be enabled next to RT tasks outside the root group
    "CPUQuota",
    "CPUQuotaPeriodSec",
    "CPUWeight",
    "StartupCPUWeight",
    "CPUShares",
    "StartupCPUShares",
    "RestrictRealtime",  # forbids SCHED_FIFO
    "MemoryDenyWriteExecute",  # breaks JIT and ffi trampolines
    "RemoveIPC",  # deletes the segment in /dev/shm at stop
    "DynamicUser",  # implies RemoveIPC
    "PrivateDevices",  # a private /dev/shm hides the segment
    "PrivateIPC",
    "ProtectClock",
    "CPUAffinity",  # inherited by the RT process; cores come from cpu_affinity.json
)
RT_CAPS = {"CAP_SYS_NICE", "CAP_IPC_LOCK"}


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, (
        "systemd-analyze not found: install the Debian package 'systemd' "
        "(.ci/run installs it); the unit file test needs it"
    )
    return path


def _unit_path(project_root: Path) -> Path:
    return project_root / "config" / "systemd" / UNIT_NAME


def _parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections → (key, value) in order; comments and blank lines dropped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: continuation lines are not used here"
        header = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
            continue
        assert current is not None, f"line {number}: {line!r} before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: {line!r} is not KEY=VALUE"
        sections[current].append((key.strip(), value.strip()))
    return sections


def _values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def _one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    values = _values(unit, section, key)
    assert len(values) == 1, f"[{section}] {key}= expected once, found {values}"
    return values[0]


def _seconds(value: str) -> float:
    """A systemd time span: '3s', '300', '1min 30s', '500ms'."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "": 1.0}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    for number, unit in parts:
        assert unit in units, f"unknown time unit {unit!r} in {value!r}"
        total += float(number) * units[unit]
    return total


def _installed_mxrc() -> Path:
    """The `mxrc` console script of the interpreter running the tests."""
    script = Path(sysconfig.get_path("scripts")) / "mxrc"
    if not script.is_file():
        found = shutil.which("mxrc")
        assert found, "the mxrc console script is not installed (pip install .)"
        script = Path(found)
    assert os.access(script, os.X_OK), f"{script} is not executable"
    return script


def _system_unit_dir() -> Path:
    for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if (Path(candidate) / "sysinit.target").exists():
            return Path(candidate)
    raise AssertionError(
        "no system unit directory with sysinit.target (/usr/lib/systemd/system): "
        "install the Debian package 'systemd'"
    )


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    env["SYSTEMD_LOG_COLOR"] = "0"
    return subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, (
        f"systemd-analyze verify exit {result.returncode}:\n{output}"
    )


def _make_root(root: Path, unit_text: str, exec_target: Path | None) -> Path:
    """A tree at ``root`` holding the system's unit directory, ``unit_text`` as
    /etc/systemd/system/mxrc@.service and ``exec_target`` copied to the ExecStart
    path (None: nothing there)."""
    system_dir = _system_unit_dir()
    shutil.copytree(system_dir, root / system_dir.relative_to("/"), symlinks=True)
    etc = root / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    (etc / UNIT_NAME).write_text(unit_text)
    if exec_target is not None:
        binary = root / EXEC_PATH.lstrip("/")
        binary.parent.mkdir(parents=True)
        shutil.copy2(exec_target, binary)
    return root


def _verify_in_root(
    root: Path, unit_text: str, exec_target: Path | None
) -> subprocess.CompletedProcess[str]:
    """verify ``unit_text`` in a :func:`_make_root` tree."""
    return _verify(f"--root={_make_root(root, unit_text, exec_target)}", INSTANCE_UNIT)


def _verify_on_host(directory: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """verify ``unit_text`` as DIR/mxrc@.service against the host's unit paths."""
    (directory / UNIT_NAME).write_text(unit_text)
    return _verify(str(directory / INSTANCE_UNIT))


def test_shipped_unit_verifies_unchanged(project_root: Path, tmp_path: Path) -> None:
    text = _unit_path(project_root).read_text()
    _assert_clean(_verify_in_root(tmp_path / "root", text, _installed_mxrc()))


def test_unit_verifies_with_the_installed_mxrc(project_root: Path, tmp_path: Path) -> None:
    text = _unit_path(project_root).read_text()
    assert text.count(EXEC_PATH) == 1
    local = text.replace(EXEC_PATH, str(_installed_mxrc()))
    _assert_clean(_verify_on_host(tmp_path, local))


def test_hardening_exposure_stays_low(project_root: Path, tmp_path: Path) -> None:
    """`systemd-analyze security` (offline) rates the unit 4.0 "OK"; a drop-in of the
    hardening would raise it above the threshold (4.5) and fail here."""
    root = _make_root(tmp_path / "root", _unit_path(project_root).read_text(), _installed_mxrc())
    result = subprocess.run(
        [
            _systemd_analyze(),
            "security",
            "--offline=true",
            "--threshold=45",
            f"--root={root}",
            "--no-pager",
            INSTANCE_UNIT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for " + INSTANCE_UNIT in result.stdout


def test_verify_catches_a_missing_command_and_an_unknown_key(
    project_root: Path, tmp_path: Path
) -> None:
    """Negative control: verify really checks here, in both modes."""
    text = _unit_path(project_root).read_text()

    missing = _verify_in_root(tmp_path / "root", text, None)
    assert missing.returncode != 0
    assert EXEC_PATH in missing.stderr and "not executable" in missing.stderr

    typo = text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes").replace(
        EXEC_PATH, str(_installed_mxrc())
    )
    (tmp_path / "host").mkdir()
    result = _verify_on_host(tmp_path / "host", typo)
    assert "Unknown key" in result.stderr and "NoNewPrivilege" in result.stderr
    with pytest.raises(AssertionError, match="NoNewPrivilege"):
        _assert_clean(result)


def test_required_directives(project_root: Path) -> None:
    unit = _parse_unit(_unit_path(project_root).read_text())
    for (section, key), expected in REQUIRED.items():
        assert _one(unit, section, key) == expected, f"[{section}] {key}="

    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        caps = {c for v in _values(unit, "Service", key) for c in v.split()}
        assert caps == RT_CAPS, f"{key}= {sorted(caps)}, expected {sorted(RT_CAPS)}"

    writable = {p for v in _values(unit, "Service", "ReadWritePaths") for p in v.split()}
    assert {"/var/lib/mxrc", "/var/log/mxrc", "/dev/shm"} <= writable

    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_forbidden_directives_are_absent(project_root: Path) -> None:
    text = _unit_path(project_root).read_text()
    unit = _parse_unit(text)
    present = {key for entries in unit.values() for key, _ in entries}
    assert not present & set(FORBIDDEN), sorted(present & set(FORBIDDEN))
    # each one is explained in the file's comments
    for key in ("CPUQuota", "RestrictRealtime", "MemoryDenyWriteExecute", "RemoveIPC"):
        assert re.search(rf"^#.*\b{key}=", text, re.M), f"no comment explains {key}="
    assert re.search(r"^#.*\bDynamicUser=", text, re.M)


def test_timing_fits_the_restart_budget(project_root: Path) -> None:
    unit = _parse_unit(_unit_path(project_root).read_text())
    watchdog = _seconds(_one(unit, "Service", "WatchdogSec"))
    restart = _seconds(_one(unit, "Service", "RestartSec"))
    abort = _seconds(_one(unit, "Service", "TimeoutAbortSec"))
    interval = _seconds(_one(unit, "Unit", "StartLimitIntervalSec"))
    burst = int(_one(unit, "Unit", "StartLimitBurst"))
    stop = _seconds(_one(unit, "Service", "TimeoutStopSec"))

    # a hung supervisor is replaced within upstream's 5 s restart budget (start-up aside)
    assert watchdog + restart <= 5.0
    assert watchdog + abort + restart <= 6.0
    # the supervisor pets every WatchdogSec/2; below 2 s a GC pause of a busy host could miss it
    assert watchdog >= 2.0
    # a crash loop must be able to reach the start limit: burst starts fit in the interval
    assert burst >= 2 and burst * restart < interval
    from mxrc._run import AGENT_START_TIMEOUT_S
    from mxrc.ha._supervisor import AGENT_STOP_TIMEOUT_S, RT_STOP_TIMEOUT_S, STARTUP_TIMEOUT_S

    # an orderly stop (RT, then the agent, each with its SIGTERM→SIGKILL grace, then the
    # segment) ends before systemd's SIGKILL
    assert stop > RT_STOP_TIMEOUT_S + AGENT_STOP_TIMEOUT_S
    # the supervisor's own start-up limits (agent's first beat, RT's first beat) come first

    start = _seconds(_one(unit, "Service", "TimeoutStartSec"))
    assert start > AGENT_START_TIMEOUT_S + STARTUP_TIMEOUT_S


def test_deployment_doc_matches_the_unit(project_root: Path) -> None:
    doc = (project_root / "docs" / "deployment.md").read_text()
    assert "config/systemd/mxrc@.service" in doc
    assert EXEC_PATH in doc
    troubleshooting = (project_root / "docs" / "troubleshooting.md").read_text()
    for topic in ("MANUAL_INTERVENTION", "SAFE_MODE", "UNHEALTHY", "EPERM", "memlock"):
        assert topic in troubleshooting, topic


# ------------------------------------------------------------ the ExecStart line, run


def _unit_environment(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in _values(unit, "Service", "Environment"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config_dir(project_root: Path, target: Path, port: int = 0) -> Path:
    """The shipped configuration, with the health server on ``port`` (0: any free one)."""
    shutil.copytree(project_root / "config", target, ignore=shutil.ignore_patterns("systemd"))
    policy = target / "failover_policy.json"
    data = json.loads(policy.read_text())
    data["health_server"]["port"] = port
    policy.write_text(json.dumps(data, indent=2))
    return target


def _get_health(port: int, timeout: float) -> tuple[int, dict[str, object]]:
    """GET /health until it answers 200 or ``timeout`` passes: (status code, body)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, object]] = (0, {})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            last = (exc.code, json.loads(exc.read() or b"{}"))
        except OSError as exc:
            last = (0, {"error": str(exc)})
        time.sleep(0.1)
    return last


class _NotifySocket:
    """A datagram socket on an abstract address standing in for systemd's."""

    def __init__(self) -> None:
        self.name = f"mxrc-test-notify-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)

    def receive(self, timeout: float) -> list[str] | None:
        """The lines of the next message (None: none within timeout)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        return data.decode().splitlines()

    def wait_for(self, line: str, timeout: float) -> tuple[float, list[list[str]]]:
        """Messages until one holds ``line``: (when it arrived, all messages seen)."""
        deadline = time.monotonic() + timeout
        seen: list[list[str]] = []
        while time.monotonic() < deadline:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if msg is None:
                break
            seen.append(msg)
            if line in msg:
                return time.monotonic(), seen
        raise AssertionError(f"no {line} within {timeout:g} s; received {seen}")

    def close(self) -> None:
        self.sock.close()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def test_execstart_runs_as_systemd_starts_it(
    project_root: Path, tmp_path: Path, instance: str
) -> None:
    """The unit's ExecStart and Environment with a real notify socket and WATCHDOG_USEC
    from WatchdogSec: READY=1 within TimeoutStartSec, /health answering 200, WATCHDOG=1
    more often than WatchdogSec, children without NOTIFY_SOCKET, and SIGTERM to the main
    process only (KillMode=mixed) ends everything with STOPPING=1 and exit 0 within
    TimeoutStopSec, leaving checkpoints in the state directory."""
    unit = _parse_unit(_unit_path(project_root).read_text())
    port = _free_port()
    config = _config_dir(project_root, tmp_path / "config", port)
    state = tmp_path / "state"  # stands for /var/lib/mxrc/INSTANCE (StateDirectory=mxrc/%i)
    argv = [
        a.replace("%i", instance)
        .replace("/etc/mxrc/" + instance, str(config))
        .replace("/var/lib/mxrc/" + instance, str(state))
        for a in shlex.split(_one(unit, "Service", "ExecStart"))
    ]
    assert _one(unit, "Service", "StateDirectory") == "mxrc/%i"
    assert argv[0] == EXEC_PATH
    argv[0] = str(_installed_mxrc())
    watchdog = _seconds(_one(unit, "Service", "WatchdogSec"))
    notify = _NotifySocket()
    env = mxrc_env()
    env.update(_unit_environment(unit))
    env["NOTIFY_SOCKET"] = "@" + notify.name
    env["WATCHDOG_USEC"] = str(int(watchdog * 1e6))
    log = tmp_path / "journal.txt"  # a file, not a pipe: the children share it and never block
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/", env=env)
    try:
        _run_unit_checks(unit, proc, notify, instance=instance, watchdog=watchdog, port=port)
        # checkpoints went to the state directory (at least the one written at shutdown)
        assert sorted((state / "checkpoints").glob("ckpt-*.json"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- output of {argv}:\n{log.read_text()}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def _run_unit_checks(
    unit: dict[str, list[tuple[str, str]]],
    proc: subprocess.Popen[bytes],
    notify: _NotifySocket,
    *,
    instance: str,
    watchdog: float,
    port: int,
) -> None:
    notify.wait_for("READY=1", _seconds(_one(unit, "Service", "TimeoutStartSec")))
    assert proc.poll() is None
    # the agent serves the health endpoints (config health_server.port)
    code, body = _get_health(port, 15)
    assert code == 200 and body.get("status") in ("HEALTHY", "DEGRADED"), (code, body)
    children = _children(proc.pid)
    assert len(children) >= 2, children  # the agent and the RT process
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert not any(e.startswith(b"NOTIFY_SOCKET=") for e in environ), child
        assert not any(e.startswith(b"WATCHDOG_USEC=") for e in environ), child
    # systemd kills the unit when WATCHDOG=1 is older than WatchdogSec
    previous, _ = notify.wait_for("WATCHDOG=1", watchdog)
    for _ in range(2):
        now, _ = notify.wait_for("WATCHDOG=1", watchdog)
        assert now - previous < watchdog
        previous = now
    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1", 10)
    code = proc.wait(_seconds(_one(unit, "Service", "TimeoutStopSec")))
    assert code == 0, f"exit code {code}"
    for child in children:
        assert _proc_state(child) in ("gone", "Z"), child
    assert not Path(f"/dev/shm/mxrc-{instance}").exists()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def test_configuration_error_exits_with_the_no_restart_status(
    project_root: Path, tmp_path: Path, instance: str
) -> None:
    """RestartPreventExitStatus=2: a broken configuration ends `mxrc supervise` with 2,
    naming the file, so systemd does not restart it in a loop."""
    unit = _parse_unit(_unit_path(project_root).read_text())
    config = _config_dir(project_root, tmp_path / "config")
    (config / "failover_policy.json").write_text('{"rt": {"max_restart_count": 0}}')
    result = subprocess.run(
        [str(_installed_mxrc()), "supervise", "--config", str(config), "--instance", instance],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=mxrc_env(),
        check=False,
    )
    assert str(result.returncode) == _one(unit, "Service", "RestartPreventExitStatus")
    assert "failover_policy.json" in result.stderr and "max_restart_count" in result.stderr
