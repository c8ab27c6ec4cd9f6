"""Every config error is clear: file, key path, expected, found (and line:column)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxrc.config import CONFIG_FILES, ConfigError, load_config, validate_config
from mxrc.errors import MxrcError
from mxrc.rt._affinity import allowed_cpus
from mxrc.rt._cpulist import format_cpulist
from mxrc.rt._topology import numa_topology

NO_ENV: dict[str, str] = {}
FAKE_HOST = "config/host-2node-cpuset0"  # node 0 = CPU 0, node 1 = CPU 1; cpuset allows CPU 0


def write(directory: Path, name: str, content: Any) -> Path:
    path = directory / name
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(
    directory: Path | str | None, environ: dict[str, str] | None = None, **kw: Any
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ=NO_ENV if environ is None else environ, **kw)
    return info.value


def fake_host(data_dir: Path) -> dict[str, str]:
    root = data_dir / FAKE_HOST
    return {"procfs_root": str(root / "proc"), "sysfs_root": str(root / "sys")}


# ---------------------------------------------------------------- files and JSON


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, MxrcError)
    assert issubclass(ConfigError, ValueError)


def test_missing_directory(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nope")
    assert err.file == str(tmp_path / "nope")
    assert "does not exist" in str(err)
    assert err.hint is None
    err = error_of(None, environ={"MXRC_CONFIG_DIR": str(tmp_path / "nope")})
    assert err.file == str(tmp_path / "nope")
    assert err.hint == "the directory is named by MXRC_CONFIG_DIR"


def test_directory_is_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cpu_affinity.json", "{}")
    err = error_of(path)
    assert "not a directory" in str(err)


def test_unknown_file_name_with_did_you_mean(tmp_path: Path) -> None:
    write(tmp_path, "cpu_afinity.json", {"rt": {}})
    err = error_of(tmp_path)
    assert err.file == str(tmp_path / "cpu_afinity.json")
    assert err.found == "cpu_afinity.json"
    assert err.hint == "did you mean 'cpu_affinity.json'?"
    assert "unknown config file" in str(err)
    assert "cpu_affinity.json" in (err.expected or "")


def test_malformed_json_line_and_column(tmp_path: Path) -> None:
    write(
        tmp_path,
        "numa_binding.json",
        '{\n  "rt": {\n    "numa_node": 0\n    "memory_policy": "BIND"\n  }\n}\n',
    )
    err = error_of(tmp_path)
    assert err.file == str(tmp_path / "numa_binding.json")
    assert (err.line, err.column) == (4, 5)
    assert err.expected == "',' delimiter"
    assert err.found == '"memory_poli'
    assert str(err).startswith(f"{tmp_path / 'numa_binding.json'}:4:5: malformed JSON")


def test_trailing_comma_hint(tmp_path: Path) -> None:
    write(tmp_path, "logging.json", '{"directory": "/tmp",\n}')
    err = error_of(tmp_path)
    assert (err.line, err.column) == (2, 1)
    assert err.hint == "JSON allows no trailing comma"


def test_comment_hint_and_empty_file(tmp_path: Path) -> None:
    write(tmp_path, "logging.json", '{\n  // log dir\n  "directory": "/tmp"\n}')
    err = error_of(tmp_path)
    assert (err.line, err.column) == (2, 3)
    assert err.hint == "JSON has no comments"
    write(tmp_path, "logging.json", "")
    err = error_of(tmp_path)
    assert (err.line, err.column, err.found) == (1, 1, "end of file")
    assert err.expected == "value"


def test_nan_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "perf_monitor.json", '{"rt": {"thresholds": {"max_jitter_us": NaN}}}')
    err = error_of(tmp_path)
    assert err.key_path == "rt.thresholds.max_jitter_us"
    assert err.found == "NaN"
    assert (err.line, err.column) == (1, 41)


def test_duplicate_key(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", '{"rt": {"priority": 10,\n "priority": 20}}')
    err = error_of(tmp_path)
    assert err.key_path == "rt.priority"
    assert "duplicate key" in err.message
    assert (err.line, err.column) == (2, 2)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    write(tmp_path, "tracing_config.json", "[1, 2]")
    err = error_of(tmp_path)
    assert err.file == str(tmp_path / "tracing_config.json")
    assert err.expected == "an object { ... }"
    assert err.found == "a list"


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "logging.json").write_bytes(b'{"directory": "/tmp/\xff"}')
    err = error_of(tmp_path)
    assert "not UTF-8" in err.message


# ---------------------------------------------------------------- schema errors


def test_unknown_key_did_you_mean_with_position(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", '{\n  "rt": {\n    "prioirty": 90\n  }\n}')
    err = error_of(tmp_path)
    assert err.file == str(tmp_path / "cpu_affinity.json")
    assert err.key_path == "rt.prioirty"
    assert (err.line, err.column) == (3, 5)
    assert err.found == "prioirty"
    assert err.hint == "did you mean 'priority'?"
    assert "priority" in (err.expected or "")
    text = str(err)
    assert text.startswith(f"{tmp_path / 'cpu_affinity.json'}:3:5: rt.prioirty: unknown key")
    assert "did you mean 'priority'?" in text
    assert "jsonschema" not in text and "Additional properties" not in text


def test_role_key_at_top_level_points_to_roles(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"cpu_cores": [1]})
    err = error_of(tmp_path)
    assert err.key_path == "cpu_cores"
    assert err.hint == "per-process settings go under a role: rt.cpu_cores or nonrt.cpu_cores"


@pytest.mark.parametrize(
    ("name", "content", "key_path", "hint_part"),
    [
        ("cpu_affinity.json", {"rt_process": {}}, "rt_process", "under 'rt'"),
        ("perf_monitor.json", {"rt": {"histogram_buckets": 100}}, "rt.histogram_buckets", "remove"),
        (
            "perf_monitor.json",
            {"rt": {"thresholds": {"max_deadline_miss_rate_percent": 0.01}}},
            "rt.thresholds.max_deadline_miss_rate_percent",
            "max_deadline_miss_rate",
        ),
    ],
)
def test_upstream_keys_get_advice(
    tmp_path: Path, name: str, content: Any, key_path: str, hint_part: str
) -> None:
    write(tmp_path, name, content)
    err = error_of(tmp_path)
    assert err.key_path == key_path
    assert hint_part in (err.hint or "")


def test_wrong_type(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"priority": "80"}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected, err.found) == ("rt.priority", "an integer", "80")
    assert err.hint == "remove the quotes around the number"
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": "1,2"}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected, err.found) == ("rt.cpu_cores", "a list or null", "1,2")
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [1, "2"]}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected) == ("rt.cpu_cores[1]", "an integer")
    write(tmp_path, "cpu_affinity.json", {"rt": {"is_exclusive": "yes"}})
    assert error_of(tmp_path).expected == "true or false"


def test_out_of_range(tmp_path: Path) -> None:
    write(tmp_path, "failover_policy.json", {"rt": {"health_check_interval_ms": 50}})
    err = error_of(tmp_path)
    assert err.key_path == "rt.health_check_interval_ms"
    assert err.expected == "an integer in 100..10000"
    assert err.found == 50
    assert "out of range" in str(err)
    write(tmp_path, "failover_policy.json", {})
    write(tmp_path, "cpu_affinity.json", {"rt": {"priority": 120}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected, err.found) == ("rt.priority", "an integer in 0..99", 120)


def test_percent_instead_of_ratio_is_out_of_range(tmp_path: Path) -> None:
    write(tmp_path, "numa_binding.json", {"rt": {"residency": {"remote_warn_ratio": 5}}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected, err.found) == (
        "rt.residency.remote_warn_ratio",
        "a number in 0..1",
        5,
    )


def test_unknown_policy(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"policy": "SCHED_FOO"}})
    err = error_of(tmp_path)
    assert err.key_path == "rt.policy"
    assert err.found == "SCHED_FOO"
    assert err.expected == (
        "one of SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE"
    )
    assert "unknown policy" in str(err)
    write(tmp_path, "cpu_affinity.json", {"rt": {"policy": "sched_fifo"}})
    assert error_of(tmp_path).hint == "did you mean 'SCHED_FIFO'?"


def test_duplicate_and_empty_cores(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [0, 1, 1]}})
    err = error_of(tmp_path)
    assert (err.key_path, err.found, err.expected) == ("rt.cpu_cores[2]", 1, "unique values")
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": []}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected) == ("rt.cpu_cores", "at least 1 item")
    assert err.hint == "use null for automatic placement"


def test_missing_required_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cpu_affinity.json",
        {"rt": {"policy": "SCHED_DEADLINE", "deadline": {"runtime_us": 100, "period_us": 1000}}},
    )
    err = error_of(tmp_path)
    assert err.key_path == "rt.deadline.deadline_us"
    assert "missing required key 'deadline_us'" in err.message


def test_pattern_uses_readable_expectation(tmp_path: Path) -> None:
    write(
        tmp_path,
        "failover_policy.json",
        {"cluster": {"peers": [{"node_id": "b", "address": "10.0.0.2"}]}},
    )
    err = error_of(tmp_path)
    assert err.key_path == "cluster.peers[0].address"
    assert err.expected == "host:port (IPv6 as [addr]:port)"


def test_too_long_thread_name(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"thread_name": "x" * 16}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected) == ("rt.thread_name", "at most 15 characters")
    write(tmp_path, "cpu_affinity.json", {"rt": {"thread_name": "µ" * 8}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected) == ("rt.thread_name", "at most 15 bytes in UTF-8")


def test_all_problems_are_listed_first_one_in_fields(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", '{"rt": {"priority": 120,\n "policy": "X"}}')
    write(tmp_path, "logging.json", {"rotation": {"max_files": 0}})
    errors = validate_config(tmp_path, environ=NO_ENV)
    assert [e.key_path for e in errors] == ["rt.priority", "rt.policy", "rotation.max_files"]
    err = error_of(tmp_path)
    assert (err.key_path, err.line) == ("rt.priority", 1)
    text = str(err)
    assert "2 more problems:" in text
    assert "rt.policy" in text and "rotation.max_files" in text
    assert validate_config(None, environ=NO_ENV) == []


# ---------------------------------------------------------------- cross-field rules


def test_interval_not_above_timeout(tmp_path: Path) -> None:
    write(
        tmp_path,
        "failover_policy.json",
        {"rt": {"health_check_interval_ms": 500, "health_check_timeout_ms": 500}},
    )
    err = error_of(tmp_path)
    assert err.file == str(tmp_path / "failover_policy.json")
    assert err.key_path == "rt.health_check_interval_ms"
    assert err.expected == "more than health_check_timeout_ms (500)"
    assert err.found == 500
    assert err.line == 3


def test_state_recovery_needs_checkpoints(tmp_path: Path) -> None:
    write(tmp_path, "failover_policy.json", {"rt": {"checkpoint_interval_sec": 0}})
    err = error_of(tmp_path)
    assert err.key_path == "rt.checkpoint_interval_sec"
    assert "state recovery" in err.message
    write(
        tmp_path,
        "failover_policy.json",
        {"rt": {"checkpoint_interval_sec": 0, "enable_state_recovery": False}},
    )
    assert load_config(tmp_path, environ=NO_ENV).failover_policy.rt.checkpoint_interval_sec == 0
    write(tmp_path, "failover_policy.json", {"rt": {"checkpoint_interval_sec": 5}})
    assert "10..3600" in (error_of(tmp_path).expected or "")


@pytest.mark.parametrize(
    ("role", "policy", "priority", "expected"),
    [
        ("rt", "SCHED_FIFO", 0, "an integer in 1..99 for SCHED_FIFO"),
        ("nonrt", "SCHED_RR", 0, "an integer in 1..99 for SCHED_RR"),
        ("nonrt", "SCHED_OTHER", 10, "0 for SCHED_OTHER (1..99 only with SCHED_FIFO or SCHED_RR)"),
    ],
)
def test_priority_per_policy(
    tmp_path: Path, role: str, policy: str, priority: int, expected: str
) -> None:
    write(tmp_path, "cpu_affinity.json", {role: {"policy": policy, "priority": priority}})
    err = error_of(tmp_path)
    assert (err.key_path, err.expected, err.found) == (f"{role}.priority", expected, priority)


def test_deadline_policy_needs_reservation(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"policy": "SCHED_DEADLINE"}})
    err = error_of(tmp_path)
    assert err.key_path == "rt.deadline"
    assert "runtime_us" in (err.expected or "")


def test_deadline_with_pinned_cores_is_unsupported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cpu_affinity.json",
        {
            "rt": {
                "policy": "SCHED_DEADLINE",
                "cpu_cores": [1],
                "deadline": {"runtime_us": 100, "deadline_us": 1000, "period_us": 1000},
            }
        },
    )
    err = error_of(tmp_path)
    assert err.key_path == "rt.cpu_cores"
    assert "unsupported" in err.message
    assert "kernel" in err.message
    assert err.found == [1]
    assert "SCHED_FIFO" in (err.hint or "")


def test_deadline_reservation_order_and_policy(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cpu_affinity.json",
        {
            "rt": {
                "policy": "SCHED_DEADLINE",
                "deadline": {"runtime_us": 900, "deadline_us": 500, "period_us": 1000},
            }
        },
    )
    err = error_of(tmp_path)
    assert (err.key_path, err.found) == ("rt.deadline", "900 / 500 / 1000")
    write(
        tmp_path,
        "cpu_affinity.json",
        {"rt": {"deadline": {"runtime_us": 100, "deadline_us": 500, "period_us": 1000}}},
    )
    err = error_of(tmp_path)
    assert err.key_path == "rt.deadline"
    assert "only used with SCHED_DEADLINE" in err.message


def test_exclusive_cores_are_not_shared(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [1]}, "nonrt": {"cpu_cores": [0, 1]}})
    err = error_of(tmp_path, check_host=False)
    assert (err.key_path, err.found) == ("nonrt.cpu_cores[1]", 1)
    assert "rt.is_exclusive" in err.message


def test_perf_deadline_longer_than_cycle(tmp_path: Path) -> None:
    write(tmp_path, "perf_monitor.json", {"rt": {"cycle_time_us": 500, "deadline_us": 900}})
    err = error_of(tmp_path)
    assert (err.key_path, err.found, err.expected) == (
        "rt.deadline_us",
        900,
        "at most cycle_time_us (500)",
    )


def test_interleave_nodes_only_with_interleave(tmp_path: Path) -> None:
    write(tmp_path, "numa_binding.json", {"rt": {"memory_policy": "BIND", "interleave_nodes": [0]}})
    err = error_of(tmp_path)
    assert err.key_path == "rt.interleave_nodes"
    assert "INTERLEAVE" in err.message


def test_cluster_rules(tmp_path: Path) -> None:
    write(
        tmp_path,
        "failover_policy.json",
        {"cluster": {"enable_leader_election": True, "backend": "cell"}},
    )
    assert error_of(tmp_path).key_path == "cluster.peers"
    write(tmp_path, "failover_policy.json", {"cluster": {"lease_ttl_ms": 1000}})
    err = error_of(tmp_path)
    assert (err.key_path, err.found) == ("cluster.lease_ttl_ms", 1000)
    peers = [{"node_id": "b", "address": "h1:1"}, {"node_id": "b", "address": "h2:1"}]
    write(tmp_path, "failover_policy.json", {"cluster": {"peers": peers}})
    assert error_of(tmp_path).key_path == "cluster.peers[1].node_id"


def test_tracing_batch_not_above_queue(tmp_path: Path) -> None:
    write(tmp_path, "tracing_config.json", {"performance": {"max_queue_size": 100}})
    err = error_of(tmp_path)
    assert (err.key_path, err.found) == ("performance.max_export_batch_size", 512)


def test_two_roles_one_log_file(tmp_path: Path) -> None:
    write(tmp_path, "logging.json", {"nonrt": {"file": "rt.json"}})
    assert error_of(tmp_path).key_path == "nonrt.file"


# ---------------------------------------------------------------- host checks


def test_core_outside_allowed_set(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [0, 4096]}})
    err = error_of(tmp_path)
    assert err.file == str(tmp_path / "cpu_affinity.json")
    assert err.key_path == "rt.cpu_cores[1]"
    assert err.found == 4096
    assert "4096" in err.message
    assert str(err).startswith(f"{tmp_path / 'cpu_affinity.json'}:")
    allowed = allowed_cpus()
    assert err.expected == f"a CPU in the allowed set {format_cpulist(allowed)}"
    # the same file passes without host checks
    assert load_config(tmp_path, environ=NO_ENV, check_host=False).cpu_affinity.rt.cpu_cores == (
        0,
        4096,
    )


def test_core_outside_fake_cpuset(tmp_path: Path, data_dir: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [1]}})
    err = error_of(tmp_path, **fake_host(data_dir))
    assert (err.key_path, err.found) == ("rt.cpu_cores[0]", 1)
    assert err.expected == "a CPU in the allowed set 0"
    assert "cpuset" in (err.hint or "")
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [0]}})
    assert load_config(
        tmp_path, environ=NO_ENV, **fake_host(data_dir)
    ).cpu_affinity.rt.cpu_cores == (0,)


def test_env_core_outside_allowed_set_names_the_variable(tmp_path: Path) -> None:
    err = error_of(tmp_path, environ={"MXRC_RT_CPU_CORES": "4096"})
    assert err.file == "MXRC_RT_CPU_CORES (environment)"
    assert err.key_path == "rt.cpu_cores[0]"
    assert err.found == 4096
    assert "MXRC_RT_CPU_CORES overrides rt.cpu_cores" in (err.hint or "")


def test_bad_numa_node_on_this_host(tmp_path: Path) -> None:
    missing = max(numa_topology().nodes or {0: None}) + 1
    write(tmp_path, "numa_binding.json", {"rt": {"numa_node": missing}})
    err = error_of(tmp_path)
    assert (err.key_path, err.found) == ("rt.numa_node", missing)
    assert f"NUMA node {missing} does not exist" in err.message


def test_bad_numa_node_on_fake_host(tmp_path: Path, data_dir: Path) -> None:
    write(tmp_path, "numa_binding.json", {"nonrt": {"numa_node": 2}})
    err = error_of(tmp_path, **fake_host(data_dir))
    assert (err.key_path, err.expected) == ("nonrt.numa_node", "a node of this host (0, 1)")
    write(tmp_path, "numa_binding.json", {"nonrt": {"numa_node": 1, "memory_policy": "PREFERRED"}})
    cfg = load_config(tmp_path, environ=NO_ENV, **fake_host(data_dir))
    assert cfg.numa_binding.nonrt.numa_node == 1


def test_hint_not_on_node(tmp_path: Path, data_dir: Path) -> None:
    write(tmp_path, "numa_binding.json", {"rt": {"numa_node": 0, "cpu_cores_hint": [0, 1]}})
    err = error_of(tmp_path, **fake_host(data_dir))
    assert err.key_path == "rt.cpu_cores_hint[1]"
    assert err.found == 1
    assert err.message == "CPU 1 is not on NUMA node 0 (it is on node 1)"
    assert err.expected == "a CPU of node 0 (0)"


def test_interleave_node_missing(tmp_path: Path, data_dir: Path) -> None:
    write(
        tmp_path,
        "numa_binding.json",
        {"rt": {"memory_policy": "INTERLEAVE", "interleave_nodes": [0, 3]}},
    )
    err = error_of(tmp_path, **fake_host(data_dir))
    assert (err.key_path, err.found) == ("rt.interleave_nodes[1]", 3)


# ---------------------------------------------------------------- environment errors


@pytest.mark.parametrize(
    ("var", "value", "expected_part"),
    [
        ("MXRC_RT_CPU_CORES", "a-b", "CPU list"),
        ("MXRC_RT_CPU_CORES", "3-1", "CPU list"),
        ("MXRC_RT_PRIORITY", "high", "an integer in 0..99"),
        ("MXRC_RT_PRIORITY", "150", "an integer in 0..99"),
        ("MXRC_LOG_LEVEL", "loud", "one of trace, debug, info, warn, error, critical"),
        ("MXRC_HTTP_PORT", "70000", "an integer in 0..65535"),
        ("MXRC_OTLP_ENDPOINT", "localhost:4318", "http://"),
        ("MXRC_INSTANCE", "../etc", "[A-Za-z0-9_.-]"),
    ],
)
def test_invalid_env_value(tmp_path: Path, var: str, value: str, expected_part: str) -> None:
    err = error_of(tmp_path, environ={var: value})
    assert err.file == f"{var} (environment)"
    assert err.found == value
    assert expected_part in (err.expected or "")
    assert str(err).startswith(f"{var} (environment)")


def test_env_value_breaking_a_cross_field_rule(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"policy": "SCHED_FIFO"}})
    err = error_of(tmp_path, environ={"MXRC_RT_PRIORITY": "0"})
    assert err.file == "MXRC_RT_PRIORITY (environment)"
    assert (err.key_path, err.found) == ("rt.priority", 0)
    assert "cpu_affinity.json" in (err.hint or "")


def test_rules_of_valid_files_still_run_next_to_broken_ones(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", "{")
    write(
        tmp_path,
        "failover_policy.json",
        {"rt": {"health_check_interval_ms": 500, "health_check_timeout_ms": 500}},
    )
    errors = validate_config(tmp_path, environ=NO_ENV)
    assert [(Path(e.file or "").name, e.key_path) for e in errors] == [
        ("cpu_affinity.json", None),
        ("failover_policy.json", "rt.health_check_interval_ms"),
    ]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["rt", "nonrt", "cpu_cores", "policy", "priority", "cluster", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(CONFIG_FILES.values())),
    document=_json_values,
)
def test_any_json_document_loads_or_raises_config_error(name: str, document: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), name, document)
        try:
            load_config(tmp, environ=NO_ENV, check_host=False)
        except ConfigError as err:
            assert err.file is not None
            assert err.message
            assert "jsonschema" not in str(err)
