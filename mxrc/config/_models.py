"""Typed, immutable models of mxrc's configuration, one per file and per role.

The defaults here are the source of truth; the JSON Schemas repeat them as
``default`` annotations for editors (a test keeps both in step). Every
section has ``to_dict()`` giving exactly the JSON its file would contain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "CONFIG_FILES",
    "ROLES",
    "BusConfig",
    "ClusterConfig",
    "ClusterPeer",
    "CpuAffinityConfig",
    "CpuAffinityRole",
    "DeadlineParams",
    "ExporterConfig",
    "FailoverPolicyConfig",
    "FailoverRole",
    "FileExporterConfig",
    "HealthServerConfig",
    "IsolationMode",
    "LogLevel",
    "LogRotation",
    "LoggingConfig",
    "LoggingRole",
    "MemoryAllocation",
    "MemoryPolicyName",
    "MxrcConfig",
    "NumaBindingConfig",
    "NumaBindingRole",
    "NumaResidency",
    "OtlpExporterConfig",
    "PerfMonitorConfig",
    "PerfMonitorRole",
    "PerfThresholds",
    "Role",
    "SamplingConfig",
    "SchedFallback",
    "SchedPolicyName",
    "TracingConfig",
    "TracingPerformance",
    "TracingRole",
    "TracingRtRole",
    "effective_cpu_cores",
]

Role = Literal["rt", "nonrt"]
ROLES: tuple[Role, ...] = ("rt", "nonrt")
"""The process roles: the RT process and the non-RT agent."""

SchedPolicyName = Literal[
    "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE", "SCHED_DEADLINE"
]
IsolationMode = Literal["NONE", "ISOLCPUS", "CGROUPS", "HYBRID"]
MemoryPolicyName = Literal["DEFAULT", "LOCAL", "PREFERRED", "INTERLEAVE", "BIND"]
LogLevel = Literal["trace", "debug", "info", "warn", "error", "critical"]

CONFIG_FILES: Mapping[str, str] = MappingProxyType(
    {
        "cpu_affinity": "cpu_affinity.json",
        "numa_binding": "numa_binding.json",
        "perf_monitor": "perf_monitor.json",
        "failover_policy": "failover_policy.json",
        "tracing": "tracing_config.json",
        "logging": "logging.json",
    }
)
"""Section name (attribute of :class:`MxrcConfig`) -> file name."""

_NOT_JSON = {"json": False}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("json", True)
        }
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class _Section:
    """Mixin: ``to_dict()`` for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this model stands for (lists for tuples)."""
        result = _jsonable(self)
        assert isinstance(result, dict)
        return result


# ---------------------------------------------------------------- cpu_affinity


@dataclass(frozen=True)
class DeadlineParams(_Section):
    """SCHED_DEADLINE reservation: ``runtime_us <= deadline_us <= period_us``."""

    runtime_us: int
    deadline_us: int
    period_us: int


@dataclass(frozen=True)
class SchedFallback(_Section):
    """What may be given up, with a logged warning, when the host cannot comply."""

    allow_non_isolated: bool = False
    """Run on cores that are not isolated when isolation_mode asks for isolation."""
    allow_sched_other: bool = False
    """Fall back to SCHED_OTHER when the real-time policy is refused (EPERM)."""


@dataclass(frozen=True)
class CpuAffinityRole(_Section):
    """CPU placement and scheduling of one process role."""

    cpu_cores: tuple[int, ...] | None = None
    """CPUs to pin to; None = automatic (see :func:`effective_cpu_cores`)."""
    thread_name: str = "mxrc-rt"
    """Name given to the cycle (rt) or main (nonrt) thread; at most 15 bytes."""
    isolation_mode: IsolationMode = "NONE"
    is_exclusive: bool = True
    """No other mxrc role is placed on these CPUs."""
    policy: SchedPolicyName = "SCHED_FIFO"
    priority: int = 80
    deadline: DeadlineParams | None = None
    fallback: SchedFallback = field(default_factory=SchedFallback)
    role: Role = field(default="rt", metadata=_NOT_JSON)
    """Which role this is (not a JSON key)."""


def _nonrt_cpu() -> CpuAffinityRole:
    return CpuAffinityRole(
        thread_name="mxrc-agent",
        is_exclusive=False,
        policy="SCHED_OTHER",
        priority=0,
        role="nonrt",
    )


@dataclass(frozen=True)
class CpuAffinityConfig(_Section):
    """``cpu_affinity.json``."""

    rt: CpuAffinityRole = field(default_factory=CpuAffinityRole)
    nonrt: CpuAffinityRole = field(default_factory=_nonrt_cpu)

    def effective_cores(self, role: Role, allowed: Iterable[int]) -> frozenset[int]:
        """The CPUs ``role`` runs on given the ``allowed`` set (auto placement resolved)."""
        allowed_set = frozenset(allowed)
        if role == "rt":
            return effective_cpu_cores(self.rt, allowed_set)
        rt_cores = effective_cpu_cores(self.rt, allowed_set)
        return effective_cpu_cores(self.nonrt, allowed_set, rt_cores=rt_cores)


def effective_cpu_cores(
    role_cfg: CpuAffinityRole,
    allowed: Iterable[int],
    *,
    rt_cores: Iterable[int] | None = None,
) -> frozenset[int]:
    """The CPUs a role runs on.

    Explicit ``cpu_cores`` are returned as they are (the loader has checked
    them against the allowed set). Automatic placement (``cpu_cores`` null):
    the rt role gets the highest allowed CPU; the nonrt role gets every
    allowed CPU except the rt cores (``rt_cores``, default: the automatic rt
    CPU) when that leaves at least one, else every allowed CPU.
    Raises ValueError when automatic placement is asked with nothing allowed.
    """
    if role_cfg.cpu_cores is not None:
        return frozenset(role_cfg.cpu_cores)
    allowed_set = frozenset(allowed)
    if not allowed_set:
        raise ValueError("no allowed CPU to place the process on")
    if role_cfg.role == "rt":
        return frozenset({max(allowed_set)})
    reserved = frozenset(rt_cores) if rt_cores is not None else frozenset({max(allowed_set)})
    rest = allowed_set - reserved
    return rest if rest else allowed_set


# ---------------------------------------------------------------- numa_binding


@dataclass(frozen=True)
class NumaResidency(_Section):
    """Sampling of page residency from ``/proc/<pid>/numa_maps`` (skipped on one-node hosts)."""

    enabled: bool = True
    sample_interval_s: float = 60.0
    remote_warn_ratio: float = 0.05
    """Warn when the share of the process's pages on other nodes exceeds this (0..1)."""


