"""Checkpoints: atomic, checksummed, bit-exact; ordered by (epoch, sequence); crash continuity."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import child_ready, small_segment, spawn_python, wait_for

from mxrc.bus import DataStore, Event, EventBus, Priority
from mxrc.config import load_config
from mxrc.ha._checkpoint import (
    CHECKPOINT_SCHEMA_VERSION,
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointStore,
    CheckpointWriter,
    capture,
    checkpoint_name,
    decode_value,
    encode_value,
    restore,
    resume_datastore,
)
from mxrc.tasks import Action, Sequence, Task

LOGGER = "mxrc.ha.checkpoint"


def bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def f64(hex16: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(hex16))[0])


# Floats whose bits JSON would lose or change: NaN payloads and sign, infinities,
# -0.0, subnormals, the extremes.
SPECIAL_BITS = [
    "7ff8000000000000",  # NaN
    "fff8000000000000",  # -NaN
    "7ff8000000000abc",  # NaN with a payload
    "7ff0000000000001",  # signalling NaN
    "7ff0000000000000",  # inf
    "fff0000000000000",  # -inf
    "8000000000000000",  # -0.0
    "0000000000000001",  # smallest subnormal
    "7fefffffffffffff",  # max
    "3fb999999999999a",  # 0.1
]


def full_store() -> DataStore:
    ds = DataStore.private()
    ds.define("f", float)
    ds.define("i", int)
    ds.define("b", bool)
    ds.define("s", str, 24)
    ds.define("arr", "f64array", len(SPECIAL_BITS))
    ds.define("never", float)
    ds["f"] = f64("7ff8000000000abc")
    ds["i"] = -(2**63)
    ds["b"] = True
    ds["s"] = "grüße ✓"
    ds["arr"] = np.array([f64(h) for h in SPECIAL_BITS])
    return ds


# ---------------------------------------------------------------- values


def test_encode_decode_is_bit_exact_for_special_floats() -> None:
    values = [f64(h) for h in SPECIAL_BITS]
    enc = encode_value(values)
    text = json.dumps(enc, allow_nan=False)  # never NaN/Infinity/null in the JSON
    back = decode_value(json.loads(text))
    assert [bits(v) for v in back] == SPECIAL_BITS
    arr = np.array(values).reshape(2, 5)
    back_arr = decode_value(json.loads(json.dumps(encode_value(arr))))
    assert back_arr.shape == (2, 5) and back_arr.dtype == np.float64
    assert back_arr.tobytes() == arr.tobytes()


def test_encode_decode_round_trips_nested_values() -> None:
    value = {
        "$odd": {"$f64": "not a tag here"},
        "ints": [0, -1, 2**63 - 1, -(2**63), 10**30],
        "bytes": b"\x00\xff",
        "tuple": (1.5, None, True, "x"),
        "np": [np.int32(7), np.float32(0.5), np.bool_(False)],
        "i16": np.arange(6, dtype=">i2").reshape(3, 2),
    }
    back = decode_value(json.loads(json.dumps(encode_value(value))))
    assert back["$odd"] == {"$f64": "not a tag here"}
    assert back["ints"] == value["ints"]
    assert back["bytes"] == b"\x00\xff"
    assert back["tuple"] == [1.5, None, True, "x"]
    assert back["np"][0] == 7 and back["np"][2] is False
    assert back["np"][1].dtype == np.float32 and back["np"][1] == 0.5
    np.testing.assert_array_equal(back["i16"], value["i16"])


def f32(bits32: int) -> np.float32:
    return np.frombuffer(struct.pack("<I", bits32), dtype="<f4")[0]


@pytest.mark.parametrize(
    "value",
    [
        f32(0x7FC00ABC),  # NaN with a payload
        f32(0xFFC00001),  # -NaN with a payload
        f32(0x7F800001),  # signalling NaN
        f32(0x80000000),  # -0.0
        f32(0x00000001),  # smallest subnormal
        np.float32(0.1),
        np.float16(-1.5),
        np.longdouble("0.1"),  # 80-bit extended on x86-64: not a float64
        np.complex64(1.5 - 2j),
    ],
    ids=repr,
)
def test_numpy_float_scalars_keep_their_dtype_and_bits(value: np.generic) -> None:
    back = decode_value(json.loads(json.dumps(encode_value({"x": value}))))["x"]
    assert type(back) is type(value) and back.dtype == value.dtype  # a scalar, not a 0-d array
    assert back.tobytes() == np.asarray(value).tobytes()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({1: "x"}, "dict keys must be str"),
        (object(), "cannot be stored in a checkpoint"),
        (np.array(["a"], dtype=object), "numeric or bool dtype"),
    ],
)
def test_encode_refuses_what_it_cannot_store(value: object, expected: str) -> None:
    with pytest.raises(CheckpointError, match=expected):
        encode_value({"k": value})


@pytest.mark.parametrize(
    "data",
    [
        1.5,
        {"$f64": "xyz"},
        {"$bytes": "!!"},
        {"$scalar": {"dtype": "<f4"}},
        {"$scalar": {"dtype": "<f4", "data": "AAAAAAAA"}},
        {"$nope": 1},
        {"$ndarray": {"dtype": "<f8"}},
        {"a": 1, "$b": 2},
    ],
)
def test_decode_refuses_malformed_encodings(data: object) -> None:
    with pytest.raises(ValueError):
        decode_value(data)


# ---------------------------------------------------------------- store, round trip


def test_checkpoint_round_trips_datastore_tasks_events_and_app_state(tmp_path: Path) -> None:
    ds = full_store()
    bus = EventBus()  # not started: the events stay queued
    bus.publish("axis.moved", {"pos": 1.25}, target_id="axis0")
    bus.publish(Event("estop", b"\x01\x02", priority=Priority.CRITICAL))
    bus.publish("log.low", None, priority=Priority.LOW)
    task = Task(
        "t1",
        sequences=[Sequence("s1", actions=[Action("a1", "move", params={"x": 0.1})])],
    )
    app = {"setpoint": -0.0, "gains": np.array([math.nan, 2.0])}
    content = capture(
        datastore=ds,
        datastore_mode="read",
        tasks=[task],
        eventbus=bus,
        save_hook=lambda: app,
    )
    store = CheckpointStore(tmp_path / "ckpt")
    written = store.write(content, reason="manual")
    assert written.path == tmp_path / "ckpt" / "ckpt-00000000-000000000001.json"
    assert written.size_bytes == written.path.stat().st_size
    loaded = store.load_newest()
    assert loaded is not None and loaded.name == written.name

    assert loaded.datastore is not None
    assert bits(loaded.datastore["f"].value) == "7ff8000000000abc"
    assert [bits(v) for v in loaded.datastore["arr"].value] == SPECIAL_BITS
    assert loaded.datastore["i"].value == -(2**63)
    assert loaded.datastore["s"].value == "grüße ✓"
    assert loaded.datastore["never"].version == 0

    events = loaded.event_objects()
    assert [e.type for e in events] == ["estop", "axis.moved", "log.low"]  # critical first
    fresh = EventBus()
    report_bus = restore(loaded, eventbus=fresh)
    assert report_bus.events == 3
    got: list[Event] = []
    fresh.subscribe("*", got.append)
    fresh.dispatch_pending()
    queued = {e.id: e for e in events}
    assert [(e.id, e.payload, e.priority, e.target_id) for e in got] == [
        (e.id, e.payload, e.priority, e.target_id) for e in events
    ]
    assert set(queued) == {e.id for e in got}

    (restored_task,) = loaded.task_objects()
    assert restored_task.to_dict() == task.to_dict()

    states: list[Any] = []
    ds2 = DataStore.private()
    report = restore(loaded, datastore=ds2, restore_hook=states.append)
    assert report.app_restored
    assert bits(states[0]["setpoint"]) == bits(-0.0)
    assert math.isnan(states[0]["gains"][0])
    assert set(report.slots) == {"f", "i", "b", "s", "arr", "never"}
    assert bits(ds2["f"]) == "7ff8000000000abc"  # type: ignore[arg-type]
    assert ds2.read("arr").tobytes() == ds.read("arr").tobytes()  # type: ignore[union-attr]
    assert ds2.version("never") == 0  # defined, still never written


def test_file_is_canonical_checksummed_json(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    cp = store.write(capture(datastore=full_store(), datastore_mode="read"), reason="r")
    assert cp.path is not None
    doc = json.loads(cp.path.read_text(encoding="ascii"))
    assert doc["format"] == "mxrc-checkpoint"
    assert doc["schema_version"] == CHECKPOINT_SCHEMA_VERSION
    assert len(doc["sha256"]) == 64
    assert (doc["body"]["epoch"], doc["body"]["sequence"], doc["body"]["reason"]) == (0, 1, "r")
    assert "NaN" not in cp.path.read_text(encoding="ascii")
    assert oct(cp.path.stat().st_mode & 0o777) == oct(0o640)


def test_consistent_snapshot_from_a_running_executive(tmp_path: Path, instance: str) -> None:
    from mxrc.rt import Executive

    with small_segment(instance) as seg:
        ds = DataStore.from_segment(seg)
        ds.define("a", int)
        ds.define("b", int)

        def body(ctx: Any) -> None:  # two slots the cycle writes together
            n = ds["a"] + 1  # type: ignore[operator]
            ds["a"] = n
            ds["b"] = n

        ex = Executive(body, period_us=500, segment=seg, name="main")
        ex.start()
        try:
            assert ex.wait(cycles=20, timeout=10)
            store = CheckpointStore(tmp_path)
            for _ in range(5):
                cp = store.write(capture(executive=ex, segment=seg), reason="t")
                assert cp.datastore is not None and cp.datastore_cycle is not None
                assert cp.datastore["a"].value == cp.datastore["b"].value > 0
            assert cp.executive is not None
            assert cp.executive["state"] == "RUNNING"
            assert cp.executive["cycles"] >= 20
            assert cp.executive["generation"] == seg.generation
            assert cp.epoch == seg.header["epoch"]
            # the agent side: state and cycles from the segment's stats block
            side = capture(segment=seg, stats_name="main", datastore=ds)
            assert side["executive"]["state"] == "RUNNING"
        finally:
            ex.stop()


def test_snapshot_mode_without_a_cycle_thread_times_out_clearly(tmp_path: Path) -> None:
    from mxrc.bus import SnapshotTimeoutError

    with pytest.raises(SnapshotTimeoutError, match="service_snapshot"):
        capture(datastore=DataStore.private(), snapshot_timeout=0.05)


# ---------------------------------------------------------------- corrupt files


def _three(tmp_path: Path) -> tuple[CheckpointStore, list[Checkpoint]]:
    store = CheckpointStore(tmp_path)
    cps = [store.write(capture(datastore=full_store(), datastore_mode="read")) for _ in range(3)]
    return store, cps


def _retag(path: Path, mutate: Any) -> None:
    doc = json.loads(path.read_text(encoding="ascii"))
    mutate(doc)
    path.write_text(json.dumps(doc), encoding="ascii")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not valid JSON"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"\xff\xfe garbage"), "not valid JSON"),
        (lambda p: _retag(p, lambda d: d["body"].update(reason="tampered")), "sha256 mismatch"),
        (lambda p: _retag(p, lambda d: d.update(schema_version=99)), "schema_version 99"),
        (lambda p: _retag(p, lambda d: d.update(format="other")), "not an mxrc checkpoint"),
        (lambda p: p.write_text("[1, 2]", encoding="ascii"), "not an mxrc checkpoint"),
    ],
)
def test_corrupt_newest_is_named_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, reason: str
) -> None:
    store, cps = _three(tmp_path)
    newest = cps[-1].path
    assert newest is not None
    damage(newest)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got = store.load_newest()
    assert got is not None and got.sequence == 2
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 1
    assert newest.name in messages[0] and reason in messages[0]
    with pytest.raises(CheckpointCorruptError, match=reason) as err:
        store.load(newest)
    assert err.value.path == newest


def test_body_epoch_must_match_the_name(tmp_path: Path) -> None:
    store, cps = _three(tmp_path)
    assert cps[0].path is not None
    moved = tmp_path / checkpoint_name(0, 9)
    os.rename(cps[0].path, moved)  # a valid body under another name
    with pytest.raises(CheckpointCorruptError, match="the name says 0, 9"):
        store.load(moved)
    newest = store.load_newest()
    assert newest is not None and newest.path == cps[2].path


def _write_raw(path: Path, body: dict[str, Any], schema_version: int = 1) -> None:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
    doc = {
        "format": "mxrc-checkpoint",
        "schema_version": schema_version,
        "sha256": hashlib.sha256(canonical).hexdigest(),
        "body": body,
    }
    path.write_text(json.dumps(doc), encoding="ascii")


def _nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def test_deeply_nested_files_are_named_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, cps = _three(tmp_path)
    # too deep for json.loads
    deep_json = tmp_path / checkpoint_name(0, 4)
    deep_json.write_text("[" * 200_000 + "]" * 200_000, encoding="ascii")
    # parses and hashes, but too deep for decode_value: a correct checksum over it
    assert cps[-1].path is not None
    body = json.loads(cps[-1].path.read_text(encoding="ascii"))["body"]
    body.update(sequence=5, app={"state": _nest(900)})
    deep_value = tmp_path / checkpoint_name(0, 5)
    _write_raw(deep_value, body)
    for path in (deep_json, deep_value):
        with pytest.raises(CheckpointCorruptError, match="nested too deeply") as err:
            store.load(path)
        assert err.value.path == path
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got = store.load_newest()
    assert got is not None and got.path == cps[-1].path
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    for message, path in zip(messages, (deep_value, deep_json), strict=True):
        assert message.startswith(f"skipping checkpoint {path}: nested too deeply")
    info = store.last_checkpoint()
    assert info is not None and info.path == str(cps[-1].path)


def test_newer_schema_files_are_named_and_never_pruned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    content = capture(datastore=full_store(), datastore_mode="read")
    store.write(content)
    newer = tmp_path / checkpoint_name(0, 2)
    _write_raw(newer, {"epoch": 0, "sequence": 2, "something": "new"}, schema_version=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got = store.load_newest()
    assert got is not None and got.sequence == 1
    (message,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert message == (
        f"skipping checkpoint {newer}: written by a newer mxrc (schema_version 2; "
        f"this mxrc reads {CHECKPOINT_SCHEMA_VERSION}): not used, kept"
    )
    for _ in range(4):
        store.write(content)
    assert newer.exists()  # a downgrade must not lose a newer mxrc's checkpoints
    assert [s for _, s, _ in store.entries()] == [2, 5, 6]  # keep=2 counts valid files only
    store.prune()
    assert newer.exists()


def test_corrupt_names_neither_fence_nor_stop_writes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=100)
    content = capture(datastore=full_store(), datastore_mode="read")
    store.write(content)
    # a corrupt file with a higher epoch is no newer primary
    (tmp_path / checkpoint_name(7, 5)).write_bytes(b"{")
    cp = store.write(content)
    assert (cp.epoch, cp.sequence) == (0, 6)  # one past every name: names stay unique
    newest = store.load_newest()
    assert newest is not None and newest.path == cp.path
    # the fence holds against valid files and a newer mxrc's, and names the file
    valid = store.write(content, epoch=2)
    with pytest.raises(
        CheckpointError, match=f"older than the newest checkpoint's epoch 2 \\({valid.path}\\)"
    ):
        store.write(content, epoch=1)
    newer = tmp_path / checkpoint_name(9, 8)
    _write_raw(newer, {}, schema_version=CHECKPOINT_SCHEMA_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"epoch 9 \\({newer}\\)"):
        store.write(content, epoch=2)
    newer.unlink()
    # a name at the last sequence: a clear error naming it, not an overflow
    last = tmp_path / checkpoint_name(0, 10**12 - 1)
    last.write_bytes(b"{")
    with pytest.raises(CheckpointError, match=f"{last}.*move that file aside"):
        store.write(content, epoch=2)
    last.unlink()
    assert store.write(content, epoch=2).sequence == 8


def test_prune_counts_only_valid_checkpoints_toward_keep(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    content = capture(datastore=full_store(), datastore_mode="read")
    only = store.write(content)
    torn = [tmp_path / checkpoint_name(0, s) for s in (2, 3)]
    for path in torn:
        path.write_bytes(b'{"body": ')
    assert store.prune() == []
    assert only.path is not None and only.path.exists()  # the only valid one stays
    assert all(p.exists() for p in torn)  # newer than it: kept for inspection
    store.write(content)
    assert [s for _, s, _ in store.entries()] == [1, 2, 3, 4]
    store.write(content)
    # two valid ones kept; older corrupt and valid files go
    assert [s for _, s, _ in store.entries()] == [4, 5]
    for _, _, path in store.entries():
        path.write_bytes(b"")
    assert store.prune() == []  # no valid checkpoint: nothing is removed


def test_all_corrupt_gives_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, cps = _three(tmp_path)
    for cp in cps:
        assert cp.path is not None
        cp.path.write_bytes(b"{")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.load_newest() is None
    assert len([r for r in caplog.records if r.name == LOGGER]) == 3
    assert CheckpointStore(tmp_path / "empty").load_newest() is None


# ---------------------------------------------------------------- ordering, retention


def test_ordered_by_epoch_and_sequence_never_mtime(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=100)
    content = capture(datastore=full_store(), datastore_mode="read")
    a = store.write(content, epoch=1)
    b = store.write(content, epoch=1)
    c = store.write(content, epoch=2)
    d = store.write(content, epoch=2)
    assert [(x.epoch, x.sequence) for x in (a, b, c, d)] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    # make the oldest look newest by mtime: it must not matter
    now = time.time()
    for i, cp in enumerate((d, c, b, a)):
        assert cp.path is not None
        os.utime(cp.path, (now + i * 100, now + i * 100))
    newest = store.load_newest()
    assert newest is not None and (newest.epoch, newest.sequence) == (2, 4)
    # a larger sequence in an older epoch is older
    old = tmp_path / checkpoint_name(1, 999)
    old.write_bytes(b"{}")
    assert [(e, s) for e, s, _ in store.entries()][-1] == (2, 4)
    with pytest.raises(CheckpointError, match="epoch 1 is older than the newest"):
        store.write(content, epoch=1)


def test_retention_keeps_newest_n_and_removes_dead_writers_temp_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    content = capture(datastore=full_store(), datastore_mode="read")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".ckpt-00000000-000000000001.json.{int(dead.stdout)}.tmp"
    stale.write_bytes(b"partial")
    mine = tmp_path / f".ckpt-00000000-000000000999.json.{os.getpid()}.tmp"
    mine.write_bytes(b"in progress")
    for _ in range(7):
        store.write(content)
    assert [s for _, s, _ in store.entries()] == [5, 6, 7]
    assert not stale.exists()
    assert mine.exists()  # a live writer's temp file is left alone
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
        CheckpointStore(tmp_path, keep=0)


def test_two_stores_in_one_directory_never_reuse_a_sequence(tmp_path: Path) -> None:
    s1, s2 = CheckpointStore(tmp_path, keep=1000), CheckpointStore(tmp_path, keep=1000)
    content = capture(datastore=full_store(), datastore_mode="read")
    seqs: list[int] = []
    lock = threading.Lock()

    def run(store: CheckpointStore) -> None:
        for _ in range(20):
            cp = store.write(content)
            with lock:
                seqs.append(cp.sequence)

    threads = [threading.Thread(target=run, args=(s,)) for s in (s1, s2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 41))


def test_config_key_checkpoint_keep(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}).failover_policy.rt.checkpoint_keep == 10
    (tmp_path / "failover_policy.json").write_text(
        json.dumps({"rt": {"checkpoint_keep": 3}}), encoding="utf-8"
    )
    assert load_config(tmp_path, environ={}).failover_policy.rt.checkpoint_keep == 3
    (tmp_path / "failover_policy.json").write_text(
        json.dumps({"rt": {"checkpoint_keep": 0}}), encoding="utf-8"
    )
    with pytest.raises(Exception, match="checkpoint_keep"):
        load_config(tmp_path, environ={})


# ---------------------------------------------------------------- SIGKILL mid-write

WRITER_CHILD = """
import json, os, random, sys, time
import numpy as np
from mxrc.ha import _checkpoint as c

