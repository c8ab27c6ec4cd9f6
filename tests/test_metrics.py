"""Prometheus collectors: values match the stats, valid exposition (promtool), windowed rate."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import child_ready, require_tool, spawn_python, wait_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mxrc
from mxrc._native import _core
from mxrc.bus import Segment, private_stats
from mxrc.config import load_config
from mxrc.metrics import DEFAULT_BUCKETS_US, RtCollector, Units, start_http_server
from mxrc.rt import BuiltinBody, CycleStats, RtState, allowed_cpus, numa_topology, read_stats

bus = _core.bus

US_NAMES = (
    "mxrc_rt_cycle_time_us",
    "mxrc_rt_wake_latency_us",
    "mxrc_rt_body_start_latency_us",
    "mxrc_rt_gil_wait_us",
    "mxrc_rt_jitter_us",
    "mxrc_rt_period_us",
    "mxrc_rt_deadline_us",
)
CONTRACT_NAMES = (
    "mxrc_rt_cycle_count_total",
    "mxrc_rt_deadline_miss_count_total",
    "mxrc_rt_deadline_miss_rate",
    "mxrc_rt_cycle_time_us",
    "mxrc_rt_wake_latency_us",
    "mxrc_rt_jitter_us",
    "mxrc_cpu_affinity_info",
    "mxrc_cpu_current_core",
    "mxrc_numa_node",
    "mxrc_numa_local_memory_percent",
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------- helpers


def exposition(*collectors: RtCollector) -> str:
    registry = CollectorRegistry(auto_describe=True)
    for c in collectors:
        registry.register(c)
    return generate_latest(registry).decode()


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    """Label sets of the series of ``name`` that carry ``labels``."""
    want = set(labels.items())
    return [dict(lbl) for n, lbl in samples if n == name and want <= set(lbl)]


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """(le, count) of a histogram series, in le order."""
    found = []
    for (n, lbl), v in samples.items():
        d = dict(lbl)
        le = d.pop("le", None)
        if n == f"{name}_bucket" and d == labels and le is not None:
            found.append((float(le), v))
    return sorted(found)


def fine_count_at_or_below(h: Any, bound_us: float) -> int:
    """Values in fine buckets lying wholly at or below bound_us (the documented rule)."""
    whole = h.upper_ns <= round(bound_us * 1000)
    return int(h.counts[whole].sum())


def check_histogram_structure(samples: Samples) -> int:
    """Every histogram series: le ascending, counts non-decreasing, +Inf == _count. Returns n."""
    checked = 0
    groups: dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[float, float]]] = {}
    for (n, lbl), v in samples.items():
        if n.endswith("_bucket"):
            d = dict(lbl)
            le = float(d.pop("le"))
            groups.setdefault((n[: -len("_bucket")], frozenset(d.items())), []).append((le, v))
    for (base, lbl), bs in groups.items():
        bs.sort()
        assert bs[-1][0] == float("inf")
        counts = [c for _, c in bs]
        assert counts == sorted(counts), (base, counts)
        assert samples[(f"{base}_count", lbl)] == counts[-1]
        assert (f"{base}_sum", lbl) in samples
        checked += 1
    return checked


def promtool() -> str:
    return require_tool("promtool", "prometheus")


def promtool_check(text: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, problems


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Writer:
    """A stats block written from the test (no cycle thread): exact, deterministic values."""

    def __init__(self, name: str = "main", *, tid: int = 0, start_ns: int = 1) -> None:
        self.slot = private_stats(name)
        self.w = bus._StatsWriter(self.slot)
        self.w.begin(1_000_000, 500_000, tid, start_ns)
        self.w.set_state(int(RtState.RUNNING))
        self.release = 0

    def cycle(self, wake_ns: int = 10_000, exec_ns: int = 100_000, missed: bool = False) -> None:
        self.release += 1_000_000
        start = self.release + wake_ns
        self.w.record(self.release, start, start, start + exec_ns, -1, missed)

    def cycles(self, n: int, *, missed: bool = False) -> None:
        for _ in range(n):
            self.cycle(missed=missed)


def reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()


# ---------------------------------------------------------------- values of a real run


def test_values_match_the_stats_of_a_real_run() -> None:
    # every body (20 µs) ends after its 15 µs deadline: all cycles miss
    ex = mxrc.Executive(BuiltinBody("sleep_ns", 20_000), period_us=1000, deadline_us=15)
    stats = ex.run(cycles=200)
    samples = parse(exposition(RtCollector(ex)))
    lbl = {"process": "rt", "executive": "main"}

    assert value(samples, "mxrc_rt_cycle_count_total", **lbl) == stats.cycle_count == 200
    assert value(samples, "mxrc_rt_deadline_miss_count_total", **lbl) == 200
    assert value(samples, "mxrc_rt_deadline_miss_rate", **lbl) == 1.0
    assert value(samples, "mxrc_rt_jitter_us", **lbl) == pytest.approx(stats.jitter_ns / 1e3)
    assert value(samples, "mxrc_rt_period_us", **lbl) == 1000.0
    assert value(samples, "mxrc_rt_deadline_us", **lbl) == 15.0
    assert value(samples, "mxrc_rt_skipped_release_count_total", **lbl) == (
        stats.skipped_release_count
    )
    assert value(samples, "mxrc_rt_state", state="SHUTDOWN", **lbl) == 1.0
    assert value(samples, "mxrc_rt_state", state="RUNNING", **lbl) == 0.0
    for name, h in (
        ("mxrc_rt_cycle_time_us", stats.exec_time),
        ("mxrc_rt_wake_latency_us", stats.wake_latency),
        ("mxrc_rt_body_start_latency_us", stats.body_start_latency),
    ):
        got = buckets(samples, name, **lbl)
        assert [le for le, _ in got] == [*DEFAULT_BUCKETS_US, float("inf")]
        for le, count in got[:-1]:
            assert count == fine_count_at_or_below(h, le), (name, le)
        assert got[-1][1] == h.count == 200
        assert value(samples, f"{name}_count", **lbl) == 200
        assert value(samples, f"{name}_sum", **lbl) == pytest.approx(h.sum_ns / 1e3)
    # the body sleeps 20 µs: no execution time at or below 20 µs, all of it below 1 s
    exec_buckets = dict(buckets(samples, "mxrc_rt_cycle_time_us", **lbl))
    assert exec_buckets[20.0] == 0
    assert exec_buckets[1e6] == 200
    # the thread has ended: no CPU placement to report
    assert series(samples, "mxrc_cpu_current_core") == []
    assert check_histogram_structure(samples) == 4


def test_bucket_rule_on_exact_values() -> None:
    """le=X counts values whose fine bucket lies wholly at or below X µs.

    A value in the one fine bucket straddling X (≤ 3 % wide) counts in the next bucket up,
    so a bucket never holds a value above its bound.
    """
    w = Writer()
    # execution times (ns): 500 and 990 lie in fine buckets ending <= 1000; 999 and 1000
    # share the bucket [992, 1007]; 2_000_000 = 2 ms exactly is in [1_998_848, 2_031_615]
    for exec_ns in (500, 990, 999, 1000, 1500, 2_000_000, 3_000_000_000_000):
        w.cycle(exec_ns=exec_ns)
    c = RtCollector(w.slot, buckets_us=(1, 2, 2000, 5000))
    samples = parse(exposition(c))
    got = dict(buckets(samples, "mxrc_rt_cycle_time_us", process="rt", executive="main"))
    assert got == {1.0: 2, 2.0: 5, 2000.0: 5, 5000.0: 6, float("inf"): 7}  # 3e12 ns: overflow
    h = c._read_threads()[0].stats.exec_time
    assert h.overflow == 1


def test_running_thread_placement_and_affinity_info() -> None:
    cpu = max(allowed_cpus())
    ex = mxrc.Executive(BuiltinBody("noop"), period_us=1000, cpus=[cpu], name="ctl")
    with ex:
        ex.wait(50)
        samples = parse(exposition(RtCollector(ex, process="robot")))
        tid = ex.tid
    lbl = {"process": "robot", "executive": "ctl"}
    assert tid is not None
    assert value(samples, "mxrc_cpu_current_core", **lbl) == cpu
    assert value(samples, "mxrc_numa_node", **lbl) == numa_topology().node_of_cpu(cpu)
    (info,) = series(samples, "mxrc_cpu_affinity_info", **lbl)
    assert info["configured_cores"] == str(cpu)
    assert info["isolation_mode"] in ("NONE", "ISOLCPUS", "CGROUPS", "HYBRID")
    assert value(samples, "mxrc_cpu_affinity_info", **info) == 1.0
    (res,) = series(samples, "mxrc_numa_local_memory_percent")
    assert res["process"] == "robot"
    if len(numa_topology()) == 1:
        # one node: reported as 100 (every page is local) without reading numa_maps
        assert value(samples, "mxrc_numa_local_memory_percent", **res) == 100.0
    assert 0.0 <= value(samples, "mxrc_numa_local_memory_percent", **res) <= 100.0


def test_segment_of_another_process(instance: str) -> None:
    cpu = max(allowed_cpus())
    child = spawn_python(
        f"""
        import json, sys
        import mxrc
        from mxrc.bus import Segment
        from mxrc.rt import BuiltinBody
        seg = Segment.create({instance!r})
        ex = mxrc.Executive(BuiltinBody("noop"), period_us=1000, cpus=[{cpu}], segment=seg,
                            name="axis")
        ex.start()
        ex.wait(100)
        print(json.dumps({{"tid": ex.tid}}), flush=True)
        sys.stdin.readline()
        ex.stop()
        print(json.dumps(ex.stats().cycle_count), flush=True)
        sys.stdin.read()
        """
    )
    try:
        info = child_ready(child)
        with Segment.attach(instance) as seg:
            c = RtCollector(seg, process="cell-1")
            first = parse(exposition(c))
            lbl = {"process": "cell-1", "executive": "axis"}
            assert value(first, "mxrc_cpu_current_core", **lbl) == cpu
            assert series(first, "mxrc_cpu_affinity_info", **lbl)[0]["configured_cores"] == str(cpu)
            assert value(first, "mxrc_rt_state", state="RUNNING", **lbl) == 1.0
            assert value(first, "mxrc_rt_cycle_count_total", **lbl) >= 100
            assert series(first, "mxrc_numa_local_memory_percent", process="cell-1")
            time.sleep(0.05)
            second = parse(exposition(c))
            assert value(second, "mxrc_rt_cycle_count_total", **lbl) > value(
                first, "mxrc_rt_cycle_count_total", **lbl
            )
            assert info["tid"] > 0
            # the child stops its executive: counters stay, the placement goes
            assert child.stdin is not None
            child.stdin.write("stop\n")
            child.stdin.flush()
            assert child.stdout is not None
            final = json.loads(child.stdout.readline())
            stopped = parse(exposition(c))
            assert value(stopped, "mxrc_rt_cycle_count_total", **lbl) == final
            assert value(stopped, "mxrc_rt_state", state="SHUTDOWN", **lbl) == 1.0
            assert series(stopped, "mxrc_cpu_current_core") == []
    finally:
        reap(child)


# ---------------------------------------------------------------- promtool


def _full_exposition(instance: str, units: Units) -> str:
    """Every family with samples: a running Python body (GIL wait), a segment, placement."""
    cpu = max(allowed_cpus())
    with Segment.create(instance) as seg:
        ex = mxrc.Executive(lambda ctx: None, period_us=2000, cpus=[cpu], segment=seg)
        local = mxrc.Executive(BuiltinBody("noop"), period_us=1000, name="other")
        with ex, local:
            ex.wait(20)
            local.wait(20)
            c = RtCollector(seg, units=units)
            c.add(local, process="local")
            return exposition(c)


def test_promtool_accepts_the_seconds_exposition(instance: str) -> None:
    text = _full_exposition(instance, "seconds")
    samples = parse(text)
    for name in CONTRACT_NAMES:
        base = name.replace("_us", "_seconds")
        assert any(n.startswith(base) for n, _ in samples), base
    assert check_histogram_structure(samples) == 8
    rc, problems = promtool_check(text)
    assert (rc, problems) == (0, [])


def test_promtool_on_the_contract_names(instance: str) -> None:
    """The contract's µs names trip only promtool's "abbreviated units" lint (exit 3)."""
    text = _full_exposition(instance, "us")
    samples = parse(text)
    for name in CONTRACT_NAMES:
        assert any(n.startswith(name) for n, _ in samples), name
    assert check_histogram_structure(samples) == 8
    rc, problems = promtool_check(text)
    allowed = {f"{n} metric names should not contain abbreviated units" for n in US_NAMES}
    assert set(problems) <= allowed, problems
    assert rc == (3 if problems else 0)


# ---------------------------------------------------------------- the windowed miss rate


def test_windowed_rate_is_not_cumulative() -> None:
    clock = Clock()
    w = Writer()
    c = RtCollector(w.slot, window_s=10, clock=clock)
    lbl = {"process": "rt", "executive": "main"}

    def rate() -> float:
        return value(parse(exposition(c)), "mxrc_rt_deadline_miss_rate", **lbl)

    w.cycles(90)
    w.cycles(10, missed=True)
    assert rate() == 0.1  # first look: everything since start
    clock.t += 5
    w.cycles(50, missed=True)
    assert rate() == 1.0  # since the previous observation (the window is not full yet)
    clock.t += 5
    w.cycles(100)
    assert rate() == pytest.approx(50 / 150)  # baseline 10 s back: the first observation
    clock.t += 5
    w.cycles(100)
    assert rate() == pytest.approx(0.0)  # the misses are more than 10 s old: back to 0
    clock.t += 30
    assert rate() == 0.0  # no cycles at all in the window
    # cumulative counters are unaffected by the window
    samples = parse(exposition(c))
    assert value(samples, "mxrc_rt_deadline_miss_count_total", **lbl) == 60
    assert value(samples, "mxrc_rt_cycle_count_total", **lbl) == 350


class FakeSource:
    """Anything with a stats() method is a source."""

    def __init__(self, stats: CycleStats) -> None:
        self.current = stats

    def stats(self) -> CycleStats:
        return self.current


def test_windowed_rate_restarts_with_a_new_run() -> None:
    clock = Clock()
    base = read_stats(Writer().slot)
    src = FakeSource(replace(base, cycle_count=100, deadline_miss_count=50, start_ns=1))
    c = RtCollector(src, window_s=10, clock=clock)
    lbl = {"process": "rt", "executive": "main"}

    def rate() -> float:
        return value(parse(exposition(c)), "mxrc_rt_deadline_miss_rate", **lbl)

    assert rate() == 0.5
    # a new run (another start time) in the same block: its own counters only
    clock.t += 1
    src.current = replace(base, cycle_count=10, deadline_miss_count=1, start_ns=2)
    assert rate() == 0.1
    # counters that go back (a reused slot) also start a new window
    clock.t += 1
    src.current = replace(base, cycle_count=4, deadline_miss_count=0, start_ns=2)
    assert rate() == 0.0
    clock.t += 1
    src.current = replace(base, cycle_count=8, deadline_miss_count=2, start_ns=2)
    assert rate() == 0.5


def test_windowed_rate_falls_back_to_zero_in_a_real_run() -> None:
    missing = threading.Event()
    missing.set()

    def body(ctx: object) -> None:
        if missing.is_set():
            time.sleep(0.03)  # 30 ms > the 20 ms deadline

    ex = mxrc.Executive(body, period_us=20_000)
    c = RtCollector(ex, window_s=0.5)
    lbl = {"process": "rt", "executive": "main"}

    def rate() -> float:
        return value(parse(exposition(c)), "mxrc_rt_deadline_miss_rate", **lbl)

    with ex:
        ex.wait(10)
        assert rate() > 0.5
        missing.clear()
        # a window after the last miss has none (polled: a loaded VM can make a cycle late)
        assert wait_for(lambda: rate() == 0.0, 10, 0.05)
        misses = ex.stats().deadline_miss_count
    assert misses >= 5


# ---------------------------------------------------------------- units, config, fake trees


def test_seconds_units_scale_every_time_value() -> None:
    w = Writer()
    w.cycles(20)
    us = parse(exposition(RtCollector(w.slot)))
    s = parse(exposition(RtCollector(w.slot, units="seconds")))
    lbl = {"process": "rt", "executive": "main"}
    assert value(s, "mxrc_rt_period_seconds", **lbl) == 1e-3
    assert value(s, "mxrc_rt_cycle_time_seconds_sum", **lbl) == pytest.approx(
        value(us, "mxrc_rt_cycle_time_us_sum", **lbl) / 1e6
    )
    us_b = buckets(us, "mxrc_rt_wake_latency_us", **lbl)
    s_b = buckets(s, "mxrc_rt_wake_latency_seconds", **lbl)
    assert [c for _, c in us_b] == [c for _, c in s_b]
    assert [le for le, _ in s_b][:-1] == pytest.approx([le / 1e6 for le, _ in us_b][:-1])


def _fake_trees(tmp_path: Path, *, nodes: int, tid: int, cpu: int) -> tuple[str, str]:
    """A /sys with ``nodes`` NUMA nodes (CPU n on node n) and a /proc for this pid's ``tid``."""
    sysfs = tmp_path / "sys"
    node_dir = sysfs / "devices" / "system" / "node"
    for n in range(nodes):
        (node_dir / f"node{n}").mkdir(parents=True)
        (node_dir / f"node{n}" / "cpulist").write_text(f"{n}\n")
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / "online").write_text(f"0-{nodes - 1}\n" if nodes > 1 else "0\n")
    cpu_dir = sysfs / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text(f"0-{max(nodes, 2) - 1}\n")
    (cpu_dir / "isolated").write_text(f"{cpu}\n")
    procfs = tmp_path / "proc"
    task = procfs / str(os.getpid()) / "task" / str(tid)
    task.mkdir(parents=True)
    rest = ["S", *["0"] * 35, str(cpu), "0", "0"]  # fields 3..41; field 39 = processor
    (task / "stat").write_text(f"{tid} (mxrc (rt) x) {' '.join(rest)}\n")
    (task / "status").write_text(f"Name:\tmxrc-rt\nCpus_allowed_list:\t{cpu}\n")
    (procfs / "cmdline").write_text("BOOT_IMAGE=/vmlinuz\n")
    return str(procfs), str(sysfs)


