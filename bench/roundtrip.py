"""Event round trip RT → agent → RT: latency distribution, ARCHITECTURE §6 style.

A native body publishes a probe event (stamped with CLOCK_MONOTONIC) into
its event ring; the agent's handler echoes it back on the command ring; the
body polls the command ring every cycle and records the difference
(``bench/roundtrip_child.py`` describes one probe and its three legs).

Runs every configuration once per round, rounds after rounds (A B A B …, the
order rotated each round), each run a fresh RT process. Keeps per run p50,
p99, p99.9 and the share of round trips above each ``--late-us`` threshold;
reports per configuration the median over runs, and the ratio of medians
between configurations with a paired bootstrap 95 % interval. There is no
target (the issue sets none); no figure is ever given for max.

Configurations (``--configs``, default both):
  process   the agent in its own process (``mxrc run``'s default)
  thread    the agent as threads of the RT process (``mxrc run --agent thread``,
            allowed for a native body)

The RT side runs like bench/latency.py's: SCHED_FIFO 50 on CPU 1, mlockall;
the agent runs SCHED_OTHER, unpinned.

Usage (defaults: 10 rounds × 10 000 round trips at 1 kHz, ~5 min):
  python bench/roundtrip.py --out bench/results/roundtrip.json --md bench/results/roundtrip.md
Quick run:
  python bench/roundtrip.py --rounds 2 --probes 1000 --out /tmp/rt.json --md /tmp/rt.md
Needs root (SCHED_FIFO, mlockall) and a C compiler (the probe body is built with cc).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Distribution, bootstrap_ratio, markdown_table, run_metrics
from latency import (
    add_run_options,
    host_info,
    interpreter_of,
    median_metrics,
    paired,
    run_rounds,
    selected_configs,
    write_results,
)

__all__ = ["COMPARISONS", "CONFIGS", "main"]

CONFIGS = ("process", "thread")
SERIES = ("total", "up", "down")
CHILD = Path(__file__).resolve().parent / "roundtrip_child.py"

# (candidate, baseline, series, metric, what); ratios of medians, no targets
COMPARISONS: list[dict[str, Any]] = [
    {
        "id": "thread-vs-process-p50",
        "candidate": "thread",
        "baseline": "process",
        "series": "total",
        "metric": "p50_us",
        "what": "round trip p50, agent thread / agent process",
    },
    {
        "id": "thread-vs-process-p99",
        "candidate": "thread",
        "baseline": "process",
        "series": "total",
        "metric": "p99_us",
        "what": "round trip p99, agent thread / agent process",
    },
]


def child_command(config: str, args: argparse.Namespace) -> list[str]:
    """The command line of one run of ``config``."""
    cmd = [
        args.python,
        str(CHILD),
        "rt",
        f"--agent={config}",
        f"--probes={args.probes}",
        f"--warmup={args.warmup}",
        f"--period-us={args.period_us}",
        f"--every={args.every}",
        f"--priority={args.priority}",
        f"--cpu={args.cpu}",
        f"--agent-poll-us={args.agent_poll_us}",
    ]
    if args.no_rt:
        cmd.append("--no-rt")
    return cmd


def run_one(config: str, args: argparse.Namespace, late_us: Sequence[int]) -> dict[str, Any]:
    """Run ``config`` once in a fresh process; its metrics and counters."""
    cmd = child_command(config, args)
    timeout = 120 + 4 * (args.probes + args.warmup) * args.every * args.period_us / 1e6
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    dists = {k: Distribution.from_dict(data[k]) for k in SERIES}
    result: dict[str, Any] = {
        "config": config,
        "command": shlex.join(cmd),
        "metrics": {k: run_metrics(d, late_us).to_dict() for k, d in dists.items()},
        **{k: v for k, v in data.items() if k not in SERIES},
    }
    if args.keep_distributions:
        result["distributions"] = {k: d.to_dict() for k, d in dists.items()}
    return result


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median over runs of each per-run metric, per configuration and series."""
    out: dict[str, dict[str, Any]] = {}
    for config in CONFIGS:
        mine = [r for r in runs if r["config"] == config]
        if not mine:
            continue
        out[config] = {
            "runs": len(mine),
            "echoes": sum(r["metrics"]["total"]["count"] for r in mine),
            "lost": sum(r["lost"] for r in mine),
            "publish_failures": sum(r["publish_failures"] for r in mine),
        }
        for series in SERIES:
            out[config][series] = median_metrics(
                mine, series, ("p50_us", "p99_us", "p999_us", "mean_us")
            )
    return out


