"""The latency harness of ARCHITECTURE §6: interleaved runs, medians, bootstrap ratios.

Runs every configuration once per round, rounds after rounds (A B C … A B C …:
each comparison's pairs come from the same round, so slow drifts of the host
hit both sides), each run in a fresh process. Keeps per run p50/p99/p99.9,
the standard deviation and the share of cycles later than 100 µs and than
1 ms; reports per configuration the median over runs, and per comparison the
ratio (or difference) of medians with a paired bootstrap 95 % interval. A
target holds when the interval's bound meets it. No target is set on max.

Configurations (``--configs``, default all):
  cyclictest     rt-tests cyclictest, same period/priority/CPU, -m, histogram
  native         mxrc executive, native demo body, RT config (CPU, FIFO, mlock)
  python         mxrc executive, Python demo body, RT config
  plain          plain Python loop sleeping to absolute deadlines, RT config
  native-busy / python-busy / plain-busy   the same plus one busy Python thread
  native-nort    native body without the RT config (SCHED_OTHER, unpinned, no mlock)
  native-hog / native-nort-hog   the same two with 2 spinning SCHED_OTHER processes
                 (unpinned) as background load: SC-002 under contention

Usage (defaults = the protocol: 10 rounds of 60 000 cycles at 1 kHz, ~80 min):
  python bench/latency.py --out bench/results/latency.json --md bench/results/latency.md
Quick run:
  python bench/latency.py --rounds 3 --cycles 5000 --out /tmp/lat.json --md /tmp/lat.md
Needs root (SCHED_FIFO, mlockall) and cyclictest (Debian: apt-get install rt-tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Distribution,
    Interval,
    bootstrap_diff,
    bootstrap_ratio,
    interpreter_info,
    markdown_table,
    parse_cyclictest,
    run_metrics,
)

__all__ = ["COMPARISONS", "CONFIGS", "main"]

CONFIGS = (
    "cyclictest",
    "native",
    "python",
    "plain",
    "native-busy",
    "python-busy",
    "plain-busy",
    "native-nort",
    "native-hog",
    "native-nort-hog",
)
HOGS = 2  # one spinning process per vCPU of the development VM
CHILD = Path(__file__).resolve().parent / "latency_child.py"
CYCLICTEST_HIST_US = 20000


def child_command(config: str, args: argparse.Namespace) -> list[str]:
    """The command line of one run of ``config``."""
    if config == "cyclictest":
        return [
            "cyclictest",
            "-m",  # mlockall
            "-q",
            "--laptop",  # leave /dev/cpu_dma_latency alone, like the mxrc runs
            "--policy=fifo",
            f"-p{args.priority}",
            f"-a{args.cpu}",
            "-t1",
            f"-i{args.period_us}",
            f"-l{args.cycles}",
            f"-h{CYCLICTEST_HIST_US}",
        ]
    kind, _, variant = config.partition("-")
    hog = variant.endswith("hog")
    variant = variant.removesuffix("hog").rstrip("-")
    cmd = [
        args.python,
        str(CHILD),
        kind,
        f"--cycles={args.cycles}",
        f"--period-us={args.period_us}",
        f"--priority={args.priority}",
        f"--cpu={args.cpu}",
    ]
    if variant == "busy":
        cmd.append("--busy")
    elif variant == "nort":
        cmd.append("--no-rt")
    if hog:
        cmd.append(f"--hogs={HOGS}")
    return cmd


def run_one(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``config`` once in a fresh process; its distributions and metrics."""
    cmd = child_command(config, args)
    timeout = 120 + 3 * args.cycles * args.period_us / 1e6
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    if config == "cyclictest":
        ct = parse_cyclictest(proc.stdout)
        dists = {"wake": ct.distribution}
        extra: dict[str, Any] = {"cycle_count": ct.total}
    else:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        dists = {k: Distribution.from_dict(data[k]) for k in ("wake", "body_start", "exec")}
        extra = {k: v for k, v in data.items() if k not in ("wake", "body_start", "exec")}
    result: dict[str, Any] = {
        "config": config,
        "command": shlex.join(cmd),
        "metrics": {k: run_metrics(d).to_dict() for k, d in dists.items()},
        **extra,
    }
    if args.keep_distributions:
        result["distributions"] = {k: d.to_dict() for k, d in dists.items()}
    return result