def _numa_maps(tmp_path: Path, text: str) -> None:
    (tmp_path / "proc" / str(os.getpid()) / "numa_maps").write_text(text)


def test_two_node_residency_sampled_rarely(tmp_path: Path) -> None:
    procfs, sysfs = _fake_trees(tmp_path, nodes=2, tid=4242, cpu=1)
    _numa_maps(tmp_path, "7f00 default anon=400 N0=300 N1=100 kernelpagesize_kB=4\n")
    clock = Clock()
    w = Writer(tid=4242)
    w.cycles(3)
    c = RtCollector(
        w.slot, clock=clock, procfs_root=procfs, sysfs_root=sysfs, residency_interval_s=30
    )
    lbl = {"process": "rt", "executive": "main"}
    s = parse(exposition(c))
    assert value(s, "mxrc_cpu_current_core", **lbl) == 1
    assert value(s, "mxrc_numa_node", **lbl) == 1
    # the thread may run on CPU 1 only, which the fake kernel isolates
    assert series(s, "mxrc_cpu_affinity_info", **lbl) == [
        {**lbl, "configured_cores": "1", "isolation_mode": "ISOLCPUS"}
    ]
    # local node = node of the thread's CPUs (1): 100 of 400 pages
    assert value(s, "mxrc_numa_local_memory_percent", process="rt", numa_node="1") == 25.0
    _numa_maps(tmp_path, "7f00 default anon=400 N1=400 kernelpagesize_kB=4\n")
    clock.t += 29
    s = parse(exposition(c))
    assert value(s, "mxrc_numa_local_memory_percent", process="rt", numa_node="1") == 25.0
    clock.t += 1
    s = parse(exposition(c))
    assert value(s, "mxrc_numa_local_memory_percent", process="rt", numa_node="1") == 100.0
    # unreadable numa_maps: no series rather than a made-up value
    (tmp_path / "proc" / str(os.getpid()) / "numa_maps").unlink()
    clock.t += 30
    assert series(parse(exposition(c)), "mxrc_numa_local_memory_percent") == []


