"""One event round-trip run in a fresh process (started by bench/roundtrip.py).

Roles:
  rt       the RT side: creates the instance's segment and an executive whose
           native body (compiled here with cc from ``PROBE_C``) publishes a
           probe event every ``--every`` cycles and polls the command ring
           every cycle; starts the agent (``--agent process``: this script's
           ``agent`` role in its own process; ``--agent thread``: an
           ``mxrc.Agent`` in this process) and prints one JSON line with the
           round-trip distributions and counters.
  agent    the agent side: ``mxrc.Agent`` on the instance, subscribed to the
           probes; the handler stamps the agent's time and sends each probe
           back as a ``bench.echo`` on the command ring. Runs until SIGTERM.

One probe: the body stamps ``t_sent`` (CLOCK_MONOTONIC) and publishes
``bench.probe``; the agent's bus drains the event ring (it polls every
``poll_interval_s`` when idle), its handler stamps ``t_agent`` and sends
``bench.echo`` with the same payload to the command ring; the body's next
cycles poll it and stamp ``t_back``. Recorded per probe: total =
t_back − t_sent, up (RT → agent handler) = t_agent − t_sent, down (agent →
body) = t_back − t_agent. Both processes read the same CLOCK_MONOTONIC.
The body polls once per cycle, so ``down`` includes the wait for the next
cycle (0..1 period).

Usage: python bench/roundtrip_child.py rt --agent process --probes N
       --period-us P --every K --priority PRIO --cpu CPU
       python bench/roundtrip_child.py agent --instance NAME
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Distribution
from latency_child import rt_settings

__all__ = ["PROBE_C", "main"]

PROBE = "bench.probe"
ECHO = "bench.echo"
PAYLOAD = struct.Struct("=QqQ")  # seq, t_sent, 0 (the agent puts t_agent here)

# user buffer (int64 words) of the native body
W_GO, W_SENT, W_RECV, W_PUB_FAIL, W_LIMIT, W_EVERY, W_BAD, W_LAST_RC, W_CAP = range(9)
HEADER_WORDS = 16

PROBE_C = r"""
#include <string.h>
#include "mxrc.h"

enum { GO, SENT, RECV, PUB_FAIL, LIMIT, EVERY, BAD, LAST_RC, CAP };
#define HEADER_WORDS 16

/* Publishes a probe every s[EVERY] cycles once s[GO] is set (at most s[LIMIT]),
 * and takes every echo waiting in the command ring. ctx->user: int64 words,
 * HEADER_WORDS of counters then three arrays of s[CAP] samples (ns): total,
 * up (RT -> agent handler), down (agent -> body). */
