"""config/systemd/mxrc@.service under a real systemd running as PID 1.

This machine has no systemd as PID 1, so the test boots one: ``/lib/systemd/systemd
--system`` as PID 1 of new PID, mount, UTS, IPC and cgroup namespaces (``unshare``),
driven with ``systemctl`` through ``nsenter`` into its mount and PID namespaces (its
private bus socket is in its own /run). What keeps it off the host:

- cgroups: the namespace's cgroup root is a fresh sub-tree of the test's own cgroup2
  group, mounted alone at /sys/fs/cgroup; systemd manages nothing else;
- its own /run, /tmp and /var (tmpfs: StateDirectory=, LogsDirectory=, the journal,
  PrivateTmp= stay in there), /proc/sys and /sys read-only, /dev/console a file;
- only stub targets on its unit path (``SYSTEMD_UNIT_PATH``): it boots
  ``mxrc-test.target`` and starts nothing but journald and the units a test starts
  (no getty, udev, networking, sysctl or tmpfiles units exist for it);
- the ``mxrc`` user exists only in its view of /etc/passwd (a bind mount);
- teardown: SIGKILL to its PID 1 ends every process of the namespace, then the cgroup
  sub-tree is removed.

Shared with the host: the network namespace (the agent's health port) and /dev/shm
(the segment, as in production).

The unit is a copy of the shipped file with every directive kept, except the changes
in :func:`_unit_copy` (ExecStart paths, a test priority, and ProtectHome= when the
interpreter is installed under /root or /home). Directives this machine cannot honour
are *not* dropped: systemd itself clamps LimitNOFILE=/LimitMEMLOCK=/LimitRTPRIO= to
the hard limits and ignores OOMScoreAdjust= when CAP_SYS_RESOURCE is outside the
capability bounding set (this VM); ``test_start_*`` asserts which case applies.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import require_tool, wait_for
from test_systemd_unit import (
    EXEC_PATH,
    _config_dir,
    _installed_mxrc,
    _one,
    _parse_unit,
    _seconds,
    _unit_path,
)

import mxrc

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

SYSTEMD = Path("/lib/systemd/systemd")
WORK = "/run/mxrc-work"
"""Where the test's work directory appears inside the namespace."""
BOOT_TARGET = "mxrc-test.target"
STUB_TARGETS = ("sysinit", "basic", "sockets", "network-online", "time-sync", "shutdown")
"""Targets the unit's (default) dependencies name: empty here, so nothing else starts."""
HOME_ROOTS = ("/root", "/home", "/run/user")
"""What ProtectHome= hides."""
CAP_SYS_RESOURCE = 24
TEST_RT_PRIORITY = "40"  # the tests' FIFO priority (<= 50), as helpers.mxrc_env

# Runs as PID 1 of the new namespaces, then becomes systemd. $1: the work directory.
SETUP = rf"""
set -eu
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
mount --bind /sys /sys && mount -o remount,bind,ro /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir {WORK} && mount --bind "$1" {WORK}
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir /var/lib /var/log /var/cache && mkdir -m 1777 /var/tmp
mount --bind {WORK}/console /dev/console
mount --bind {WORK}/passwd /etc/passwd
mount --bind {WORK}/group /etc/group
exec env -i container=mxrc-test SYSTEMD_UNIT_PATH={WORK}/units \
  PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  {SYSTEMD} --system --unit={BOOT_TARGET} --log-target=journal --show-status=no
"""


# ------------------------------------------------------------------ the namespace


def _cgroup2_dir() -> Path:
    """This process's cgroup2 directory (hybrid hosts: under /sys/fs/cgroup/unified)."""
    mount: Path | None = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype == "cgroup2" and fields[3] == "/":
            mount = Path(fields[4])
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted (needs /sys/fs/cgroup or .../unified)")
    own = next(
        line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line[:3] == "0::"
    )
    return mount / own.lstrip("/")