def test_one_node_host_reports_100_without_reading(tmp_path: Path) -> None:
    procfs, sysfs = _fake_trees(tmp_path, nodes=1, tid=77, cpu=0)
    # a numa_maps claiming remote pages would give < 100 if it were read
    _numa_maps(tmp_path, "7f00 default anon=10 N0=1 N1=9 kernelpagesize_kB=4\n")
    w = Writer(tid=77)
    w.cycles(1)
    c = RtCollector(w.slot, procfs_root=procfs, sysfs_root=sysfs, isolation_mode="HYBRID")
    s = parse(exposition(c))
    assert value(s, "mxrc_numa_local_memory_percent", process="rt", numa_node="0") == 100.0
    (info,) = series(s, "mxrc_cpu_affinity_info")
    assert info["isolation_mode"] == "HYBRID"


def test_residency_can_be_switched_off(tmp_path: Path) -> None:
    procfs, sysfs = _fake_trees(tmp_path, nodes=1, tid=77, cpu=0)
    w = Writer(tid=77)
    c = RtCollector(w.slot, procfs_root=procfs, sysfs_root=sysfs, residency=False)
    assert series(parse(exposition(c)), "mxrc_numa_local_memory_percent") == []


def test_settings_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "cpu_affinity.json").write_text(json.dumps({"rt": {"isolation_mode": "CGROUPS"}}))
    (tmp_path / "perf_monitor.json").write_text(json.dumps({"rt": {"window_s": 5}}))
    (tmp_path / "numa_binding.json").write_text(
        json.dumps({"rt": {"residency": {"enabled": False}}})
    )
    cfg = load_config(tmp_path)
    procfs, sysfs = _fake_trees(tmp_path, nodes=1, tid=77, cpu=0)
    w = Writer(tid=77)
    c = RtCollector(w.slot, config=cfg, procfs_root=procfs, sysfs_root=sysfs)
    assert c.window_s == 5
    s = parse(exposition(c))
    assert series(s, "mxrc_cpu_affinity_info")[0]["isolation_mode"] == "CGROUPS"
    assert series(s, "mxrc_numa_local_memory_percent") == []
    # explicit arguments win over the config
    assert RtCollector(config=cfg, window_s=2).window_s == 2