# --- comparisons ---------------------------------------------------------------

Getter = Callable[[dict[str, Any]], float]


def metric(series: str, name: str) -> Getter:
    """Per-run value: ``metrics[series][name]`` (name may be ``late_share.100us``)."""

    def get(run: dict[str, Any]) -> float:
        m = run["metrics"][series]
        if name.startswith("late_share."):
            return float(m["late_share"][name.split(".", 1)[1]])
        return float(m[name])

    return get


# (id, candidate, baseline, what, series/metric, kind, target op, target value, note)
COMPARISONS: list[dict[str, Any]] = [
    {
        "id": "native-vs-cyclictest-p99",
        "candidate": "native",
        "baseline": "cyclictest",
        "series": "wake",
        "metric": "p99_us",
        "kind": "ratio",
        "target": ("<=", 1.10),
        "what": "native tier p99 wake-up latency / cyclictest p99",
    },
    {
        "id": "native-vs-cyclictest-late100",
        "candidate": "native",
        "baseline": "cyclictest",
        "series": "wake",
        "metric": "late_share.100us",
        "kind": "diff",
        "target": ("<=", 0.005),
        "what": "native late-share > 100 µs minus cyclictest's (ratio points)",
    },
    {
        "id": "python-vs-native-body-start-p99",
        "candidate": "python",
        "baseline": "native",
        "series": "body_start",
        "metric": "p99_us",
        "kind": "diff",
        "target": ("<=", 30.0),
        "what": "Python tier p99 body-start latency minus native tier's, µs",
    },
    {
        "id": "native-busy-late1ms",
        "candidate": "native-busy",
        "baseline": "native",
        "series": "body_start",
        "metric": "late_share.1000us",
        "kind": "diff",
        "target": ("<=", 0.005),
        "what": "native tier late-share > 1 ms (body start), busy thread minus idle",
    },
    {
        "id": "python-busy-late1ms",
        "candidate": "python-busy",
        "baseline": "python",
        "series": "body_start",
        "metric": "late_share.1000us",
        "kind": "diff",
        "target": ("<=", 0.005),
        "what": "Python tier late-share > 1 ms (body start), busy thread minus idle",
    },
    {
        "id": "plain-busy-late1ms",
        "candidate": "plain-busy",
        "baseline": "plain",
        "series": "wake",
        "metric": "late_share.1000us",
        "kind": "diff",
        "target": None,
        "what": "plain Python loop late-share > 1 ms, busy thread minus idle (reference)",
    },
    {
        "id": "plain-vs-cyclictest-p99",
        "candidate": "plain",
        "baseline": "cyclictest",
        "series": "wake",
        "metric": "p99_us",
        "kind": "ratio",
        "target": None,
        "what": "plain Python loop p99 wake-up latency / cyclictest p99 (reference)",
    },
    {
        "id": "python-vs-plain-p99",
        "candidate": "python",
        "baseline": "plain",
        "series": "body_start",
        "metric": "p99_us",
        "kind": "ratio",
        "target": None,
        "what": "Python tier p99 body-start / plain loop p99 wake-up (reference)",
    },
    {
        "id": "sc002-jitter",
        "candidate": "native",
        "baseline": "native-nort",
        "series": "wake",
        "metric": "stddev_us",
        "kind": "ratio",
        "target": ("<=", 0.5),
        "what": "SC-002: jitter (stddev of wake-up latency) with RT config / without",
    },
    {
        "id": "sc002-jitter-load",
        "candidate": "native-hog",
        "baseline": "native-nort-hog",
        "series": "wake",
        "metric": "stddev_us",
        "kind": "ratio",
        "target": ("<=", 0.5),
        "what": "SC-002 under load (2 CPU hogs): jitter with RT config / without",
    },
    {
        "id": "sc002-p99-load",
        "candidate": "native-hog",
        "baseline": "native-nort-hog",
        "series": "wake",
        "metric": "p99_us",
        "kind": "ratio",
        "target": None,
        "what": "SC-002 under load (2 CPU hogs): p99 wake-up latency with RT config / without",
    },
    {
        "id": "sc002-p99",
        "candidate": "native",
        "baseline": "native-nort",
        "series": "wake",
        "metric": "p99_us",
        "kind": "ratio",
        "target": None,
        "what": "SC-002: p99 wake-up latency with RT config / without",
    },
]