random.seed(int(sys.argv[2]))
def slow(stage):
    time.sleep(random.uniform(0.0, 0.02))
c._write_hook = slow
store = c.CheckpointStore(sys.argv[1], keep=5)
n = 0
print(json.dumps({"ready": True}), flush=True)
while True:
    n += 1
    content = c.capture(save_hook=lambda: {"n": n, "blob": np.arange(20000, dtype=np.float64) * n})
    store.write(content, reason="loop")
"""


def test_sigkill_mid_write_never_leaves_a_partial_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(6)
    store = CheckpointStore(tmp_path, keep=5)
    temp_left = 0
    last_seq = 0
    for i in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER_CHILD), str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        try:
            child_ready(proc)
            time.sleep(rng.uniform(0.01, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        temp_left += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        # every file under a checkpoint name is complete and valid: old or new, never partial
        for _e, _s, path in store.entries():
            cp = store.load(path)
            assert cp.app_state["blob"][1] == cp.app_state["n"]
        newest = store.load_newest()
        if newest is not None:
            assert newest.sequence >= last_seq
            last_seq = newest.sequence
    assert last_seq > 0
    assert temp_left > 0  # some kills landed between the write and the rename


# ---------------------------------------------------------------- crash continuity

LIVE_CHILD = """
import json, sys, time
from mxrc.bus import DataStore, Segment
seg = Segment.attach(sys.argv[1])
ds = DataStore.from_segment(seg)
for name in ("pos", "speed", "held", "fresh"):
    ds.define(name, float)
