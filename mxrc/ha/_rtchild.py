"""The RT process spawned by ``mxrc supervise``: attach the segment, run the entry point.

``python -m mxrc.ha._rtchild --instance NAME --entrypoint MODULE:FUNCTION
[--config DIR] [--restart] [--parent-pid PID] [--checkpoint-dir DIR]``. Dies
with the supervisor (parent-death signal SIGTERM). With ``--restart`` it bumps
the segment generation first (a restarted writer). Then the data store is
resumed (live slots, then the newest checkpoint) and the entry point runs:
``function(segment, config)``, or ``function(segment, config, recovery)``
with a :class:`mxrc.ha.Recovery` for the rest of the state. SIGTERM reaches the entry point as
KeyboardInterrupt (the entry point stops its executive in ``finally`` /
``with``). Exit codes: 0 stopped by SIGTERM or the entry point returned,
1 the entry point failed, 2 bad entry point or configuration, 3 the segment
cannot be attached, 4 the supervisor is already gone.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence

__all__ = ["main"]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mxrc-rt")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--entrypoint", required=True)
    parser.add_argument("--config")
    parser.add_argument("--restart", action="store_true")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--checkpoint-dir")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    prefix = f"mxrc rt ({args.instance}):"
    try:
        if args.parent_pid is not None:
            from mxrc.agent._cli import set_parent_death_signal

            if not set_parent_death_signal(args.parent_pid):
                print(f"{prefix} the supervisor (pid {args.parent_pid}) is gone", file=sys.stderr)
                return 4
        from mxrc.config import load_config
        from mxrc.errors import ConfigError, SegmentError
        from mxrc.ha._supervisor import resolve_entrypoint

        try:
            fn = resolve_entrypoint(args.entrypoint)
            cfg = load_config(args.config)
        except (ConfigError, ValueError) as exc:
            print(f"{prefix} {exc}", file=sys.stderr)
            return 2
        from mxrc.bus import Segment

        try:
            segment = Segment.attach(args.instance)
        except SegmentError as exc:
            print(f"{prefix} cannot attach the segment: {exc}", file=sys.stderr)
            return 3
        if args.restart:
            segment.bump_generation()
        from mxrc.ha._recovery import Recovery, accepts_recovery

        recovery = Recovery(segment, cfg, args.checkpoint_dir, restarted=args.restart)
        recovery.load()
        recovery.resume_datastore()
        try:
            if accepts_recovery(fn):
                fn(segment, cfg, recovery)
            else:
                fn(segment, cfg)
        finally:
            segment.close()
    except KeyboardInterrupt:
        return 0
    except Exception:
        print(f"{prefix} the entry point {args.entrypoint} failed:", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
