"""Reading, validating and building mxrc's configuration.

Order: list the directory (unknown ``*.json`` files are errors) -> parse each
file (file:line:column for malformed JSON) -> apply ``MXRC_*`` overrides ->
JSON Schema validation (mapped to clear messages) -> models -> cross-field
rules -> host checks (allowed CPUs, NUMA topology). Every problem found
becomes a :class:`mxrc.errors.ConfigError`; :func:`load_config` raises one
naming the first problem and listing the others.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from mxrc._env import config_dir_from_env, instance_from_env, read_env_overrides
from mxrc.config._locate import JsonPath, Locations, locate
from mxrc.config._models import (
    CONFIG_FILES,
    ROLES,
    CpuAffinityConfig,
    CpuAffinityRole,
    FailoverPolicyConfig,
    LoggingConfig,
    MxrcConfig,
    NumaBindingConfig,
    PerfMonitorConfig,
    TracingConfig,
)
from mxrc.errors import ConfigError, CpuNotAllowedError
from mxrc.rt._cpulist import format_cpulist

__all__ = [
    "SCHEMA_FILES",
    "format_key_path",
    "load_config",
    "load_schema",
    "schema_path",
    "validate_config",
]

SCHEMA_FILES: Mapping[str, str] = types.MappingProxyType(
    {name: file.removesuffix(".json") + ".schema.json" for name, file in CONFIG_FILES.items()}
)
"""Section name -> schema file name (in ``mxrc/config/schema/``)."""

_SECTION_CLASSES: Mapping[str, type[Any]] = types.MappingProxyType(
    {
        "cpu_affinity": CpuAffinityConfig,
        "numa_binding": NumaBindingConfig,
        "perf_monitor": PerfMonitorConfig,
        "failover_policy": FailoverPolicyConfig,
        "tracing": TracingConfig,
        "logging": LoggingConfig,
    }
)

_FILE_TO_SECTION = {file: name for name, file in CONFIG_FILES.items()}

#: Keys of other shapes (upstream's) and what to write instead.
_KEY_ADVICE = {
    "rt_process": "per-process settings go under 'rt'",
    "non_rt_process": "per-process settings go under 'nonrt'",
    "nonrt_process": "per-process settings go under 'nonrt'",
    "process_name": "the role key ('rt' or 'nonrt') names the process; remove it",
    "histogram_buckets": "mxrc keeps log-linear histograms; remove it",
    "max_deadline_miss_rate_percent": "use max_deadline_miss_rate, a ratio 0..1 (0.01 % = 0.0001)",
    "max_p99_latency_us": "use max_p99_wake_latency_us",
    "sampling_rate": "use sampling.default_rate",
    "exporters": "use exporter (with type 'file' or 'otlp')",
    "enable_leader_election": "it belongs to the 'cluster' object of failover_policy.json",
}

_TYPE_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def schema_path(section: str) -> Path:
    """Filesystem path of the JSON Schema of ``section`` (e.g. ``"cpu_affinity"``)."""
    return Path(
        str(resources.files("mxrc.config").joinpath("schema").joinpath(SCHEMA_FILES[section]))
    )


@functools.cache
def load_schema(section: str) -> Mapping[str, Any]:
    """The parsed JSON Schema (draft 2020-12) of ``section``."""
    with schema_path(section).open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return types.MappingProxyType(schema)


@functools.cache
def _validator(section: str) -> Any:
    # jsonschema takes ~60 ms to import: only when a config is validated.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(dict(load_schema(section)))


# ---------------------------------------------------------------- helpers


def format_key_path(path: Sequence[str | int]) -> str | None:
    """``("rt", "cpu_cores", 1)`` -> ``"rt.cpu_cores[1]"``; empty -> None."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or None


def _did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    options = list(candidates)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class _Doc:
    """One config section as read: raw data plus where it came from."""

    section: str
    file: str
    data: dict[str, Any] = field(default_factory=dict)
    locations: Locations | None = None
    origins: dict[JsonPath, str] = field(default_factory=dict)
    """Paths set by environment variables -> variable name."""
    valid: bool = True


