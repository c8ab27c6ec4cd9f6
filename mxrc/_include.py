"""Where the C header and Cython declarations of the native-body ABI live."""

from __future__ import annotations

from pathlib import Path

__all__ = ["get_include"]


def get_include() -> str:
    """The directory holding ``mxrc.h`` and ``mxrc.pxd`` (the C ABI of native cycle bodies).

    Pass it as ``include_dirs`` to a C compiler (cffi ``set_source``,
    setuptools ``Extension``) and as ``include_path`` to Cython.
    """
    return str(Path(__file__).resolve().parent / "include")