def compare(runs: Sequence[dict[str, Any]], comp: dict[str, Any], seed: int) -> dict[str, Any]:
    """One ratio of medians over the rounds where both configurations ran."""

    def get(run: dict[str, Any]) -> float:
        return float(run["metrics"][comp["series"]][comp["metric"]])

    cand, base = paired(runs, comp["candidate"], comp["baseline"], get)
    out = {**comp, "pairs": len(cand), "interval": None}
    if cand:
        out["interval"] = bootstrap_ratio(cand, base, seed=seed).to_dict()
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """The results as Markdown: medians per configuration and leg, then the comparisons."""
    meta = result["meta"]
    interp = meta["interpreter"]
    late = [f"late_share.{t}us" for t in meta["late_us"]]
    rt_side = (
        "SCHED_OTHER, unpinned"
        if meta["no_rt"]
        else f"SCHED_FIFO {meta['priority']} on CPU {meta['cpu']}, mlockall"
    )
    lines = [
        f"Run {meta['started_utc']} on {meta['host']['kernel']} ({meta['host']['cpus']} CPUs); "
        f"{meta['rounds']} rounds × {meta['probes']} round trips (after {meta['warmup']} "
        f"discarded), a probe every {meta['every']} cycle(s) of {meta['period_us']} µs; RT "
        f"side {rt_side}; the agent's bus polls the rings every "
        f"{meta['agent_poll_us'] or 1000} µs when idle; "
        f"Python {interp['version']} `{interp['executable']}` "
        f"(PGO: {'yes' if interp['pgo'] else 'no'}, {interp['pgo_evidence']}).",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Medians over runs (per-run value, then the median across runs). total = echo seen "
        "by the body − probe published; up = agent handler − published; down = seen by the "
        "body − agent handler (includes the wait for the body's next poll, 0..1 period).",
        "",
    ]
    rows = []
    for config, s in result["summary"].items():
        for series in SERIES:
            v = s[series]
            rows.append(
                [
                    config,
                    series,
                    s["runs"],
                    v["p50_us"],
                    v["p99_us"],
                    v["p999_us"],
                    *(v[k] for k in late),
                    s["lost"] if series == "total" else None,
                ]
            )
    header = ["agent", "leg", "runs", "p50 µs", "p99 µs", "p99.9 µs"]
    header += [f"share > {t / 1000:g} ms" for t in meta["late_us"]]
    header.append("lost (all runs)")
    lines.append(markdown_table(header, rows))
    lines += ["Ratios of medians (paired bootstrap 95 % interval; no target).", ""]
    crow = []
    for c in result["comparisons"]:
        iv = c["interval"]
        if iv is None:
            continue
        crow.append([c["what"], c["pairs"], iv["value"], f"[{iv['low']:.3g}, {iv['high']:.3g}]"])
    if crow:
        lines.append(markdown_table(["comparison", "pairs", "value", "95 % interval"], crow))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the round-trip harness; write the JSON results and the Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (pairs)")
    p.add_argument("--probes", type=int, default=10000, help="round trips per run")
    p.add_argument("--warmup", type=int, default=200, help="round trips discarded per run")
    p.add_argument("--period-us", type=int, default=1000)
    p.add_argument("--every", type=int, default=1, help="a probe every N cycles")
    p.add_argument("--priority", type=int, default=50, help="SCHED_FIFO priority of the RT side")
    p.add_argument("--cpu", type=int, default=1, help="CPU of the cycle thread")
    p.add_argument("--no-rt", action="store_true", help="RT side SCHED_OTHER, unpinned")
    p.add_argument(
        "--agent-poll-us",
        type=int,
        default=0,
        help="how often the agent's idle EventBus polls the rings, µs (0: its default, 1 ms)",
    )
    p.add_argument("--late-us", default="2000,10000", help="late-share thresholds, µs")
    add_run_options(p, CONFIGS, "roundtrip-results.json")
    args = p.parse_args(argv)
    configs = selected_configs(p, args.configs, CONFIGS)
    late_us = [int(x) for x in args.late_us.split(",") if x.strip()]

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def progress(run: dict[str, Any]) -> str:
        t = run["metrics"]["total"]
        return (
            f"round trip p50 {t['p50_us']:8.1f} µs p99 {t['p99_us']:8.1f} µs ({t['count']} "
            f"echoes, lost {run['lost']}, publish failures {run['publish_failures']})"
        )

    runs = run_rounds(configs, args.rounds, lambda c: run_one(c, args, late_us), progress)
    interp = interpreter_of(args.python)
    result = {
        "meta": {
            "started_utc": started,
            "command": shlex.join([sys.executable, *sys.argv]),
            "rounds": args.rounds,
            "probes": args.probes,
            "warmup": args.warmup,
            "period_us": args.period_us,
            "every": args.every,
            "priority": args.priority,
            "cpu": args.cpu,
            "no_rt": args.no_rt,
            "agent_poll_us": args.agent_poll_us,
            "late_us": late_us,
            "configs": configs,
            "interpreter": interp,
            "host": host_info(),
        },
        "summary": summarize(runs),
        "comparisons": [compare(runs, c, args.seed) for c in COMPARISONS],
        "runs": runs,
    }
    write_results(result, to_markdown(result), args.out, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