ds.define("mode", str, 8)
ds["pos"] = 41.5          # written after the checkpoint: the live value wins
ds["mode"] = "auto"
ds["held"] = 1.0
with ds.write_scope("held") as v:   # dies holding it: version odd
    v[0] = 7.0
    print(json.dumps({"ready": True}), flush=True)
    time.sleep(60)
"""


def test_resume_datastore_keeps_valid_live_slots_and_fills_the_rest(
    tmp_path: Path, instance: str
) -> None:
    with small_segment(instance) as seg:
        ds = DataStore.from_segment(seg)
        ckpt_ds = DataStore.private()
        for name in ("pos", "speed", "held", "only_ckpt"):
            ckpt_ds.define(name, float)
        ckpt_ds.define("mode", str, 8)
        ckpt_ds["pos"] = 40.0
        ckpt_ds["speed"] = f64("8000000000000000")  # -0.0
        ckpt_ds["held"] = 3.0
        ckpt_ds["only_ckpt"] = math.inf
        ckpt_ds["mode"] = "manual"
        cp = CheckpointStore(tmp_path).write(capture(datastore=ckpt_ds, datastore_mode="read"))

        proc = spawn_python(LIVE_CHILD.replace("sys.argv[1]", repr(instance)))
        try:
            child_ready(proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert ds.version("held") & 1  # left mid-write by the dead process
        assert ds.version("speed") == 0  # defined, never written

        report = resume_datastore(ds, cp)
        assert report.live == ("mode", "pos")
        assert report.from_checkpoint == ("held", "only_ckpt", "speed")
        assert report.unresolved == ("fresh",)  # never written live, not in the checkpoint
        assert ds["pos"] == 41.5 and ds["mode"] == "auto"
        assert ds["held"] == 3.0
        assert bits(ds["speed"]) == "8000000000000000"  # type: ignore[arg-type]
        assert ds["only_ckpt"] == math.inf
        assert resume_datastore(ds, None).from_checkpoint == ()


# ---------------------------------------------------------------- the writer


def test_writer_periodic_on_request_and_on_state_transitions(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=100)
    ds = full_store()
    state = ["INIT"]
    with CheckpointWriter(
        store,
        lambda: capture(datastore=ds, datastore_mode="read"),
        interval_s=3600,
        state_source=lambda: state[0],
        poll_s=0.01,
    ) as writer:
        state[0] = "READY"
        assert wait_for(lambda: writer.written == 1)
        state[0] = "RUNNING"
        state_reads = writer.written
        writer.request("asked")
        assert wait_for(lambda: writer.written == state_reads + 1)
        state[0] = "SAFE_MODE"
        assert wait_for(lambda: writer.written == state_reads + 2)
        state[0] = "PAUSED"  # not a trigger
        writer.request("sync")
        assert wait_for(lambda: writer.written == state_reads + 3)
    reasons = [store.load(p).reason for _, _, p in store.entries()]
    assert reasons == ["INIT->READY", "asked", "RUNNING->SAFE_MODE", "sync"]
    assert not writer.running

    periodic = CheckpointWriter(
        CheckpointStore(tmp_path / "p"),
        lambda: capture(datastore=ds, datastore_mode="read"),
        interval_s=0.02,
    ).start()
    try:
        assert wait_for(lambda: periodic.written >= 3)
    finally:
        periodic.stop()
    assert periodic.last is not None and periodic.last.reason == "periodic"


@pytest.mark.parametrize(
    ("states", "reason"),
    [
        (["INIT", "RUNNING"], "INIT->RUNNING (started)"),
        ([None, "RUNNING"], "no state->RUNNING (started)"),
    ],
)
def test_writer_sees_a_start_that_skips_ready(
    tmp_path: Path, states: list[str | None], reason: str
) -> None:
    # The C++ loop passes READY within microseconds: a poll sees INIT (or nothing) then RUNNING.
    store = CheckpointStore(tmp_path)
    state = [states[0]]
    with CheckpointWriter(
        store, capture, interval_s=0, state_source=lambda: state[0], poll_s=0.01
    ) as writer:
        state[0] = states[1]
        assert wait_for(lambda: writer.written == 1)
    assert writer.last is not None and writer.last.reason == reason


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_is_a_clear_error_and_keeps_older_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    store = CheckpointStore(tmp_path)
    content = capture(datastore=full_store(), datastore_mode="read")
    old = [store.write(content), store.write(content)]

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, call, full)
    with pytest.raises(CheckpointError) as err:
        store.write(content)
    monkeypatch.undo()
    assert str(err.value) == (
        f"cannot write checkpoint {tmp_path / checkpoint_name(0, 3)}: No space left on device "
        f"(ENOSPC); the older checkpoints are kept"
    )
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / ".lock", *(c.path for c in old)])
    newest = store.load_newest()
    assert newest is not None and newest.path == old[-1].path
    assert store.write(content).sequence == 3


def test_writer_logs_and_counts_failures_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = [0]

    def flaky() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("capture exploded")
        return capture()

    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        CheckpointWriter(CheckpointStore(tmp_path), flaky, interval_s=0) as writer,
    ):
        writer.request("one")
        assert wait_for(lambda: writer.errors == 1)
        writer.request("two")
        assert wait_for(lambda: writer.written == 1)
    assert any("capture exploded" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="interval_s"):
        CheckpointWriter(CheckpointStore(tmp_path), capture, interval_s=-1)


def test_last_checkpoint_for_the_health_provider(tmp_path: Path) -> None:
    from mxrc.ha import CheckpointInfo

    store = CheckpointStore(tmp_path)
    assert store.last_checkpoint() is None
    cp = store.write(capture(datastore=full_store(), datastore_mode="read"))
    info = store.last_checkpoint()
    assert isinstance(info, CheckpointInfo)
    assert (info.path, info.size_bytes) == (str(cp.path), cp.size_bytes)
    assert abs(info.created_unix - time.time()) < 3600
    # another process's store: validates, skips a corrupt newest
    other = CheckpointStore(tmp_path)
    (tmp_path / checkpoint_name(0, 2)).write_bytes(b"{torn")
    info2 = other.last_checkpoint()
    assert info2 is not None and info2.path == str(cp.path)
    assert other.last_checkpoint() is info2  # cached while nothing changes


def test_writer_on_a_real_executive_safe_mode_transition_and_restore(
    tmp_path: Path, instance: str
) -> None:
    from mxrc.rt import Executive, RtState

    with small_segment(instance) as seg:
        ds = DataStore.from_segment(seg)
        ds.define("count", int)

        def body(ctx: Any) -> None:
            ds["count"] = ds["count"] + 1  # type: ignore[operator]

        ex = Executive(body, period_us=1000, segment=seg, name="main")
        store = CheckpointStore(tmp_path)
        writer = CheckpointWriter(
            store,
            lambda: capture(segment=seg, stats_name="main", datastore=ds),
            interval_s=0,
            state_source=lambda: seg.stats("main").state,
            poll_s=0.005,
        )
        ex.start()
        try:
            assert ex.wait(cycles=10, timeout=10)
            assert wait_for(lambda: seg.stats("main").state == RtState.RUNNING)
            writer.start()
            ex.enter_safe_mode()
            assert wait_for(lambda: writer.written == 1)
            writer.stop()
            cp = store.load_newest()
            assert cp is not None and cp.reason == "RUNNING->SAFE_MODE"
            assert cp.executive is not None and cp.executive["state"] == "SAFE_MODE"
            assert cp.datastore is not None and cp.datastore["count"].value >= 10
        finally:
            writer.stop()
            ex.stop()
        ex2 = Executive(body, period_us=1000, segment=seg, name="second")
        ex2.start()
        try:
            assert ex2.wait(cycles=2, timeout=10)
            report = restore(cp, executive=ex2)
            assert report.safe_mode and report.slots == ("count",)
            assert wait_for(lambda: ex2.state == RtState.SAFE_MODE)
        finally:
            ex2.stop()


RT_CHILD = """
import json, sys, time
from mxrc.bus import DataStore, Segment
from mxrc.ha import CheckpointStore, resume_datastore
from mxrc.rt import Executive

