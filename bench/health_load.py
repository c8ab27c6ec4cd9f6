"""Health endpoints under load (issue 6 Targets, ARCHITECTURE §6).

An open-loop load generator (asyncio, in its own process pinned away from the
RT core with ``os.sched_setaffinity``) sends ``GET /health`` to the agent of a
supervised instance (``mxrc supervise``) at a fixed rate: request ``i`` is due
at ``i / rate`` and goes out on connection slot ``i % connections`` (the server
answers one request per connection, ``Connection: close``, so every request is
a new TCP connection; 1000 slots at 1000 requests/s = each slot once a second),
while ``idle`` sockets stay open without sending anything (re-opened when the
server closes them after its idle timeout). The response time is measured
from the request's *scheduled* time to the end of the response (no
coordinated omission: a late generator shows up as slower responses).

Errors = connection failures, timeouts and malformed responses. HTTP 503 is a
valid answer of ``/health`` (UNHEALTHY) and is counted separately.

The RT loop's late share (wake-up latency > 100 µs and > 1 ms, from the
difference of two snapshots of its stats histogram over a phase) is measured
in interleaved phases without and with the load (A B A B …); the loaded/unloaded
difference gets a paired bootstrap 95 % interval (``harness.bootstrap_diff``).

    python bench/health_load.py --pairs 5 --phase-s 10 \\
        --out bench/results/health-load.json --md bench/results/health-load.md

``python bench/health_load.py generate ...`` is the generator process itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Distribution,
    bootstrap_diff,
    bootstrap_ratio,
    interpreter_info,
    markdown_table,
)
from latency import write_results

from mxrc.testing import SupervisedProcess

__all__ = ["LoadGenerator", "SupervisedInstance", "late_shares", "main", "stats_window"]

RT_CPU = 1
"""The RT loop's CPU (``MXRC_RT_CPU_CORES``); the load generator runs on the others."""

FAST_POLICY = {
    "health_check_interval_ms": 100,
    "health_check_timeout_ms": 50,
    "failure_threshold": 3,
    "restart_delay_ms": 50,
    "max_restart_count": 100,
    "restart_window_sec": 10,
    "checkpoint_interval_sec": 10,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_info() -> dict[str, Any]:
    """Kernel, CPUs and the load average (the machine may be shared)."""
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
    }


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------- the instance