# ---------------------------------------------------------------- sources


def test_sources_labels_and_duplicates(caplog: pytest.LogCaptureFixture) -> None:
    a, b = Writer("main"), Writer("main")
    a.cycles(3)
    b.cycles(5)
    c = RtCollector(a.slot)
    c.add(b.slot, process="nonrt")
    s = parse(exposition(c))
    assert value(s, "mxrc_rt_cycle_count_total", process="rt", executive="main") == 3
    assert value(s, "mxrc_rt_cycle_count_total", process="nonrt", executive="main") == 5
    with pytest.raises(ValueError, match="already a source"):
        c.add(a.slot)
    c.remove(b.slot)
    with pytest.raises(ValueError, match="not a source"):
        c.remove(b.slot)
    c.add(b.slot)  # same labels as a: reported once, with a warning
    with caplog.at_level(logging.WARNING, logger="mxrc.metrics"):
        s = parse(exposition(c))
    assert value(s, "mxrc_rt_cycle_count_total", process="rt", executive="main") == 3
    assert "two cycle threads labelled process='rt' executive='main'" in caplog.text
    with pytest.raises(TypeError, match="metrics source must be"):
        c.add(object())


def test_a_broken_source_does_not_fail_the_scrape(
    instance: str, caplog: pytest.LogCaptureFixture
) -> None:
    w = Writer("ok")
    w.cycles(2)
    seg = Segment.create(instance)
    c = RtCollector(seg, w.slot)
    seg.close()
    with caplog.at_level(logging.WARNING, logger="mxrc.metrics"):
        s = parse(exposition(c))
    assert value(s, "mxrc_rt_cycle_count_total", process="rt", executive="ok") == 2
    assert "metrics: cannot read" in caplog.text


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="units must be"):
        RtCollector(units="ms")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_s must be > 0"):
        RtCollector(window_s=0)
    with pytest.raises(ValueError, match="strictly ascending"):
        RtCollector(buckets_us=(10, 5))
    with pytest.raises(ValueError, match="finite and > 0"):
        RtCollector(buckets_us=(0, 5))
    with pytest.raises(ValueError, match="at least one bound"):
        RtCollector(buckets_us=())
    with pytest.raises(ValueError, match="residency_interval_s must be > 0"):
        RtCollector(residency_interval_s=0)
    with pytest.raises(ValueError, match="isolation_mode must be one of NONE, ISOLCPUS"):
        RtCollector(isolation_mode="isolcpus")