seg = Segment.attach(sys.argv[1])
ds = DataStore.from_segment(seg)
report = resume_datastore(ds, CheckpointStore(sys.argv[2]).load_newest())
ds.define("count", int)
generation = seg.bump_generation()
start = ds["count"]

def body(ctx):
    ds["count"] = ds["count"] + 1

ex = Executive(body, period_us=1000, segment=seg, name="main")
ex.start()
print(json.dumps({"start": start, "live": report.live, "restored": report.from_checkpoint,
                  "generation": generation}), flush=True)
time.sleep(120)
"""


def _rt_child(instance: str, directory: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(RT_CHILD), instance, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        return proc, child_ready(proc)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def test_sigkilled_rt_process_resumes_from_live_store_then_checkpoint(
    tmp_path: Path, instance: str
) -> None:
    store = CheckpointStore(tmp_path / "ckpt")
    with small_segment(instance) as seg:
        ds = DataStore.from_segment(seg)
        proc, first = _rt_child(instance, store.directory)
        try:
            assert first["start"] == 0 and first["restored"] == []
            assert wait_for(lambda: "count" in ds and ds["count"] >= 50)  # type: ignore[operator]
            # the agent side checkpoints while the RT process runs (snapshot by its cycle thread)
            cp = store.write(capture(segment=seg, stats_name="main", datastore=ds))
            assert cp.datastore is not None and cp.datastore_cycle is not None
            at_checkpoint = cp.datastore["count"].value
            assert wait_for(lambda: ds["count"] >= at_checkpoint + 50)  # type: ignore[operator]
        finally:
            _kill(proc)
        live = ds["count"]
        proc, second = _rt_child(instance, store.directory)
        try:
            # the live slot survived the crash in the segment: kept, not rolled back
            assert second["start"] == live > at_checkpoint
            assert second["live"] == ["count"]
            assert second["generation"] > first["generation"]
            assert wait_for(lambda: ds["count"] > live)  # type: ignore[operator]
        finally:
            _kill(proc)

    # the whole instance restarted (a fresh segment): the checkpoint fills the store
    with small_segment(instance):
        proc, third = _rt_child(instance, store.directory)
        try:
            assert third["start"] == at_checkpoint
            assert third["restored"] == ["count"] and third["live"] == []
        finally:
            _kill(proc)


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{afile}"):
        CheckpointStore(afile)
    with pytest.raises(CheckpointError, match="cannot create the checkpoint directory"):
        CheckpointStore(afile / "sub")
    store = CheckpointStore(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="not JSON-safe"):
        store.write({"app": {"state": math.nan}})
    with pytest.raises(CheckpointError, match=r"save_hook\(\)\['x'\]: a set cannot be stored"):
        capture(save_hook=lambda: {"x": {1}})
    with pytest.raises(ValueError, match="datastore_mode"):
        capture(datastore=DataStore.private(), datastore_mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(CheckpointCorruptError, match="the name is not ckpt-"):
        store.load(afile)
    assert store.entries() == []  # nothing half-written was left under a checkpoint name


def test_writer_for_segment_snapshots_a_live_rt_process_and_reads_a_dead_ones(
    tmp_path: Path, instance: str
) -> None:
    from mxrc.ha import writer_for_segment

    with small_segment(instance) as seg:
        writer = writer_for_segment(
            seg, tmp_path, interval_s=0, keep=4, stats_name="main", snapshot_timeout=0.2
        )
        ds = DataStore.from_segment(seg)
        proc, _ = _rt_child(instance, tmp_path / "none")
        try:
            assert wait_for(lambda: "count" in ds and ds["count"] >= 10)  # type: ignore[operator]
            live = writer.write_now("running")
            assert live.datastore_cycle is not None  # taken by the RT process's cycle thread
            assert live.executive is not None and live.executive["state"] == "RUNNING"
        finally:
            _kill(proc)
        dead = writer.write_now("rt-dead")
        assert dead.datastore_cycle is None  # no cycle thread: read directly
        assert dead.datastore is not None and dead.datastore["count"].value == ds["count"]
        assert dead.executive is not None and dead.executive["generation"] == seg.generation
        for _ in range(5):
            writer.write_now("more")
        assert len(writer.store.entries()) == 4
