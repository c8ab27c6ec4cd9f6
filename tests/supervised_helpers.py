"""``mxrc supervise`` in a child process for the tests: its stderr lines, a real notify
socket, a fast restart policy. The fixtures ``listener`` and ``supervised`` are
registered for every test module by conftest.py."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import mxrc_env

from mxrc.testing import SupervisedProcess


class NotifyListener:
    """A real AF_UNIX datagram socket (abstract or path) collecting notify messages."""

    def __init__(self, path: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"mxrc-test-notify-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self.sock.bind(path)
            self.env_value = path
        self.messages: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            self.messages.put((time.monotonic(), data.decode()))

    def drain(self) -> list[tuple[float, str]]:
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return self.seen

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        for _, msg in self.drain():
            if predicate(msg):
                return msg
        while time.monotonic() < deadline:
            try:
                item = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(item)
            if predicate(item[1]):
                return item[1]
        raise AssertionError(f"no such notify message within {timeout} s; got {self.seen}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    lst = NotifyListener()
    yield lst
    lst.close()


FAST_POLICY = {
    "health_check_interval_ms": 100,
    "health_check_timeout_ms": 50,
    "failure_threshold": 3,
    "restart_delay_ms": 50,
    "max_restart_count": 3,
    "restart_window_sec": 60,
}


class Supervised(SupervisedProcess):
    """:class:`~mxrc.testing.SupervisedProcess` with the tests' environment: a real
    notify socket and watchdog, any free health port, FIFO priority 40."""

    def __init__(
        self,
        instance: str,
        config_dir: Path,
        notify: NotifyListener,
        *extra: str,
        pythonpath: str | None = None,
        watchdog_usec: int = 400_000,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = mxrc_env()
        env.setdefault("MXRC_HTTP_PORT", "0")  # the agent's health server: any free port
        env.update(extra_env or {})
        env["NOTIFY_SOCKET"] = notify.env_value
        env["WATCHDOG_USEC"] = str(watchdog_usec)
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        super().__init__(config_dir, instance=instance, args=extra, env=env)


TOLERANT_PERF: dict[str, Any] = {"thresholds": {"max_deadline_miss_rate": 0.2}}
"""Tests about other things: a few misses of this VM (1 in 10 000 is the default limit)
must not put the node in DEGRADED."""


def write_config(
    path: Path,
    *,
    perf: dict[str, Any] | None = None,
    health_server: dict[str, Any] | None = None,
    **policy: object,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rt = dict(FAST_POLICY)
    rt.update(policy)
    failover: dict[str, Any] = {"rt": rt}
    if health_server is not None:
        failover["health_server"] = health_server
    (path / "failover_policy.json").write_text(json.dumps(failover))
    (path / "perf_monitor.json").write_text(json.dumps({"rt": perf or TOLERANT_PERF}))
    return path


@pytest.fixture
def supervised(
    instance: str, tmp_path: Path, listener: NotifyListener
) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(
        *extra: str,
        pythonpath: str | None = None,
        env: dict[str, str] | None = None,
        perf: dict[str, Any] | None = None,
        **policy: object,
    ) -> Supervised:
        cfg = write_config(tmp_path / "cfg", perf=perf, **policy)
        sup = Supervised(instance, cfg, listener, *extra, pythonpath=pythonpath, extra_env=env)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.stop()
