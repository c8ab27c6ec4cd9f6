"""The pure functions of the latency harness (bench/harness.py): percentiles and
late shares from histograms, the paired bootstrap, the cyclictest parser."""

from __future__ import annotations

import importlib.util
import math
import random
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

_HARNESS = Path(__file__).resolve().parent.parent / "bench" / "harness.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mxrc_bench_harness", _HARNESS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


h = _load()

CYCLICTEST_OUTPUT = """\
# /dev/cpu_dma_latency set to 0us
# Histogram
000000 000000 000000
000001 000000 000001
000002 000010 000000
000003 000060 000004
000004 000020 000000
000005 000005 000000
000006 000000 000000
# Total: 000000100 000000005
# Min Latencies: 00002 00001
# Avg Latencies: 00003 00002
# Max Latencies: 00250 00003
# Histogram Overflows: 00005 00000
# Histogram Overflow at cycle number:
# Thread 0: 00011 00012 00013 00014 00015
# Thread 1:
"""


def test_percentile_from_samples_is_nearest_rank() -> None:
    samples = list(range(1, 101))  # 1..100 ns
    d = h.Distribution.from_samples(samples)
    assert d.count == 100
    assert d.percentile_ns(0.5) == 50
    assert d.percentile_ns(0.99) == 99
    assert d.percentile_ns(1.0) == 100
    assert d.percentile_ns(0.0) == 1
    assert (d.min_ns, d.max_ns) == (1, 100)


def test_percentile_matches_sorted_samples() -> None:
    rng = random.Random(1)
    samples = [int(rng.expovariate(1 / 5000)) for _ in range(5001)]
    d = h.Distribution.from_samples(samples)
    ordered = sorted(samples)
    for q in (0.1, 0.5, 0.9, 0.99, 0.999):
        assert d.percentile_ns(q) == ordered[math.ceil(q * len(samples)) - 1]


def test_percentile_interpolates_inside_wide_buckets() -> None:
    d = h.Distribution.from_buckets([0, 1000], [1000, 2000], [50, 50])
    assert d.percentile_ns(0.5) == pytest.approx(1000.0)
    assert d.percentile_ns(0.75) == pytest.approx(1500.0)
    assert d.percentile_ns(0.25) == pytest.approx(500.0)


def test_percentile_in_overflow_is_the_max_and_empty_is_nan() -> None:
    d = h.Distribution.from_buckets(
        [0], [1000], [90], overflow=10, overflow_from_ns=1000, max_ns=7777
    )
    assert d.percentile_ns(0.95) == 7777
    assert math.isnan(h.Distribution(buckets=()).percentile_ns(0.5))
    with pytest.raises(ValueError):
        d.percentile_ns(1.5)


def test_share_above_exact_and_straddling() -> None:
    d = h.Distribution.from_samples([10, 20, 30, 40])
    assert d.share_above(25) == 0.5
    assert d.share_above(30) == 0.25  # strictly above
    assert d.share_above(0) == 1.0
    assert d.share_above(40) == 0.0
    # a 1 µs bucket [1000, 2000) of 10 values, threshold at its middle: half counts
    w = h.Distribution.from_buckets([1000], [2000], [10])
    assert w.share_above(1499) == pytest.approx(0.5)
    assert w.share_above(999) == 1.0
    assert w.share_above(1999) == 0.0


def test_share_above_counts_overflow() -> None:
    d = h.Distribution.from_buckets(
        [0], [1000], [90], overflow=10, overflow_from_ns=1000, max_ns=3000
    )
    assert d.share_above(999) == pytest.approx(0.10)
    assert d.share_above(5000) == 0.0


def test_mean_and_stddev_match_statistics_on_samples() -> None:
    rng = random.Random(2)
    samples = [rng.randrange(0, 10000) for _ in range(2000)]
    d = h.Distribution.from_samples(samples)
    assert d.mean_ns() == pytest.approx(statistics.fmean(samples))
    assert d.stddev_ns() == pytest.approx(statistics.pstdev(samples))


def test_bad_buckets_refused() -> None:
    with pytest.raises(ValueError):
        h.Distribution(buckets=((10, 5, 1),))
    with pytest.raises(ValueError):
        h.Distribution(buckets=((0, 10, 1), (5, 20, 1)))
    with pytest.raises(ValueError):
        h.Distribution.from_buckets([0, 1], [1], [1, 1])


def test_distribution_round_trips_through_dict() -> None:
    d = h.Distribution.from_buckets(
        [0, 5], [5, 9], [3, 4], overflow=2, overflow_from_ns=9, max_ns=20
    )
    assert h.Distribution.from_dict(d.to_dict()) == d


def test_parse_cyclictest_histogram() -> None:
    r = h.parse_cyclictest(CYCLICTEST_OUTPUT)
    assert r.total == 100
    assert (r.min_ns, r.avg_ns, r.max_ns, r.overflows) == (2000, 3000, 250000, 5)
    d = r.distribution
    assert d.count == 100  # 95 in buckets + 5 overflows
    assert d.overflow_from_ns == 7000
    assert d.buckets[0] == (2000, 3000, 10)
    assert d.percentile_ns(0.5) == pytest.approx(3000 + 1000 * (40 / 60))
    assert d.share_above(100_000) == pytest.approx(0.05 * (250000 - 100000) / (250000 - 7000 + 1))
    r1 = h.parse_cyclictest(CYCLICTEST_OUTPUT, thread=1)
    assert r1.total == 5 and r1.distribution.count == 5 and r1.overflows == 0


