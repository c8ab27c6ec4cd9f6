"""Helpers shared by the system-layer tests (importable: pytest's pythonpath has tests/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import TypeVar

from mxrc._native import _core

__all__ = ["in_thread", "run_child", "run_python"]

T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    """Run fn on a fresh thread and return its result or raise its exception.

    Affinity, scheduling and memory policy are per thread: a dedicated thread
    keeps the test runner's own thread untouched. The thread resets its memory
    policy and scheduling before it ends.
    """
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            _core.numa.set_mempolicy(_core.numa.MPOL_DEFAULT, [])
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python code (dedented) in a fresh interpreter outside the source tree."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
    )


def run_child(code: str, *, with_stderr: bool = False) -> dict[str, object]:
    """Run Python code in a fresh interpreter; its last stdout line is JSON, returned
    as a dict (plus the child's stderr under "stderr" when asked)."""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    if with_stderr:
        result["stderr"] = proc.stderr
    return result