def compare(
    runs: Sequence[dict[str, Any]], comp: dict[str, Any], seed: int
) -> dict[str, Any] | None:
    """One comparison over the rounds where both configurations ran."""
    cand, base = paired(
        runs, comp["candidate"], comp["baseline"], metric(comp["series"], comp["metric"])
    )
    if not cand:
        return None
    fn = bootstrap_ratio if comp["kind"] == "ratio" else bootstrap_diff
    iv: Interval = fn(cand, base, seed=seed)
    holds = None
    verdict = "—"
    if comp["target"] is not None:
        op, value = comp["target"]
        holds = iv.high <= value if op == "<=" else iv.low >= value
        point_ok = iv.value <= value if op == "<=" else iv.value >= value
        # holds: the interval's bound meets the target; not shown: only the point
        # estimate does (the interval is too wide to decide); not met: neither
        verdict = "holds" if holds else ("not shown" if point_ok else "not met")
    return {
        **{k: v for k, v in comp.items() if k != "target"},
        "target": None if comp["target"] is None else list(comp["target"]),
        "pairs": len(cand),
        "interval": iv.to_dict(),
        "holds": holds,
        "verdict": verdict,
    }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median over runs of each per-run metric, per configuration and series."""
    import statistics

    out: dict[str, dict[str, Any]] = {}
    for config in CONFIGS:
        mine = [r for r in runs if r["config"] == config]
        if not mine:
            continue
        out[config] = {"runs": len(mine)}
        if "skipped_release_count" in mine[0]:
            out[config]["skipped_per_cycle"] = statistics.median(
                r["skipped_release_count"] / max(1, r["cycle_count"]) for r in mine
            )
        for series in mine[0]["metrics"]:
            out[config][series] = median_metrics(
                mine, series, ("p50_us", "p99_us", "p999_us", "stddev_us")
            )
    return out


def median_metrics(
    runs: Sequence[dict[str, Any]], series: str, names: Sequence[str]
) -> dict[str, float]:
    """Median over ``runs`` of the per-run metrics ``names`` and every late share of ``series``."""
    import statistics

    vals: dict[str, float] = {}
    for name in names:
        vals[name] = statistics.median(r["metrics"][series][name] for r in runs)
    for t in runs[0]["metrics"][series]["late_share"]:
        vals[f"late_share.{t}"] = statistics.median(
            r["metrics"][series]["late_share"][t] for r in runs
        )
    return vals


def to_markdown(result: dict[str, Any]) -> str:
    """The results as Markdown: medians per configuration, then the comparisons."""
    meta = result["meta"]
    interp = meta["interpreter"]
    lines = [
        f"Run {meta['started_utc']} on {meta['host']['kernel']} ({meta['host']['cpus']} CPUs); "
        f"{meta['rounds']} rounds × {meta['cycles']} cycles at {meta['period_us']} µs, "
        f"FIFO priority {meta['priority']} on CPU {meta['cpu']}; Python {interp['version']} "
        f"`{interp['executable']}` (PGO: {'yes' if interp['pgo'] else 'no'}, "
        f"{interp['pgo_evidence']}).",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Medians over runs (per-run value, then the median across runs). Late shares are "
        "ratios 0..1 of the cycles that ran; with overrun policy skip, releases skipped after "
        "a late cycle are counted in the last column, not in the late shares.",
        "",
    ]
    if not meta["protocol_complete"]:
        lines[1:1] = [
            "",
            "**Shortened run** (the protocol asks for >= 10 rounds of >= 60 000 cycles): "
            "the verdicts below are marked * and are not evidence for or against a target.",
        ]
    rows = []
    for config, s in result["summary"].items():
        for series in ("wake", "body_start"):
            # cyclictest has no body; the plain loop's body starts when sleep() returns
            if series not in s or (
                series == "body_start"
                and config.split("-")[0] != "native"
                and config.split("-")[0] != "python"
            ):
                continue
            v = s[series]
            rows.append(
                [
                    config,
                    series.replace("_", "-"),
                    s["runs"],
                    v["p50_us"],
                    v["p99_us"],
                    v["p999_us"],
                    v["stddev_us"],
                    v["late_share.100us"],
                    v["late_share.1000us"],
                    s.get("skipped_per_cycle"),
                ]
            )
    lines.append(
        markdown_table(
            [
                "config",
                "latency",
                "runs",
                "p50 µs",
                "p99 µs",
                "p99.9 µs",
                "jitter (σ) µs",
                "late > 100 µs",
                "late > 1 ms",
                "skipped releases / cycle",
            ],
            rows,
        )
    )
    lines += [
        "Comparisons (paired bootstrap 95 % interval of the median ratio/difference). "
        "Verdict: holds = the interval's bound meets the target; not shown = only the "
        "point estimate does; not met = neither.",
        "",
    ]
    crow = []
    for c in result["comparisons"]:
        iv = c["interval"]
        target = "—" if c["target"] is None else f"{c['target'][0]} {c['target'][1]}"
        holds = c.get("verdict") or {True: "holds", False: "not met", None: "—"}[c["holds"]]
        if c["holds"] is not None and not meta["protocol_complete"]:
            holds += "*"
        crow.append(
            [
                c["what"],
                c["pairs"],
                iv["value"],
                f"[{iv['low']:.3g}, {iv['high']:.3g}]",
                target,
                holds,
            ]
        )
    lines.append(
        markdown_table(["comparison", "pairs", "value", "95 % interval", "target", "verdict"], crow)
    )
    return "\n".join(lines)


def add_run_options(p: argparse.ArgumentParser, configs: Sequence[str], out: str) -> None:
    """The options every harness shares: --configs, --python, --out, --md,
    --keep-distributions, --seed."""
    p.add_argument("--configs", default=",".join(configs), help="comma-separated subset")
    p.add_argument("--python", default=sys.executable, help="interpreter of the child runs")
    p.add_argument("--out", default=out)
    p.add_argument("--md", default=None, help="also write the Markdown table here")
    p.add_argument("--keep-distributions", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def selected_configs(p: argparse.ArgumentParser, spec: str, known: Sequence[str]) -> list[str]:
    """The configurations named in ``spec`` (comma-separated); a usage error for unknown ones."""
    configs = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(known))
    if unknown:
        p.error(f"unknown configs {unknown}; known: {', '.join(known)}")
    return configs


def paired(
    runs: Sequence[dict[str, Any]], candidate: str, baseline: str, get: Getter
) -> tuple[list[float], list[float]]:
    """``get`` of the candidate's and the baseline's run, for each round where both ran."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["config"]] = r
    cand: list[float] = []
    base: list[float] = []
    for rnd in sorted(by_round):
        pair = by_round[rnd]
        if candidate in pair and baseline in pair:
            cand.append(get(pair[candidate]))
            base.append(get(pair[baseline]))
    return cand, base


