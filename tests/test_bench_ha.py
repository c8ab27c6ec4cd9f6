"""bench/restart_time.py and bench/health_load.py still run (tiny configurations).

Counts only, never timing: the measurements themselves are in docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import mxrc_env

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run_bench(script: str, out: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--rt-priority", "40", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env=mxrc_env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def test_restart_time_bench_runs(tmp_path: Path) -> None:
    data = _run_bench(
        "restart_time.py",
        tmp_path / "restart.json",
        "--rounds=1",
        "--kills-per-block=1",
        "--requests=50",
        "--rate=200",
        "--connections=20",
        "--idle=5",
        "--settle-s=0.1",
        "--jitter-s=0.1",
    )
    kills = data["kills"]
    assert [k["loaded"] for k in kills] == [False, True]
    assert all(k["ok"] and k["restored"] for k in kills), kills
    assert data["resumed_lines"] >= len(kills)  # "demo axis resumed at step N" per restart
    assert data["summary"]["idle"]["measured"] == 1
    assert data["summary"]["loaded"]["measured"] == 1
    load = data["summary"]["load"]
    assert load["requests"] == 50 and load["errors"] == 0, data["loads"]
    assert sum(load["statuses"].values()) == 50
    assert data["interpreter"]["executable"] == sys.executable


def test_health_load_bench_runs(tmp_path: Path) -> None:
    data = _run_bench(
        "health_load.py",
        tmp_path / "load.json",
        "--pairs=1",
        "--phase-s=0.5",
        "--settle-s=0.2",
        "--requests=50",
        "--rate=200",
        "--connections=20",
        "--idle=5",
    )
    phases = data["phases"]
    assert [p["loaded"] for p in phases] == [False, True]
    load = phases[1]["load"]
    assert load["requests"] == 50 and load["responses"] == 50 and load["errors"] == 0, load
    assert load["idle_sockets"] == 5
    assert 1 not in load["cpus"]  # pinned away from the RT core (CPU 1)
    assert phases[0]["rt"]["cycles"] > 0
    assert data["summary"]["pairs"] == 1
