"""Import of the compiled core with an actionable error when it is missing."""

from __future__ import annotations

_HOW_TO_BUILD = (
    "Build and install it with `python3 -m pip install .` from the source tree "
    "(needs a C++17 compiler, CMake >= 3.18 and pybind11). Importing mxrc from "
    "inside its source tree hides the installed copy: run from another directory."
)

try:
    from mxrc import _core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        f"mxrc's compiled core (mxrc._core) could not be imported: {exc}. " + _HOW_TO_BUILD
    ) from exc

# In a source tree without a build, mxrc/_core/ (the .pyi stubs) imports as an
# empty namespace package: refuse it here rather than fail later on a missing name.
if getattr(_core, "__file__", None) is None:  # pragma: no cover - broken installs only
    raise ImportError(
        "mxrc's compiled core (mxrc._core) is missing: found only the stub directory "
        f"{list(getattr(_core, '__path__', []))}. " + _HOW_TO_BUILD
    )

# An installed core found through mxrc.__path__ (a source checkout run after
# `pip install .`) must belong to the same release as the Python code.
_core_version = getattr(_core, "__version__", None)
if _core_version != __import__("mxrc").__version__:  # pragma: no cover - mixed installs only
    raise ImportError(
        f"mxrc's compiled core {getattr(_core, '__file__', '?')} is version {_core_version}, "
        f"but the Python package is {__import__('mxrc').__version__}. " + _HOW_TO_BUILD
    )

__all__ = ["_core"]
