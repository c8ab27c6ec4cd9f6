"""``mxrc run``: run the demo control task on an executive and report its latency.

The process owns the instance's shared-memory segment for the run (so
``PerfMonitor`` in another process can attach to it; sized from the
configuration, :meth:`~mxrc.bus.Segment.create_from_config`), starts the
instance's agent (its own process by default, ``--agent process|thread|none``;
``docs/agent.md``) and waits until it beats, builds an
:class:`~mxrc.rt._executive.Executive` from the configuration (plus the
command-line overrides), runs the demo axis + PID for N cycles in the chosen
tier, shows a progress line on a terminal, then prints the latency report
(with a text histogram of wake-up latency) and the demo's tracking error.
With a config directory, a change of its ``cpu_affinity.json`` during the run
is applied to the running cycle thread (``docs/live-reconfig.md``).

Exit codes: 0 ok, 1 runtime error (message and advice on stderr), 2 usage or
configuration error, 130 interrupted (Ctrl-C; the segment is removed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO

from mxrc.demo import AxisDemo, Tier
from mxrc.errors import (
    BodyError,
    ConfigError,
    MxrcError,
    PrivilegeError,
    SegmentError,
    SegmentInUseError,
    ThreadSetupError,
)

if TYPE_CHECKING:
    from mxrc.agent import Agent
    from mxrc.bus import Segment

__all__ = [
    "AGENT_MODES",
    "AGENT_START_TIMEOUT_S",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "AgentMode",
    "RunOptions",
    "format_progress",
    "run_demo",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROGRESS_INTERVAL_S = 0.25
"""How often the progress line is refreshed (main thread; kept rare and tiny)."""

AgentMode = Literal["process", "thread", "none"]
AGENT_MODES: tuple[AgentMode, ...] = ("process", "thread", "none")
AGENT_START_TIMEOUT_S = 30.0
"""How long ``mxrc run`` waits for a spawned agent's first heartbeat."""
AGENT_STOP_TIMEOUT_S = 5.0
"""How long a spawned agent gets to stop after SIGTERM before it is killed."""

GIL_REASON = (
    "the agent's threads (heartbeat, ring draining, event dispatch) would be Python threads "
    "of the RT process: while one of them runs, the Python cycle body waits for the GIL (up "
    "to the switch interval) and nearly every cycle starts late"
)


@dataclass(frozen=True)
class RunOptions:
    """What ``mxrc run`` was asked to do (``None`` = from the configuration)."""

    config_dir: str | None = None
    cycles: int = 5000
    period_us: int | None = None
    tier: Tier = "native"
    json_report: str | None = None
    instance: str | None = None
    progress: bool = True
    watch_config: bool = True
    """With a config directory: apply later changes of its cpu_affinity.json live."""
    agent: AgentMode = "process"
    """The instance's agent: its own process, a thread of this process, or none."""
    force_agent_thread: bool = False
    """Allow ``agent="thread"`` with a Python body (loudly warned)."""

    def __post_init__(self) -> None:
        if self.cycles < 1:
            raise ValueError(f"--cycles must be >= 1, got {self.cycles}")
        if self.period_us is not None and not 10 <= self.period_us <= 10_000_000:
            raise ValueError(f"--period-us must be within 10..10000000, got {self.period_us}")
        if self.tier not in ("python", "native"):
            raise ValueError(f"--tier must be python or native, got {self.tier!r}")
        if self.agent not in AGENT_MODES:
            raise ValueError(f"--agent must be process, thread or none, got {self.agent!r}")
        if self.agent == "thread" and self.tier == "python" and not self.force_agent_thread:
            raise ValueError(
                f"--agent thread is refused with --tier python: {GIL_REASON}. Use --agent "
                "process (the default), or --force-agent-thread to run it anyway"
            )


def format_progress(done: int, total: int, misses: int, elapsed_s: float) -> str:
    """The one-line progress display: cycles done, share, misses, time left."""
    share = done / total if total else 1.0
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = (total - done) / rate if rate > 0 else math.nan
    left_txt = f"{left:5.1f} s left" if math.isfinite(left) else "  ... s left"
    return (
        f"cycles {done:>{len(str(total))}}/{total} ({share:6.1%})  "
        f"deadline misses {misses}  {left_txt}"
    )


def _warn(err: TextIO, message: str) -> None:
    print(f"mxrc run: warning: {message}", file=err)


