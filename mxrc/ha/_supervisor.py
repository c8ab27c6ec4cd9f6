"""``mxrc supervise``: the instance's main process and its only restarter.

The supervisor owns the segment (:meth:`~mxrc.bus.Segment.create_from_config`),
spawns the agent (``mxrc agent``) and the RT process (``python -m
mxrc.ha._rtchild`` running the application's entry point ``module:function``),
both with a parent-death signal and without systemd's notify variables. It
restarts a dead RT process (``waitpid``) or a hung one (its stats heartbeat did
not move for ``failure_threshold × health_check_interval_ms``, e.g. SIGSTOP) —
SIGKILL, then a restart after ``restart_delay_ms`` — at most
``max_restart_count`` times within ``restart_window_sec``
(:class:`~mxrc.ha._policy.RestartPolicy`); beyond that it stops restarting,
logs CRITICAL and enters MANUAL_INTERVENTION. The agent is restarted the same
way (its own policy) when it dies or hangs (its heartbeat in the segment did
not move for the same time). HA state: SAFE_MODE while a cycle thread of the
RT process is in SAFE_MODE; else DEGRADED while the windowed deadline-miss
rate is above ``perf_monitor.json`` ``rt.thresholds.max_deadline_miss_rate``
(the health server's rule, :class:`~mxrc.ha._health.MissRateTracker`) or the
agent is down; else NORMAL. SIGTERM/SIGINT stop the RT process first, then the
agent, then remove the segment. A bad bearer token file is refused (exit 2)
before the segment is created, and so is an agent that exits with 2 (a
configuration error) at start-up. With systemd (``NOTIFY_SOCKET``):
``READY=1`` once the first RT process beats (its state restored),
``WATCHDOG=1`` at half ``WATCHDOG_USEC`` while within policy, ``STATUS=``
lines, ``STOPPING=1``.

Entry point contract: ``function(segment, config)`` or ``function(segment,
config, recovery)`` runs the RT side until SIGTERM (delivered as
KeyboardInterrupt): build an executive on the attached ``segment``, restore
state (:class:`mxrc.ha.Recovery`), run. The default,
``mxrc.demo:supervised_entrypoint``, runs the demo axis with its state in the
data store, so a restarted process continues it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mxrc.ha._policy import RestartPolicy
from mxrc.ha._sdnotify import SdNotifier, child_environment
from mxrc.ha._state import HaState, HaStateMachine
from mxrc.rt._placement import pid_alive

if TYPE_CHECKING:
    from mxrc.bus import Segment
    from mxrc.config import MxrcConfig
    from mxrc.ha._health import CheckpointInfo

__all__ = [
    "DEFAULT_ENTRYPOINT",
    "STATE_DIR",
    "Supervisor",
    "SupervisorStateFile",
    "SupervisorStatus",
    "resolve_entrypoint",
    "run_supervise",
]

_log = logging.getLogger("mxrc.ha.supervisor")

DEFAULT_ENTRYPOINT = "mxrc.demo:supervised_entrypoint"
"""The demo axis with its state in the data store (:mod:`mxrc.demo._supervised`)."""
STARTUP_TIMEOUT_S = 30.0
"""How long a new RT process may take to claim a stats slot and beat for the first time."""
STATE_DIR = "/dev/shm"
"""Where the supervisor publishes its state file ``mxrc.ha-<instance>.json``."""
RT_STOP_TIMEOUT_S = 5.0
AGENT_STOP_TIMEOUT_S = 5.0
AGENT_STARTUP_GRACE_S = 1.0
"""After a new agent's first beat, how long its heartbeat may stall before the hang timeout
starts to count (it is still importing and starting its health server)."""
EXIT_START_FAILED = 1
EXIT_CONFIG = 2


def resolve_entrypoint(spec: str) -> Callable[..., None]:
    """Import ``module:function`` (called with ``(segment, config)`` or ``(segment, config,
    recovery)``); ValueError naming the spec and what was wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entry point {spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"entry point {spec!r}: cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"entry point {spec!r}: {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ValueError(f"entry point {spec!r}: {attr!r} is not callable")
    fn: Callable[..., None] = obj
    return fn


def check_entrypoint(spec: str) -> None:
    """Cheap check in the supervisor (no import of the application): the form and that
    the module exists. ValueError otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entry point {spec!r} is not of the form module:function")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise ValueError(
            f"entry point {spec!r}: cannot find module {module_name!r}: {exc}"
        ) from exc
    if found is None:
        raise ValueError(
            f"entry point {spec!r}: no module {module_name!r} on the Python path "
            f"(PYTHONPATH or an installed package)"
        )


# ------------------------------------------------------------------ supervisor


@dataclass(frozen=True)
class SupervisorStatus:
    """What health reporting reads from the supervisor (the provider interface)."""

    ha_state: HaState
    restart_count: int
    restarts_in_window: int
    gave_up: bool
    rt_pid: int | None
    agent_pid: int | None
    generation: int
    last_failure: str | None
    supervisor_pid: int = 0
    checkpoint_dir: str | None = None
    ha_reason: str | None = None
    """Why the node is in ``ha_state`` (the last transition's reason, or the current
    DEGRADED causes)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``ha_state`` as its name)."""
        d = asdict(self)
        d["ha_state"] = self.ha_state.value
        return d


def state_file_path(instance: str, directory: str | os.PathLike[str] = STATE_DIR) -> Path:
    """``<directory>/mxrc.ha-<instance>.json`` (not ``mxrc-*``: not taken for a segment)."""
    return Path(directory) / f"mxrc.ha-{instance}.json"


class SupervisorStateFile:
    """The health server's view of a supervisor in another process (a ``HaProvider``).

    Reads the state file the supervisor rewrites (atomically) on every change.
    No file, an unreadable one, or one left by a dead supervisor: restart count
    0, HA state None, no checkpoint. ``last_checkpoint`` is the newest valid
    checkpoint in the directory the supervisor writes them to (``--checkpoint-dir``).
    """

    def __init__(self, instance: str, directory: str | os.PathLike[str] = STATE_DIR) -> None:
        self.path = state_file_path(instance, directory)

    def read(self) -> dict[str, Any] | None:
        """The supervisor's last published status, None when absent, corrupt or stale."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        pid = data.get("supervisor_pid")
        if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid):
            return None
        return data

    def restart_count(self) -> int:
        data = self.read()
        value = 0 if data is None else data.get("restart_count", 0)
        return value if isinstance(value, int) and value >= 0 else 0

    def ha_state(self) -> str | None:
        data = self.read()
        value = None if data is None else data.get("ha_state")
        return value if isinstance(value, str) and value in HaState.__members__ else None

    def last_checkpoint(self) -> CheckpointInfo | None:
        data = self.read()
        directory = None if data is None else data.get("checkpoint_dir")
        return _newest_checkpoint(Path(directory) if isinstance(directory, str) else None)


