"""Restart time of the RT process under ``mxrc supervise`` (issue 6 Targets, ARCHITECTURE §6).

A supervised instance (``mxrc supervise --checkpoint-dir``, the demo entry
point, a fast failure policy: ``restart_delay_ms`` 50, up to 100 restarts in
10 s) runs; this script attaches its segment read-only and, many times,
SIGKILLs the RT process and measures, on CLOCK_MONOTONIC:

- **kill → first cycle with restored state** (the target): from just before
  ``kill(pid, SIGKILL)`` until the data store slot ``demo.axis`` is written by
  the *new generation* (the segment generation went up — the new RT process
  bumps it before its first cycle — and then the slot's version moved) with a
  step counter that continues the old one (``step_new >= step_at_kill``:
  restored, not restarted from zero). The demo writes the slot in every
  cycle's body, so this is the first cycle of the new process. Polled every
  ``--poll-us`` (200 µs): resolution ≈ the poll interval.
- kill → generation bump (the new process attached the segment), as a split.

Kills alternate in blocks between *idle* and *loaded* (the health endpoints
under ``health_load.py``'s open-loop load: 1000 GET /health per second over
1000 connection slots + 100 idle sockets, generator pinned away from the RT
CPU). p50/p95 per condition (nearest rank), no max targets.

    python bench/restart_time.py --rounds 2 --kills-per-block 10 \\
        --out bench/results/restart-time.json --md bench/results/restart-time.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import interpreter_info, markdown_table
from health_load import (
    FAST_POLICY,
    LoadGenerator,
    SupervisedInstance,
    host_info,
    now_utc,
)
from latency import write_results

__all__ = ["kill_once", "main", "percentile"]

DEMO_SLOT = "demo.axis"
STEP_INDEX = 12  # the demo state's step counter


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); nan for no values."""
    v = sorted(values)
    if not v:
        return math.nan
    return v[max(1, math.ceil(q * len(v))) - 1]


def percentile_interval(
    values: Sequence[float], q: float, *, n_boot: int = 10000, seed: int = 0
) -> list[float]:
    """Percentile-bootstrap 95 % interval of the nearest-rank ``q`` percentile."""
    if not values:
        return [math.nan, math.nan]
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(
        percentile([values[rng.randrange(n)] for _ in range(n)], q) for _ in range(n_boot)
    )
    return [stats[int(0.025 * n_boot)], stats[min(n_boot - 1, math.ceil(0.975 * n_boot) - 1)]]


def _wait_recovered(inst: SupervisedInstance, timeout: float) -> None:
    """Until the supervisor's recovery is over: NORMAL, or DEGRADED (a few deadline
    misses of the new process's first cycles keep the windowed rate above the strict
    default limit for a while; that is no recovery in progress), with a live RT process."""
    path = Path(f"/dev/shm/mxrc.ha-{inst.instance}.json")
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = json.loads(path.read_text())
            if data.get("ha_state") in ("NORMAL", "DEGRADED") and data.get("rt_pid"):
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the supervisor did not end its recovery in {timeout} s (state file: {path})"
            )
        time.sleep(0.01)