def test_registry_knows_the_names_up_front() -> None:
    registry = CollectorRegistry()
    registry.register(RtCollector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(RtCollector())
    # nothing to report: families without samples, still valid for promtool
    text = exposition(RtCollector(units="seconds"))
    assert "# TYPE mxrc_rt_cycle_count_total counter" in text
    assert promtool_check(text) == (0, [])


# ---------------------------------------------------------------- serving


def test_http_server_serves_the_metrics() -> None:
    w = Writer("srv")
    w.cycles(7)
    with start_http_server(w.slot, port=0, process="cell") as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            text = resp.read().decode()
        assert server.collector.sources == [w.slot]
    s = parse(text)
    assert value(s, "mxrc_rt_cycle_count_total", process="cell", executive="srv") == 7
    server.close()  # idempotent


def test_http_server_into_a_given_registry_and_collector() -> None:
    registry = CollectorRegistry()
    collector = RtCollector(units="seconds")
    w = Writer()
    with start_http_server(w.slot, port=0, collector=collector, registry=registry) as server:
        assert server.registry is registry
        assert collector.sources == [w.slot]
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert b"mxrc_rt_cycle_time_seconds_bucket" in resp.read()
    with pytest.raises(TypeError, match="not both"):
        start_http_server(port=0, collector=collector, units="us")


def test_http_server_warns_about_a_python_body(caplog: pytest.LogCaptureFixture) -> None:
    ex = mxrc.Executive(lambda ctx: None)
    with caplog.at_level(logging.WARNING, logger="mxrc.metrics"), start_http_server(ex, port=0):
        pass
    assert "with a Python body" in caplog.text


@pytest.mark.slow
def test_prometheus_scrapes_and_queries(tmp_path: Path) -> None:
    """Debian's Prometheus scrapes the endpoint; PromQL sees counters and histograms."""
    binary = require_tool("prometheus", "prometheus")
    ex = mxrc.Executive(BuiltinBody("sleep_ns", 50_000), period_us=1000, name="axis")
    with ex, start_http_server(ex, port=0) as server:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: mxrc\n    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
        )
        port = _free_port()
        prom = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            query = (
                "histogram_quantile(0.5, rate(mxrc_rt_cycle_time_us_bucket[5s]))"
                ' and on() (mxrc_rt_cycle_count_total{executive="axis"} > 0)'
            )
            p50 = _poll_query(port, query, timeout=60)
        finally:
            prom.terminate()
            prom.wait(30)
    # the body sleeps 50 µs (plus its own wake-up): the median is above 50 µs, and not off by
    # a unit (x1000) either
    assert 50 < p50 <= 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _poll_query(port: int, query: str, *, timeout: float) -> float:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                last = json.load(resp)
        except OSError as exc:
            last = exc
        else:
            assert isinstance(last, dict)
            result = last["data"]["result"]
            if result and np.isfinite(float(result[0]["value"][1])):
                return float(result[0]["value"][1])
        time.sleep(0.5)
    raise AssertionError(f"no result for {query!r} within {timeout} s: {last}")