_stores: dict[Path, Any] = {}  # one CheckpointStore per directory: it caches the newest file


def _newest_checkpoint(directory: Path | None) -> CheckpointInfo | None:
    if directory is None:
        return None
    from mxrc.errors import MxrcError
    from mxrc.ha._checkpoint import CheckpointStore

    store = _stores.get(directory)
    if store is None:
        try:
            store = _stores.setdefault(directory, CheckpointStore(directory))
        except (OSError, ValueError, MxrcError):
            return None
    try:
        info: CheckpointInfo | None = store.last_checkpoint()
    except (OSError, MxrcError):
        return None
    return info


class Supervisor:
    """Runs one instance: segment, agent, RT process; restarts per policy.

    ``entrypoint``: ``module:function`` of the RT process (default: the
    config's ``failover_policy.json`` ``rt.entrypoint``). ``agent``: spawn
    ``mxrc agent``. ``notifier``: systemd notify (default: from the
    environment, removing its variables). ``err``: where progress lines go.
    """

    def __init__(
        self,
        config: MxrcConfig,
        *,
        instance: str | None = None,
        entrypoint: str | None = None,
        agent: bool = True,
        http: bool = True,
        notifier: SdNotifier | None = None,
        err: TextIO | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        state_dir: str | os.PathLike[str] = STATE_DIR,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if entrypoint is None:
            entrypoint = config.failover_policy.rt.entrypoint
        check_entrypoint(entrypoint)
        self.config = config
        self.instance = instance or config.instance
        self.entrypoint = entrypoint
        self.agent_enabled = agent
        self.http = http
        """The agent serves /health* and /metrics (port: config / MXRC_HTTP_PORT)."""
        self.notifier = notifier if notifier is not None else SdNotifier()
        self.err = err if err is not None else sys.stderr
        self.startup_timeout_s = startup_timeout_s
        role = config.failover_policy.rt
        self.policy = RestartPolicy.from_config(role)
        self.agent_policy = RestartPolicy.from_config(role)
        """The agent's restarts (counted apart from the RT process's)."""
        self.hang_timeout_s = role.failure_threshold * role.health_check_interval_ms / 1000.0
        """A heartbeat (RT process or agent) that did not move for this long: hung."""
        from mxrc.ha._health import HealthThresholds, MissRateTracker

        self.miss_rate = MissRateTracker(HealthThresholds.from_config(config))
        """The health server's windowed miss-rate rule, fed from the RT process's stats."""
        self.poll_s = min(0.05, role.health_check_interval_ms / 4000.0)
        self.state_path = state_file_path(self.instance, state_dir)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self._writer: Any = None
        self.ha = HaStateMachine(listener=self._on_transition)
        self._stop = threading.Event()
        self._segment: Segment | None = None
        self._agent: Any = None
        self._rt: subprocess.Popen[bytes] | None = None
        self._rt_started = 0.0
        self._rt_beat: int | None = None
        self._rt_beat_seen = 0.0
        self._rt_up = False
        self._restart_at: float | None = None
        self._agent_restart_at: float | None = None
        self._agent_up_at = 0.0
        self._agent_beat: int | None = None
        self._agent_beat_seen = 0.0
        self._agent_down: str | None = None
        """Why the agent is down (dead, hung, restarting), None while it beats."""
        self._rt_safe: list[str] = []
        self._rt_rates: dict[str, float | None] = {}
        """Windowed miss rate of each cycle thread of the RT process (None: no verdict)."""
        self._misses: dict[str, float] = {}
        """Cycle threads of the RT process whose windowed miss rate is above the limit."""
        self._causes: dict[str, str] = {}
        """The DEGRADED causes last acted on: key → reason."""
        self._ha_reason: str | None = None
        self._ready_said = False
        self._ready_status: str | None = None
        """READY=1 (with this STATUS) still to be sent: retried each tick until sent."""
        self._last_failure: str | None = None
        self._next_watchdog = 0.0
        self._publish_failed = False

    # --- provider interface ---

    def status(self) -> SupervisorStatus:
        seg = self._segment
        return SupervisorStatus(
            ha_state=self.ha.state,
            restart_count=self.policy.restart_count,
            restarts_in_window=self.policy.restarts_in_window,
            gave_up=self.policy.gave_up,
            rt_pid=None if self._rt is None else self._rt.pid,
            agent_pid=None if self._agent is None else self._agent.pid,
            generation=0 if seg is None or seg.closed else seg.generation,
            last_failure=self._last_failure,
            supervisor_pid=os.getpid(),
            checkpoint_dir=None if self.checkpoint_dir is None else str(self.checkpoint_dir),
            ha_reason=self._ha_reason,
        )

    def restart_count(self) -> int:
        """RT restarts so far (``HaProvider``)."""
        return self.policy.restart_count

    def ha_state(self) -> str | None:
        """The HA state's name (``HaProvider``)."""
        return self.ha.state.value

    def last_checkpoint(self) -> CheckpointInfo | None:
        """The newest valid checkpoint in ``checkpoint_dir`` (``HaProvider``), or None."""
        return _newest_checkpoint(self.checkpoint_dir)

    def _publish(self) -> None:
        """Rewrite the state file atomically (temp file + rename); errors are reported once."""
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status().to_dict()), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._publish_failed:
                self._publish_failed = True
                self._say(f"warning: cannot write the state file {self.state_path}: {exc}")

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down (thread- and signal-safe)."""
        self._stop.set()

    # --- logging ---

    def _say(self, message: str, level: int = logging.INFO) -> None:
        prefix = "CRITICAL: " if level >= logging.CRITICAL else ""
        print(f"mxrc supervise: {prefix}{message}", file=self.err, flush=True)
        if _log.hasHandlers():  # else logging's last resort would print it a second time
            _log.log(level, message)

    def _on_transition(self, t: Any) -> None:
        self._ha_reason = t.reason
        self._publish()  # first: whoever sees the line or the STATUS finds the file current
        self._say(f"HA state {t.from_state.value} -> {t.to_state.value}: {t.reason}")
        self.notifier.status(f"{t.to_state.value}: {t.reason}")

    # --- children ---

    def _spawn_rt(self, restart: bool) -> None:
        argv = [
            sys.executable,
            "-m",
            "mxrc.ha._rtchild",
            "--instance",
            self.instance,
            "--entrypoint",
            self.entrypoint,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.config.directory is not None:
            argv += ["--config", str(self.config.directory)]
        if restart:
            argv.append("--restart")
        if self.checkpoint_dir is not None:
            argv += ["--checkpoint-dir", str(self.checkpoint_dir)]
        self._rt = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, env=child_environment(), start_new_session=True
        )
        self._rt_started = time.monotonic()
        self._rt_beat = None
        self._rt_beat_seen = self._rt_started
        self._rt_up = False
        self._rt_safe, self._rt_rates, self._misses, self._causes = [], {}, {}, {}
        self._publish()
        self._say(f"RT process started (pid {self._rt.pid}, entry point {self.entrypoint})")

    def _rt_heartbeat(self, now: float) -> int | None:
        """The newest heartbeat of the stats slots the RT process claimed (None: none yet).

        Also notes which of its cycle threads are in SAFE_MODE and feeds their deadline
        counters to the windowed miss rate (threads above the limit: ``_misses``)."""
        from mxrc.rt._state import RtState

        assert self._segment is not None and self._rt is not None
        pid = self._rt.pid
        beats = []
        safe = []
        rates: dict[str, float | None] = {}
        misses = {}
        keys: set[object] = set()
        for slot in self._segment.slots():
            if slot["state"] == "claimed" and slot["claimer_pid"] == pid:
                name = str(slot["name"])
                try:
                    stats = self._segment.stats(name)
                except (LookupError, OSError):
                    continue
                if stats.heartbeat_ns > 0:
                    beats.append(stats.heartbeat_ns)
                if stats.state == RtState.SAFE_MODE:
                    safe.append(name)
                key = (int(slot["index"]), name)
                keys.add(key)
                self.miss_rate.add(key, stats, now)
                rates[name] = self.miss_rate.rate(key)
                rate = self.miss_rate.exceeded(key)
                if rate is not None:
                    misses[name] = rate
        self.miss_rate.retain(keys)
        self._rt_safe, self._rt_rates, self._misses = safe, rates, misses
        return max(beats) if beats else None

    # --- HA state: SAFE_MODE > DEGRADED > NORMAL (RECOVERY and MANUAL win over all three)

    def _degraded_causes(self) -> dict[str, str]:
        """What makes the node DEGRADED now: key → reason with the numbers."""
        causes = {
            f"miss:{name}": self.miss_rate.reason(name, r) for name, r in self._misses.items()
        }
        if self._agent_down is not None:
            causes["agent"] = (
                f"{self._agent_down}: /health, /metrics and log draining are not served "
                "until a new agent beats"
            )
        return causes

    def _cleared(self, key: str) -> str:
        """Why a DEGRADED cause is gone."""
        if key == "agent":
            pid = None if self._agent is None else self._agent.pid
            return f"the agent (pid {pid}) beats"
        name = key.partition(":")[2]
        return self.miss_rate.cleared(name, self._rt_rates.get(name))

    def _settle(self) -> None:
        """Move between NORMAL, DEGRADED and SAFE_MODE as the RT process and agent say."""
        state = self.ha.state
        if not self._rt_up or state not in (HaState.NORMAL, HaState.DEGRADED, HaState.SAFE_MODE):
            return
        causes = self._degraded_causes()
        previous, self._causes = self._causes, causes
        if self._rt_safe:
            self.ha.transition(
                HaState.SAFE_MODE,
                f"cycle thread {', '.join(repr(n) for n in self._rt_safe)} of the RT process is "
                "in SAFE_MODE (e.g. the agent's heartbeat is stale)",
            )
        elif causes:
            if state is not HaState.DEGRADED:
                self.ha.transition(HaState.DEGRADED, "; ".join(causes.values()))
            elif causes.keys() != previous.keys():  # another cause: say so, keep the state
                self._ha_reason = "; ".join(causes.values())
                self._publish()
                self._say(f"HA state stays DEGRADED: {self._ha_reason}")
                self.notifier.status(f"DEGRADED: {self._ha_reason}")
        elif state is HaState.SAFE_MODE:
            self.ha.transition(HaState.NORMAL, "the RT process left SAFE_MODE")
        elif state is HaState.DEGRADED:
            cleared = [self._cleared(k) for k in previous] or ["no cause left"]
            self.ha.transition(HaState.NORMAL, "recovered: " + "; ".join(cleared))

    def _check_rt(self, now: float) -> str | None:
        """A failure description of the running RT process, or None when it is fine."""
        assert self._rt is not None
        code = self._rt.poll()
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return f"RT process (pid {self._rt.pid}) {how}"
        beat = self._rt_heartbeat(now)
        if beat is not None and beat != self._rt_beat:
            self._rt_beat = beat
            self._rt_beat_seen = now
            if not self._rt_up:
                self._rt_up = True
                self._on_rt_up()
            self._settle()
            return None
        if self._rt_beat is None:
            if now - self._rt_started > self.startup_timeout_s:
                return (
                    f"RT process (pid {self._rt.pid}) did not beat within "
                    f"{self.startup_timeout_s:g} s of its start"
                )
            return None
        if now - self._rt_beat_seen > self.hang_timeout_s:
            return (
                f"RT process (pid {self._rt.pid}) is hung: its heartbeat did not move for "
                f"{now - self._rt_beat_seen:.2f} s (failure_threshold x "
                f"health_check_interval_ms = {self.hang_timeout_s:g} s)"
            )
        return None

    def _on_rt_up(self) -> None:
        assert self._rt is not None and self._segment is not None
        gen = self._segment.generation
        if self.ha.state is HaState.RECOVERY_IN_PROGRESS:
            self.ha.transition(
                HaState.NORMAL, f"RT process pid {self._rt.pid} beats, generation {gen}"
            )
        if self._writer is not None:
            self._writer.request("RT process up (state restored)")
        if not self._ready_said:
            self._ready_said = True
            self._ready_status = f"NORMAL: RT pid {self._rt.pid} beats, generation {gen}"
            self._send_ready()
            self._say(f"ready: RT process pid {self._rt.pid} beats (generation {gen})")

    def _send_ready(self) -> None:
        """Send the pending READY=1; kept pending when the socket is gone for the moment
        (systemd restarting), so a unit does not time out on one lost datagram."""
        if self._ready_status is None:
            return
        if not self.notifier.enabled or self.notifier.ready(self._ready_status):
            self._ready_status = None

    def _kill_rt(self) -> None:
        if self._rt is None:
            return
        if self._rt.poll() is None:
            self._rt.kill()
        self._rt.wait()

    def _failure(self, what: str, now: float) -> None:
        self._last_failure = what
        self._say(what, logging.ERROR)
        self._kill_rt()
        self._rt = None
        decision = self.policy.on_failure()
        if decision.restart:
            if self.ha.can_transition(HaState.RECOVERY_IN_PROGRESS):
                self.ha.transition(HaState.RECOVERY_IN_PROGRESS, what)
            else:  # MANUAL_INTERVENTION for the agent: the RT process is still restarted
                self._say(f"HA state stays {self.ha.state.value}: {self._ha_reason}")
            self._restart_at = now + decision.delay_s
            self._publish()
            self._say(f"restarting the RT process in {decision.delay_s:g} s ({decision.reason})")
        else:
            self._restart_at = None
            msg = (
                f"giving up on the RT process: {decision.reason}; it stays down until an "
                "operator restarts the instance (`systemctl restart mxrc@INSTANCE`)"
            )
            # the state first: whoever reads the CRITICAL line finds the state file current
            if self.ha.state is HaState.MANUAL_INTERVENTION:  # the agent gave up before
                self._ha_reason = f"{self._ha_reason}; RT process restart limit reached"
                self._publish()
            else:
                self.ha.transition(HaState.MANUAL_INTERVENTION, "restart limit reached")
            self._say(msg, logging.CRITICAL)

    # --- main loop ---

    def run(self) -> int:
        """Create the segment, start the children, supervise until :meth:`request_stop`.

        Returns the exit code (0 after an orderly stop, 1 when the start failed, 2 on a
        configuration error: a bad bearer token file, an agent that exited with 2).
        """
        from mxrc.bus import Segment
        from mxrc.errors import SegmentError

        if self.notifier.error is not None:  # else a Type=notify unit times out, unexplained
            self._say(f"warning: systemd notification is off: {self.notifier.error}")
        problem = self._token_file_problem()
        if problem is not None:  # before the segment: nothing to clean up, no retry helps
            self._say(f"configuration error: {problem}", logging.ERROR)
            return EXIT_CONFIG
        try:
            self._segment = Segment.create_from_config(self.instance, self.config)
        except (SegmentError, ValueError) as exc:  # in use by a live owner; bad name
            self._say(f"cannot create the segment of instance {self.instance!r}: {exc}")
            return EXIT_START_FAILED
        self._say(
            f"instance {self.instance!r}: segment {self._segment.path} "
            f"(generation {self._segment.generation})"
        )
        self._publish()
        try:
            self._start_checkpoints()
            if self.agent_enabled and not self._stop.is_set():
                code = self._start_agent()
                if code is not None:
                    return code
            if not self._stop.is_set():
                self._spawn_rt(restart=False)
            while not self._stop.wait(self.poll_s):
                self._tick(time.monotonic())
            return 0
        finally:
            self._shutdown()

    def _start_checkpoints(self) -> None:
        """The checkpoint writer (``checkpoint_dir`` and ``rt.enable_state_recovery``)."""
        if self.checkpoint_dir is None:
            return
        role = self.config.failover_policy.rt
        if not role.enable_state_recovery:
            self._say("checkpoints off: failover_policy.json rt.enable_state_recovery is false")
            return
        from mxrc.ha._checkpoint import writer_for_segment

        assert self._segment is not None
        self._writer = writer_for_segment(
            self._segment,
            self.checkpoint_dir,
            interval_s=float(role.checkpoint_interval_sec),
            keep=role.checkpoint_keep,
        ).start()
        self._say(
            f"checkpoints to {self.checkpoint_dir} every {role.checkpoint_interval_sec} s "
            f"(newest {role.checkpoint_keep} kept)"
        )

    def _stop_checkpoints(self) -> None:
        """Stop the writer and write a last checkpoint while the RT process still runs."""
        if self._writer is None:
            return
        self._writer.stop()
        try:
            ckpt = self._writer.write_now("shutdown")
        except Exception as exc:  # reported; the shutdown goes on
            self._say(f"warning: the shutdown checkpoint failed: {exc}", logging.WARNING)
        else:
            self._say(f"checkpoint written at shutdown ({ckpt.name})")
        self._writer = None

    def _token_file_problem(self) -> str | None:
        """What is wrong with ``health_server.bearer_token_file`` (None: fine or unused).

        The agent would refuse it and exit 2 after the segment exists: checked up front
        with the agent's own reader."""
        from mxrc.errors import ConfigError
        from mxrc.ha._http import read_secret_file, token_file_path

        serves = self.http or bool(os.environ.get("MXRC_HTTP_PORT"))  # the agent's own rule
        path = token_file_path(self.config)
        if not (self.agent_enabled and serves) or path is None:
            return None
        uid = os.geteuid()
        user = _user_name(uid)
        try:
            read_secret_file(path)
        except ConfigError as exc:
            return (
                f"failover_policy.json health_server.bearer_token_file {str(path)!r}: {exc}; "
                f"expected a regular file owned by {user} (uid {uid}, the user the instance "
                f"runs as) or root, mode 0600, holding one token, e.g. `install -o {user} "
                f"-m 0600 /dev/null {path}`, then write the token into it"
            )
        return None

    def _start_agent(self) -> int | None:
        """The first agent, waited for (the RT process's entry point asks whether an agent
        serves the instance). None when it beats, else the exit code of ``run``: 2 when
        the agent exited with 2 (a configuration error: no retry helps), else 1."""
        from mxrc._run import _AgentProcess

        assert self._segment is not None
        agent = _AgentProcess.launch(
            self._segment, self.config, self.err, self._agent_args(), "mxrc supervise"
        )
        if agent is not None and agent.wait_started(self._segment, self.err):
            self._agent = agent
            self._on_agent_up(time.monotonic())
            return None
        if agent is not None and agent.exit_code == EXIT_CONFIG:
            self._say(
                "configuration error: the agent refused the configuration (exit 2, its message "
                "above); not retrying",
                logging.ERROR,
            )
            return EXIT_CONFIG
        self._say("the agent did not start (its message above)", logging.ERROR)
        return EXIT_START_FAILED

    def _agent_args(self) -> tuple[str, ...]:
        return ("--http",) if self.http else ()

    def _on_agent_up(self, now: float) -> None:
        assert self._agent is not None
        self._agent_up_at = now
        self._agent_beat = None
        self._agent_beat_seen = now
        self._agent_down = None
        # Settle before publishing: a state file naming the new agent must not still say
        # DEGRADED because of the old one.
        self._settle()
        self._publish()
        self._say(f"agent started (pid {self._agent.pid})")

    def _agent_hung(self, now: float) -> str | None:
        """A description when the running agent's heartbeat did not move for the hang
        timeout (counted from ``AGENT_STARTUP_GRACE_S`` after its start at the earliest)."""
        assert self._segment is not None and self._agent is not None
        hb = self._segment.agent_heartbeat()
        if hb.pid == self._agent.pid and hb.heartbeat_ns != self._agent_beat:
            self._agent_beat = hb.heartbeat_ns
            self._agent_beat_seen = now
            return None
        since = max(self._agent_beat_seen, self._agent_up_at + AGENT_STARTUP_GRACE_S)
        if now - since <= self.hang_timeout_s:
            return None
        return (
            f"the agent (pid {self._agent.pid}) is hung: its heartbeat did not move for "
            f"{now - self._agent_beat_seen:.2f} s (failure_threshold x "
            f"health_check_interval_ms = {self.hang_timeout_s:g} s)"
        )

    def _check_agent(self, now: float) -> None:
        """Follow a starting agent; restart a dead or hung one (its own restart policy,
        same limits as the RT process)."""
        from mxrc._run import _AgentProcess

        assert self._segment is not None
        agent = self._agent
        if agent is None:
            if self._agent_restart_at is not None and now >= self._agent_restart_at:
                self._agent_restart_at = None
                self._agent = _AgentProcess.launch(
                    self._segment, self.config, self.err, self._agent_args(), "mxrc supervise"
                )
                if self._agent is None:
                    self._agent_failed(now, "the agent could not be started")
                else:
                    self._publish()
                    self._say(f"agent launched (pid {self._agent.pid}), waiting for its first beat")
            return
        if not agent.started:
            up = agent.poll_start(self._segment, self.err)  # reports a failure itself
            if up:
                self._on_agent_up(now)
            elif up is False:
                self._agent = None
                self._agent_failed(now, f"the agent (pid {agent.pid}) did not start")
            return
        code = agent.proc.poll()
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            agent.stop(self.err)  # reports the exit and the end of its stderr
            self._agent = None
            self._agent_failed(now, f"the agent (pid {agent.pid}) {how}")
            return
        hung = self._agent_hung(now)
        if hung is not None:
            self._say(f"{hung}; killing it (SIGKILL)", logging.ERROR)
            agent.kill()
            self._agent = None
            self._agent_failed(now, hung)

    def _agent_failed(self, now: float, what: str) -> None:
        """The agent died, hung or did not start: restart it later, or give up loudly."""
        decision = self.agent_policy.on_failure()
        if decision.restart:
            self._agent_restart_at = now + decision.delay_s
            self._agent_down = f"{what}; restarting it"
            self._settle()  # before publishing, as in _on_agent_up
            self._publish()
            self._say(f"restarting the agent in {decision.delay_s:g} s ({decision.reason})")
        else:
            self._agent_down = what
            if self.ha.can_transition(HaState.MANUAL_INTERVENTION):
                self.ha.transition(HaState.MANUAL_INTERVENTION, "agent restart limit reached")
            self._say(f"giving up on the agent ({what}): {decision.reason}", logging.CRITICAL)

    def _tick(self, now: float) -> None:
        if self.agent_enabled:
            self._check_agent(now)
        if self._rt is not None:
            failure = self._check_rt(now)
            if failure is not None:
                self._failure(failure, now)
        elif self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._spawn_rt(restart=True)
        self._send_ready()
        interval = self.notifier.watchdog_interval_s
        within_policy = not self.policy.gave_up and not self.agent_policy.gave_up
        if interval is not None and within_policy and now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + interval

    def _shutdown(self) -> None:
        """RT first, then the agent, then the segment."""
        from mxrc._run import stop_child

        self.notifier.stopping("SHUTDOWN: stopping the RT process, the agent, the segment")
        if self.ha.state is not HaState.SHUTDOWN:
            self.ha.transition(HaState.SHUTDOWN, "stop requested")
        self._stop_checkpoints()
        if self._rt is not None:
            pid = self._rt.pid
            if self._rt.poll() is None:
                stop_child(self._rt, RT_STOP_TIMEOUT_S)
            self._say(f"RT process stopped (pid {pid}, code {self._rt.returncode})")
            self._rt = None
        if self._agent is not None:
            pid = self._agent.pid
            self._agent.stop(self.err)
            self._say(f"agent stopped (pid {pid})")
            self._agent = None
        if self._segment is not None:
            path = self._segment.path
            self._segment.close()
            self._say(f"segment removed ({path})")
        with contextlib.suppress(OSError):
            self.state_path.unlink()
        self.notifier.close()


def _user_name(uid: int) -> str:
    """The login name of ``uid`` (``uid N`` when it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def run_supervise(
    config_dir: str | None,
    instance: str | None,
    entrypoint: str | None,
    *,
    agent: bool,
    err: TextIO,
    checkpoint_dir: str | None = None,
    http: bool = True,
) -> int:
    """``mxrc supervise``: exit 0 after SIGTERM/SIGINT, 1 start failure, 2 usage/config."""
    from mxrc.config import load_config
    from mxrc.errors import ConfigError

    try:
        cfg = load_config(config_dir)
    except ConfigError as exc:
        print(f"mxrc supervise: configuration error: {exc}", file=err)
        return 2
    try:
        sup = Supervisor(
            cfg,
            instance=instance,
            entrypoint=entrypoint or cfg.failover_policy.rt.entrypoint,
            agent=agent,
            http=http,
            err=err,
            checkpoint_dir=checkpoint_dir,
        )
    except ValueError as exc:
        print(f"mxrc supervise: {exc}", file=err)
        return 2

    def on_signal(signum: int, frame: object) -> None:
        sup.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return sup.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