@dataclass(frozen=True)
class MemoryAllocation(_Section):
    """Locking and prefaulting of the process's memory (ARCHITECTURE §5 order)."""

    lock_memory: bool = True
    """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) before the first cycle."""
    prefault_stack_kb: int = 256
    """Stack of the cycle thread touched before the first cycle, in KiB."""
    prefault_heap_mb: int = 0
    """Extra heap reserved and touched at start, in MiB (0 = none)."""


def _nonrt_memory() -> MemoryAllocation:
    return MemoryAllocation(lock_memory=False, prefault_stack_kb=0)


@dataclass(frozen=True)
class NumaBindingRole(_Section):
    """Memory placement of one process role."""

    numa_node: int = 0
    memory_policy: MemoryPolicyName = "LOCAL"
    interleave_nodes: tuple[int, ...] = ()
    """Nodes for INTERLEAVE (empty = every node); only with INTERLEAVE."""
    strict_binding: bool = True
    """A failure to apply the policy stops the start (else: logged warning)."""
    migrate_pages: bool = False
    """Move already-allocated pages to numa_node at start."""
    cpu_cores_hint: tuple[int, ...] | None = None
    """CPUs of numa_node the process is expected to run on (checked against the topology)."""
    residency: NumaResidency = field(default_factory=NumaResidency)
    memory_allocation: MemoryAllocation = field(default_factory=MemoryAllocation)
    role: Role = field(default="rt", metadata=_NOT_JSON)


def _nonrt_numa() -> NumaBindingRole:
    return NumaBindingRole(
        memory_policy="DEFAULT",
        strict_binding=False,
        memory_allocation=_nonrt_memory(),
        role="nonrt",
    )


@dataclass(frozen=True)
class NumaBindingConfig(_Section):
    """``numa_binding.json``."""

    rt: NumaBindingRole = field(default_factory=NumaBindingRole)
    nonrt: NumaBindingRole = field(default_factory=_nonrt_numa)


# ---------------------------------------------------------------- perf_monitor


