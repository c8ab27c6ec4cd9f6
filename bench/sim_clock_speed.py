"""Wall time of simulated-clock runs (docs/simulated-clock.md, "Speed").

    python3 bench/sim_clock_speed.py [cycles] [repeats]

Runs a Python body and the builtin ``sleep_ns`` body, each consuming 0.3 ms
of virtual time per 1 ms period, ``repeats`` times; prints the median, min
and max wall time per run and the interpreter.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from typing import Any

import mxrc


def _python_body(ctx: Any) -> None:
    ctx.sim_advance(300_000)


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 11
    print(f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})")
    bodies: dict[str, object] = {
        "python body": _python_body,
        "builtin body": mxrc.rt.BuiltinBody("sleep_ns", 300_000),
    }
    for label, body in bodies.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            mxrc.Executive(body, period_us=1000, clock="simulated").run(cycles)
            times.append(time.perf_counter() - t0)
        print(
            f"{label}: {cycles} cycles in median {statistics.median(times) * 1e3:.0f} ms "
            f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}; {repeats} runs)"
        )


if __name__ == "__main__":
    main()