class SupervisedInstance(SupervisedProcess):
    """``mxrc supervise`` on a temp config (demo entry point, fast failure policy),
    its agent's health server on ``port``, RT loop on CPU :data:`RT_CPU`."""

    def __init__(
        self,
        *,
        checkpoint_dir: bool = False,
        rt_cpu: int = RT_CPU,
        cycle_time_us: int = 1000,
        policy: dict[str, Any] | None = None,
        rt_priority: int | None = None,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mxrc-bench-"))
        cfg = self.tmp / "cfg"
        cfg.mkdir()
        rt = dict(FAST_POLICY)
        rt.update(policy or {})
        (cfg / "failover_policy.json").write_text(json.dumps({"rt": rt}))
        (cfg / "perf_monitor.json").write_text(
            json.dumps({"rt": {"cycle_time_us": cycle_time_us, "warmup_cycle_count": 0}})
        )
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MXRC_", "NOTIFY_"))}
        env["MXRC_HTTP_PORT"] = str(self.port)
        env["MXRC_RT_CPU_CORES"] = str(rt_cpu)
        if rt_priority is not None:
            env["MXRC_RT_PRIORITY"] = str(rt_priority)
        args = ["--checkpoint-dir", str(self.tmp / "ckpt")] if checkpoint_dir else []
        self.segment: Any = None
        instance = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        super().__init__(cfg, instance=instance, args=args, env=env)

    def start(self, timeout: float = 60.0) -> None:
        """Wait for the first RT process to beat and the health server to answer."""
        from mxrc.bus import Segment

        self.wait_line(r"ready: RT process", timeout)
        self.wait_line(r"agent started", timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"the health server on port {self.port} never answered"
                    raise RuntimeError(msg) from None
                time.sleep(0.05)
        self.segment = Segment.attach(self.instance)

    def current_rt_pid(self) -> int:
        """The current RT process (from the supervisor's state file)."""
        data = json.loads(Path(f"/dev/shm/mxrc.ha-{self.instance}.json").read_text())
        return int(data["rt_pid"])

    def stop(self, timeout: float = 30.0) -> int:
        if self.segment is not None:
            self.segment.close()
            self.segment = None
        code = super().stop(timeout)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return code

    def __enter__(self) -> SupervisedInstance:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self


# ------------------------------------------------------------ RT late share


def newest_stats(segment: Any) -> Any:
    """The stats block that beat last (the live RT process's cycle thread)."""
    blocks = segment.stats_all()
    return max(blocks.values(), key=lambda s: s.heartbeat_ns)


def stats_window(before: Any, after: Any) -> Distribution:
    """Wake-up latency distribution of the cycles between two snapshots of one block."""
    h0, h1 = before.wake_latency, after.wake_latency
    counts = [int(b) - int(a) for a, b in zip(h0.counts.tolist(), h1.counts.tolist(), strict=True)]
    nz = [i for i, c in enumerate(counts) if c > 0]
    return Distribution.from_buckets(
        [int(h1.lower_ns[i]) for i in nz],
        [int(h1.upper_ns[i]) + 1 for i in nz],
        [counts[i] for i in nz],
        overflow=max(0, int(h1.overflow) - int(h0.overflow)),
        overflow_from_ns=int(h1.max_trackable_ns) + 1,
    )


def late_shares(dist: Distribution) -> dict[str, float]:
    return {
        "cycles": float(dist.count),
        "late_100us": dist.share_above(100_000),
        "late_1ms": dist.share_above(1_000_000),
        "p50_us": dist.percentile_ns(0.5) / 1e3,
        "p99_us": dist.percentile_ns(0.99) / 1e3,
    }


# ------------------------------------------------------------ load generator


class LoadGenerator:
    """The generator process (``health_load.py generate``); stop it with :meth:`stop`."""

    def __init__(
        self,
        port: int,
        *,
        rate: float = 1000.0,
        connections: int = 1000,
        idle: int = 100,
        requests: int = 0,
        path: str = "/health",
        cpus: Sequence[int] | None = None,
    ) -> None:
        if cpus is None:
            cpus = sorted(set(range(os.cpu_count() or 1)) - {RT_CPU}) or [0]
        args = [sys.executable, str(Path(__file__).resolve()), "generate"]
        args += ["--port", str(port), "--rate", str(rate), "--connections", str(connections)]
        args += ["--idle", str(idle), "--requests", str(requests), "--path", path]
        args += ["--cpus", ",".join(str(c) for c in cpus)]
        self.requests = requests
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "started": the idle sockets are open
        if not line.startswith("started"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the load generator did not start: {line!r} {err}")

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Its results: after ``requests`` requests, else once :meth:`stop` closed its stdin."""
        if self.requests:
            self.proc.wait(timeout)  # stdin stays open: the generator stops by itself
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the load generator failed ({self.proc.returncode}): {err}")
        result: dict[str, Any] = json.loads(out)
        return result

    def stop(self) -> dict[str, Any]:
        """End the load (close its stdin) and return its results."""
        return self.wait(timeout=120)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-int(q * len(sorted_values) * 1000) // 1000))
    return sorted_values[min(len(sorted_values), rank) - 1]


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    request = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    idle_reopened = 0
    lag_max = 0.0
    busy = [0] * args.connections  # slot still waiting for its previous response
    slot_skipped = 0

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one(slot: int, due: float) -> None:
        busy[slot] = 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port), args.timeout
            )
        except (OSError, TimeoutError) as exc:
            err(f"connect: {type(exc).__name__}")
            busy[slot] = 0
            return
        try:
            writer.write(request)
            data = await asyncio.wait_for(reader.read(), args.timeout)  # until close
            end = loop.time()
            m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
            body = data.partition(b"\r\n\r\n")[2]
            if m is None or not body.startswith(b"{"):
                err("malformed response")
            else:
                statuses[m.group(1).decode()] = statuses.get(m.group(1).decode(), 0) + 1
                latencies.append(end - due)
        except (OSError, TimeoutError) as exc:
            err(f"response: {type(exc).__name__}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            busy[slot] = 0

    async def idle_socket() -> None:
        nonlocal idle_reopened
        first = True
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            except OSError as exc:
                err(f"idle connect: {type(exc).__name__}")
                await asyncio.sleep(0.1)
                continue
            if not first:
                idle_reopened += 1
            first = False
            read = asyncio.ensure_future(reader.read())
            done = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, done}, return_when=asyncio.FIRST_COMPLETED)
            for f in (read, done):
                f.cancel()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    idlers = [asyncio.ensure_future(idle_socket()) for _ in range(args.idle)]
    await asyncio.sleep(0.2)

    def stdin_closed() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=stdin_closed, daemon=True).start()
    print("started", flush=True)
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time()
    i = 0
    period = 1.0 / args.rate
    while not stop.is_set() and (args.requests == 0 or i < args.requests):
        due = t0 + i * period
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        lag_max = max(lag_max, loop.time() - due)
        slot = i % args.connections
        if busy[slot]:
            slot_skipped += 1  # open loop: never wait; the slot's earlier request is slow
        t = asyncio.ensure_future(one(slot, due))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        i += 1
    sent_s = loop.time() - t0
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1)
    stop.set()
    await asyncio.gather(*idlers, return_exceptions=True)
    latencies.sort()
    return {
        "requests": i,
        "duration_s": sent_s,
        "achieved_rate": i / sent_s if sent_s > 0 else 0.0,
        "responses": len(latencies),
        "statuses": statuses,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "p50_ms": _percentile(latencies, 0.5) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "generator_max_lag_ms": lag_max * 1e3,
        "slot_still_busy": slot_skipped,
        "idle_sockets": args.idle,
        "idle_reopened": idle_reopened,
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def generate_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="health_load.py generate")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--idle", type=int, default=100)
    p.add_argument("--requests", type=int, default=0, help="stop after N (0: at stdin EOF)")
    p.add_argument("--path", default="/health")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--cpus", default="0")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (args.connections + args.idle) + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    result = asyncio.run(_generate(args))
    print(json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------ the bench


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = now_utc()
    host_before = host_info()
    phases: list[dict[str, Any]] = []
    with SupervisedInstance(rt_priority=args.rt_priority) as inst:
        time.sleep(args.settle_s)
        for pair in range(args.pairs):
            for loaded in (False, True):
                gen = None
                if loaded:
                    gen = LoadGenerator(
                        inst.port,
                        rate=args.rate,
                        connections=args.connections,
                        idle=args.idle,
                        requests=args.requests,
                    )
                    time.sleep(min(1.0, args.phase_s / 5))  # connections opened, steady rate
                s0 = newest_stats(inst.segment)
                load: dict[str, Any] | None
                if gen is not None and args.requests:
                    load = gen.wait(timeout=600)
                else:
                    time.sleep(args.phase_s)
                    load = gen.stop() if gen is not None else None
                s1 = newest_stats(inst.segment)
                rt = late_shares(stats_window(s0, s1)) if s0.name == s1.name else None
                phases.append({"pair": pair, "loaded": loaded, "rt": rt, "load": load})
                print(f"pair {pair} {'B load' if loaded else 'A idle'}: rt={rt} load={load}")
    return {
        "bench": "health_load",
        "started_utc": started,
        "host_before": host_before,
        "host_after": host_info(),
        "interpreter": interpreter_info(),
        "params": vars(args),
        "phases": phases,
        "summary": summarize(phases),
    }


def summarize(phases: list[dict[str, Any]]) -> dict[str, Any]:
    loads = [p["load"] for p in phases if p["load"] is not None]
    pairs: dict[int, dict[bool, Any]] = {}
    for p in phases:
        if p["rt"] is not None:
            pairs.setdefault(p["pair"], {})[p["loaded"]] = p["rt"]
    full = [v for v in pairs.values() if True in v and False in v]
    out: dict[str, Any] = {
        "requests": sum(ld["requests"] for ld in loads),
        "errors": sum(ld["errors"] for ld in loads),
        "statuses": {},
        "median_p50_ms": _median([ld["p50_ms"] for ld in loads]),
        "median_p99_ms": _median([ld["p99_ms"] for ld in loads]),
        "worst_phase_p99_ms": max((ld["p99_ms"] for ld in loads), default=float("nan")),
        "median_achieved_rate": _median([ld["achieved_rate"] for ld in loads]),
        "pairs": len(full),
    }
    for ld in loads:
        for k, v in ld["statuses"].items():
            out["statuses"][k] = out["statuses"].get(k, 0) + v
    for key in ("late_100us", "late_1ms", "p99_us"):
        a = [v[False][key] for v in full]
        b = [v[True][key] for v in full]
        out[key] = {"unloaded_median": _median(a), "loaded_median": _median(b)}
        if full:
            out[key]["diff_loaded_minus_unloaded"] = bootstrap_diff(b, a).to_dict()
            if key == "p99_us":
                out[key]["ratio_loaded_over_unloaded"] = bootstrap_ratio(b, a).to_dict()
    return out


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def to_markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    interp = result["interpreter"]
    prm = result["params"]
    lines = [
        f"# Health endpoints under load ({result['started_utc']})",
        "",
        f"Python {interp['version']} ({interp['executable']}, PGO: {interp['pgo']}); "
        f"{result['host_before']['cpus']} CPUs, kernel {result['host_before']['kernel']}; "
        f"load average before {result['host_before']['loadavg']}, "
        f"after {result['host_after']['loadavg']} (shared machine).",
        f"Open loop GET /health at {prm['rate']}/s over {prm['connections']} connection slots "
        f"+ {prm['idle']} idle sockets, generator pinned to CPUs other than {RT_CPU} "
        f"(RT loop on CPU {RT_CPU}); {s['pairs']} interleaved pairs of {prm['phase_s']} s.",
        "",
        markdown_table(
            ["requests", "errors", "statuses", "median p50 ms", "median p99 ms", "worst p99 ms"],
            [
                [
                    s["requests"],
                    s["errors"],
                    json.dumps(s["statuses"]),
                    s["median_p50_ms"],
                    s["median_p99_ms"],
                    s["worst_phase_p99_ms"],
                ]
            ],
        ),
    ]
    rows = []
    for key in ("late_100us", "late_1ms", "p99_us"):
        d = s[key]
        iv = d.get("diff_loaded_minus_unloaded")
        rows.append(
            [
                key,
                d["unloaded_median"],
                d["loaded_median"],
                None if iv is None else f"{iv['value']:.3g} [{iv['low']:.3g}, {iv['high']:.3g}]",
            ]
        )
    lines.append(
        markdown_table(
            ["RT wake-up", "unloaded (median)", "loaded (median)", "loaded − unloaded [95 % CI]"],
            rows,
        )
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        return generate_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--phase-s", type=float, default=10.0)
    p.add_argument("--settle-s", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--idle", type=int, default=100)
    p.add_argument("--requests", type=int, default=0, help="per loaded phase (0: phase-s)")
    p.add_argument("--rt-priority", type=int, help="MXRC_RT_PRIORITY (default: the config's)")
    p.add_argument("--out", help="JSON results file")
    p.add_argument("--md", help="Markdown results file")
    args = p.parse_args(argv)
    result = run(args)
    write_results(result, to_markdown(result), args.out, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