@dataclass(frozen=True)
class PerfThresholds(_Section):
    """Health thresholds of the cycle, evaluated over the sliding window."""

    max_deadline_miss_rate: float = 0.0001
    """Ratio 0..1 of cycles that finished after their deadline."""
    max_jitter_us: float = 100.0
    """Standard deviation of wake-up latency, µs."""
    max_p99_wake_latency_us: float = 950.0


@dataclass(frozen=True)
class BusConfig(_Section):
    """Sizes of the shared-memory bus of each cycle thread (rings: records, powers of two)."""

    event_ring_capacity: int = 1024
    """RT -> agent events of priority HIGH, NORMAL and LOW."""
    critical_ring_capacity: int = 64
    """RT -> agent CRITICAL events (overflow sets a sticky flag: UNHEALTHY)."""
    command_ring_capacity: int = 256
    """Agent -> RT commands and events."""
    datastore_slots: int = 256
    """Slots of the instance's data store."""
    datastore_bytes: int = 65536
    """Bytes of data store values (the arena)."""


@dataclass(frozen=True)
class PerfMonitorRole(_Section):
    """Cycle timing and monitoring of the RT process."""

    cycle_time_us: int = 1000
    deadline_us: int = 1000
    """Deadline after the release; null in JSON = cycle_time_us."""
    overrun_policy: Literal["skip", "run_late"] = "skip"
    warmup_cycle_count: int = 1000
    window_s: float = 60.0
    enable_histogram: bool = True
    thresholds: PerfThresholds = field(default_factory=PerfThresholds)
    bus: BusConfig = field(default_factory=BusConfig)


@dataclass(frozen=True)
class PerfMonitorConfig(_Section):
    """``perf_monitor.json``."""

    rt: PerfMonitorRole = field(default_factory=PerfMonitorRole)


# ---------------------------------------------------------------- failover_policy


@dataclass(frozen=True)
class FailoverRole(_Section):
    """Health checking and restart policy of the RT process (upstream §2.6)."""

    health_check_interval_ms: int = 1000
    health_check_timeout_ms: int = 500
    failure_threshold: int = 3
    restart_delay_ms: int = 100
    max_restart_count: int = 5
    restart_window_sec: int = 60
    enable_state_recovery: bool = True
    checkpoint_interval_sec: int = 60
    checkpoint_keep: int = 10
    """Newest checkpoints kept (docs/checkpoints.md)."""
    agent_heartbeat_interval_ms: int = 100
    """How often the agent writes its heartbeat into the segment."""
    agent_heartbeat_timeout_ms: int = 500
    """Age of the agent's heartbeat after which the RT side enters SAFE_MODE."""
    entrypoint: str = "mxrc.demo:supervised_entrypoint"
    """``module:function`` the supervisor's RT process runs (docs/supervisor.md)."""


@dataclass(frozen=True)
class ClusterPeer(_Section):
    """Another node of the cluster."""

    node_id: str
    address: str


@dataclass(frozen=True)
class ClusterConfig(_Section):
    """Node-wide leader election settings."""

    enable_leader_election: bool = False
    backend: Literal["etcd", "cell"] = "etcd"
    node_id: str | None = None
    """This node's id; None = the host name."""
    peers: tuple[ClusterPeer, ...] = ()
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    lease_ttl_ms: int = 3000


@dataclass(frozen=True)
class HealthServerConfig(_Section):
    """The node's HTTP server (``/health*``, ``/metrics``), run by the agent."""

    host: str = "127.0.0.1"
    port: int = 8080
    bearer_token_file: str | None = None
    """File holding a bearer token required on ``/health/details`` and ``/metrics``
    (relative: to the config directory); refused unless mode 0600 or stricter."""


@dataclass(frozen=True)
class FailoverPolicyConfig(_Section):
    """``failover_policy.json``."""

    rt: FailoverRole = field(default_factory=FailoverRole)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    health_server: HealthServerConfig = field(default_factory=HealthServerConfig)


# ---------------------------------------------------------------- tracing_config


@dataclass(frozen=True)
class TracingRole(_Section):
    """Per-process tracing settings."""

    service_name: str = "mxrc-rt"


@dataclass(frozen=True)
class TracingRtRole(TracingRole):
    """Tracing settings of the RT process."""

    span_ring_capacity: int = 4096
    """Records in the RT -> agent span ring of each cycle thread (a power of two)."""


