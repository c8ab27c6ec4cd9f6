"""High availability: health status and the health HTTP server (``docs/health.md``).

Supervisor, HA state machine, sd_notify and checkpoints live in this package too
(their modules add their exports here).
"""

from __future__ import annotations

from mxrc.ha._checkpoint import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
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
from mxrc.ha._sdnotify import SdNotifier
from mxrc.ha._state import HaState, HaStateMachine, HaTransition, InvalidTransitionError
from mxrc.ha._supervisor import (
    Supervisor,
    SupervisorStateFile,
    SupervisorStatus,
    demo_entrypoint,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointInfo",
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
    "demo_entrypoint",
    "health_server_from_config",
    "read_secret_file",
    "restore",
    "resume_datastore",
    "writer_for_segment",
]
