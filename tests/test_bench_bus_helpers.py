"""The loops behind bench/test_bench_bus.py and the round-trip harness still work.

Correctness only (counts, no timing): the benchmarks themselves run from
bench/, not from the test command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mxrc._native import _core
from mxrc.bus import DataStore, Priority, Ring

bench = _core._bench
BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def test_ring_loops_push_pop_and_transfer_every_record() -> None:
    ring = Ring.private(64, 256)
    addr = ring.core.address
    assert bench.ring_push_n(addr, 100, 256) == 64  # full after 64: the rest dropped
    assert ring.counters().dropped == 36
    assert bench.ring_pop_n(addr, 100) == 64
    # NORMAL is admitted while fill * 10 < capacity * 9: at fills 0..57
    assert bench.ring_push_n(addr, 64, 200, int(Priority.NORMAL)) == 58
    assert bench.ring_pop_n(addr, 64) == 58
    assert bench.ring_push_pop(addr, 1000, 32, 16) == 1000
    assert ring.size() == 0
    result = bench.ring_transfer(addr, 5000, 256)
    assert result["elapsed_ns"] > 0
    c = ring.counters()
    assert c.size == 0 and c.popped == c.accepted


def test_ring_loops_refuse_bad_arguments() -> None:
    ring = Ring.private(8, 64)
    with pytest.raises(ValueError, match="record_len 65 > record size 64"):
        bench.ring_push_n(ring.core.address, 1, 65)
    with pytest.raises(ValueError, match=r"batch must be 1\.\.8"):
        bench.ring_push_pop(ring.core.address, 10, 8, 9)
    with pytest.raises(ValueError, match="ring address is 0"):
        bench.ring_pop_n(0, 1)


def test_data_store_loop_calls_the_c_functions() -> None:
    ds = DataStore.private(max_slots=8, arena_bytes=1024)
    f = ds.define("f", float).index
    i = ds.define("i", int).index
    arr = ds.define("arr", "f64array", 16).index
    assert bench.ds_loop(ds.address, f, 100, "write_f64") == 0
    assert ds["f"] == 99.0
    assert bench.ds_loop(ds.address, i, 100, "write_i64") == 0
    assert ds["i"] == 99
    assert bench.ds_loop(ds.address, arr, 10, "write") == 0
    np.testing.assert_array_equal(ds["arr"], np.arange(16, dtype=np.float64))
    for op, index in (("read_f64", f), ("read_i64", i), ("read", arr)):
        assert bench.ds_loop(ds.address, index, 10, op) == 0
    assert bench.ds_loop(ds.address, f, 10, "read_i64") == 10  # EINVAL: not an INT64 slot
    with pytest.raises(ValueError, match="op must be"):
        bench.ds_loop(ds.address, f, 1, "frobnicate")
    with pytest.raises(ValueError, match="no slot index 7"):
        bench.ds_loop(ds.address, 7, 1, "read")


@pytest.mark.slow
def test_roundtrip_child_echoes_every_probe() -> None:
    """One short round-trip run (agent thread, SCHED_OTHER): every probe comes back."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc): the probe body is compiled at run time")
    cmd = [
        sys.executable,
        str(BENCH_DIR / "roundtrip_child.py"),
        "rt",
        "--agent=thread",
        "--probes=50",
        "--warmup=5",
        "--no-rt",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["echoes_received"] == data["probes_sent"] == 55
    assert data["lost"] == 0 and data["bad_echoes"] == 0 and data["publish_failures"] == 0
    assert sum(c for _, _, c in data["total"]["buckets"]) == 50
    assert data["rings"]["command"]["popped"] == 55
