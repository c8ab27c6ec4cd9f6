"""Helpers shared by the system-layer tests (importable: pytest's pythonpath has tests/)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from mxrc._native import _core

__all__ = [
    "child_ready",
    "cli_main",
    "in_thread",
    "mxrc_env",
    "require_tool",
    "run_child",
    "run_mxrc",
    "run_python",
    "small_segment",
    "spawn_mxrc",
    "spawn_python",
]

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


def mxrc_env() -> dict[str, str]:
    """This environment without MXRC_* variables, FIFO priority 40 (tests stay <= 50)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXRC_")}
    env["MXRC_RT_PRIORITY"] = "40"
    return env


def run_mxrc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m mxrc ARGS`` in another process (outside the source tree, :func:`mxrc_env`)."""
    return subprocess.run(
        [sys.executable, "-m", "mxrc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        env=mxrc_env(),
        check=False,
    )


def spawn_mxrc(*args: str) -> subprocess.Popen[str]:
    """``python -m mxrc ARGS`` started in another process (output piped, :func:`mxrc_env`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mxrc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env=mxrc_env(),
    )


def spawn_python(code: str) -> subprocess.Popen[str]:
    """A child Python running ``code`` (dedented); pipes for stdin, stdout and stderr.

    The usual protocol: the child prints one JSON line when ready (:func:`child_ready`),
    then waits for its stdin to close.
    """
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def child_ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The JSON line a :func:`spawn_python` child prints when ready (its stderr if it died)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        raise AssertionError(err)
    result: dict[str, Any] = json.loads(line)
    return result


def small_segment(instance: str, **options: int) -> Any:
    """A segment with two stats slots and tiny rings (fast to create, easy to fill)."""
    from mxrc.bus import Segment

    sizes = {
        "max_stats": 2,
        "log_ring_capacity": 16,
        "span_ring_capacity": 16,
        "event_ring_capacity": 16,
        "critical_ring_capacity": 4,
        "command_ring_capacity": 16,
        "datastore_bytes": 1024,
        "datastore_slots": 16,
    }
    sizes.update(options)
    return Segment.create(instance, **sizes)


def require_tool(name: str, package: str) -> str:
    """The path of executable ``name``; skips the test without it, fails under CI
    (``.ci/run`` installs the Debian ``package`` that has it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs it (Debian package {package})")
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return path


def cli_main(*argv: str) -> tuple[int, str, str]:
    """``mxrc ARGV`` in this process: (exit code, stdout, stderr)."""
    from mxrc import cli

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = cli.main(list(argv))
    finally:
        sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.005) -> bool:
    """Poll ``cond()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
