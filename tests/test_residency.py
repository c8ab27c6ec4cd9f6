"""NUMA page residency from numa_maps: parsing, ratios, the warning, and the sampler's skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mxrc.rt._residency import (
    PageResidency,
    page_residency,
    parse_numa_maps,
    sample_page_residency,
)


def host(data_dir: Path, name: str) -> dict[str, str]:
    base = data_dir / "hosts" / name
    return {"procfs_root": str(base / "proc"), "sysfs_root": str(base / "sys")}


def test_parse_sums_pages_per_node() -> None:
    text = (
        "00400000 default file=/bin/x mapped=3 N0=3 kernelpagesize_kB=4\n"
        "00600000 interleave:0-1 anon=5 dirty=5 N0=2 N1=3 kernelpagesize_kB=4\n"
        "7ffd0000 default stack\n"
    )
    assert parse_numa_maps(text) == {0: 5, 1: 3}
    assert parse_numa_maps("") == {}


def test_mostly_local_process_has_no_warning(data_dir: Path) -> None:
    r = host(data_dir, "numa4")
    res = page_residency(1234, 1, procfs_root=r["procfs_root"])
    assert res.pages_per_node == {1: 951, 0: 50}
    # one 2 MiB huge page weighs 512 small pages
    assert res.kib_per_node == {1: 100 * 4 + 850 * 4 + 2048, 0: 200}
    assert res.local_pages == 951
    assert res.remote_pages == 50
    assert res.remote_ratio == pytest.approx(200 / 6048)
    assert res.local_ratio + res.remote_ratio == pytest.approx(1.0)
    assert 0.0 <= res.remote_ratio <= 1.0
    assert not res.remote_warning


def test_interleaved_process_warns_above_five_percent(data_dir: Path) -> None:
    r = host(data_dir, "numa4")
    res = page_residency(5678, 0, procfs_root=r["procfs_root"])
    assert res.pages_per_node == {0: 113, 1: 100, 2: 100, 3: 100}
    assert res.remote_ratio == pytest.approx(300 / 413)
    assert res.remote_warning
    d = res.to_dict()
    assert d["remote_warning"] is True
    assert d["pages_per_node"] == {"0": 113, "1": 100, "2": 100, "3": 100}


def test_threshold_is_a_parameter(data_dir: Path) -> None:
    r = host(data_dir, "numa4")
    strict = page_residency(1234, 1, procfs_root=r["procfs_root"], remote_warning_ratio=0.01)
    assert strict.remote_warning  # 3.3 % > 1 %
    with pytest.raises(ValueError, match=r"ratio in 0\.\.1"):
        page_residency(1234, 1, procfs_root=r["procfs_root"], remote_warning_ratio=5.0)


def test_exactly_at_threshold_does_not_warn() -> None:
    res = PageResidency("x", 0, {0: 95, 1: 5}, {0: 380, 1: 20}, 0.05)
    assert res.remote_ratio == pytest.approx(0.05)
    assert not res.remote_warning


def test_empty_residency_is_all_local() -> None:
    res = PageResidency("x", 0, {}, {})
    assert res.total_pages == 0
    assert res.local_ratio == 1.0
    assert res.remote_ratio == 0.0
    assert not res.remote_warning


def test_sampler_reads_on_multi_node_host(data_dir: Path) -> None:
    sample = sample_page_residency(5678, 0, **host(data_dir, "numa4"))
    assert sample.residency is not None
    assert sample.residency.remote_warning
    assert "above" in sample.reason


def test_sampler_default_local_node_from_affinity(data_dir: Path) -> None:
    # pid 1234 may run on CPUs 4-7 = node 1
    sample = sample_page_residency(1234, **host(data_dir, "numa4"))
    assert sample.residency is not None
    assert sample.residency.local_node == 1


def test_sampler_skips_one_node_host(data_dir: Path) -> None:
    sample = sample_page_residency(**host(data_dir, "cgroup_v1"))
    assert sample.residency is None
    assert "1 NUMA node" in sample.reason


def test_sampler_unreadable_numa_maps_gives_reason(data_dir: Path) -> None:
    sample = sample_page_residency(999999, 0, **host(data_dir, "numa4"))
    assert sample.residency is None
    assert "unreadable" in sample.reason


needs_numa_maps = pytest.mark.skipif(
    not Path("/proc/self/numa_maps").exists(), reason="kernel without NUMA support"
)


@needs_numa_maps
def test_real_host_skips_unless_forced() -> None:
    nodes = [p for p in Path("/sys/devices/system/node").glob("node[0-9]*")]
    sample = sample_page_residency()
    if len(nodes) <= 1:
        assert sample.residency is None
        forced = sample_page_residency(force=True)
        assert forced.residency is not None
        assert forced.residency.total_pages > 0
        assert forced.residency.remote_ratio == 0.0
    else:
        assert sample.residency is not None


@needs_numa_maps
def test_real_page_residency_of_self_counts_pages() -> None:
    res = page_residency(os.getpid(), 0)
    assert res.total_pages > 0
    assert set(res.pages_per_node) <= {
        int(p.name[4:]) for p in Path("/sys/devices/system/node").glob("node[0-9]*")
    }
