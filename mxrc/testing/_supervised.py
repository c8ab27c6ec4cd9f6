"""``mxrc supervise`` in a child process, for integration tests of an application under
supervision: start it, wait for its log lines, kill its RT process, stop it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["SupervisedProcess"]

# Variables that would make the child talk to *this* process's service manager.
_SERVICE_MANAGER_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SupervisedProcess:
    """``python -m mxrc supervise`` in a child process and the lines of its stderr.

    ::

        from mxrc.testing import SupervisedProcess

        with SupervisedProcess("config/", instance="it-1", entrypoint="myapp:run") as sup:
            sup.wait_line(r"ready: RT process")
            os.kill(sup.rt_pid(), signal.SIGKILL)
            sup.wait_line(r"HA state RECOVERY_IN_PROGRESS -> NORMAL")

    ``config_dir`` is passed as ``--config`` (None: the embedded defaults),
    ``entrypoint`` after ``--``, ``args`` are more ``mxrc supervise`` options
    (``--no-agent``, ``--checkpoint-dir DIR``). ``env`` is the child's whole
    environment; by default this one without ``NOTIFY_SOCKET`` and ``WATCHDOG_*``,
    so a test run under systemd does not notify it. The child's stdout is discarded.

    A reader thread collects stderr; :attr:`lines` holds the lines read so far
    (:meth:`wait_line` and :meth:`drain` add to it). :meth:`stop` (also on leaving a
    ``with`` block) sends SIGTERM for an orderly shutdown and SIGKILL after ``timeout``.
    """

    def __init__(
        self,
        config_dir: str | os.PathLike[str] | None = None,
        *,
        instance: str,
        entrypoint: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] = "/",
    ) -> None:
        if env is None:
            env = {k: v for k, v in os.environ.items() if k not in _SERVICE_MANAGER_VARS}
        argv = [sys.executable, "-m", "mxrc", "supervise", "--instance", instance]
        if config_dir is not None:
            argv += ["--config", str(Path(config_dir))]
        argv += args
        if entrypoint is not None:
            argv += ["--", entrypoint]
        self.instance = instance
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=dict(env),
        )
        self.lines: list[str] = []
        """Its stderr lines read so far, without the newline."""
        self._q: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, name=f"mxrc-supervised-{instance}", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._q.put(line.rstrip("\n"))

    def drain(self) -> list[str]:
        """Add the lines read meanwhile to :attr:`lines`; return :attr:`lines`."""
        while True:
            try:
                self.lines.append(self._q.get_nowait())
            except queue.Empty:
                return self.lines

    def wait_line(self, pattern: str, timeout: float = 60.0, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` on that ``re.search`` finds ``pattern`` in.

        Raises :class:`AssertionError` naming the pattern and showing the last lines
        when none came within ``timeout`` seconds or the supervisor exited first.
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.lines):
                m = rx.search(self.lines[i])
                if m:
                    return m
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(self._missing(pattern, f"within {timeout:g} s"))
            try:
                self.lines.append(self._q.get(timeout=min(left, 0.1)))
            except queue.Empty:
                ended = self.proc.poll() is not None and not self._reader.is_alive()
                if ended and self._q.empty():  # exited, and every line is in
                    why = f"(it exited with {self.proc.returncode})"
                    raise AssertionError(self._missing(pattern, why)) from None

    def _missing(self, pattern: str, why: str) -> str:
        tail = "\n  ".join(self.lines[-40:]) or "(no output)"
        return f"mxrc supervise: no line matching {pattern!r} {why}; its last lines:\n  {tail}"

    def rt_pid(self, start: int = 0) -> int:
        """The pid of the first RT process started from line ``start`` on (waits for it)."""
        return int(self.wait_line(r"RT process started \(pid (\d+)", start=start).group(1))

    def agent_pid(self, start: int = 0) -> int:
        """The pid of the first agent up (beating) from line ``start`` on (waits for it)."""
        return int(self.wait_line(r"agent started \(pid (\d+)", start=start).group(1))

    @property
    def returncode(self) -> int | None:
        """Its exit code once it has exited (negative: killed by that signal), else None."""
        return self.proc.poll()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (orderly: RT process, agent, segment), SIGKILL after ``timeout`` s;
        the exit code. Collects the remaining lines. Safe to call more than once."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.drain()
        return code

    def __enter__(self) -> SupervisedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
