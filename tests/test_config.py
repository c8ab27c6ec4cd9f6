"""Config loading: defaults, templates, schemas, models, environment overrides."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import mxrc._env as env_module
from mxrc._env import ENV_VARS, read_env_overrides
from mxrc.config import (
    CONFIG_FILES,
    SCHEMA_FILES,
    ConfigError,
    CpuAffinityRole,
    MxrcConfig,
    effective_cpu_cores,
    format_key_path,
    load_config,
    load_schema,
    schema_path,
)
from mxrc.rt._cpulist import format_cpulist

NO_ENV: dict[str, str] = {}


def write(directory: Path, name: str, content: Any) -> Path:
    path = directory / name
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults


def test_defaults_without_directory() -> None:
    cfg = load_config(environ=NO_ENV)
    assert cfg == MxrcConfig()
    assert cfg.directory is None
    assert cfg.files_read == ()
    assert cfg.env_overrides == ()
    rt = cfg.cpu_affinity.rt
    assert rt.cpu_cores is None
    assert (rt.policy, rt.priority, rt.isolation_mode) == ("SCHED_FIFO", 80, "NONE")
    assert rt.fallback.allow_non_isolated is False
    assert rt.fallback.allow_sched_other is False
    nonrt = cfg.cpu_affinity.nonrt
    assert (nonrt.policy, nonrt.priority) == ("SCHED_OTHER", 0)
    assert cfg.numa_binding.rt.numa_node == 0
    assert cfg.numa_binding.rt.memory_policy == "LOCAL"
    assert cfg.numa_binding.rt.residency.remote_warn_ratio == 0.05
    assert cfg.numa_binding.rt.memory_allocation.lock_memory is True
    assert cfg.numa_binding.rt.memory_allocation.prefault_stack_kb == 256
    assert cfg.numa_binding.nonrt.memory_allocation.lock_memory is False
    assert cfg.perf_monitor.rt.cycle_time_us == 1000
    assert cfg.perf_monitor.rt.deadline_us == 1000
    assert cfg.perf_monitor.rt.thresholds.max_deadline_miss_rate == 0.0001
    f = cfg.failover_policy.rt
    assert (f.health_check_interval_ms, f.health_check_timeout_ms) == (1000, 500)
    assert (f.failure_threshold, f.restart_delay_ms, f.max_restart_count) == (3, 100, 5)
    assert (f.restart_window_sec, f.enable_state_recovery, f.checkpoint_interval_sec) == (
        60,
        True,
        60,
    )
    assert cfg.failover_policy.cluster.enable_leader_election is False
    assert cfg.failover_policy.health_server.port == 8080
    assert cfg.tracing.sampling.default_rate == 0.1
    assert cfg.tracing.exporter.otlp.endpoint == "http://localhost:4318"
    assert cfg.logging.rotation.max_file_size_mb == 10
    assert cfg.logging.ecs_version == "8.11"
    assert cfg.instance == "default"


def test_empty_directory_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, environ=NO_ENV)
    assert cfg.directory == tmp_path
    assert cfg.files_read == ()
    assert dataclasses.replace(cfg, directory=None) == MxrcConfig()


def test_config_dir_from_environment(tmp_path: Path) -> None:
    write(tmp_path, "perf_monitor.json", {"rt": {"cycle_time_us": 2000}})
    cfg = load_config(environ={"MXRC_CONFIG_DIR": str(tmp_path)})
    assert cfg.directory == tmp_path
    assert cfg.perf_monitor.rt.cycle_time_us == 2000
    # an explicit directory beats the variable
    other = tmp_path / "other"
    other.mkdir()
    assert load_config(other, environ={"MXRC_CONFIG_DIR": str(tmp_path)}).directory == other


def test_non_json_files_and_subdirectories_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "notes")
    (tmp_path / "systemd").mkdir()
    write(tmp_path / "systemd", "unit.json", "{not json")
    write(tmp_path, "cpu_affinity.schema.json", "{}")
    assert load_config(tmp_path, environ=NO_ENV).files_read == ()


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [1], "priority": 90}})
    cfg = load_config(tmp_path, environ=NO_ENV)
    assert cfg.files_read == ("cpu_affinity.json",)
    assert cfg.cpu_affinity.rt.cpu_cores == (1,)
    assert cfg.cpu_affinity.rt.priority == 90
    assert cfg.cpu_affinity.rt.policy == "SCHED_FIFO"
    assert cfg.cpu_affinity.nonrt == MxrcConfig().cpu_affinity.nonrt


def test_priority_default_follows_policy(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cpu_affinity.json",
        {"rt": {"policy": "SCHED_OTHER"}, "nonrt": {"policy": "SCHED_RR"}},
    )
    cfg = load_config(tmp_path, environ=NO_ENV)
    assert cfg.cpu_affinity.rt.priority == 0
    assert cfg.cpu_affinity.nonrt.priority == 80


def test_deadline_defaults_to_cycle_time(tmp_path: Path) -> None:
    write(tmp_path, "perf_monitor.json", {"rt": {"cycle_time_us": 4000}})
    assert load_config(tmp_path, environ=NO_ENV).perf_monitor.rt.deadline_us == 4000
    write(tmp_path, "perf_monitor.json", {"rt": {"cycle_time_us": 4000, "deadline_us": 900}})
    assert load_config(tmp_path, environ=NO_ENV).perf_monitor.rt.deadline_us == 900


def test_schema_key_is_accepted_and_ignored(tmp_path: Path) -> None:
    write(tmp_path, "logging.json", {"$schema": "schema/logging.schema.json", "ring_capacity": 64})
    cfg = load_config(tmp_path, environ=NO_ENV)
    assert cfg.logging.ring_capacity == 64
    assert "$schema" not in cfg.logging.to_dict()


def test_deadline_policy_without_pinning_loads(tmp_path: Path) -> None:
    deadline = {"runtime_us": 200, "deadline_us": 900, "period_us": 1000}
    write(
        tmp_path,
        "cpu_affinity.json",
        {"rt": {"policy": "SCHED_DEADLINE", "cpu_cores": None, "deadline": deadline}},
    )
    rt = load_config(tmp_path, environ=NO_ENV).cpu_affinity.rt
    assert rt.policy == "SCHED_DEADLINE"
    assert rt.priority == 0
    assert rt.deadline is not None
    assert (rt.deadline.runtime_us, rt.deadline.period_us) == (200, 1000)


def test_models_are_frozen() -> None:
    cfg = MxrcConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cpu_affinity.rt.priority = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.tracing.exporter.otlp.headers["x"] = "y"  # type: ignore[index]


def test_log_file_path() -> None:
    cfg = MxrcConfig()
    assert cfg.logging.file_path("rt") == Path("/var/log/mxrc/rt.json")
    assert cfg.logging.file_path("nonrt") == Path("/var/log/mxrc/nonrt.json")


def test_key_path_format() -> None:
    assert format_key_path(("rt", "cpu_cores", 1)) == "rt.cpu_cores[1]"
    assert format_key_path(("cluster", "peers", 0, "node_id")) == "cluster.peers[0].node_id"
    assert format_key_path(()) is None


# ---------------------------------------------------------------- templates


def test_template_directory_loads_cleanly(project_root: Path) -> None:
    cfg = load_config(project_root / "config", environ=NO_ENV)
    assert set(cfg.files_read) == set(CONFIG_FILES.values())
    assert dataclasses.replace(cfg, directory=None, files_read=()) == MxrcConfig()


@pytest.mark.parametrize("name", sorted(CONFIG_FILES.values()))
def test_each_template_loads_alone(project_root: Path, tmp_path: Path, name: str) -> None:
    template = project_root / "config" / name
    shutil.copy(template, tmp_path / name)
    cfg = load_config(tmp_path, environ=NO_ENV)
    assert cfg.files_read == (name,)
    data = json.loads(template.read_text(encoding="utf-8"))
    # the $schema key points at the schema through the config/schema symlink
    section = next(s for s, f in CONFIG_FILES.items() if f == name)
    assert data["$schema"] == f"schema/{SCHEMA_FILES[section]}"
    # ... and the installed package ships the same schema
    referenced = (template.parent / data["$schema"]).read_text(encoding="utf-8")
    assert referenced == schema_path(section).read_text(encoding="utf-8")


# ---------------------------------------------------------------- schemas


def _walk_properties(schema: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, prop in schema.get("properties", {}).items():
        found.append((f"{where}.{name}", prop))
        found.extend(_walk_properties(prop, f"{where}.{name}"))
    for name, sub in schema.get("$defs", {}).items():
        found.extend(_walk_properties(sub, f"$defs.{name}"))
    items = schema.get("items")
    if isinstance(items, dict):
        found.extend(_walk_properties(items, f"{where}[]"))
    return found


@pytest.mark.parametrize("section", list(CONFIG_FILES))
def test_schema_is_valid_and_documented(section: str) -> None:
    schema = dict(load_schema(section))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(SCHEMA_FILES[section])
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False
    for where, prop in _walk_properties(schema):
        assert prop.get("description"), f"{section}: {where} has no description"
        if prop.get("type") == "object" or "properties" in prop:
            # objects are closed: additionalProperties false, or a schema for map values
            assert prop.get("additionalProperties") not in (None, True), where


@pytest.mark.parametrize("section", list(CONFIG_FILES))
def test_schema_defaults_match_models(section: str) -> None:
    schema = load_schema(section)
    model = getattr(MxrcConfig(), section).to_dict()
    for key, prop in schema["properties"].items():
        if key == "$schema":
            continue
        assert "default" in prop, f"{section}.{key} has no default"
        expected = model[key]
        if section == "perf_monitor":
            expected = {**expected, "deadline_us": None}
        assert prop["default"] == expected, f"{section}.{key}"
    # every model key is in the schema, and the defaults validate
    assert set(model) == set(schema["properties"]) - {"$schema"}
    assert not list(Draft202012Validator(dict(schema)).iter_errors(model))


def test_to_dict_round_trips(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [1], "thread_name": "loop"}})
    write(
        tmp_path,
        "failover_policy.json",
        {
            "cluster": {
                "backend": "cell",
                "enable_leader_election": True,
                "node_id": "a",
                "peers": [{"node_id": "b", "address": "10.0.0.2:7400"}],
            }
        },
    )
    write(tmp_path, "tracing_config.json", {"exporter": {"otlp": {"headers": {"k": "v"}}}})
    first = load_config(tmp_path, environ=NO_ENV)
    dumped = first.to_dict()
    json.dumps(dumped)  # JSON-ready
    again = tmp_path / "again"
    again.mkdir()
    for section, name in CONFIG_FILES.items():
        write(again, name, dumped[section])
    second = load_config(again, environ=NO_ENV)
    assert second.files_read == tuple(CONFIG_FILES.values())
    assert (
        dataclasses.replace(second, directory=first.directory, files_read=first.files_read) == first
    )
    assert second.failover_policy.cluster.peers[0].address == "10.0.0.2:7400"
    assert dict(second.tracing.exporter.otlp.headers) == {"k": "v"}


# ---------------------------------------------------------------- effective cores


def test_effective_cpu_cores_auto_and_explicit() -> None:
    cfg = MxrcConfig().cpu_affinity
    assert effective_cpu_cores(cfg.rt, {0, 1, 2, 3}) == {3}
    assert effective_cpu_cores(cfg.nonrt, {0, 1, 2, 3}) == {0, 1, 2}
    assert effective_cpu_cores(cfg.nonrt, {0, 1, 2, 3}, rt_cores={2}) == {0, 1, 3}
    # one CPU: nothing to keep free, nonrt shares it
    assert effective_cpu_cores(cfg.nonrt, {5}) == {5}
    pinned = CpuAffinityRole(cpu_cores=(2, 3))
    assert effective_cpu_cores(pinned, {0, 1}) == {2, 3}
    assert cfg.effective_cores("rt", {0, 1}) == {1}
    assert cfg.effective_cores("nonrt", {0, 1}) == {0}
    with pytest.raises(ValueError, match="no allowed CPU"):
        effective_cpu_cores(cfg.rt, set())


def test_effective_cores_uses_explicit_rt_cores() -> None:
    base = MxrcConfig().cpu_affinity
    cfg = dataclasses.replace(base, rt=dataclasses.replace(base.rt, cpu_cores=(0,)))
    assert cfg.effective_cores("nonrt", {0, 1, 2}) == {1, 2}


# ---------------------------------------------------------------- environment


def test_env_overrides_beat_files(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [0], "priority": 50}})
    write(tmp_path, "logging.json", {"directory": "/srv/log", "rt": {"level": "debug"}})
    environ = {
        "MXRC_RT_CPU_CORES": "1",
        "MXRC_RT_PRIORITY": "70",
        "MXRC_LOG_DIR": str(tmp_path / "logs"),
        "MXRC_LOG_LEVEL": "WARNING",
        "MXRC_HTTP_PORT": "0",
        "MXRC_OTLP_ENDPOINT": "http://collector:4318",
        "MXRC_INSTANCE": "cell-7",
    }
    cfg = load_config(tmp_path, environ=environ)
    assert cfg.cpu_affinity.rt.cpu_cores == (1,)
    assert cfg.cpu_affinity.rt.priority == 70
    assert cfg.logging.directory == str(tmp_path / "logs")
    assert cfg.logging.rt.level == cfg.logging.nonrt.level == "warn"
    assert cfg.failover_policy.health_server.port == 0
    assert cfg.tracing.exporter.type == "otlp"
    assert cfg.tracing.exporter.otlp.endpoint == "http://collector:4318"
    assert cfg.instance == "cell-7"
    assert set(cfg.env_overrides) == {
        "MXRC_RT_CPU_CORES",
        "MXRC_RT_PRIORITY",
        "MXRC_LOG_DIR",
        "MXRC_LOG_LEVEL",
        "MXRC_HTTP_PORT",
        "MXRC_OTLP_ENDPOINT",
    }


def test_env_cpu_list_forms() -> None:
    assert load_config(environ={"MXRC_RT_CPU_CORES": "0-1"}).cpu_affinity.rt.cpu_cores == (0, 1)
    assert load_config(environ={"MXRC_RT_CPU_CORES": "1,0"}).cpu_affinity.rt.cpu_cores == (0, 1)


def test_env_auto_cores_unpins(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"cpu_cores": [1]}})
    cfg = load_config(tmp_path, environ={"MXRC_RT_CPU_CORES": "auto"})
    assert cfg.cpu_affinity.rt.cpu_cores is None


def test_empty_env_var_counts_as_unset(tmp_path: Path) -> None:
    write(tmp_path, "cpu_affinity.json", {"rt": {"priority": 60}})
    cfg = load_config(tmp_path, environ={"MXRC_RT_PRIORITY": "", "MXRC_LOG_LEVEL": " "})
    assert cfg.cpu_affinity.rt.priority == 60
    assert cfg.env_overrides == ()


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)
    monkeypatch.setenv("MXRC_RT_PRIORITY", "42")
    assert load_config().cpu_affinity.rt.priority == 42


def test_every_env_constant_is_registered_and_documented(project_root: Path) -> None:
    constants = {
        value
        for name, value in vars(env_module).items()
        if name.startswith("MXRC_") and isinstance(value, str)
    }
    assert constants == {var.name for var in ENV_VARS}
    assert set(env_module.__all__) >= constants
    docs = (project_root / "docs" / "config.md").read_text(encoding="utf-8")
    for var in ENV_VARS:
        assert f"`{var.name}`" in docs, var.name
        assert var.description
    # an override either names what it beats or says it beats nothing
    assert {v.name for v in ENV_VARS if v.beats_config} == {
        v.name for v in ENV_VARS if v.overrides is not None
    }


def test_read_env_overrides_targets_existing_keys() -> None:
    environ = {
        "MXRC_RT_CPU_CORES": "1",
        "MXRC_RT_PRIORITY": "1",
        "MXRC_LOG_DIR": "/x",
        "MXRC_LOG_LEVEL": "info",
        "MXRC_HTTP_PORT": "1",
        "MXRC_OTLP_ENDPOINT": "https://h",
    }
    defaults = MxrcConfig().to_dict()
    for override in read_env_overrides(environ):
        node: Any = defaults[override.file]
        for part in override.key_path:
            assert part in node, (override.variable, override.key_path)
            node = node[part]


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    interval=st.integers(min_value=100, max_value=10000),
    timeout=st.integers(min_value=10, max_value=5000),
)
def test_interval_must_exceed_timeout(interval: int, timeout: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write(
            Path(tmp),
            "failover_policy.json",
            {"rt": {"health_check_interval_ms": interval, "health_check_timeout_ms": timeout}},
        )
        if interval > timeout:
            cfg = load_config(tmp, environ=NO_ENV, check_host=False)
            assert cfg.failover_policy.rt.health_check_interval_ms == interval
        else:
            with pytest.raises(ConfigError) as info:
                load_config(tmp, environ=NO_ENV, check_host=False)
            assert info.value.key_path == "rt.health_check_interval_ms"
            assert info.value.found == interval


@settings(max_examples=60, deadline=None)
@given(st.frozensets(st.integers(min_value=0, max_value=8191), min_size=1, max_size=20))
def test_env_cpu_list_round_trip(cores: frozenset[int]) -> None:
    text = format_cpulist(cores)
    cfg = load_config(environ={"MXRC_RT_CPU_CORES": text}, check_host=False)
    assert cfg.cpu_affinity.rt.cpu_cores == tuple(sorted(cores))


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10))
def test_ratio_range(value: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), "numa_binding.json", {"rt": {"residency": {"remote_warn_ratio": value}}})
        if 0 <= value <= 1:
            cfg = load_config(tmp, environ=NO_ENV, check_host=False)
            assert cfg.numa_binding.rt.residency.remote_warn_ratio == value
        else:
            with pytest.raises(ConfigError) as info:
                load_config(tmp, environ=NO_ENV, check_host=False)
            assert info.value.key_path == "rt.residency.remote_warn_ratio"
            assert info.value.expected == "a number in 0..1"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_keys_never_pass(key: str) -> None:
    known = set(load_schema("cpu_affinity")["$defs"]["role"]["properties"])
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), "cpu_affinity.json", {"rt": {key: 1}})
        if key in known:
            return
        with pytest.raises(ConfigError) as info:
            load_config(tmp, environ=NO_ENV, check_host=False)
        assert info.value.key_path == f"rt.{key}"
        assert re.search(r"unknown key", info.value.message)


# ---------------------------------------------------------------- docs


def _schema_key_names(schema: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.get("properties", {}).items():
            names.add(key)
            names |= _schema_key_names(value)
        for value in schema.get("$defs", {}).values():
            names |= _schema_key_names(value)
        names |= _schema_key_names(schema.get("items"))
    return names - {"$schema"}


@pytest.mark.parametrize("section", list(CONFIG_FILES))
def test_docs_list_every_key(project_root: Path, section: str) -> None:
    docs = (project_root / "docs" / "config.md").read_text(encoding="utf-8")
    assert f"### `{CONFIG_FILES[section]}`" in docs
    for name in _schema_key_names(dict(load_schema(section))):
        assert re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", docs), f"{section}: {name}"


def test_docs_example_setup_is_valid(project_root: Path, tmp_path: Path) -> None:
    docs = (project_root / "docs" / "config.md").read_text(encoding="utf-8")
    example = docs.split("## A typical RT setup", 1)[1]
    blocks = re.findall(r"`(\w+\.json)`\n```json\n(.*?)```", example, re.S)
    assert len(blocks) == 3
    for name, text in blocks:
        write(tmp_path, name, text)
    cfg = load_config(tmp_path, environ=NO_ENV, check_host=False)
    assert cfg.cpu_affinity.rt.cpu_cores == (3,)
    assert cfg.perf_monitor.rt.deadline_us == 900


def test_memory_allocation_is_read_and_range_checked(tmp_path: Path) -> None:
    write(tmp_path, "numa_binding.json", {"rt": {"memory_allocation": {"prefault_stack_kb": 64}}})
    cfg = load_config(tmp_path, environ=NO_ENV, check_host=False)
    assert cfg.numa_binding.rt.memory_allocation.prefault_stack_kb == 64
    assert cfg.numa_binding.rt.memory_allocation.lock_memory is True  # default kept
    write(tmp_path, "numa_binding.json", {"rt": {"memory_allocation": {"prefault_stack_kb": -1}}})
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ=NO_ENV, check_host=False)
    assert info.value.key_path == "rt.memory_allocation.prefault_stack_kb"
    assert "numa_binding.json" in str(info.value)
