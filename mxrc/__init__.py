"""mxrc: production-ready real-time control loops on Linux.

The public API: errors, configuration, host capabilities, and the real-time
system layer (:mod:`mxrc.rt`). The compiled core (``mxrc._core``) is private.
"""

from __future__ import annotations

from mxrc import rt
from mxrc._capabilities import Capabilities, Capability, capabilities
from mxrc.config import MxrcConfig, effective_cpu_cores, load_config, validate_config
from mxrc.errors import (
    ConfigError,
    CpuNotAllowedError,
    MxrcError,
    PrivilegeError,
    ThreadSetupError,
    UnsupportedError,
)
from mxrc.rt import SchedPolicy, ThreadSetup, apply_thread_setup

__version__ = "0.1.0"

__all__ = [
    "Capabilities",
    "Capability",
    "ConfigError",
    "CpuNotAllowedError",
    "MxrcConfig",
    "MxrcError",
    "PrivilegeError",
    "SchedPolicy",
    "ThreadSetup",
    "ThreadSetupError",
    "UnsupportedError",
    "__version__",
    "apply_thread_setup",
    "capabilities",
    "effective_cpu_cores",
    "load_config",
    "rt",
    "validate_config",
]
