"""mxrc: production-ready real-time control loops on Linux.

The public API: errors, configuration, host capabilities, and the real-time
system layer (:mod:`mxrc.rt`). The compiled core (``mxrc._core``) is private.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Run from a source checkout after `pip install .` (README's first command),
# `import mxrc` finds the checkout first (the current directory leads
# sys.path), and the checkout has no compiled core, only its stubs in
# mxrc/_core/. Extending __path__ with the installed copy lets `mxrc._core`
# come from there: a compiled module wins over a stub-only directory.
# mxrc._native refuses an installed core of another version.
__path__ = pkgutil.extend_path(__path__, __name__)

if TYPE_CHECKING:
    from mxrc import bus, rt
    from mxrc._capabilities import Capabilities, Capability, capabilities
    from mxrc._include import get_include
    from mxrc.agent import Agent
    from mxrc.config import MxrcConfig, effective_cpu_cores, load_config, validate_config
    from mxrc.errors import (
        BodyError,
        ConfigError,
        CpuNotAllowedError,
        MxrcError,
        NotNativeError,
        PrivilegeError,
        SegmentError,
        SegmentInUseError,
        ThreadSetupError,
        UnsupportedError,
    )
    from mxrc.rt import (
        CycleStats,
        Executive,
        NativeBody,
        PerfMonitor,
        PerfReport,
        RtState,
        SchedPolicy,
        ThreadSetup,
        apply_thread_setup,
    )

__all__ = [
    "Agent",
    "BodyError",
    "Capabilities",
    "Capability",
    "ConfigError",
    "CpuNotAllowedError",
    "CycleStats",
    "Executive",
    "MxrcConfig",
    "MxrcError",
    "NativeBody",
    "NotNativeError",
    "PerfMonitor",
    "PerfReport",
    "PrivilegeError",
    "RtState",
    "SchedPolicy",
    "SegmentError",
    "SegmentInUseError",
    "ThreadSetup",
    "ThreadSetupError",
    "UnsupportedError",
    "__version__",
    "apply_thread_setup",
    "bus",
    "capabilities",
    "effective_cpu_cores",
    "get_include",
    "load_config",
    "rt",
    "validate_config",
]

# Attributes load on first use (PEP 562): `import mxrc` stays cheap (no numpy,
# no compiled core, no jsonschema), which matters because pytest imports the
# package for its `mxrc` plugin in every session of an environment that has it.
_LAZY: dict[str, tuple[str, str | None]] = {
    "Agent": ("mxrc.agent", "Agent"),
    "bus": ("mxrc.bus", None),
    "rt": ("mxrc.rt", None),
    "Capabilities": ("mxrc._capabilities", "Capabilities"),
    "Capability": ("mxrc._capabilities", "Capability"),
    "capabilities": ("mxrc._capabilities", "capabilities"),
    "get_include": ("mxrc._include", "get_include"),
    **{
        name: ("mxrc.config", name)
        for name in ("MxrcConfig", "effective_cpu_cores", "load_config", "validate_config")
    },
    **{
        name: ("mxrc.errors", name)
        for name in (
            "BodyError",
            "ConfigError",
            "CpuNotAllowedError",
            "MxrcError",
            "NotNativeError",
            "PrivilegeError",
            "SegmentError",
            "SegmentInUseError",
            "ThreadSetupError",
            "UnsupportedError",
        )
    },
    **{
        name: ("mxrc.rt", name)
        for name in (
            "CycleStats",
            "Executive",
            "NativeBody",
            "PerfMonitor",
            "PerfReport",
            "RtState",
            "SchedPolicy",
            "ThreadSetup",
            "apply_thread_setup",
        )
    },
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'mxrc' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