class _Problems:
    """Collects ConfigErrors with file, position and origin filled in."""

    def __init__(self) -> None:
        self.errors: list[tuple[tuple[int, int, int], ConfigError]] = []
        self._seq = 0
        self._seen: set[tuple[str | None, str | None, str]] = set()

    def add(
        self,
        doc: _Doc | None,
        path: JsonPath,
        message: str,
        *,
        expected: str | None = None,
        found: object = None,
        hint: str | None = None,
        file: str | None = None,
        at_key: bool = False,
        position_of: JsonPath | None = None,
    ) -> None:
        if doc is not None and not doc.valid:
            # The section already failed parsing or the schema: rules on its
            # values would judge values the user did not write.
            return
        line = column = None
        where = file
        if doc is not None:
            where = doc.file
            source = next(
                (path[:end] for end in range(len(path), 0, -1) if path[:end] in doc.origins),
                None,
            )
            if source is not None:
                origin = doc.origins[source]
                where = f"{origin} (environment)"
                overrides = f"{origin} overrides {format_key_path(source)} of {Path(doc.file).name}"
                hint = f"{hint}; {overrides}" if hint else overrides
            elif doc.locations is not None:
                target = position_of if position_of is not None else path
                pos = doc.locations.of_key(target) if at_key else None
                pos = pos or doc.locations.nearest(target)
                if pos is not None:
                    line, column = pos
        error = ConfigError(
            message,
            file=where,
            key_path=format_key_path(path),
            expected=expected,
            found=found,
            line=line,
            column=column,
            hint=hint,
        )
        identity = (error.file, error.key_path, message)
        if identity in self._seen:
            return
        self._seen.add(identity)
        self._seq += 1
        self.errors.append(((line or 0, column or 0, self._seq), error))

    def take(self) -> list[ConfigError]:
        return [error for _, error in self.errors]


# ---------------------------------------------------------------- reading


def _json_error(path: Path, text: str, exc: json.JSONDecodeError) -> ConfigError:
    msg = exc.msg
    expected: str | None = None
    if msg.startswith("Expecting "):
        expected = msg.removeprefix("Expecting ")
        message = "malformed JSON"
    else:
        message = f"malformed JSON: {msg[0].lower()}{msg[1:]}"
    rest = text[exc.pos : exc.pos + 12].split("\n", 1)[0]
    found: str = rest if rest else "end of file"
    hint = None
    if expected and "property name" in expected and rest.startswith("}"):
        hint = "JSON allows no trailing comma"
    elif expected and "delimiter" in expected:
        hint = "a comma or closing bracket is missing before this point"
    elif rest.startswith(("//", "/*", "#")):
        hint = "JSON has no comments"
    elif rest.startswith("'"):
        hint = "JSON strings use double quotes"
    return ConfigError(
        message,
        file=str(path),
        expected=expected,
        found=found,
        line=exc.lineno,
        column=exc.colno,
        hint=hint,
    )


