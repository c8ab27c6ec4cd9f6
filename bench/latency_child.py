"""One latency run in a fresh process (started by bench/latency.py).

Prints one JSON line: the wake-up (and, where there is a body, body-start and
execution-time) latency distributions of the run, as
``harness.Distribution.to_dict()``, plus the run's counters.

Kinds:
  native   mxrc executive, native demo body (tier 2, no GIL)
  python   mxrc executive, Python demo body (tier 3)
  plain    a plain Python loop on its own thread that sleeps to absolute
           deadlines (start + k·period) and runs the same Python demo step
Options: --busy adds one busy pure-Python thread (pinned to another CPU) to
the process; --no-rt runs with SCHED_OTHER, unpinned, no mlockall (the
executive's RT configuration removed, for SC-002); --switch-interval-us sets
the interpreter's GIL switch interval (an experiment, not a configuration
of the harness); --hogs N runs N spinning SCHED_OTHER processes, unpinned,
during the run (background load).

Usage: python bench/latency_child.py KIND --cycles N --period-us P
       --priority PRIO --cpu CPU [--busy] [--no-rt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Distribution

__all__ = ["main"]


class BusyThread:
    """One pure-Python thread spinning (holding the GIL for its switch interval)."""

    def __init__(self, cpu: int | None) -> None:
        self._stop = threading.Event()
        self._cpu = cpu
        self.iterations = 0
        self._thread = threading.Thread(target=self._run, name="bench-busy", daemon=True)

    def _run(self) -> None:
        if self._cpu is not None:
            os.sched_setaffinity(0, {self._cpu})  # 0 = this thread on Linux
        n = 0
        while not self._stop.is_set():
            total = 0
            for i in range(1000):
                total += i * i
            n += 1
        self.iterations = n

    def __enter__(self) -> BusyThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuHogs:
    """``n`` separate SCHED_OTHER processes spinning, unpinned (background load)."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuHogs:
        for _ in range(self._n):
            self._procs.append(
                subprocess.Popen([sys.executable, "-c", "while True: pass"], close_fds=True)
            )
        time.sleep(0.2)  # let them start spinning
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            p.kill()
        for p in self._procs:
            p.wait()


def _other_cpu(cpu: int) -> int | None:
    others = sorted(os.sched_getaffinity(0) - {cpu})
    return others[0] if others else None


def _hist_to_dist(hist: Any) -> dict[str, Any]:
    """mxrc LatencyHistogram (inclusive bucket bounds) -> harness Distribution dict."""
    nz = [i for i, c in enumerate(hist.counts.tolist()) if c]
    return Distribution.from_buckets(
        [int(hist.lower_ns[i]) for i in nz],
        [int(hist.upper_ns[i]) + 1 for i in nz],
        [int(hist.counts[i]) for i in nz],
        overflow=int(hist.overflow),
        overflow_from_ns=int(hist.max_trackable_ns) + 1,
        min_ns=int(hist.min_ns) if hist.count else None,
        max_ns=int(hist.max_ns) if hist.count else None,
    ).to_dict()


