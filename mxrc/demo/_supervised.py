"""The demo as the RT process of ``mxrc supervise`` (the default entry point).

The axis state lives in data store slot :data:`DEMO_SLOT`, so a restarted
process continues the trajectory from the live segment (or, on a fresh
segment, from the newest checkpoint). The number of process starts is the
demo's application state, saved and restored through the checkpoint hooks of
:class:`mxrc.ha.Recovery`: it shows that path working, and each start's line
in the journal says which run it is.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxrc.bus import Segment
    from mxrc.config import MxrcConfig
    from mxrc.ha import Recovery

__all__ = ["DEMO_SLOT", "supervised_entrypoint"]

DEMO_SLOT = "demo.axis"
"""Data store slot (f64array) holding the demo axis state."""


def supervised_entrypoint(segment: Segment, config: MxrcConfig, recovery: Recovery) -> None:
    """Run the demo axis + PID (Python body) until SIGTERM, continuing a dead process's state."""
    import numpy as np

    from mxrc._run import _privilege_overrides
    from mxrc.bus import DataStore
    from mxrc.demo import STATE_SIZE, AxisDemo, axis_step
    from mxrc.rt._executive import Executive

    demo = AxisDemo(config.perf_monitor.rt.cycle_time_us)
    state = demo.state
    ds = DataStore.from_segment(segment)
    ds.define(DEMO_SLOT, "f64array", STATE_SIZE)
    value, version = ds.read_versioned(DEMO_SLOT)
    resumed = (
        version > 0
        and version % 2 == 0
        and isinstance(value, np.ndarray)
        and value.shape == (STATE_SIZE,)
        and bool(np.all(np.isfinite(value)))
        and value[0] > 0
    )
    if resumed:
        state[:] = value
    app = {"runs": 0}
    recovery.restore(restore_hook=lambda saved: app.update(runs=int(saved["runs"])))
    app["runs"] += 1
    where = f"resumed at step {int(state[12])}" if resumed else "starts fresh"
    print(f"mxrc rt: demo axis {where} (run {app['runs']})", file=sys.stderr, flush=True)
    write = ds.write

    def demo_axis_body(ctx: object) -> None:
        axis_step(state)
        write(DEMO_SLOT, state)

    overrides: dict[str, Any] = _privilege_overrides(config, sys.stderr)
    if segment.agent_heartbeat().pid == 0:
        overrides["agent_timeout_ms"] = None  # no agent serves this instance
    executive = Executive.from_config(config, demo_axis_body, segment=segment, **overrides)
    executive.start()
    try:
        with recovery.checkpointing(executive, save_hook=lambda: dict(app)):
            while not executive.wait(timeout=1.0):
                pass
    finally:
        executive.stop()
