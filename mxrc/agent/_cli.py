"""``mxrc agent``: run an instance's agent in this process until SIGINT/SIGTERM.

Attaches to the instance's segment like ``mxrc status`` (same instance
selection and exit codes: 1 no such instance or its owner went away, or the
health server cannot listen (e.g. its port is taken), 2 usage or
configuration error (e.g. a bad bearer token file: ``mxrc supervise`` then
exits 2 as well), 3 the segment cannot be read: not mxrc's, another layout
version, permission), prints a one-line status, then beats the
heartbeat and drains the rings until stopped. It exits 1 when its health
server's thread dies (rather than beat on with nothing serving ``/health``),
so that ``mxrc supervise`` restarts it. ``mxrc run`` spawns it with
``--parent-pid`` so it dies with its parent.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from mxrc._status import EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, attach_instance, default_instance

if TYPE_CHECKING:
    from mxrc.agent._agent import Agent
    from mxrc.bus import Event
    from mxrc.ha._health import HaProvider
    from mxrc.ha._http import HealthServer

__all__ = ["AgentOptions", "event_to_json", "run_agent", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class AgentOptions:
    """What ``mxrc agent`` was asked to do."""

    instance: str | None = None
    config_dir: str | None = None
    events: bool = False
    """Print every event received from the RT side as one JSON line on stdout."""
    parent_pid: int | None = None
    """Exit when this process (the spawning ``mxrc run``) dies (parent-death signal)."""
    takeover: bool = False
    """Start even when another live agent beat recently."""
    http: bool = False
    """Serve the health endpoints and /metrics (``failover_policy.json`` ``health_server``);
    also on when ``http_port`` is set or ``MXRC_HTTP_PORT`` is in the environment."""
    http_port: int | None = None
    """Port of the health server (0 = any free port); beats the config and MXRC_HTTP_PORT."""


def set_parent_death_signal(parent_pid: int, signum: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``signum`` to this process when its parent thread exits.

    Returns False when the parent is already gone (``getppid() != parent_pid``
    after arming: it died before the call). Linux only (``prctl``).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    return os.getppid() == parent_pid


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready dict (payload decoded when it is JSON, else hex)."""
    payload: Any
    if event.is_json:
        try:
            payload = event.json()
        except ValueError:
            payload = {"hex": event.payload.hex()}
    elif event.payload:
        payload = {"hex": event.payload.hex()}
    else:
        payload = None
    carrier = event.carrier
    return {
        "type": event.type,
        "id": event.id,
        "timestamp_ns": event.timestamp_ns,
        "priority": event.priority.name,
        "target_id": event.target_id,
        "payload": payload,
        "trace_id": None if carrier is None else carrier[:16].hex(),
        "span_id": None if carrier is None else carrier[16:24].hex(),
        "trace_flags": None if carrier is None else carrier[24],
    }


def _fail(err: TextIO, message: str) -> None:
    print(f"mxrc agent: {message}", file=err)


def _status_line(agent: Agent) -> str:
    seg = agent.segment
    h = seg.header
    threads = ", ".join(agent.executives()) or "none yet"
    return (
        f"mxrc agent: instance {seg.instance!r} ({seg.path}, layout v{h['layout_version']}, "
        f"owner pid {h['owner_pid']}): agent generation {agent.generation}, pid {os.getpid()}, "
        f"heartbeat every {agent.heartbeat_interval_ms} ms (RT timeout "
        f"{agent.heartbeat_timeout_ms} ms); cycle threads: {threads}"
    )


def _summary_line(agent: Agent) -> str:
    c = agent.counters()
    return (
        f"mxrc agent: stopped after {c.beats} heartbeats: {c.events_received} events received, "
        f"{c.commands_sent} sent ({c.commands_dropped} dropped), {c.log_records} log and "
        f"{c.span_records} span records drained"
    )


def run_agent(opts: AgentOptions, out: TextIO, err: TextIO) -> int:
    """Run ``mxrc agent`` as described by ``opts``; return the exit code."""
    from mxrc.agent._agent import Agent
    from mxrc.config import load_config
    from mxrc.errors import ConfigError

    if opts.parent_pid is not None and not set_parent_death_signal(opts.parent_pid):
        _fail(err, f"the parent process (pid {opts.parent_pid}) is already gone")
        return EXIT_NOT_RUNNING
    try:
        cfg = load_config(opts.config_dir, check_host=False)
    except ConfigError as exc:
        _fail(err, f"configuration error: {exc}")
        return EXIT_USAGE
    instance = opts.instance
    if instance is None:
        found, code = default_instance(err, "agent")
        if found is None:
            return code
        if isinstance(found, list):
            _fail(
                err,
                f"several instances are running ({', '.join(found)}); pick one with "
                "--instance NAME",
            )
            return EXIT_USAGE
        instance = found
    segment, code = attach_instance(instance, err, "agent")
    if segment is None:
        return code
    with segment:
        agent = Agent(segment, config=cfg, takeover=opts.takeover)
        server = None
        if opts.http or opts.http_port is not None or os.environ.get("MXRC_HTTP_PORT"):
            from mxrc.ha._http import health_server_from_config

            try:
                server = health_server_from_config(
                    segment,
                    cfg,
                    port=opts.http_port,
                    bus=agent.bus,
                    provider=_ha_provider(instance),
                )
            except ConfigError as exc:
                _fail(err, f"configuration error: {exc}")
                return EXIT_USAGE
        return _serve(agent, opts, out, err, server)


def _ha_provider(instance: str) -> HaProvider | None:
    """The supervisor's restart count and HA state, read from the state file it publishes
    (``mxrc supervise``; none running: 0 restarts, no state)."""
    try:
        from mxrc.ha._supervisor import SupervisorStateFile
    except ImportError:  # pragma: no cover - the package ships it
        return None
    return SupervisorStateFile(instance)


def _serve(
    agent: Agent,
    opts: AgentOptions,
    out: TextIO,
    err: TextIO,
    server: HealthServer | None = None,
) -> int:
    from mxrc.agent._agent import AgentError

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: agent.request_stop())
    # Events print after the status line: subscribed before start (none is missed),
    # held back by the lock until the line is out.
    lock = threading.Lock()
    if opts.events:

        def show(event: Event) -> None:
            line = json.dumps(event_to_json(event), ensure_ascii=False)
            with lock:
                out.write(line + "\n")
                out.flush()

        agent.subscribe("*", show)
    try:
        with lock:
            try:
                agent.start()
            except AgentError as exc:
                _fail(err, str(exc))
                return EXIT_NOT_RUNNING
            print(_status_line(agent), file=out, flush=True)
            if server is not None:
                try:
                    server.start()
                except OSError as exc:  # e.g. the port is still taken: a retry may help
                    _fail(err, str(exc))
                    return EXIT_NOT_RUNNING
                print(
                    f"mxrc agent: health server on {server.url} (/health, /health/ready, "
                    f"/health/live, /health/details, /metrics)",
                    file=out,
                    flush=True,
                )
        agent.run(check=None if server is None else lambda: server.failure)
        print(_summary_line(agent), file=err, flush=True)
        if agent.failure is not None:
            _fail(err, f"{agent.failure}: exiting so that the agent is restarted")
            return EXIT_NOT_RUNNING
        if agent.owner_gone:
            _fail(
                err,
                f"the owner of {agent.segment.path} (pid {agent.segment.header['owner_pid']}) "
                "is gone: the instance stopped",
            )
            return EXIT_NOT_RUNNING
        return EXIT_OK
    finally:
        if server is not None:
            server.close()
        agent.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