def _privilege_overrides(cfg: Any, err: TextIO) -> dict[str, Any]:
    """Fallbacks so the command works unprivileged: SCHED_OTHER instead of a
    refused SCHED_FIFO/RR, no mlockall when locking is not allowed."""
    from mxrc._capabilities import capabilities

    overrides: dict[str, Any] = {}
    caps = capabilities()
    rt_cpu = cfg.cpu_affinity.rt
    if rt_cpu.policy in ("SCHED_FIFO", "SCHED_RR") and not caps["sched_fifo"].available:
        overrides["allow_sched_other_fallback"] = True
        _warn(
            err,
            f"{rt_cpu.policy} is not available ({caps['sched_fifo'].reason}); the cycle thread "
            "falls back to SCHED_OTHER and its latency will be much worse. Run as root or "
            "grant CAP_SYS_NICE / RLIMIT_RTPRIO (see `mxrc doctor`).",
        )
    if cfg.numa_binding.rt.memory_allocation.lock_memory and not caps["mlock"].available:
        overrides["lock_memory"] = False
        _warn(
            err,
            f"memory locking is not available ({caps['mlock'].reason}); running without "
            "mlockall (page faults may delay cycles).",
        )
    return overrides


def _report_dict(report: Any, opts: RunOptions, instance: str, extra: dict[str, Any]) -> Any:
    data = report.to_dict()
    data["run"] = {
        "tier": opts.tier,
        "instance": instance,
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        **extra,
    }
    return data


