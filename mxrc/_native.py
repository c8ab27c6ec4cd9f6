"""Import of the compiled core with an actionable error when it is missing."""

from __future__ import annotations

try:
    from mxrc import _core
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "mxrc's compiled core (mxrc._core) could not be imported: "
        f"{exc}. Build and install it with `python3 -m pip install .` from the "
        "source tree (needs a C++17 compiler, CMake >= 3.18 and pybind11). "
        "Importing mxrc from inside its source tree hides the installed copy: "
        "run from another directory."
    ) from exc

__all__ = ["_core"]