def round_order(configs: Sequence[str], rnd: int) -> list[str]:
    """The configurations of round ``rnd``: rotated by one each round."""
    k = rnd % len(configs)
    return [*configs[k:], *configs[:k]]


def run_rounds(
    configs: Sequence[str],
    rounds: int,
    run_one: Callable[[str], dict[str, Any]],
    progress: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """Every configuration once per round (A B C … A B C …, rotated each round):
    the runs, each tagged with its ``round``; a progress line per run on stderr."""
    runs: list[dict[str, Any]] = []
    for rnd in range(rounds):
        for config in round_order(configs, rnd):
            run = run_one(config)
            run["round"] = rnd
            runs.append(run)
            print(
                f"round {rnd + 1}/{rounds} {config:12s} {progress(run)}",
                file=sys.stderr,
                flush=True,
            )
    return runs


def interpreter_of(python: str) -> dict[str, Any]:
    """``harness.interpreter_info()`` of the interpreter ``python`` (this one or another)."""
    if python == sys.executable:
        return interpreter_info()
    return dict(
        json.loads(
            subprocess.run(
                [
                    python,
                    "-c",
                    "import json,sys;sys.path.insert(0,sys.argv[1]);import harness;"
                    "print(json.dumps(harness.interpreter_info()))",
                    str(Path(__file__).resolve().parent),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    )


def write_results(result: dict[str, Any], md: str, out: str | None, md_path: str | None) -> None:
    """Write the JSON results and the Markdown (each when a path is given); print the Markdown."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(md)
    print(md)


def host_info() -> dict[str, Any]:
    """Kernel, CPUs, isolation state."""
    try:
        cmdline = Path("/proc/cmdline").read_text().strip()
    except OSError:
        cmdline = ""
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cmdline_has_isolcpus": "isolcpus=" in cmdline,
        "cyclictest": shutil.which("cyclictest"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; write the JSON results and the Markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds (pairs), >= 10 for claims"
    )
    p.add_argument("--cycles", type=int, default=60000, help="cycles per run, >= 60000 for claims")
    p.add_argument("--period-us", type=int, default=1000)
    p.add_argument("--priority", type=int, default=50, help="SCHED_FIFO priority of every loop")
    p.add_argument("--cpu", type=int, default=1, help="CPU every loop is pinned to")
    add_run_options(p, CONFIGS, "latency-results.json")
    args = p.parse_args(argv)
    configs = selected_configs(p, args.configs, CONFIGS)
    if "cyclictest" in configs and shutil.which("cyclictest") is None:
        p.error("cyclictest not found (Debian: apt-get install rt-tests) or drop it from --configs")

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def progress(run: dict[str, Any]) -> str:
        w = run["metrics"]["wake"]
        return (
            f"wake p50 {w['p50_us']:8.1f} µs p99 {w['p99_us']:8.1f} µs "
            f"late>100µs {w['late_share']['100us']:.4f} late>1ms {w['late_share']['1000us']:.4f}"
        )

    runs = run_rounds(configs, args.rounds, lambda config: run_one(config, args), progress)
    comparisons = [c for c in (compare(runs, comp, args.seed) for comp in COMPARISONS) if c]
    interp = interpreter_of(args.python)
    result = {
        "meta": {
            "started_utc": started,
            "command": shlex.join([sys.executable, *sys.argv]),
            "rounds": args.rounds,
            "cycles": args.cycles,
            "period_us": args.period_us,
            "priority": args.priority,
            "cpu": args.cpu,
            "configs": configs,
            "interpreter": interp,
            "host": host_info(),
            "protocol_complete": args.rounds >= 10 and args.cycles >= 60000,
        },
        "summary": summarize(runs),
        "comparisons": comparisons,
        "runs": runs,
    }
    write_results(result, to_markdown(result), args.out, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
