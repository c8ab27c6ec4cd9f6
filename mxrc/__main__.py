"""``python -m mxrc``: the ``mxrc`` command."""

from __future__ import annotations

from mxrc.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
