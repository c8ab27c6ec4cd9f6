"""Checkpoint write and restore times (issue 6: "write and restore times in bench/").

Run: python -m pytest bench/test_bench_checkpoint.py --benchmark-only
(not part of the test command). Each case builds a data store of ``SLOTS``
slots — scalars and 64-element f64arrays, NaN included — in private memory,
with 100 pending EventBus events and one Task of 10 actions, then times:

- ``capture``: collecting the state (the data store read slot by slot);
- ``write``: :meth:`CheckpointStore.write` — canonical JSON, sha256, temp
  file, fsync, rename, fsync of the directory, retention (keep 10);
- ``load``: reading and validating the newest file (checksum, decoding);
- ``resume``: :func:`resume_datastore` into an empty store (every slot from
  the checkpoint), the crash-continuity path of a restarted RT process.

``extra_info`` records the file size. The fsyncs dominate ``write`` on a
real disk; on tmpfs they are nearly free: the directory is the pytest
tmp_path (say where it lives when quoting a number).

Groups: checkpoint-<slots>.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mxrc.bus import DataStore, EventBus
from mxrc.ha import CheckpointStore, capture, resume_datastore
from mxrc.tasks import Action, Sequence, Task

SIZES = [16, 256]


def _sources(slots: int) -> dict[str, Any]:
    ds = DataStore.private(max_slots=slots, arena_bytes=slots * 8 * 64)
    for i in range(slots):
        if i % 4 == 0:
            ds.define(f"arr{i}", "f64array", 64)
            ds[f"arr{i}"] = np.linspace(-1.0, 1.0, 64) * i
        else:
            ds.define(f"x{i}", float)
            ds[f"x{i}"] = float("nan") if i % 7 == 0 else i * 0.1
    bus = EventBus(capacity=1024)
    for i in range(100):
        bus.publish("bench.event", {"i": i})
    task = Task(
        "bench",
        sequences=[Sequence("s", actions=[Action(f"a{i}", "move") for i in range(10)])],
    )
    return {"datastore": ds, "eventbus": bus, "tasks": [task], "datastore_mode": "read"}


@pytest.mark.parametrize("slots", SIZES)
def test_capture(benchmark, slots: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"checkpoint-{slots}"
    src = _sources(slots)
    benchmark(lambda: capture(**src))


@pytest.mark.parametrize("slots", SIZES)
def test_write(benchmark, tmp_path: Path, slots: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"checkpoint-{slots}"
    store = CheckpointStore(tmp_path, keep=10)
    content = capture(**_sources(slots))
    cp = benchmark(lambda: store.write(content, reason="bench"))
    benchmark.extra_info["size_bytes"] = cp.size_bytes


@pytest.mark.parametrize("slots", SIZES)
def test_load(benchmark, tmp_path: Path, slots: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"checkpoint-{slots}"
    store = CheckpointStore(tmp_path)
    cp = store.write(capture(**_sources(slots)))
    benchmark.extra_info["size_bytes"] = cp.size_bytes
    got = benchmark(store.load_newest)
    assert got is not None and got.sequence == cp.sequence


@pytest.mark.parametrize("slots", SIZES)
def test_resume(benchmark, tmp_path: Path, slots: int) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = f"checkpoint-{slots}"
    cp = CheckpointStore(tmp_path).write(capture(**_sources(slots)))

    def setup() -> tuple[tuple[DataStore, Any], dict[str, Any]]:
        return (DataStore.private(max_slots=slots, arena_bytes=slots * 8 * 64), cp), {}

    report = benchmark.pedantic(resume_datastore, setup=setup, rounds=50)
    assert len(report.from_checkpoint) == slots