@contextlib.contextmanager
def _config_watch(executive: Any, cfg: Any, opts: RunOptions, err: TextIO) -> Iterator[None]:
    """Watch the config directory while the executive runs; report changes on ``err``.

    A change of cpu_affinity.json re-pins / re-prioritises the running cycle
    thread from the watcher thread (mxrc.rt._reconfig); an invalid change is
    rejected and reported, and the loop keeps its settings.
    """
    if not opts.watch_config or cfg.directory is None:
        yield
        return
    from mxrc.rt._reconfig import ConfigWatcher

    logger = logging.getLogger("mxrc.rt.reconfig")
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("mxrc run: %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    watcher = ConfigWatcher(executive, cfg.directory).start()
    print(
        f"mxrc run: watching {cfg.directory / 'cpu_affinity.json'}: a change re-pins the "
        "running loop",
        file=err,
    )
    try:
        yield
    finally:
        watcher.stop()
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def stop_child(proc: subprocess.Popen[Any], timeout_s: float) -> bool:
    """SIGCONT and SIGTERM, SIGKILL after ``timeout_s``; reaped. True when it had to be
    killed. (The agent and the RT process are stopped alike.)"""
    proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    return False


class _AgentProcess:
    """``mxrc agent`` spawned for the run: dies with this process, stopped before the
    segment is removed.

    :meth:`spawn` starts it and waits for its first heartbeat; :meth:`launch` +
    :meth:`poll_start` do the same without blocking (the supervisor keeps watching
    the RT process meanwhile).
    """

    mode: AgentMode = "process"

    def __init__(
        self, proc: subprocess.Popen[bytes], log: IO[bytes], generation: int, prog: str
    ) -> None:
        self.proc = proc
        self.prog = prog
        """The command whose messages these are (``mxrc run``, ``mxrc supervise``)."""
        self.log = log
        self.generation = generation
        self.started = generation > 0
        """Its first heartbeat was seen (``generation`` is then its agent generation)."""
        self.exit_code: int | None = None
        """Set when the start failed because the process exited (2: a configuration error)."""
        self._deadline = time.monotonic() + AGENT_START_TIMEOUT_S

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def launch(
        cls,
        segment: Segment,
        cfg: Any,
        err: TextIO,
        extra_args: Sequence[str] = (),
        prog: str = "mxrc run",
    ) -> _AgentProcess | None:
        """Start the process without waiting; None (after a message) when it cannot start.

        ``extra_args``: more ``mxrc agent`` options (e.g. ``--http``); ``prog`` prefixes
        the messages.
        """
        argv = [
            sys.executable,
            "-m",
            "mxrc",
            "agent",
            "--instance",
            segment.instance,
            "--parent-pid",
            str(os.getpid()),
            *extra_args,
        ]
        if cfg.directory is not None:
            argv += ["--config", str(cfg.directory)]
        log = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the run, closed in stop()
        try:
            # Its own session: a terminal's Ctrl-C reaches only `mxrc run`, which stops
            # the loop first and the agent after (it drains the last events).
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            print(f"{prog}: cannot start the agent process ({argv[0]}): {exc}", file=err)
            return None
        return cls(proc, log, 0, prog)

    def poll_start(self, segment: Segment, err: TextIO) -> bool | None:
        """True once it beat, None while starting, False when the start failed: it exited
        (:attr:`exit_code`) or did not beat within the start timeout (killed); reported
        on ``err`` with the end of its stderr."""
        if self.started:
            return True
        hb = segment.agent_heartbeat()
        if hb.pid == self.proc.pid:
            self.started = True
            self.generation = hb.generation
            return True
        code = self.proc.poll()
        if code is None and time.monotonic() <= self._deadline:
            return None
        if code is None:
            self.proc.kill()
            self.proc.wait()
        self.exit_code = code
        why = (
            f"exited with code {code}"
            if code is not None
            else f"did not beat within {AGENT_START_TIMEOUT_S:g} s"
        )
        print(f"{self.prog}: the agent process (pid {self.pid}) {why}{_tail(self.log)}", file=err)
        self.log.close()
        return False

    def wait_started(self, segment: Segment, err: TextIO) -> bool:
        """Block until :meth:`poll_start` decides (Ctrl-C meanwhile kills the child)."""
        try:
            while (up := self.poll_start(segment, err)) is None:
                time.sleep(0.01)
        except BaseException:
            self.kill()
            raise
        return up

    @classmethod
    def spawn(
        cls, segment: Segment, cfg: Any, err: TextIO, extra_args: Sequence[str] = ()
    ) -> _AgentProcess | None:
        """Start the agent and wait for its first heartbeat; None (after a message) on failure."""
        agent = cls.launch(segment, cfg, err, extra_args)
        return agent if agent is not None and agent.wait_started(segment, err) else None

    def stop(self, err: TextIO) -> None:
        """SIGTERM, wait, SIGKILL if needed; report an agent that died during the run."""
        code = self.proc.poll()
        if code is not None:
            print(
                f"{self.prog}: warning: the agent process (pid {self.pid}) exited during the run "
                f"with code {code} (a cycle thread with the agent watchdog on goes to "
                f"SAFE_MODE once the agent's heartbeat is stale){_tail(self.log)}",
                file=err,
            )
        elif stop_child(self.proc, AGENT_STOP_TIMEOUT_S):
            print(
                f"{self.prog}: warning: the agent process (pid {self.pid}) did not stop "
                f"within {AGENT_STOP_TIMEOUT_S:g} s of SIGTERM and was killed",
                file=err,
            )
        self.log.close()

    def kill(self) -> None:
        """SIGKILL (a hung agent cannot be asked to stop), reap it, close its log."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


class _AgentThread:
    """The agent as threads of this process (``--agent thread``)."""

    mode: AgentMode = "thread"

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.pid = os.getpid()
        self.generation = agent.generation

    def stop(self, err: TextIO) -> None:
        self.agent.stop()


def _tail(log: IO[bytes], limit: int = 2000) -> str:
    """The end of a spawned agent's stderr, as an indented suffix ("" when empty)."""
    try:
        log.seek(0)
        text = log.read().decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return ""
    if not text:
        return ""
    if len(text) > limit:
        text = "..." + text[-limit:]
    return ":\n  " + text.replace("\n", "\n  ")


def _start_agent(
    opts: RunOptions, segment: Segment, cfg: Any, err: TextIO
) -> _AgentProcess | _AgentThread | None:
    """The run's agent per ``opts.agent``; None for ``none`` (raises nothing: the
    process case prints its own failure and returns None, callers check ``opts``)."""
    if opts.agent == "process":
        return _AgentProcess.spawn(segment, cfg, err)
    if opts.agent == "thread":
        from mxrc.agent import Agent

        if opts.tier == "python":
            _warn(
                err,
                f"--force-agent-thread with --tier python: {GIL_REASON}. Expect late cycles; "
                "this is for experiments only",
            )
        return _AgentThread(Agent(segment, config=cfg).start())
    return None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(opts: RunOptions, out: TextIO, err: TextIO) -> int:
    """Run the demo task as described by ``opts``; return the exit code.

    With a progress line (a terminal) the executive is started for exactly N
    cycles and polled every :data:`PROGRESS_INTERVAL_S`; without, it runs
    with :meth:`Executive.run`. Either way exactly N cycles run.
    SIGTERM is handled like Ctrl-C (from the main thread only): the executive
    stops, the partial report is printed and the segment removed.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run_demo(opts, out, err)
    except KeyboardInterrupt:
        print("mxrc run: interrupted", file=err)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_demo(opts: RunOptions, out: TextIO, err: TextIO) -> int:
    from mxrc.config import load_config

    try:
        cfg = load_config(opts.config_dir)
    except ConfigError as exc:
        print(f"mxrc run: configuration error: {exc}", file=err)
        return EXIT_USAGE

    from mxrc.bus import Segment
    from mxrc.rt._executive import Executive

    perf = cfg.perf_monitor.rt
    period_us = opts.period_us if opts.period_us is not None else perf.cycle_time_us
    overrides: dict[str, Any] = {
        "period_us": period_us,
        "deadline_us": min(perf.deadline_us, period_us),
    }
    overrides.update(_privilege_overrides(cfg, err))
    if opts.agent == "none":
        overrides["agent_timeout_ms"] = 0  # nobody beats: no agent watchdog
    instance = opts.instance or cfg.instance
    demo = AxisDemo(period_us)
    body = demo.body(opts.tier)
    show_progress = opts.progress and out.isatty()

    try:
        segment = Segment.create_from_config(instance, cfg)
    except SegmentInUseError as exc:
        print(
            f"mxrc run: {exc}\n  another mxrc process runs instance {instance!r}; "
            "pick another name with --instance NAME",
            file=err,
        )
        return EXIT_FAILURE
    except SegmentError as exc:
        print(f"mxrc run: cannot create the shared-memory segment: {exc}", file=err)
        return EXIT_FAILURE
    except ValueError as exc:  # bad instance name
        print(f"mxrc run: {exc}", file=err)
        return EXIT_USAGE

    interrupted = False
    agent: _AgentProcess | _AgentThread | None = None
    try:
        if opts.agent != "none":
            try:
                agent = _start_agent(opts, segment, cfg, err)
            except MxrcError as exc:
                print(f"mxrc run: cannot start the agent: {exc}", file=err)
                return EXIT_FAILURE
            if agent is None:
                return EXIT_FAILURE
        try:
            executive = Executive.from_config(cfg, body, segment=segment, **overrides)
        except (ConfigError, ValueError) as exc:  # incl. CpuNotAllowedError
            print(f"mxrc run: configuration error: {exc}", file=err)
            return EXIT_USAGE
        except MxrcError as exc:  # e.g. UnsupportedError
            print(f"mxrc run: {exc}", file=err)
            return EXIT_FAILURE
        agent_text = "no agent" if agent is None else f"agent {agent.mode} pid {agent.pid}"
        print(
            f"mxrc run: instance {instance!r}, {opts.tier} tier, period {period_us} µs, "
            f"{opts.cycles} cycles (~{opts.cycles * period_us / 1e6:.1f} s), {agent_text}",
            file=err,
        )
        try:
            if show_progress:
                executive.start(cycles=opts.cycles)  # stops by itself after exactly N
                started = time.monotonic()
                try:
                    with _config_watch(executive, cfg, opts, err):
                        while not executive.wait(timeout=PROGRESS_INTERVAL_S):
                            s = executive.stats()
                            line = format_progress(
                                s.cycle_count,
                                opts.cycles,
                                s.deadline_miss_count,
                                time.monotonic() - started,
                            )
                            out.write("\r" + line)
                            out.flush()
                except KeyboardInterrupt:
                    interrupted = True
                finally:
                    executive.stop()
                out.write("\r" + " " * 78 + "\r")
            else:
                try:
                    executive.start(cycles=opts.cycles)  # exactly N cycles
                    with _config_watch(executive, cfg, opts, err):
                        executive.wait()
                except KeyboardInterrupt:
                    interrupted = True
            report = executive.perf().report()
        except (PrivilegeError, ThreadSetupError) as exc:
            print(
                f"mxrc run: the cycle thread could not be set up: {exc}\n"
                "  run as root, or grant CAP_SYS_NICE and CAP_IPC_LOCK, or relax "
                "cpu_affinity.json / numa_binding.json (see `mxrc doctor`)",
                file=err,
            )
            return EXIT_FAILURE
        except BodyError as exc:
            print(f"mxrc run: the demo body failed: {exc}", file=err)
            return EXIT_FAILURE
        except (MxrcError, OSError) as exc:
            print(f"mxrc run: {exc}", file=err)
            return EXIT_FAILURE

        tracking = demo.tracking_error()
        text = report.to_text(histogram=True)
        out.write(text if text.endswith("\n") else text + "\n")
        out.write(tracking.to_text() + "\n")
        if opts.json_report:
            data = _report_dict(
                report,
                opts,
                instance,
                {
                    "period_us": period_us,
                    "demo": tracking.to_dict(),
                    "interrupted": interrupted,
                    "agent": _agent_dict(opts, agent),
                },
            )
            try:
                with open(opts.json_report, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=2, ensure_ascii=False)
                    fh.write("\n")
            except OSError as exc:
                print(f"mxrc run: cannot write {opts.json_report}: {exc}", file=err)
                return EXIT_FAILURE
        if interrupted:
            print("mxrc run: interrupted", file=err)
            return EXIT_INTERRUPTED
        return EXIT_OK
    finally:
        if agent is not None:
            agent.stop(err)  # before the segment goes
        segment.close()


def _agent_dict(opts: RunOptions, agent: _AgentProcess | _AgentThread | None) -> dict[str, Any]:
    if agent is None:
        return {"mode": opts.agent}
    return {"mode": agent.mode, "pid": agent.pid, "generation": agent.generation}