int mxrc_bench_roundtrip(const mxrc_cycle_ctx* ctx) {
  int64_t* s = (int64_t*)ctx->user;
  const mxrc_api* api = ctx->api;
  if (!MXRC_API_VERSION_AT_LEAST(api, 3)) return 3;
  int64_t* total = s + HEADER_WORDS;
  int64_t* up = total + s[CAP];
  int64_t* down = up + s[CAP];
  mxrc_event ev;
  while (api->poll_event(ctx, &ev) == 0) {
    const int64_t now = api->now_ns();
    if (strncmp(ev.type, "bench.echo", MXRC_EVENT_TYPE_MAX) != 0 || ev.payload_len < 24) {
      s[BAD] += 1;
      continue;
    }
    int64_t t_sent, t_agent;
    memcpy(&t_sent, ev.payload + 8, 8);
    memcpy(&t_agent, ev.payload + 16, 8);
    const int64_t k = s[RECV];
    if (k < s[CAP]) {
      total[k] = now - t_sent;
      up[k] = t_agent - t_sent;
      down[k] = now - t_agent;
    }
    s[RECV] = k + 1;
  }
  if (s[GO] && s[SENT] < s[LIMIT] && ctx->cycle % (uint64_t)s[EVERY] == 0) {
    memset(&ev, 0, sizeof ev);
    memcpy(ev.type, "bench.probe", 11);
    ev.priority = MXRC_PRIO_NORMAL;
    ev.payload_len = 24;
    const uint64_t seq = (uint64_t)s[SENT];
    const int64_t t_sent = api->now_ns();
    memcpy(ev.payload, &seq, 8);
    memcpy(ev.payload + 8, &t_sent, 8);
    const int32_t rc = api->publish_event(ctx, &ev);
    s[LAST_RC] = rc;
    if (rc == 0) {
      s[SENT] += 1;
    } else {
      s[PUB_FAIL] += 1;
    }
  }
  return 0;
}
"""


def build_probe(workdir: Path) -> ctypes.CDLL:
    """Compile ``PROBE_C`` into a shared object and load it."""
    from mxrc import get_include

    src = workdir / "roundtrip_probe.c"
    so = workdir / "roundtrip_probe.so"
    src.write_text(PROBE_C)
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-O2", "-fPIC", "-shared", f"-I{get_include()}", str(src), "-o", str(so)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return ctypes.CDLL(str(so))


def echo_handler(agent: Any, executive: str) -> Any:
    """The agent-side handler: stamp t_agent, send the probe back as bench.echo."""
    from mxrc.bus import Event, Priority

    def handle(event: Any) -> None:
        t_agent = time.monotonic_ns()
        seq, t_sent, _ = PAYLOAD.unpack_from(event.payload)
        agent.send(
            Event(ECHO, PAYLOAD.pack(seq, t_sent, t_agent), priority=Priority.HIGH),
            executive=executive,
        )

    return handle


def make_agent(instance_or_segment: Any, args: argparse.Namespace) -> Any:
    """An mxrc.Agent subscribed to the probes (not started).

    ``--agent-poll-us`` > 0 gives it an EventBus polling the rings that often
    when idle (closed by :func:`stop_agent`); 0 keeps the Agent's own bus.
    """
    import mxrc
    from mxrc.bus import EventBus

    bus = None
    if args.agent_poll_us > 0:
        bus = EventBus(name="agent", poll_interval_s=args.agent_poll_us / 1e6)
    agent = mxrc.Agent(instance_or_segment, heartbeat_interval_ms=args.heartbeat_ms, bus=bus)
    agent.subscribe(PROBE, echo_handler(agent, "main"))
    return agent


def stop_agent(agent: Any) -> None:
    """Stop the agent, then close its bus."""
    agent.stop()
    agent.bus.close(drain=False)


def run_agent(args: argparse.Namespace) -> int:
    """The agent role: serve the instance until SIGTERM/SIGINT."""
    agent = make_agent(args.instance, args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.start()
    print("ready", flush=True)
    try:
        while not stop.wait(0.05) and not agent.owner_gone:
            pass
    finally:
        stop_agent(agent)
    return 0


def _samples(buf: Any, n: int, cap: int, which: int) -> list[int]:
    base = HEADER_WORDS + which * cap
    return [int(v) for v in buf[base : base + min(n, cap)]]


def run_rt(args: argparse.Namespace) -> dict[str, Any]:
    """The RT role: one run of ``args.probes`` round trips."""
    import numpy as np

    import mxrc
    from mxrc.bus import Segment
    from mxrc.rt import NativeBody

    cap = args.probes + args.warmup
    buf = np.zeros(HEADER_WORDS + 3 * cap, dtype=np.int64)
    buf[W_LIMIT] = cap
    buf[W_EVERY] = args.every
    buf[W_CAP] = cap
    instance = f"bench-rt-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="mxrc-roundtrip-") as tmp:
        lib = build_probe(Path(tmp))
        fn = lib.mxrc_bench_roundtrip
        body = NativeBody(ctypes.cast(fn, ctypes.c_void_p).value or 0, user_data=buf.ctypes.data)
        seg = Segment.create(instance)
        agent_proc: subprocess.Popen[str] | None = None
        agent: Any = None
        rt = rt_settings(args)  # as bench/latency.py's runs
        try:
            ex = mxrc.Executive(body, period_us=args.period_us, name="main", segment=seg, **rt)
            with ex:
                if args.agent == "thread":
                    agent = make_agent(seg, args).start()
                else:
                    agent_proc = subprocess.Popen(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "agent",
                            f"--instance={instance}",
                            f"--heartbeat-ms={args.heartbeat_ms}",
                            f"--agent-poll-us={args.agent_poll_us}",
                        ],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    assert agent_proc.stdout is not None
                    line = agent_proc.stdout.readline().strip()
                    if line != "ready":
                        raise RuntimeError(f"the agent process did not start (said {line!r})")
                time.sleep(0.3)  # the agent's bus polls its transports
                buf[W_GO] = 1
                deadline = time.monotonic() + 30 + 3 * cap * args.every * args.period_us / 1e6
                while buf[W_RECV] < cap and time.monotonic() < deadline:
                    time.sleep(0.05)
                ring_counters = {
                    name: {k: v for k, v in vars(c).items() if isinstance(v, int)}
                    for name, c in (seg.rings("main") or _no_rings()).counters().items()
                    if name in ("event", "command", "critical")
                }
        finally:
            if agent is not None:
                stop_agent(agent)
            if agent_proc is not None:
                agent_proc.terminate()
                try:
                    agent_proc.wait(10)
                except subprocess.TimeoutExpired:
                    agent_proc.kill()
                    agent_proc.wait()
            seg.close()
    sent, recv = int(buf[W_SENT]), int(buf[W_RECV])
    w = args.warmup
    dists = {
        name: Distribution.from_samples(_samples(buf, recv, cap, i)[w:]).to_dict()
        for i, name in enumerate(("total", "up", "down"))
    }
    return {
        **dists,
        "probes_sent": sent,
        "echoes_received": recv,
        "warmup_discarded": min(w, recv),
        "publish_failures": int(buf[W_PUB_FAIL]),
        "last_publish_rc": int(buf[W_LAST_RC]),
        "bad_echoes": int(buf[W_BAD]),
        "lost": sent - recv,
        "rings": ring_counters,
        "agent": args.agent,
        "agent_poll_us": args.agent_poll_us,
    }


def _no_rings() -> Any:
    raise RuntimeError("the executive's stats slot has no ring set")


def main(argv: list[str] | None = None) -> int:
    """Run one role."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("role", choices=("rt", "agent"))
    p.add_argument("--agent", choices=("process", "thread"), default="process")
    p.add_argument("--instance", help="agent role: the instance to serve")
    p.add_argument("--probes", type=int, default=10000, help="round trips measured")
    p.add_argument("--warmup", type=int, default=200, help="round trips discarded first")
    p.add_argument("--period-us", type=int, default=1000)
    p.add_argument("--every", type=int, default=1, help="a probe every N cycles")
    p.add_argument("--priority", type=int, default=50)
    p.add_argument("--cpu", type=int, default=1)
    p.add_argument("--no-rt", action="store_true", help="SCHED_OTHER, unpinned, no mlockall")
    p.add_argument("--heartbeat-ms", type=int, default=100)
    p.add_argument(
        "--agent-poll-us",
        type=int,
        default=0,
        help="how often the agent's idle bus polls the rings (0: the EventBus default, 1 ms)",
    )
    args = p.parse_args(argv)
    if args.role == "agent":
        if not args.instance:
            p.error("the agent role needs --instance")
        return run_agent(args)
    print(json.dumps(run_rt(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
