"""The ``mxrc`` command.

Subcommands register themselves through :data:`SUBCOMMANDS`: each entry is a
function that adds its subparser and sets ``handler`` (``args -> exit code``).
Exit codes: 0 success (warnings allowed), 1 the command's check failed,
2 usage or configuration error (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from mxrc.errors import ConfigError
from mxrc.rt._cpulist import parse_cpulist

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "SUBCOMMANDS", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

SubparsersAction = Any  # argparse._SubParsersAction is private; typed loosely on purpose
Registrar = Callable[[SubparsersAction], None]


def _version() -> str:
    try:
        return version("mxrc")
    except PackageNotFoundError:
        return "unknown"


def _cpulist_arg(text: str) -> frozenset[int]:
    try:
        cpus = parse_cpulist(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not cpus:
        raise argparse.ArgumentTypeError("expected at least one CPU, e.g. 2 or 2-3")
    return cpus


def _directory_arg(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    return text


def _doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from mxrc._doctor import run_doctor

    try:
        report = run_doctor(
            rt_cores=args.rt_cores,
            config_dir=args.config,
            rt_priority=args.priority,
            procfs_root=args.procfs_root,
            sysfs_root=args.sysfs_root,
            probe=False if args.no_probe else None,
        )
    except ConfigError as exc:
        print(f"mxrc doctor: configuration error: {exc}", file=err)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"mxrc doctor: cannot load the configuration support: {exc}", file=err)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"mxrc doctor: {exc}", file=err)
        return EXIT_USAGE
    if args.json:
        json.dump(report.to_dict(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(report.format_text())
    return report.exit_code


def _register_doctor(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check whether this host is ready to run a real-time loop",
        description=(
            "Readiness report for running a real-time loop on this host for the configured RT "
            "cores: isolation, cgroups, RT throttling, limits, IRQs, kernel, clock. Exit code "
            "0: ready (warnings allowed), 1: an error finding, 2: usage or configuration error."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--config",
        metavar="DIR",
        type=_directory_arg,
        help="configuration directory (cpu_affinity.json, numa_binding.json, ...)",
    )
    p.add_argument(
        "--rt-cores",
        metavar="CPUS",
        type=_cpulist_arg,
        help="RT cores to check, e.g. 2-3 (overrides the configuration)",
    )
    p.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="SCHED_FIFO priority to check against RLIMIT_RTPRIO (default: from the config)",
    )
    p.add_argument("--no-probe", action="store_true", help="infer, do not probe SCHED_FIFO")
    p.add_argument("--procfs-root", default="/proc", type=_directory_arg, help=argparse.SUPPRESS)
    p.add_argument("--sysfs-root", default="/sys", type=_directory_arg, help=argparse.SUPPRESS)
    p.set_defaults(handler=_doctor)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from mxrc._run import RunOptions, run_demo

    try:
        opts = RunOptions(
            config_dir=args.config,
            cycles=args.cycles,
            period_us=args.period_us,
            tier=args.tier,
            json_report=args.json_report,
            instance=args.instance,
            progress=not args.no_progress,
            watch_config=not args.no_watch_config,
            agent=args.agent,
            force_agent_thread=args.force_agent_thread,
        )
    except ValueError as exc:
        print(f"mxrc run: {exc}", file=err)
        return EXIT_USAGE
    return run_demo(opts, out, err)


def _register_run(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the demo control task on a real-time cycle and report its latency",
        description=(
            "Run the demo control task (a simulated axis with a PID controller) on an mxrc "
            "executive configured from DIR, for N cycles, then print the latency report "
            "(wake-up latency, body-start latency, execution time, deadline misses) with a "
            "text histogram. Exit code 0: ok, 1: runtime error, 2: usage or configuration "
            "error, 130: interrupted."
        ),
    )
    p.add_argument(
        "--config",
        metavar="DIR",
        type=_directory_arg,
        help="configuration directory (default: $MXRC_CONFIG_DIR, else built-in defaults)",
    )
    p.add_argument(
        "--cycles", type=_positive_int, default=5000, metavar="N", help="cycles to run (5000)"
    )
    p.add_argument(
        "--period-us",
        type=_positive_int,
        metavar="P",
        help="cycle period in µs (overrides perf_monitor.json rt.cycle_time_us)",
    )
    p.add_argument(
        "--tier",
        choices=("python", "native"),
        default="native",
        help="run the demo body as native code without the GIL (default) or as Python",
    )
    p.add_argument("--json-report", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="instance name of the shared-memory segment /dev/shm/mxrc-NAME "
        "(default: $MXRC_INSTANCE, else 'default')",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress line (shown only on a terminal)"
    )
    p.add_argument(
        "--no-watch-config",
        action="store_true",
        help="do not apply changes of the config directory's cpu_affinity.json during the run",
    )
    p.add_argument(
        "--agent",
        choices=("process", "thread", "none"),
        default="process",
        help="run the instance's agent as its own process (default), as a thread of this "
        "process (native tier only, see --force-agent-thread), or not at all (the agent "
        "heartbeat watchdog is then off)",
    )
    p.add_argument(
        "--force-agent-thread",
        action="store_true",
        help="allow --agent thread with --tier python although the agent's threads then "
        "delay every cycle (they take the GIL)",
    )
    p.set_defaults(handler=_run)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from mxrc._status import StatusOptions, run_status

    try:
        opts = StatusOptions(
            instance=args.instance,
            watch=args.watch,
            interval_s=args.interval,
            count=args.count,
            json=args.json,
        )
    except ValueError as exc:
        print(f"mxrc status: {exc}", file=err)
        return EXIT_USAGE
    return run_status(opts, out, err)


def _register_status(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a running instance's cycle threads: state, cycles, latency, misses",
        description=(
            "Attach to a running instance's shared-memory segment (/dev/shm/mxrc-NAME) from "
            "this process and show each cycle thread: state, cycle count, wake-up / body-start "
            "latency and execution time percentiles, deadline misses and miss rate, late "
            "wake-up shares, heartbeat age, thread id, CPU and scheduling. Without --instance: "
            "$MXRC_INSTANCE, else the only instance, else a list of all. Exit code 0: running "
            "(or listed), 1: no such instance or its owner is gone, 2: usage error, 3: the "
            "segment cannot be read (not mxrc's, another layout version, permission)."
        ),
    )
    p.add_argument("--instance", metavar="NAME", help="instance to show")
    p.add_argument(
        "--watch", action="store_true", help="refresh until Ctrl-C (with the windowed miss rate)"
    )
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="seconds between refreshes with --watch (1.0)",
    )
    p.add_argument(
        "--count", type=_positive_int, metavar="N", help="stop --watch after N refreshes"
    )
    p.add_argument("--json", action="store_true", help="JSON (with --watch: one object per line)")
    p.set_defaults(handler=_status)


def _metrics(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from mxrc._metrics_cmd import MetricsOptions, run_metrics

    opts = MetricsOptions(
        instance=args.instance,
        port=args.port,
        addr=args.addr,
        units=args.units,
        process=args.process,
    )
    return run_metrics(opts, out, err)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value


def _register_metrics(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="an instance's Prometheus metrics: print once, or serve with --port",
        description=(
            "Attach to a running instance's shared-memory segment and print its Prometheus "
            "metrics (mxrc_rt_*, mxrc_cpu_*, mxrc_numa_*; docs/metrics.md) once, or serve them "
            "on http://ADDR:PORT/metrics until Ctrl-C. Runs outside the RT process, so scrapes "
            "never hold the RT process's GIL. Instance selection and exit codes as mxrc status."
        ),
    )
    p.add_argument("--instance", metavar="NAME", help="instance to read")
    p.add_argument("--port", type=_port, metavar="PORT", help="serve on this port (0: any free)")
    p.add_argument("--addr", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--units",
        choices=("us", "seconds"),
        default="us",
        help="us: the contract names (*_us); seconds: Prometheus base units (docs/metrics.md)",
    )
    p.add_argument("--process", default="rt", help="value of the process label (rt)")
    p.set_defaults(handler=_metrics)


def _agent(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from mxrc.agent._cli import AgentOptions, run_agent

    opts = AgentOptions(
        instance=args.instance,
        config_dir=args.config,
        events=args.events,
        parent_pid=args.parent_pid,
        takeover=args.takeover,
        http=args.http,
        http_port=args.http_port,
    )
    return run_agent(opts, out, err)


def _register_agent(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="run an instance's agent: heartbeat, drain the rings, dispatch events",
        description=(
            "Attach to a running instance's shared-memory segment (/dev/shm/mxrc-NAME) as its "
            "agent: write the agent heartbeat the RT side watches (failover_policy.json "
            "rt.agent_heartbeat_interval_ms), drain every cycle thread's rings and dispatch "
            "their events, until SIGINT/SIGTERM. Prints a one-line status on start. Instance "
            "selection as mxrc status. Exit code 0: stopped by a signal, 1: no such instance, "
            "its owner went away or another live agent serves it, 2: usage or configuration "
            "error, 3: the segment cannot be read (not mxrc's, another layout version, "
            "permission)."
        ),
    )
    p.add_argument("--instance", metavar="NAME", help="instance to serve")
    p.add_argument(
        "--config",
        metavar="DIR",
        type=_directory_arg,
        help="configuration directory (default: $MXRC_CONFIG_DIR, else built-in defaults)",
    )
    p.add_argument(
        "--events",
        action="store_true",
        help="print every event received from the cycle threads as one JSON line",
    )
    p.add_argument(
        "--takeover",
        action="store_true",
        help="start even while another live agent beats (it keeps draining too)",
    )
    p.add_argument(
        "--http",
        action="store_true",
        help="serve /health, /health/ready, /health/live, /health/details and /metrics at "
        "failover_policy.json health_server (default 127.0.0.1:8080; on by itself when "
        "MXRC_HTTP_PORT is set)",
    )
    p.add_argument(
        "--http-port",
        metavar="PORT",
        type=_port,
        help="serve the health endpoints on this port (0 = any free port; implies --http)",
    )
    p.add_argument("--parent-pid", type=_positive_int, help=argparse.SUPPRESS)
    p.set_defaults(handler=_agent)


def _supervise(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from mxrc.ha._supervisor import run_supervise

    entry = list(args.entrypoint)
    if entry and entry[0] == "--":
        entry = entry[1:]
    if len(entry) > 1:
        print(f"mxrc supervise: expected one ENTRYPOINT (module:function), got {entry}", file=err)
        return EXIT_USAGE
    return run_supervise(
        args.config,
        args.instance,
        entry[0] if entry else None,
        agent=not args.no_agent,
        http=not args.no_http,
        err=err,
        checkpoint_dir=args.checkpoint_dir,
    )


def _register_supervise(sub: SubparsersAction) -> None:
    p = sub.add_parser(
        "supervise",
        help="run an instance: own its segment, run and restart its RT process and agent",
        description=(
            "The main process of an instance (systemd mxrc@.service, Type=notify): creates the "
            "segment, starts the agent and the RT process (running ENTRYPOINT, module:function, "
            "default the demo axis), restarts a dead or hung RT process within "
            "failover_policy.json rt (restart_delay_ms, max_restart_count per "
            "restart_window_sec; then MANUAL_INTERVENTION), until SIGTERM/SIGINT (RT stopped "
            "first, then the agent, then the segment). docs/supervisor.md. Exit code 0: "
            "stopped by a signal, 1: start failed, 2: usage or configuration error."
        ),
    )
    p.add_argument(
        "--config",
        metavar="DIR",
        type=_directory_arg,
        help="configuration directory (default: $MXRC_CONFIG_DIR, else built-in defaults)",
    )
    p.add_argument("--instance", metavar="NAME", help="instance name (default: from the config)")
    p.add_argument("--no-agent", action="store_true", help="do not start the agent")
    p.add_argument(
        "--no-http",
        action="store_true",
        help="the agent serves no /health* and /metrics (default: it does, on "
        "failover_policy.json health_server or $MXRC_HTTP_PORT)",
    )
    p.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="write checkpoints here (rt.checkpoint_interval_sec) and resume a restarted RT "
        "process from them (slots without a valid live value)",
    )
    p.add_argument(
        "entrypoint",
        nargs=argparse.REMAINDER,
        metavar="-- ENTRYPOINT",
        help="the RT process's entry point module:function (default the demo axis)",
    )
    p.set_defaults(handler=_supervise)


SUBCOMMANDS: list[Registrar] = [
    _register_doctor,
    _register_run,
    _register_status,
    _register_metrics,
    _register_agent,
    _register_supervise,
]
"""Functions that add one subcommand each; later subcommands append here."""


def build_parser() -> argparse.ArgumentParser:
    """The ``mxrc`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="mxrc",
        description="Production-ready real-time control loops on Linux.",
    )
    parser.add_argument("--version", action="version", version=f"mxrc {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mxrc`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version and usage errors
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result: int = handler(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `mxrc doctor --json | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    return result