@dataclass(frozen=True)
class SamplingConfig(_Section):
    """Head sampling: rates are ratios 0..1."""

    strategy: Literal["parent_based", "probabilistic", "always_on", "always_off"] = "parent_based"
    default_rate: float = 0.1
    rt_cycle_rate: float = 0.05
    event_bus_rate: float = 0.1


@dataclass(frozen=True)
class FileExporterConfig(_Section):
    """OTLP-JSON lines file; a relative path is relative to the log directory."""

    path: str = "traces.jsonl"


@dataclass(frozen=True)
class OtlpExporterConfig(_Section):
    """OTLP/HTTP exporter."""

    endpoint: str = "http://localhost:4318"
    protocol: Literal["http/protobuf"] = "http/protobuf"
    timeout_ms: int = 10000
    compression: Literal["none", "gzip"] = "none"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ExporterConfig(_Section):
    """Where spans go."""

    type: Literal["file", "otlp"] = "file"
    file: FileExporterConfig = field(default_factory=FileExporterConfig)
    otlp: OtlpExporterConfig = field(default_factory=OtlpExporterConfig)


@dataclass(frozen=True)
class TracingPerformance(_Section):
    """Batch span processor of the agent."""

    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_ms: int = 5000


@dataclass(frozen=True)
class TracingConfig(_Section):
    """``tracing_config.json``."""

    enabled: bool = True
    rt: TracingRtRole = field(default_factory=TracingRtRole)
    nonrt: TracingRole = field(default_factory=lambda: TracingRole(service_name="mxrc-agent"))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    performance: TracingPerformance = field(default_factory=TracingPerformance)


# ---------------------------------------------------------------- logging


@dataclass(frozen=True)
class LoggingRole(_Section):
    """Per-process log settings."""

    level: LogLevel = "info"
    file: str = "rt.json"
    """File name, relative to the directory (or absolute)."""


@dataclass(frozen=True)
class LogRotation(_Section):
    """Size-based rotation of each log file."""

    max_file_size_mb: float = 10.0
    max_files: int = 3


@dataclass(frozen=True)
class LoggingConfig(_Section):
    """``logging.json``."""

    directory: str = "/var/log/mxrc"
    rt: LoggingRole = field(default_factory=LoggingRole)
    nonrt: LoggingRole = field(default_factory=lambda: LoggingRole(file="nonrt.json"))
    rotation: LogRotation = field(default_factory=LogRotation)
    ring_capacity: int = 8192
    """Records in the RT -> agent log ring of each cycle thread, a power of two (the newest
    is dropped, and counted, when full)."""
    ecs_version: str = "8.11"

    def file_path(self, role: Role) -> Path:
        """The log file of ``role`` (its file joined to the directory)."""
        role_cfg = self.rt if role == "rt" else self.nonrt
        return Path(self.directory) / role_cfg.file


# ---------------------------------------------------------------- whole config


@dataclass(frozen=True)
class MxrcConfig:
    """The whole, validated configuration of one mxrc instance on this node."""

    cpu_affinity: CpuAffinityConfig = field(default_factory=CpuAffinityConfig)
    numa_binding: NumaBindingConfig = field(default_factory=NumaBindingConfig)
    perf_monitor: PerfMonitorConfig = field(default_factory=PerfMonitorConfig)
    failover_policy: FailoverPolicyConfig = field(default_factory=FailoverPolicyConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    directory: Path | None = None
    """The config directory read, or None (defaults only)."""
    files_read: tuple[str, ...] = ()
    """Names of the files that were present and read."""
    env_overrides: tuple[str, ...] = ()
    """Names of the ``MXRC_*`` variables that overrode a key."""
    instance: str = "default"
    """Instance name (``MXRC_INSTANCE``)."""

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as JSON-ready data.

        Keys: one per section (``cpu_affinity`` ... ``logging``, each the
        content of its file), plus ``directory``, ``files_read``,
        ``env_overrides`` and ``instance``.
        """
        result = {name: getattr(self, name).to_dict() for name in CONFIG_FILES}
        result["directory"] = None if self.directory is None else str(self.directory)
        result["files_read"] = list(self.files_read)
        result["env_overrides"] = list(self.env_overrides)
        result["instance"] = self.instance
        return result