def rt_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Executive keywords of the RT configuration (CPU ``args.cpu``, SCHED_FIFO
    ``args.priority``, mlockall, 256 KiB stack prefault), or without it
    (``args.no_rt``: SCHED_OTHER, unpinned, no locking)."""
    if args.no_rt:
        return {"policy": "SCHED_OTHER", "priority": 0, "cpus": None}
    return {
        "policy": "SCHED_FIFO",
        "priority": args.priority,
        "cpus": [args.cpu],
        "lock_memory": True,
        "prefault_stack_kb": 256,
    }


def run_mxrc(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """The executive with the demo body of ``kind`` (native/python)."""
    import mxrc
    from mxrc.demo import AxisDemo

    executive_cls = getattr(mxrc, "Executive", None)
    if executive_cls is None:  # before mxrc exports it
        from mxrc.rt._executive import Executive as executive_cls

    demo = AxisDemo(args.period_us)
    body = demo.body("native" if kind == "native" else "python")
    rt = rt_settings(args)
    exe = executive_cls(body, period_us=args.period_us, name=f"bench-{kind}", **rt)
    busy = BusyThread(_other_cpu(args.cpu)) if args.busy else None
    if busy is not None:
        busy.__enter__()
    try:
        stats = exe.run(args.cycles)
    finally:
        if busy is not None:
            busy.__exit__()
    return {
        "wake": _hist_to_dist(stats.wake_latency),
        "body_start": _hist_to_dist(stats.body_start_latency),
        "exec": _hist_to_dist(stats.exec_time),
        "cycle_count": int(stats.cycle_count),
        "deadline_miss_count": int(stats.deadline_miss_count),
        "skipped_release_count": int(stats.skipped_release_count),
        "jitter_ns": float(stats.jitter_ns),
        "minor_faults": int(stats.minor_faults),
        "involuntary_ctx_switches": int(stats.involuntary_ctx_switches),
        "tracking_rms_error_m": demo.tracking_error().rms_error_m,
        "busy_iterations": busy.iterations if busy is not None else None,
    }


def run_plain(args: argparse.Namespace) -> dict[str, Any]:
    """A plain Python loop sleeping to absolute deadlines, on its own thread set up
    like the executive's cycle thread (same CPU, policy, priority, mlock)."""
    import numpy as np

    from mxrc.demo import AxisDemo
    from mxrc.rt import ThreadSetup, apply_thread_setup

    demo = AxisDemo(args.period_us)
    step = demo.python_body()
    period = args.period_us * 1000
    n = args.cycles
    wake = np.zeros(n, dtype=np.int64)
    exec_ns = np.zeros(n, dtype=np.int64)
    result: dict[str, Any] = {}

    def loop() -> None:
        if args.no_rt:
            setup = ThreadSetup(timer_slack_ns=1)
        else:
            setup = ThreadSetup(
                lock_memory=True,
                prefault_stack_bytes=256 * 1024,
                cpus=[args.cpu],
                policy="SCHED_FIFO",
                priority=args.priority,
                timer_slack_ns=1,
            )
        apply_thread_setup(setup)
        mono = time.monotonic_ns
        sleep = time.sleep
        start = mono() + 10 * period
        k = 0
        skipped = 0
        for i in range(n):
            release = start + k * period
            now = mono()
            if release > now:
                sleep((release - now) / 1e9)
            woke = mono()
            step(None)
            end = mono()
            wake[i] = woke - release
            exec_ns[i] = end - woke
            k += 1
            nxt = start + k * period
            if end > nxt:  # overrun: skip the releases already past (like overrun="skip")
                missed = (end - nxt) // period + 1
                k += missed
                skipped += missed
        result["skipped_release_count"] = skipped

    busy = BusyThread(_other_cpu(args.cpu)) if args.busy else None
    if busy is not None:
        busy.__enter__()
    try:
        t = threading.Thread(target=loop, name="bench-plain")
        t.start()
        t.join()
    finally:
        if busy is not None:
            busy.__exit__()
    wake_dist = Distribution.from_samples(wake.tolist())
    return {
        "wake": wake_dist.to_dict(),
        "body_start": wake_dist.to_dict(),  # the body starts as soon as sleep() returns
        "exec": Distribution.from_samples(exec_ns.tolist()).to_dict(),
        "cycle_count": n,
        "deadline_miss_count": int(np.count_nonzero(wake + exec_ns > period)),
        "skipped_release_count": result.get("skipped_release_count", 0),
        "jitter_ns": float(np.std(wake)),
        "tracking_rms_error_m": demo.tracking_error().rms_error_m,
        "busy_iterations": busy.iterations if busy is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and print its JSON line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("kind", choices=("native", "python", "plain"))
    p.add_argument("--cycles", type=int, required=True)
    p.add_argument("--period-us", type=int, default=1000)
    p.add_argument("--priority", type=int, default=50)
    p.add_argument("--cpu", type=int, default=1)
    p.add_argument("--busy", action="store_true")
    p.add_argument("--no-rt", action="store_true")
    p.add_argument(
        "--hogs", type=int, default=0, help="background SCHED_OTHER CPU-hog processes, unpinned"
    )
    p.add_argument(
        "--switch-interval-us",
        type=float,
        default=None,
        help="sys.setswitchinterval() for the run (experiments; default: the interpreter's)",
    )
    args = p.parse_args(argv)
    if args.switch_interval_us is not None:
        sys.setswitchinterval(args.switch_interval_us / 1e6)
    t0 = time.monotonic()
    with CpuHogs(args.hogs):
        data = run_plain(args) if args.kind == "plain" else run_mxrc(args.kind, args)
    data["kind"] = args.kind
    data["wall_s"] = time.monotonic() - t0
    print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