def test_parse_cyclictest_refuses_output_without_histogram() -> None:
    with pytest.raises(ValueError, match="-h"):
        h.parse_cyclictest("T: 0 ( 1234) P:80 I:1000 C:   1000 Min: 3 Act: 5 Avg: 4 Max: 20\n")
    with pytest.raises(ValueError, match="thread 5"):
        h.parse_cyclictest(CYCLICTEST_OUTPUT, thread=5)


def test_run_metrics() -> None:
    samples = [50_000] * 980 + [150_000] * 15 + [2_000_000] * 5
    m = h.run_metrics(h.Distribution.from_samples(samples))
    assert m.count == 1000
    assert m.p50_us == 50.0
    assert m.p99_us == 150.0
    assert m.late_share == {"100us": pytest.approx(0.02), "1000us": pytest.approx(0.005)}


def test_bootstrap_ratio_point_and_interval() -> None:
    base = [100.0, 110.0, 90.0, 105.0, 95.0, 100.0, 102.0, 98.0, 101.0, 99.0]
    cand = [2 * x for x in base]
    iv = h.bootstrap_ratio(cand, base, n_boot=2000)
    assert iv.value == pytest.approx(2.0)
    assert iv.low == pytest.approx(2.0) and iv.high == pytest.approx(2.0)  # exact pairs
    noisy = [x * (2.0 + 0.1 * ((i % 3) - 1)) for i, x in enumerate(base)]
    iv2 = h.bootstrap_ratio(noisy, base, n_boot=2000)
    assert iv2.low <= iv2.value <= iv2.high
    assert iv2.low > 1.7 and iv2.high < 2.3


def test_bootstrap_is_reproducible_with_a_seed_and_paired() -> None:
    a = [1.0, 5.0, 3.0, 8.0, 2.0]
    b = [2.0, 1.0, 7.0, 3.0, 4.0]
    assert h.bootstrap_diff(a, b, seed=7) == h.bootstrap_diff(a, b, seed=7)
    with pytest.raises(ValueError, match="same number"):
        h.bootstrap_ratio([1.0], [1.0, 2.0])
    d = h.bootstrap_diff([x + 3 for x in b], b)
    assert d.value == pytest.approx(3.0) and d.low == pytest.approx(3.0)


def test_interpreter_info_names_the_interpreter() -> None:
    info = h.interpreter_info()
    assert info["executable"] == sys.executable
    assert info["version"].count(".") == 2
    assert isinstance(info["pgo"], bool) and info["pgo_evidence"]


def test_markdown_table() -> None:
    text = h.markdown_table(["a", "b"], [[1.23456, None], ["x|y", float("inf")]])
    lines = text.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[1] == "|---|---|"
    assert lines[2] == "| 1.23 | — |"
    assert lines[3] == "| x\\|y | ∞ |"


def _load_latency() -> ModuleType:
    path = _HARNESS.parent / "latency.py"
    spec = importlib.util.spec_from_file_location("mxrc_bench_latency", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _fake_run(config: str, rnd: int, p99: float, late100: float) -> dict[str, object]:
    m = {
        "count": 1000,
        "p50_us": p99 / 4,
        "p99_us": p99,
        "p999_us": p99 * 2,
        "mean_us": p99 / 3,
        "stddev_us": p99 / 5,
        "late_share": {"100us": late100, "1000us": 0.0},
    }
    return {"config": config, "round": rnd, "metrics": {"wake": m, "body_start": m}}


def test_latency_comparisons_pair_rounds_and_judge_by_the_interval_bound() -> None:
    lat = _load_latency()
    runs = []
    for rnd in range(10):
        runs.append(_fake_run("cyclictest", rnd, 50.0 + rnd, 0.01))
        runs.append(_fake_run("native", rnd, (50.0 + rnd) * 1.05, 0.012))
    comps = {c["id"]: c for c in (lat.compare(runs, comp, 0) for comp in lat.COMPARISONS) if c}
    ratio = comps["native-vs-cyclictest-p99"]
    assert ratio["pairs"] == 10
    assert ratio["interval"]["value"] == pytest.approx(1.05)
    assert ratio["holds"] is True  # upper bound 1.05 <= 1.10
    late = comps["native-vs-cyclictest-late100"]
    assert late["interval"]["value"] == pytest.approx(0.002)
    assert late["holds"] is True
    assert "python-vs-native-body-start-p99" not in comps  # no python runs
    summary = lat.summarize(runs)
    assert summary["native"]["runs"] == 10
    assert summary["cyclictest"]["wake"]["p99_us"] == pytest.approx(54.5)


def test_latency_child_commands_use_the_same_period_priority_and_cpu() -> None:
    import argparse

    lat = _load_latency()
    args = argparse.Namespace(
        cycles=60000, period_us=500, priority=45, cpu=1, python=sys.executable
    )
    ct = lat.child_command("cyclictest", args)
    assert {"-p45", "-a1", "-i500", "-l60000", "-m", "-t1"} <= set(ct)
    native = lat.child_command("native-busy", args)
    assert native[0] == sys.executable
    assert {"native", "--cycles=60000", "--period-us=500", "--priority=45", "--cpu=1"} <= set(
        native
    )
    assert "--busy" in native
    assert "--no-rt" in lat.child_command("native-nort", args)
