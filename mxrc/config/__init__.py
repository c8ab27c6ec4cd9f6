"""mxrc configuration: load, validate and model the config directory.

A config directory holds up to six JSON files, each optional
(``cpu_affinity.json``, ``numa_binding.json``, ``perf_monitor.json``,
``failover_policy.json``, ``tracing_config.json``, ``logging.json``).
Per-process settings sit under a role (``"rt"``, ``"nonrt"``); node-wide
settings under their own key. :func:`load_config` returns a frozen
:class:`MxrcConfig` or raises :class:`mxrc.errors.ConfigError`. The JSON
Schemas (draft 2020-12) are in ``mxrc/config/schema/``; ``docs/config.md``
is the reference of every key.
"""

from __future__ import annotations

from mxrc.config._loader import (
    SCHEMA_FILES,
    format_key_path,
    load_config,
    load_schema,
    schema_path,
    validate_config,
)
from mxrc.config._models import (
    CONFIG_FILES,
    ROLES,
    ClusterConfig,
    ClusterPeer,
    CpuAffinityConfig,
    CpuAffinityRole,
    DeadlineParams,
    ExporterConfig,
    FailoverPolicyConfig,
    FailoverRole,
    FileExporterConfig,
    HealthServerConfig,
    IsolationMode,
    LoggingConfig,
    LoggingRole,
    LogLevel,
    LogRotation,
    MemoryPolicyName,
    MxrcConfig,
    NumaBindingConfig,
    NumaBindingRole,
    NumaResidency,
    OtlpExporterConfig,
    PerfMonitorConfig,
    PerfMonitorRole,
    PerfThresholds,
    Role,
    SamplingConfig,
    SchedFallback,
    SchedPolicyName,
    TracingConfig,
    TracingPerformance,
    TracingRole,
    effective_cpu_cores,
)
from mxrc.errors import ConfigError

__all__ = [
    "CONFIG_FILES",
    "ROLES",
    "SCHEMA_FILES",
    "ClusterConfig",
    "ClusterPeer",
    "ConfigError",
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
    "effective_cpu_cores",
    "format_key_path",
    "load_config",
    "load_schema",
    "schema_path",
    "validate_config",
]
