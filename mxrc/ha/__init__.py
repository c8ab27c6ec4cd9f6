"""High availability: health status and the health HTTP server (``docs/health.md``).

Supervisor, HA state machine, sd_notify and checkpoints live in this package too
(their modules add their exports here).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxrc.ha._checkpoint import (
        Checkpoint,
        CheckpointCorruptError,
        CheckpointError,
        CheckpointNewerError,
        CheckpointStore,
        CheckpointWriter,
        RestoreReport,
        ResumeReport,
        capture,
        restore,
        resume_datastore,
        writer_for_segment,
    )
    from mxrc.ha._health import (
        CheckpointInfo,
        HaProvider,
        HealthMonitor,
        HealthReport,
        HealthStatus,
        HealthThresholds,
        StaticHaProvider,
    )
    from mxrc.ha._http import (
        DEFAULT_BACKLOG,
        HaCollector,
        HealthServer,
        health_server_from_config,
        read_secret_file,
    )
    from mxrc.ha._policy import RestartDecision, RestartPolicy
    from mxrc.ha._recovery import Recovery
    from mxrc.ha._sdnotify import SdNotifier
    from mxrc.ha._state import HaState, HaStateMachine, HaTransition, InvalidTransitionError
    from mxrc.ha._supervisor import (
        Supervisor,
        SupervisorStateFile,
        SupervisorStatus,
    )


__all__ = [
    "DEFAULT_BACKLOG",
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNewerError",
    "CheckpointStore",
    "CheckpointWriter",
    "HaCollector",
    "HaProvider",
    "HaState",
    "HaStateMachine",
    "HaTransition",
    "HealthMonitor",
    "HealthReport",
    "HealthServer",
    "HealthStatus",
    "HealthThresholds",
    "InvalidTransitionError",
    "Recovery",
    "RestartDecision",
    "RestartPolicy",
    "RestoreReport",
    "ResumeReport",
    "SdNotifier",
    "StaticHaProvider",
    "Supervisor",
    "SupervisorStateFile",
    "SupervisorStatus",
    "capture",
    "health_server_from_config",
    "read_secret_file",
    "restore",
    "resume_datastore",
    "writer_for_segment",
]

# Attributes load on first use (PEP 562): the RT child process imports only the
# modules it needs (checkpoints, the demo entry point), not the health server with
# psutil and prometheus_client, which shortens a restart.
_LAZY: dict[str, str] = {
    "Checkpoint": "mxrc.ha._checkpoint",
    "CheckpointCorruptError": "mxrc.ha._checkpoint",
    "CheckpointNewerError": "mxrc.ha._checkpoint",
    "CheckpointError": "mxrc.ha._checkpoint",
    "CheckpointStore": "mxrc.ha._checkpoint",
    "CheckpointWriter": "mxrc.ha._checkpoint",
    "RestoreReport": "mxrc.ha._checkpoint",
    "ResumeReport": "mxrc.ha._checkpoint",
    "capture": "mxrc.ha._checkpoint",
    "restore": "mxrc.ha._checkpoint",
    "resume_datastore": "mxrc.ha._checkpoint",
    "writer_for_segment": "mxrc.ha._checkpoint",
    "CheckpointInfo": "mxrc.ha._health",
    "HaProvider": "mxrc.ha._health",
    "HealthMonitor": "mxrc.ha._health",
    "HealthReport": "mxrc.ha._health",
    "HealthStatus": "mxrc.ha._health",
    "HealthThresholds": "mxrc.ha._health",
    "StaticHaProvider": "mxrc.ha._health",
    "DEFAULT_BACKLOG": "mxrc.ha._http",
    "HaCollector": "mxrc.ha._http",
    "HealthServer": "mxrc.ha._http",
    "health_server_from_config": "mxrc.ha._http",
    "read_secret_file": "mxrc.ha._http",
    "RestartDecision": "mxrc.ha._policy",
    "RestartPolicy": "mxrc.ha._policy",
    "Recovery": "mxrc.ha._recovery",
    "SdNotifier": "mxrc.ha._sdnotify",
    "HaState": "mxrc.ha._state",
    "HaStateMachine": "mxrc.ha._state",
    "HaTransition": "mxrc.ha._state",
    "InvalidTransitionError": "mxrc.ha._state",
    "Supervisor": "mxrc.ha._supervisor",
    "SupervisorStateFile": "mxrc.ha._supervisor",
    "SupervisorStatus": "mxrc.ha._supervisor",
}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'mxrc.ha' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