def kill_once(
    inst: SupervisedInstance, ds: Any, *, poll_s: float, timeout: float
) -> dict[str, Any]:
    """SIGKILL the RT process once; the times of the new generation's milestones."""
    seg = inst.segment
    pid = inst.current_rt_pid()
    g0 = seg.generation
    t0 = time.monotonic_ns()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    t_gen = None
    v_gen = step_old = None
    while time.monotonic() < deadline:
        if t_gen is None:
            if seg.generation > g0:
                t_gen = time.monotonic_ns()
                value, v_gen = ds.read_versioned(DEMO_SLOT)
                step_old = int(value[STEP_INDEX])
        else:
            value, version = ds.read_versioned(DEMO_SLOT)
            if version != v_gen:
                t1 = time.monotonic_ns()
                step_new = int(value[STEP_INDEX])
                assert step_old is not None
                return {
                    "pid": pid,
                    "ok": True,
                    "kill_to_first_cycle_ms": (t1 - t0) / 1e6,
                    "kill_to_generation_ms": (t_gen - t0) / 1e6,
                    "step_at_kill": step_old,
                    "first_step": step_new,
                    "restored": step_new >= step_old,
                }
        time.sleep(poll_s)
    return {"pid": pid, "ok": False, "restored": False, "reason": f"no new cycle in {timeout} s"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mxrc.bus import DataStore

    rng = random.Random(args.seed)
    started = now_utc()
    host_before = host_info()
    kills: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    with SupervisedInstance(checkpoint_dir=True, rt_priority=args.rt_priority) as inst:
        ds = DataStore.from_segment(inst.segment)
        inst.wait_line(r"demo axis (resumed|starts)")
        for rnd in range(args.rounds):
            for loaded in (False, True) if not args.idle_only else (False,):
                gen = None
                if loaded:
                    gen = LoadGenerator(
                        inst.port,
                        rate=args.rate,
                        connections=args.connections,
                        idle=args.idle,
                        requests=args.requests,
                    )
                    time.sleep(args.settle_s)
                for _ in range(args.kills_per_block):
                    _wait_recovered(inst, 30)
                    time.sleep(args.settle_s + rng.random() * args.jitter_s)
                    k = kill_once(inst, ds, poll_s=args.poll_us / 1e6, timeout=args.timeout_s)
                    k.update(round=rnd, loaded=loaded)
                    kills.append(k)
                    print(json.dumps(k), flush=True)
                if gen is not None:
                    ld = gen.wait(timeout=600) if args.requests else gen.stop()
                    ld["round"] = rnd
                    loads.append(ld)
                    print(json.dumps(ld), flush=True)
        inst.drain()
        resumed_lines = sum("demo axis resumed" in line for line in inst.lines)
    return {
        "bench": "restart_time",
        "started_utc": started,
        "host_before": host_before,
        "host_after": host_info(),
        "interpreter": interpreter_info(),
        "params": vars(args),
        "policy": FAST_POLICY,
        "kills": kills,
        "loads": loads,
        "resumed_lines": resumed_lines,
        "summary": summarize(kills, loads),
    }


def summarize(kills: list[dict[str, Any]], loads: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, loaded in (("idle", False), ("loaded", True)):
        ks = [k for k in kills if k["loaded"] == loaded]
        if not ks:
            continue
        good = [k for k in ks if k["ok"]]
        first = [k["kill_to_first_cycle_ms"] for k in good]
        gen = [k["kill_to_generation_ms"] for k in good]
        out[name] = {
            "kills": len(ks),
            "measured": len(good),
            "restored": sum(bool(k["restored"]) for k in ks),
            "p50_ms": percentile(first, 0.5),
            "p50_interval_ms": percentile_interval(first, 0.5),
            "p95_ms": percentile(first, 0.95),
            "p95_interval_ms": percentile_interval(first, 0.95),
            "generation_to_first_cycle_p50_ms": percentile(
                [k["kill_to_first_cycle_ms"] - k["kill_to_generation_ms"] for k in good], 0.5
            ),
            "steps_lost": sorted({k["first_step"] - k["step_at_kill"] - 1 for k in good}),
            "generation_p50_ms": percentile(gen, 0.5),
            "generation_p95_ms": percentile(gen, 0.95),
        }
    if loads:
        statuses: dict[str, int] = {}
        for ld in loads:
            for k, v in ld["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        out["load"] = {
            "requests": sum(ld["requests"] for ld in loads),
            "errors": sum(ld["errors"] for ld in loads),
            "statuses": statuses,
            "p99_ms": [ld["p99_ms"] for ld in loads],
        }
    return out


def _with_interval(value: float, iv: Sequence[float]) -> str:
    return f"{value:.0f} [{iv[0]:.0f}, {iv[1]:.0f}]"


def to_markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    interp = result["interpreter"]
    prm = result["params"]
    pol = result["policy"]
    rows = [
        [
            name,
            s[name]["kills"],
            s[name]["restored"],
            _with_interval(s[name]["p50_ms"], s[name]["p50_interval_ms"]),
            _with_interval(s[name]["p95_ms"], s[name]["p95_interval_ms"]),
            s[name]["generation_p50_ms"],
            s[name]["generation_p95_ms"],
        ]
        for name in ("idle", "loaded")
        if name in s
    ]
    lines = [
        "# Restart time: SIGKILL of the RT process → first restored cycle "
        f"({result['started_utc']})",
        "",
        f"Python {interp['version']} ({interp['executable']}, PGO: {interp['pgo']}); "
        f"{result['host_before']['cpus']} CPUs, kernel {result['host_before']['kernel']}; "
        f"load average before {result['host_before']['loadavg']}, "
        f"after {result['host_after']['loadavg']} (shared machine).",
        f"`mxrc supervise --checkpoint-dir`, demo entry point, restart_delay_ms "
        f"{pol['restart_delay_ms']}; {prm['rounds']} rounds of {prm['kills_per_block']} kills "
        f"idle then loaded; poll {prm['poll_us']} µs.",
        "",
        markdown_table(
            [
                "condition",
                "kills",
                "restored",
                "p50 ms [95 % CI]",
                "p95 ms [95 % CI]",
                "→ generation p50 ms",
                "→ generation p95 ms",
            ],
            rows,
        ),
    ]
    if "load" in s:
        ld = s["load"]
        lines.append(
            f"Load during the loaded blocks: {ld['requests']} requests, {ld['errors']} errors, "
            f"statuses {json.dumps(ld['statuses'])} (503 = UNHEALTHY while the RT process "
            f"restarts), p99 per block {[round(x, 2) for x in ld['p99_ms']]} ms.\n"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--kills-per-block", type=int, default=10)
    p.add_argument("--idle-only", action="store_true", help="no loaded blocks")
    p.add_argument("--settle-s", type=float, default=0.3, help="after the recovery, before a kill")
    p.add_argument("--jitter-s", type=float, default=0.3, help="random extra wait (0..this)")
    p.add_argument("--poll-us", type=float, default=200.0)
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--idle", type=int, default=100)
    p.add_argument("--requests", type=int, default=0, help="per loaded block (0: whole block)")
    p.add_argument("--rt-priority", type=int, help="MXRC_RT_PRIORITY (default: the config's)")
    p.add_argument("--out", help="JSON results file")
    p.add_argument("--md", help="Markdown results file")
    p.add_argument("--report", help="re-render the summary and Markdown of a JSON results file")
    args = p.parse_args(argv)
    if args.report:
        result = json.loads(Path(args.report).read_text())
        result["summary"] = summarize(result["kills"], result["loads"])
    else:
        result = run(args)
    write_results(result, to_markdown(result), args.out, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