def _read_file(path: Path, section: str, problems: _Problems) -> _Doc | None:
    doc = _Doc(section=section, file=str(path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.add(None, (), f"cannot read the file: {exc.strerror or exc}", file=str(path))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.add(
            None,
            (),
            f"not UTF-8 text (bad byte at offset {exc.start})",
            expected="a UTF-8 encoded JSON file",
            file=str(path),
        )
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        error = _json_error(path, text, exc)
        problems.errors.append(((exc.lineno, exc.colno, 0), error))
        return None
    except RecursionError:
        problems.add(None, (), "malformed JSON: nested too deeply", file=str(path))
        return None
    doc.locations = locate(text)
    if not isinstance(data, dict):
        problems.add(
            None,
            (),
            "the top level must be a JSON object",
            expected="an object { ... }",
            found=_type_of(data),
            file=str(path),
        )
        return None
    for dup in doc.locations.duplicates:
        problems.add(
            doc,
            dup,
            "duplicate key (the last one would silently win)",
            expected="each key once",
            found=str(dup[-1]),
            at_key=True,
        )
    for bad in _non_finite(data, ()):
        problems.add(
            doc,
            bad,
            "malformed JSON: not a JSON number",
            expected="a finite number",
            found=doc.locations.text_at(bad),
        )
    if isinstance(data.get("$schema"), str):
        del data["$schema"]
    doc.data = data
    if doc.locations.duplicates or any(True for _ in _non_finite(data, ())):
        doc.valid = False
    return doc


def _non_finite(value: Any, path: JsonPath) -> Iterable[JsonPath]:
    """Paths of NaN and Infinity, which Python's json accepts but JSON does not."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def _type_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _list_directory(directory: Path, problems: _Problems) -> list[str]:
    """The known config files present in ``directory``; unknown *.json files are errors."""
    present: list[str] = []
    for entry in sorted(directory.iterdir()):
        name = entry.name
        if name.startswith(".") or not name.endswith(".json") or name.endswith(".schema.json"):
            continue
        if entry.is_dir():
            continue
        if name in _FILE_TO_SECTION:
            present.append(name)
            continue
        suggestion = _did_you_mean(name, CONFIG_FILES.values())
        problems.add(
            None,
            (),
            "unknown config file",
            expected="one of " + ", ".join(CONFIG_FILES.values()),
            found=name,
            hint=f"did you mean '{suggestion}'?" if suggestion else "rename or remove it",
            file=str(entry),
        )
    return present


# ---------------------------------------------------------------- schema errors


def _range_text(schema: Mapping[str, Any]) -> str:
    types_ = schema.get("type", "number")
    kind = "an integer" if types_ == "integer" or "integer" in types_ else "a number"
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if lo is not None and hi is not None:
        return f"{kind} in {lo}..{hi}"
    parts = []
    if lo is not None:
        parts.append(f">= {lo}")
    if xlo is not None:
        parts.append(f"> {xlo}")
    if hi is not None:
        parts.append(f"<= {hi}")
    if xhi is not None:
        parts.append(f"< {xhi}")
    return f"{kind} " + " and ".join(parts)


def _expected_type(schema_type: str | list[str]) -> str:
    names = [schema_type] if isinstance(schema_type, str) else list(schema_type)
    words = [_TYPE_NAMES.get(n, n) for n in names]
    return " or ".join(words)


def _schema_problems(doc: _Doc, problems: _Problems) -> None:
    errors = list(_validator(doc.section).iter_errors(doc.data))
    for error in errors:
        _map_schema_error(doc, error, problems)
    if errors:
        doc.valid = False


def _map_schema_error(doc: _Doc, error: Any, problems: _Problems) -> None:
    path: JsonPath = tuple(error.absolute_path)
    keyword = error.validator
    schema = error.schema
    value = error.instance
    if keyword == "additionalProperties":
        known = [k for k in schema.get("properties", {}) if k != "$schema"]
        for key in value:
            if key in schema.get("properties", {}):
                continue
            suggestion = _did_you_mean(key, known)
            if suggestion:
                hint = f"did you mean '{suggestion}'?"
            elif key in _KEY_ADVICE:
                hint = _KEY_ADVICE[key]
            elif not path and key in _role_keys(doc.section):
                hint = f"per-process settings go under a role: rt.{key} or nonrt.{key}"
            else:
                hint = None
            problems.add(
                doc,
                (*path, key),
                f"unknown key '{key}'",
                expected="one of the keys " + ", ".join(known),
                found=key,
                hint=hint,
                at_key=True,
            )
        return
    if keyword == "required":
        for key in error.validator_value:
            if key not in value:
                problems.add(
                    doc,
                    (*path, key),
                    f"missing required key '{key}'",
                    expected="keys " + ", ".join(error.validator_value),
                    found=list(value),
                    position_of=path,
                )
        return
    if keyword == "type":
        hint = None
        if isinstance(value, str) and error.validator_value in ("integer", "number"):
            hint = "remove the quotes around the number"
        elif isinstance(value, str) and error.validator_value == "boolean":
            hint = "write true or false without quotes"
        problems.add(
            doc,
            path,
            "wrong type",
            expected=_expected_type(error.validator_value),
            found=value,
            hint=hint,
        )
        return
    if keyword in ("enum", "const"):
        options = error.validator_value if keyword == "enum" else [error.validator_value]
        strings = [o for o in options if isinstance(o, str)]
        suggestion = _did_you_mean(value, strings) if isinstance(value, str) else None
        name = path[-1] if path and isinstance(path[-1], str) else "value"
        problems.add(
            doc,
            path,
            f"unknown {name}",
            expected="one of " + ", ".join(str(o) for o in options),
            found=value,
            hint=f"did you mean '{suggestion}'?" if suggestion else None,
        )
        return
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        problems.add(doc, path, "out of range", expected=_range_text(schema), found=value)
        return
    if keyword == "minItems":
        n = error.validator_value
        hint = "use null for automatic placement" if path and path[-1] == "cpu_cores" else None
        problems.add(
            doc,
            path,
            "too few items",
            expected=f"at least {_plural(n, 'item')}",
            found=value,
            hint=hint,
        )
        return
    if keyword == "maxItems":
        n = error.validator_value
        problems.add(
            doc, path, "too many items", expected=f"at most {_plural(n, 'item')}", found=value
        )
        return
    if keyword == "uniqueItems":
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                problems.add(
                    doc, (*path, index), "duplicate value", expected="unique values", found=item
                )
                return
            seen.append(item)
        problems.add(doc, path, "duplicate values", expected="unique values", found=value)
        return
    if keyword == "minLength":
        n = error.validator_value
        expected = "a non-empty string" if n == 1 else f"at least {n} characters"
        problems.add(doc, path, "too short", expected=expected, found=value)
        return
    if keyword == "maxLength":
        n = error.validator_value
        problems.add(doc, path, "too long", expected=f"at most {n} characters", found=value)
        return
    if keyword == "pattern":
        expected = schema.get("x-expected", f"a string matching {error.validator_value}")
        problems.add(doc, path, "invalid format", expected=expected, found=value)
        return
    problems.add(doc, path, f"invalid value ({keyword})", found=value)  # pragma: no cover


def _role_keys(section: str) -> set[str]:
    schema = load_schema(section)
    role = schema.get("$defs", {}).get("role", {})
    keys = set(role.get("properties", {}))
    rt = schema["properties"].get("rt", {})
    keys.update(rt.get("properties", {}))
    return keys


# ---------------------------------------------------------------- models

_T = TypeVar("_T")


def _convert(hint: Any, current: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner[0], current, value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, current, value)
    if origin is tuple:
        element = typing.get_args(hint)[0]
        return tuple(_convert(element, None, v) for v in value)
    if origin is Mapping:
        return types.MappingProxyType(dict(value))
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    return value


def _build(cls: type[_T], current: _T | None, data: Mapping[str, Any]) -> _T:
    """A ``cls`` with the keys of ``data`` replacing those of ``current`` (or of the defaults)."""
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, value in data.items():
        base = getattr(current, key) if current is not None else None
        changes[key] = _convert(hints[key], base, value)
    if current is None:
        return cls(**changes)
    return dataclasses.replace(current, **changes)  # type: ignore[type-var]


def _build_section(doc: _Doc) -> Any:
    cls = _SECTION_CLASSES[doc.section]
    model = _build(cls, cls(), doc.data)
    if doc.section == "cpu_affinity":
        for role in ROLES:
            raw = doc.data.get(role, {})
            role_cfg: CpuAffinityRole = getattr(model, role)
            if "priority" not in raw:
                prio = 80 if role_cfg.policy in ("SCHED_FIFO", "SCHED_RR") else 0
                model = dataclasses.replace(
                    model, **{role: dataclasses.replace(role_cfg, priority=prio)}
                )
    elif doc.section == "perf_monitor":
        raw = doc.data.get("rt", {})
        if raw.get("deadline_us") is None:
            rt = dataclasses.replace(model.rt, deadline_us=model.rt.cycle_time_us)
            model = dataclasses.replace(model, rt=rt)
    return model


# ---------------------------------------------------------------- cross-field rules


def _cross_field(cfg: MxrcConfig, docs: Mapping[str, _Doc], problems: _Problems) -> None:
    cpu_doc = docs["cpu_affinity"]
    for role in ROLES:
        r: CpuAffinityRole = getattr(cfg.cpu_affinity, role)
        if r.policy in ("SCHED_FIFO", "SCHED_RR"):
            if not 1 <= r.priority <= 99:
                problems.add(
                    cpu_doc,
                    (role, "priority"),
                    f"priority {r.priority} is not valid for {r.policy}",
                    expected=f"an integer in 1..99 for {r.policy}",
                    found=r.priority,
                    position_of=(role, "priority")
                    if _in(cpu_doc, role, "priority")
                    else (role, "policy"),
                )
        elif r.priority != 0:
            problems.add(
                cpu_doc,
                (role, "priority"),
                f"{r.policy} has no priority",
                expected=f"0 for {r.policy} (1..99 only with SCHED_FIFO or SCHED_RR)",
                found=r.priority,
            )
        if len(r.thread_name.encode()) > 15:
            problems.add(
                cpu_doc,
                (role, "thread_name"),
                "too long for a Linux thread name",
                expected="at most 15 bytes in UTF-8",
                found=r.thread_name,
            )
        if r.policy == "SCHED_DEADLINE":
            if r.deadline is None:
                problems.add(
                    cpu_doc,
                    (role, "deadline"),
                    "SCHED_DEADLINE needs a deadline reservation",
                    expected="an object {runtime_us, deadline_us, period_us}",
                    found=None,
                    hint='e.g. "deadline": {"runtime_us": 200, "deadline_us": 1000, '
                    '"period_us": 1000}',
                    position_of=(role, "policy"),
                )
            if r.cpu_cores is not None:
                problems.add(
                    cpu_doc,
                    (role, "cpu_cores"),
                    "SCHED_DEADLINE cannot be combined with pinned cpu_cores: unsupported, "
                    "the kernel refuses sched_setattr(SCHED_DEADLINE) for a thread whose "
                    "affinity is a subset of its root domain (EPERM)",
                    expected="null (no pinning) with SCHED_DEADLINE",
                    found=list(r.cpu_cores),
                    hint="set cpu_cores to null, or use SCHED_FIFO to pin the thread",
                )
        elif r.deadline is not None:
            problems.add(
                cpu_doc,
                (role, "deadline"),
                f"a deadline reservation is only used with SCHED_DEADLINE, not {r.policy}",
                expected="null",
                found=r.deadline.to_dict(),
            )
        if r.deadline is not None:
            d = r.deadline
            if not d.runtime_us <= d.deadline_us <= d.period_us:
                problems.add(
                    cpu_doc,
                    (role, "deadline"),
                    "SCHED_DEADLINE needs runtime_us <= deadline_us <= period_us",
                    expected="runtime_us <= deadline_us <= period_us",
                    found=f"{d.runtime_us} / {d.deadline_us} / {d.period_us}",
                )
    rt, nonrt = cfg.cpu_affinity.rt, cfg.cpu_affinity.nonrt
    if rt.cpu_cores is not None and nonrt.cpu_cores is not None:
        for exclusive, other in ((rt, nonrt), (nonrt, rt)):
            shared = sorted(set(exclusive.cpu_cores or ()) & set(other.cpu_cores or ()))
            if exclusive.is_exclusive and shared:
                index = list(other.cpu_cores or ()).index(shared[0])
                problems.add(
                    cpu_doc,
                    (other.role, "cpu_cores", index),
                    f"CPU {shared[0]} is reserved: {exclusive.role}.is_exclusive is true",
                    expected=f"CPUs outside {exclusive.role}.cpu_cores",
                    found=shared[0],
                    hint=f"move {other.role} elsewhere or set {exclusive.role}.is_exclusive "
                    "to false",
                )
                break

    numa_doc = docs["numa_binding"]
    for role in ROLES:
        n = getattr(cfg.numa_binding, role)
        if n.interleave_nodes and n.memory_policy != "INTERLEAVE":
            problems.add(
                numa_doc,
                (role, "interleave_nodes"),
                f"interleave_nodes is only used with INTERLEAVE, not {n.memory_policy}",
                expected="[] or memory_policy INTERLEAVE",
                found=list(n.interleave_nodes),
            )

    perf_doc = docs["perf_monitor"]
    p = cfg.perf_monitor.rt
    if p.deadline_us > p.cycle_time_us:
        problems.add(
            perf_doc,
            ("rt", "deadline_us"),
            "the deadline is longer than the cycle",
            expected=f"at most cycle_time_us ({p.cycle_time_us})",
            found=p.deadline_us,
        )
    for key in ("event_ring_capacity", "critical_ring_capacity", "command_ring_capacity"):
        _power_of_two(perf_doc, ("rt", "bus", key), getattr(p.bus, key), problems)

    fo_doc = docs["failover_policy"]
    f = cfg.failover_policy.rt
    if f.health_check_interval_ms <= f.health_check_timeout_ms:
        problems.add(
            fo_doc,
            ("rt", "health_check_interval_ms"),
            "the health check interval must be longer than its timeout",
            expected=f"more than health_check_timeout_ms ({f.health_check_timeout_ms})",
            found=f.health_check_interval_ms,
        )
    if f.checkpoint_interval_sec == 0 and f.enable_state_recovery:
        problems.add(
            fo_doc,
            ("rt", "checkpoint_interval_sec"),
            "state recovery needs periodic checkpoints",
            expected="10..3600 when enable_state_recovery is true",
            found=0,
            hint="set checkpoint_interval_sec or enable_state_recovery false",
        )
    elif 0 < f.checkpoint_interval_sec < 10:
        problems.add(
            fo_doc,
            ("rt", "checkpoint_interval_sec"),
            "out of range",
            expected="0 (no periodic checkpoints) or an integer in 10..3600",
            found=f.checkpoint_interval_sec,
        )
    if f.agent_heartbeat_interval_ms >= f.agent_heartbeat_timeout_ms:
        problems.add(
            fo_doc,
            ("rt", "agent_heartbeat_interval_ms"),
            "the agent would beat less often than its heartbeat times out",
            expected=f"less than agent_heartbeat_timeout_ms ({f.agent_heartbeat_timeout_ms})",
            found=f.agent_heartbeat_interval_ms,
        )
    c = cfg.failover_policy.cluster
    if c.enable_leader_election and c.backend == "cell" and not c.peers:
        problems.add(
            fo_doc,
            ("cluster", "peers"),
            "the cell backend needs 2-7 voters: this node and 1-6 peers",
            expected="1 to 6 peers",
            found=[],
        )
    if c.backend == "etcd" and c.lease_ttl_ms < 2000:
        problems.add(
            fo_doc,
            ("cluster", "lease_ttl_ms"),
            "etcd leases shorter than 2 s are not reliable (etcd counts TTLs in whole seconds)",
            expected="at least 2000 with the etcd backend",
            found=c.lease_ttl_ms,
        )
    ids = [peer.node_id for peer in c.peers]
    for index, peer in enumerate(c.peers):
        if peer.node_id in ids[:index] or (c.node_id is not None and peer.node_id == c.node_id):
            problems.add(
                fo_doc,
                ("cluster", "peers", index, "node_id"),
                "duplicate node id",
                expected="node ids unique in the cluster (and different from node_id)",
                found=peer.node_id,
            )

    tr_doc = docs["tracing"]
    _power_of_two(tr_doc, ("rt", "span_ring_capacity"), cfg.tracing.rt.span_ring_capacity, problems)
    perf = cfg.tracing.performance
    if perf.max_export_batch_size > perf.max_queue_size:
        problems.add(
            tr_doc,
            ("performance", "max_export_batch_size"),
            "the export batch is larger than the queue",
            expected=f"at most max_queue_size ({perf.max_queue_size})",
            found=perf.max_export_batch_size,
        )

    log_doc = docs["logging"]
    lg = cfg.logging
    _power_of_two(log_doc, ("ring_capacity",), lg.ring_capacity, problems)
    if lg.file_path("rt") == lg.file_path("nonrt"):
        problems.add(
            log_doc,
            ("nonrt", "file"),
            "both processes would write the same log file",
            expected=f"a file other than rt.file ({lg.rt.file})",
            found=lg.nonrt.file,
        )


def _power_of_two(doc: _Doc, path: JsonPath, value: int, problems: _Problems) -> None:
    """Ring capacities are powers of two (the ring indexes with a mask)."""
    if value > 0 and value & (value - 1) == 0:
        return
    lower = 1 << (value.bit_length() - 1) if value > 0 else 1
    problems.add(
        doc,
        path,
        "a ring capacity must be a power of two",
        expected=f"a power of two such as {lower} or {lower * 2}",
        found=value,
    )


def _in(doc: _Doc, *path: str) -> bool:
    node: Any = doc.data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# ---------------------------------------------------------------- host checks


def _host_checks(
    cfg: MxrcConfig,
    docs: Mapping[str, _Doc],
    problems: _Problems,
    procfs_root: str,
    sysfs_root: str,
) -> None:
    """Cores within the allowed set; NUMA nodes and hint CPUs on this host.

    Availability: Linux.
    """
    # Host modules need the compiled core: imported only when host checks run,
    # so check_host=False works without it.
    from mxrc.rt._affinity import validate_cpus
    from mxrc.rt._topology import numa_topology

    cpu_doc = docs["cpu_affinity"]
    for role in ROLES:
        cores = getattr(cfg.cpu_affinity, role).cpu_cores
        if cores is None:
            continue
        try:
            validate_cpus(cores, procfs_root=procfs_root, sysfs_root=sysfs_root)
        except CpuNotAllowedError as exc:
            index = cores.index(exc.core) if exc.core in cores else 0
            why = re.search(r"\((.*)\)\s*$", str(exc))
            problems.add(
                cpu_doc,
                (role, "cpu_cores", index),
                f"CPU {exc.core} is not in the set this process may use",
                expected="a CPU in the allowed set " + _cpulist_text(exc.allowed),
                found=exc.core,
                hint=(why.group(1) + "; " if why else "")
                + "`mxrc doctor` shows the CPUs this process may use",
            )

    topology = numa_topology(sysfs_root=sysfs_root)
    nodes = sorted(topology.nodes) or [0]
    numa_doc = docs["numa_binding"]
    node_text = "a node of this host (" + ", ".join(map(str, nodes)) + ")"
    for role in ROLES:
        n = getattr(cfg.numa_binding, role)
        if n.numa_node not in nodes:
            problems.add(
                numa_doc,
                (role, "numa_node"),
                f"NUMA node {n.numa_node} does not exist on this host",
                expected=node_text,
                found=n.numa_node,
            )
            continue
        for index, node in enumerate(n.interleave_nodes):
            if node not in nodes:
                problems.add(
                    numa_doc,
                    (role, "interleave_nodes", index),
                    f"NUMA node {node} does not exist on this host",
                    expected=node_text,
                    found=node,
                )
        if n.cpu_cores_hint is None or not topology.nodes:
            continue
        for index, cpu in enumerate(n.cpu_cores_hint):
            owner = topology.node_of_cpu(cpu)
            if owner != n.numa_node:
                where = "no node" if owner is None else f"node {owner}"
                problems.add(
                    numa_doc,
                    (role, "cpu_cores_hint", index),
                    f"CPU {cpu} is not on NUMA node {n.numa_node} (it is on {where})",
                    expected=f"a CPU of node {n.numa_node} ("
                    + _cpulist_text(topology.nodes[n.numa_node].cpus)
                    + ")",
                    found=cpu,
                )


def _cpulist_text(cpus: Iterable[int]) -> str:
    return format_cpulist(cpus) or "none"


# ---------------------------------------------------------------- entry points


def _collect(
    directory: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    check_host: bool,
    procfs_root: str,
    sysfs_root: str,
) -> tuple[MxrcConfig | None, list[ConfigError]]:
    env = os.environ if environ is None else environ
    problems = _Problems()
    dir_hint = None
    if directory is None:
        directory = config_dir_from_env(env)
        dir_hint = "the directory is named by MXRC_CONFIG_DIR" if directory else None
    dir_path = None if directory is None else Path(directory)
    docs: dict[str, _Doc] = {}
    files_read: list[str] = []  # in CONFIG_FILES order
    if dir_path is not None:
        if not dir_path.exists():
            problems.add(
                None,
                (),
                "config directory does not exist",
                expected="a directory holding the config files (each optional)",
                found=str(dir_path),
                file=str(dir_path),
                hint=dir_hint,
            )
            return None, problems.take()
        if not dir_path.is_dir():
            problems.add(
                None,
                (),
                "not a directory",
                expected="a directory holding the config files (each optional)",
                found=str(dir_path),
                file=str(dir_path),
                hint=dir_hint,
            )
            return None, problems.take()
        present = _list_directory(dir_path, problems)
        for name in (n for n in CONFIG_FILES.values() if n in present):
            section = _FILE_TO_SECTION[name]
            doc = _read_file(dir_path / name, section, problems)
            if doc is None:
                docs[section] = _Doc(section, str(dir_path / name), valid=False)
            else:
                docs[section] = doc
                files_read.append(name)
    for section, name in CONFIG_FILES.items():
        if section not in docs:
            docs[section] = _Doc(section, str(dir_path / name) if dir_path else name)

    try:
        instance = instance_from_env(env)
        overrides = read_env_overrides(env)
    except ConfigError as exc:
        problems.errors.append(((0, 0, 0), exc))
        instance, overrides = "default", []
    applied: list[str] = []
    for override in overrides:
        doc = docs[override.file]
        if not doc.valid:
            continue
        node: Any = doc.data
        for part in override.key_path[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[override.key_path[-1]] = override.value
            doc.origins[override.key_path] = override.variable
            if override.variable not in applied:
                applied.append(override.variable)

    for doc in docs.values():
        if doc.valid:
            _schema_problems(doc, problems)

    # Invalid sections are replaced by their defaults so that the rules of the
    # valid ones still run (and report) now; problems of invalid ones are dropped.
    sections = {
        name: _build_section(docs[name] if docs[name].valid else _Doc(name, docs[name].file))
        for name in CONFIG_FILES
    }
    cfg = MxrcConfig(
        **sections,
        directory=dir_path,
        files_read=tuple(files_read),
        env_overrides=tuple(applied),
        instance=instance,
    )
    _cross_field(cfg, docs, problems)
    if not problems.errors and check_host:
        _host_checks(cfg, docs, problems, procfs_root, sysfs_root)
    if problems.errors:
        return None, _sorted(problems)
    return cfg, []


def _sorted(problems: _Problems) -> list[ConfigError]:
    files = list(CONFIG_FILES.values())

    def key(item: tuple[tuple[int, int, int], ConfigError]) -> tuple[int, str, int, int, int]:
        (line, column, seq), error = item
        name = Path(error.file or "").name
        rank = files.index(name) if name in files else -1
        return (rank, error.file or "", line, column, seq)

    return [error for _, error in sorted(problems.errors, key=key)]


def validate_config(
    directory: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    check_host: bool = True,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
) -> list[ConfigError]:
    """Every problem of a config directory (and the environment), or ``[]`` when valid.

    Same arguments as :func:`load_config`. Host checks run only once the
    files are valid.

    Availability: Linux (host checks read /proc and /sys).
    """
    return _collect(directory, environ, check_host, procfs_root, sysfs_root)[1]


def load_config(
    directory: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    check_host: bool = True,
    procfs_root: str = "/proc",
    sysfs_root: str = "/sys",
) -> MxrcConfig:
    """Read, validate and return the configuration.

    ``directory`` holds up to six JSON files, each optional (a missing file
    means defaults). None: the directory named by ``MXRC_CONFIG_DIR``, else
    defaults only. ``environ`` (default ``os.environ``) supplies the
    ``MXRC_*`` overrides (:mod:`mxrc._env`), validated like file values.
    With ``check_host``, pinned CPUs must be in the set this process may use
    (start affinity mask ∩ cgroup cpuset under ``procfs_root``/``sysfs_root``)
    and NUMA nodes and hint CPUs must exist in the topology under ``sysfs_root``.

    Raises :class:`mxrc.errors.ConfigError` for the first problem found
    (file, key path, expected, found; line and column where known); when
    there are several, its message lists the others too.

    Availability: Linux (host checks read /proc and /sys).
    """
    cfg, errors = _collect(directory, environ, check_host, procfs_root, sysfs_root)
    if errors:
        raise _combine(errors)
    assert cfg is not None
    return cfg


def _combine(errors: list[ConfigError]) -> ConfigError:
    first = errors[0]
    if len(errors) == 1:
        return first
    combined = ConfigError(
        first.message,
        file=first.file,
        key_path=first.key_path,
        expected=first.expected,
        found=first.found,
        line=first.line,
        column=first.column,
        hint=first.hint,
    )
    others = "\n".join(f"  {error}" for error in errors[1:])
    combined.args = (f"{combined}\n{_plural(len(errors) - 1, 'more problem')}:\n{others}",)
    return combined