def _free_id(taken: set[int]) -> int:
    return next(i for i in range(60500, 61000) if i not in taken)


def _write_identity(work: Path) -> int:
    """passwd/group copies with an ``mxrc`` user (the unit's User=/Group=): its uid."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    try:
        uid = pwd.getpwnam("mxrc").pw_uid
    except KeyError:
        uid = _free_id({p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()})
        passwd += f"mxrc:x:{uid}:{uid}:mxrc:/nonexistent:/usr/sbin/nologin\n"
    if "\nmxrc:" not in "\n" + group:
        group += f"mxrc:x:{uid}:\n"
    (work / "passwd").write_text(passwd)
    (work / "group").write_text(group)
    return uid


def _write_stub_units(units: Path) -> None:
    units.mkdir()
    for name in STUB_TARGETS:
        (units / f"{name}.target").write_text(
            f"[Unit]\nDescription=stub {name}\nDefaultDependencies=no\n"
        )
    # the unit logs to the journal, as in production
    (units / BOOT_TARGET).write_text(
        "[Unit]\nDescription=mxrc test boot\nDefaultDependencies=no\n"
        "Wants=systemd-journald.socket\n"
    )
    for name in ("systemd-journald.socket", "systemd-journald.service"):
        shutil.copy(Path("/lib/systemd/system") / name, units / name)


class SystemdPid1:
    """systemd as PID 1 of new namespaces; ``systemctl``/``journalctl`` into it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        work.chmod(0o755)  # pytest's are 0700: user mxrc reads its configuration in here
        self.console = work / "console"
        self.console.touch()
        self.uid = _write_identity(work)
        _write_stub_units(work / "units")
        self.outer = _cgroup2_dir()
        self.cgroup = self.outer / f"mxrc-pid1-{uuid.uuid4().hex[:8]}"
        try:
            self.cgroup.mkdir()
        except OSError as exc:  # e.g. a container with a read-only /sys/fs/cgroup
            pytest.skip(f"cannot create a cgroup for systemd under {self.outer}: {exc}")
        unshare = ["unshare", "--cgroup", "--pid", "--fork", "--mount", "--uts", "--ipc"]
        unshare += ["--propagation", "private", "--mount-proc"]
        # the wrapper enters the sub-tree first: it becomes the cgroup namespace's root
        command = f'echo $$ > "$0" && exec {" ".join(unshare)} sh -c "$1" sh "$2"'
        self.proc = subprocess.Popen(
            ["sh", "-c", command, str(self.cgroup / "cgroup.procs"), SETUP, str(work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = 0
        try:
            self.pid = self._wait_for_pid1(15)
            # unshare itself leaves the sub-tree, which then holds systemd's groups only
            (self.outer / "cgroup.procs").write_text(str(self.proc.pid))
            self._wait_running(20)
        except BaseException:
            self.close()
            raise

    def _wait_for_pid1(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read() if self.proc.stderr else ""
                if "Operation not permitted" in error:  # no CAP_SYS_ADMIN (a container)
                    pytest.skip(f"cannot create namespaces for systemd here: {error.strip()}")
                raise AssertionError(f"the namespace setup failed: {error}")
            for pid in self._procs(self.cgroup / "init.scope"):
                return pid
            time.sleep(0.05)
        raise AssertionError(f"systemd did not start in {timeout:g} s: {self.console.read_text()}")

    def _wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.systemctl("is-system-running", check=False).stdout.strip()
            if state == "running":
                return
            time.sleep(0.1)
        raise AssertionError(f"systemd is {state!r} after {timeout:g} s, not 'running'")

    @staticmethod
    def _procs(cgroup: Path) -> list[int]:
        try:
            return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``argv`` in systemd's mount and PID namespaces."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid), "--mount", "--pid", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
        )
        if check:
            assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def start(self, unit: str) -> None:
        """`systemctl start` (blocks until the unit is active); the journal if it failed."""
        result = self.systemctl("start", unit, check=False)
        assert result.returncode == 0, f"{result.stderr}{self.journal(unit)}"

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        """The unit's journal: its output and systemd's messages about it."""
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def wait_journal(self, unit: str, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            journal = self.journal(unit)
            if text in journal or time.monotonic() > deadline:
                assert text in journal, f"no {text!r} in the journal of {unit}:\n{journal}"
                return journal
            time.sleep(0.1)

    def unit_pids(self, unit: str) -> list[int]:
        """Host PIDs of the unit's processes (its cgroup)."""
        slice_dir = self.cgroup / "system.slice" / "system-mxrc.slice"
        return self._procs(slice_dir / unit)

    def main_pid(self, unit: str) -> int:
        """The unit's MainPID as a host PID (0: none)."""
        ns_pid = self.show(unit, "MainPID")["MainPID"]
        for pid in self.unit_pids(unit):
            if _status(pid).get("NSpid", "").split()[-1:] == [ns_pid]:
                return pid
        return 0

    def _all_procs(self) -> list[int]:
        groups = [self.cgroup, *(d for d in self.cgroup.rglob("*") if d.is_dir())]
        return [pid for group in groups for pid in self._procs(group)]

    def close(self) -> None:
        """SIGKILL to PID 1 ends the namespace (and to anything else left in the
        sub-tree, e.g. a systemd that never became PID 1); then the sub-tree goes."""
        for pid in [self.pid] if self.pid else self._all_procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        assert wait_for(lambda: not self._all_procs(), 10, 0.05), self._all_procs()
        for directory in sorted(self.cgroup.rglob("*"), key=lambda p: -len(p.parts)):
            if directory.is_dir():
                directory.rmdir()
        self.cgroup.rmdir()


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _alive(pid: int) -> bool:
    state = _status(pid).get("State", "Z")
    return not state.startswith(("Z", "X"))


# ------------------------------------------------------------------ the unit copy


def _protected_install_paths() -> list[str]:
    """Directories the service must read (interpreter, mxrc) that ProtectHome= hides."""
    candidates = {sys.base_prefix, sys.prefix, str(Path(mxrc.__file__).resolve().parents[1])}
    return sorted(p for p in candidates if any(p == r or p.startswith(r + "/") for r in HOME_ROOTS))


def _unit_copy(project_root: Path) -> tuple[str, dict[str, str]]:
    """The shipped unit for this machine: (text, {changed line: why})."""
    text = _unit_path(project_root).read_text()
    changes = {
        f"ExecStart={EXEC_PATH} supervise --config /etc/mxrc/%i": (
            f"ExecStart={_installed_mxrc()} supervise --config {WORK}/%i/config",
            "the installed mxrc script; each test instance's configuration",
        ),
        "Environment=PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1": (
            "Environment=PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1"
            f" MXRC_RT_PRIORITY={TEST_RT_PRIORITY}",
            "tests run SCHED_FIFO at priority <= 50",
        ),
    }
    hidden = _protected_install_paths()
    if hidden:
        # ProtectHome=yes would hide the interpreter: the start fails with 203/EXEC
        # (test_protect_home_yes_hides_an_interpreter_under_home); tmpfs keeps the rest hidden
        changes["ProtectHome=yes"] = (
            "ProtectHome=tmpfs\nBindReadOnlyPaths=" + " ".join(hidden),
            f"the interpreter/mxrc are installed under {', '.join(hidden)}",
        )
    why: dict[str, str] = {}
    for old, (new, reason) in changes.items():
        assert text.count(old) == 1, f"{old!r} is not in the shipped unit exactly once"
        text = text.replace(old, new)
        why[old] = reason
    return text, why


@pytest.fixture(scope="module")
def systemd(
    project_root_module: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SystemdPid1]:
    require_tool("unshare", "util-linux")
    require_tool("nsenter", "util-linux")
    require_tool("systemctl", "systemd")
    if not SYSTEMD.is_file():
        require_tool("systemd", "systemd")
    work = tmp_path_factory.mktemp("pid1")
    manager = SystemdPid1(work)
    text, _ = _unit_copy(project_root_module)
    (work / "units" / "mxrc@.service").write_text(text)
    manager.systemctl("daemon-reload")
    try:
        yield manager
    finally:
        manager.close()


@pytest.fixture(scope="module")
def project_root_module() -> Path:
    return Path(__file__).parent.parent


@pytest.fixture
def unit(systemd: SystemdPid1, project_root: Path, instance: str) -> Iterator[str]:
    """``mxrc@INSTANCE.service`` with the shipped configuration (health port: any)."""
    _config_dir(project_root, systemd.work / instance / "config")
    name = f"mxrc@{instance}.service"
    try:
        yield name
    finally:
        systemd.systemctl("stop", name, check=False)
        systemd.systemctl("reset-failed", name, check=False)
        Path(f"/dev/shm/mxrc.ha-{instance}.json").unlink(missing_ok=True)


def _unit_seconds(project_root: Path, section: str, key: str) -> float:
    return _seconds(_one(_parse_unit(_unit_path(project_root).read_text()), section, key))


def _limits(pid: int) -> dict[str, str]:
    """/proc/PID/limits: name → soft limit."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:].split()[0] for line in lines}


def _hard_limit(name: str) -> int | None:
    import resource

    value = resource.getrlimit(getattr(resource, name))[1]
    return None if value == resource.RLIM_INFINITY else value


def _has_cap(cap: int) -> bool:
    return bool(int(_status(os.getpid())["CapBnd"], 16) >> cap & 1)


# ------------------------------------------------------------------ tests


def test_start_returns_after_ready_with_the_processes_running(
    systemd: SystemdPid1, unit: str, instance: str, project_root: Path
) -> None:
    """Type=notify: `systemctl start` blocks until READY=1 (the STATUS= sent with it is
    there when it returns; systemd saw the supervisor start-up take time), then the unit is
    active with `mxrc supervise` as main process, the agent and the RT process as its
    children, as user mxrc with only the two capabilities, no notify variables in the
    children, and the limits applied."""
    systemd.start(unit)
    props = systemd.show(
        unit,
        "ActiveState",
        "SubState",
        "StatusText",
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
    )
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert props["StatusText"].startswith("NORMAL") and "beats" in props["StatusText"], props
    startup = (
        int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])
    ) / 1e6
    assert startup > 0.2, f"active {startup:.3f} s after exec: READY=1 was not waited for"

    main = systemd.main_pid(unit)
    assert main, systemd.unit_pids(unit)
    cmdline = Path(f"/proc/{main}/cmdline").read_bytes().split(b"\0")
    assert b"supervise" in cmdline and cmdline[1].endswith(b"/mxrc"), cmdline
    children = [p for p in systemd.unit_pids(unit) if p != main]
    assert len(children) == 2, children
    kinds = set()
    for pid in [main, *children]:
        status = _status(pid)
        assert status["Uid"].split()[0] == str(systemd.uid), status["Uid"]
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
        assert int(status["CapAmb"], 16) == (1 << 23) | (1 << 14)  # SYS_NICE, IPC_LOCK
        if pid != main:
            assert status["PPid"] == str(main)
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            kinds.add("agent" if b"agent" in argv else "rt" if b"_rtchild" in argv else "?")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not [e for e in environ if e.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]
    assert kinds == {"agent", "rt"}, kinds
    segment = Path(f"/dev/shm/mxrc-{instance}")
    assert segment.stat().st_uid == systemd.uid and segment.stat().st_mode & 0o777 == 0o660

    # the limits: exact, unless this machine cannot raise them (no CAP_SYS_RESOURCE in
    # the bounding set); systemd then clamps them to the hard limit and ignores
    # OOMScoreAdjust= ("assuming containerized execution")
    limits = _limits(main)
    capable = _has_cap(CAP_SYS_RESOURCE)
    for name, resource_name, wanted in (
        ("Max open files", "RLIMIT_NOFILE", 65536),
        ("Max realtime priority", "RLIMIT_RTPRIO", 95),
        ("Max locked memory", "RLIMIT_MEMLOCK", None),
    ):
        hard = _hard_limit(resource_name)
        if capable or hard is None or (wanted is not None and hard >= wanted):
            expected = "unlimited" if wanted is None else str(wanted)
        else:
            expected = str(hard)
        assert limits[name] == expected, (name, limits[name], expected)
    own = Path("/proc/self/oom_score_adj").read_text().strip()
    expected_oom = "-900" if capable else own
    assert Path(f"/proc/{main}/oom_score_adj").read_text().strip() == expected_oom


def test_stop_is_orderly(systemd: SystemdPid1, unit: str, instance: str) -> None:
    """`systemctl stop`: SIGTERM to the supervisor only (KillMode=mixed); it stops the RT
    process, then the agent, removes the segment, writes its last checkpoint to the state
    directory, and exits 0."""
    systemd.start(unit)
    pids = systemd.unit_pids(unit)
    assert len(pids) == 3, pids
    systemd.systemctl("stop", unit)
    props = systemd.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert props["ActiveState"] == "inactive" and props["Result"] == "success", props
    assert not [p for p in pids if _alive(p)]
    assert not Path(f"/dev/shm/mxrc-{instance}").exists()
    journal = systemd.wait_journal(unit, "segment removed", 5)
    assert journal.index("RT process stopped") < journal.index("agent stopped"), journal
    # KillMode=control-group would SIGTERM the agent too: it would end while the RT
    # process still runs, which the RT process reports
    assert "exited during the run" not in journal, journal
    assert "SIGKILL" not in journal and "Killing process" not in journal, journal
    checkpoints = Path(f"/proc/{systemd.pid}/root/var/lib/mxrc/{instance}/checkpoints")
    assert sorted(checkpoints.glob("ckpt-*.json")), "no checkpoint in the StateDirectory"
    assert not Path("/var/lib/mxrc", instance).exists(), "the state went to the host's /var"


def test_a_stopped_supervisor_is_aborted_by_the_watchdog_and_restarted(
    systemd: SystemdPid1, unit: str, project_root: Path
) -> None:
    """SIGSTOP: no more WATCHDOG=1, so after WatchdogSec systemd aborts it (SIGABRT plus
    SIGCONT: the faulthandler traceback is in the journal), its children go, and
    RestartSec later a new supervisor becomes active."""
    systemd.start(unit)
    old = systemd.main_pid(unit)
    old_children = [p for p in systemd.unit_pids(unit) if p != old]
    watchdog = _unit_seconds(project_root, "Service", "WatchdogSec")
    budget = (
        watchdog
        + _unit_seconds(project_root, "Service", "TimeoutAbortSec")
        + _unit_seconds(project_root, "Service", "RestartSec")
        + 10  # the new supervisor's start-up
    )
    results: set[str] = set()
    start = time.monotonic()
    os.kill(old, signal.SIGSTOP)
    try:

        def replaced() -> bool:
            props = systemd.show(unit, "MainPID", "ActiveState", "Result", "NRestarts")
            results.add(props["Result"])
            return props["ActiveState"] == "active" and props["NRestarts"] == "1"

        assert wait_for(replaced, budget, 0.05), systemd.show(unit, "ActiveState", "NRestarts")
    finally:
        if _alive(old):
            os.kill(old, signal.SIGCONT)
    elapsed = time.monotonic() - start
    assert elapsed > watchdog / 2, f"restarted {elapsed:.1f} s after SIGSTOP: not the watchdog"
    assert "watchdog" in results, results
    new = systemd.main_pid(unit)
    assert new and new != old
    assert not _alive(old) and not [p for p in old_children if _alive(p)]
    assert len(systemd.unit_pids(unit)) == 3
    journal = systemd.wait_journal(unit, "Watchdog timeout", 5)
    assert "Fatal Python error: Aborted" in journal, journal


def test_a_crash_loop_ends_in_failed_at_the_start_limit(
    systemd: SystemdPid1, unit: str, project_root: Path
) -> None:
    """A supervisor SIGKILLed on every start is restarted (Restart=on-failure) until
    StartLimitBurst starts; then the unit is `failed` and a manual start is refused until
    `systemctl reset-failed`."""
    burst = int(_one(_parse_unit(_unit_path(project_root).read_text()), "Unit", "StartLimitBurst"))
    restart = _unit_seconds(project_root, "Service", "RestartSec")
    systemd.start(unit)
    killed: list[int] = []
    deadline = time.monotonic() + burst * (restart + 5)
    while systemd.show(unit, "ActiveState")["ActiveState"] != "failed":
        assert time.monotonic() < deadline, f"not failed after {len(killed)} kills"
        pid = systemd.main_pid(unit)
        if pid and pid not in killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.05)
    assert len(killed) == burst, f"{len(killed)} starts before failed, expected {burst}"
    time.sleep(restart + 0.5)  # no restart is pending
    assert systemd.show(unit, "ActiveState")["ActiveState"] == "failed"
    assert systemd.unit_pids(unit) == []
    systemd.wait_journal(unit, "Start request repeated too quickly", 5)

    refused = systemd.systemctl("start", unit, check=False)
    assert refused.returncode != 0 and systemd.unit_pids(unit) == [], refused.stderr
    systemd.systemctl("reset-failed", unit)
    systemd.start(unit)
    assert systemd.show(unit, "ActiveState")["ActiveState"] == "active"


def test_a_configuration_error_is_not_restarted(
    systemd: SystemdPid1, unit: str, instance: str, project_root: Path
) -> None:
    """Exit 2 (bad configuration) is in RestartPreventExitStatus=: the start fails and the
    unit stays failed, with the supervisor's error in the journal."""
    policy = systemd.work / instance / "config" / "failover_policy.json"
    policy.write_text('{"rt": {"max_restart_count": 0}}')
    result = systemd.systemctl("start", unit, check=False)
    assert result.returncode != 0
    time.sleep(_unit_seconds(project_root, "Service", "RestartSec") * 2)
    props = systemd.show(unit, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert props == {
        "ActiveState": "failed",
        "Result": "exit-code",
        "ExecMainStatus": "2",
        "NRestarts": "0",
    }, props
    journal = systemd.wait_journal(unit, "max_restart_count", 5)
    assert "failover_policy.json" in journal


def test_protect_home_yes_hides_an_interpreter_under_home(
    systemd: SystemdPid1, project_root: Path, instance: str
) -> None:
    """Why the copy changes ProtectHome=: with the shipped ProtectHome=yes an interpreter
    installed under /root or /home cannot be executed (203/EXEC)."""
    hidden = _protected_install_paths()
    if not hidden:
        pytest.skip("the interpreter and mxrc are not under /root or /home: ProtectHome=yes kept")
    text, why = _unit_copy(project_root)
    text = text.replace(
        "ProtectHome=tmpfs\nBindReadOnlyPaths=" + " ".join(hidden), "ProtectHome=yes"
    )
    assert "ProtectHome=yes" in why and text.count("ProtectHome=yes") == 1
    template = systemd.work / "units" / "mxrc-home@.service"
    template.write_text(text)
    name = f"mxrc-home@{instance}.service"
    _config_dir(project_root, systemd.work / instance / "config")
    try:
        systemd.systemctl("daemon-reload")
        assert systemd.systemctl("start", name, check=False).returncode != 0
        props = systemd.show(name, "ExecMainStatus", "Result")
        assert props == {"ExecMainStatus": "203", "Result": "exit-code"}, props
    finally:
        systemd.systemctl("stop", name, check=False)
        systemd.systemctl("reset-failed", name, check=False)
        template.unlink()
        systemd.systemctl("daemon-reload")
