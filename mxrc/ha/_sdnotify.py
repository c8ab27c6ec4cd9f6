"""systemd's notify protocol, written by hand (``sd_notify(3)``).

One datagram per call on an ``AF_UNIX`` ``SOCK_DGRAM`` socket to the address
in ``$NOTIFY_SOCKET``: a path, or an abstract address written ``@name``
(sent as a leading NUL byte). Messages are newline-separated ``KEY=VALUE``
lines: ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``STOPPING=1``.

:class:`SdNotifier` reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
``WATCHDOG_PID`` once and, by default, removes them from ``os.environ`` so
that child processes (the RT process, the agent) never notify systemd in the
supervisor's name (``NotifyAccess=main`` would ignore them anyway, but a child
sending ``WATCHDOG=1`` must not be possible at all). Without ``NOTIFY_SOCKET``
every call is a no-op returning False (not started by systemd).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

__all__ = ["NOTIFY_ENV", "SdNotifier", "child_environment", "parse_notify_address"]

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""Variables systemd sets for the main process that children must not inherit."""


def parse_notify_address(value: str) -> str:
    """The ``socket.sendto`` address for a ``$NOTIFY_SOCKET`` value.

    ``@name`` → abstract ``"\\0name"``; an absolute path as is. Raises
    ValueError naming the value otherwise (``vsock:`` addresses are not supported).
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(
        f"NOTIFY_SOCKET={value!r} is not supported: expected an absolute socket path or an "
        "abstract address '@name'"
    )


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) without the notify variables."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k not in NOTIFY_ENV}


class SdNotifier:
    """Sends notify messages to systemd (or to any datagram socket, in tests).

    ``env``: where to read the variables (default ``os.environ``); with
    ``unset_environment`` they are removed from it. The watchdog interval is
    None unless ``WATCHDOG_USEC`` is set (and ``WATCHDOG_PID``, when set, is
    this process).
    """

    def __init__(
        self,
        env: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = True,
    ) -> None:
        source: MutableMapping[str, str] = os.environ if env is None else env
        raw = source.get("NOTIFY_SOCKET") or None
        usec = source.get("WATCHDOG_USEC")
        wpid = source.get("WATCHDOG_PID")
        if unset_environment:
            for key in NOTIFY_ENV:
                source.pop(key, None)
        self.address: str | None = None
        self.error: str | None = None
        """Why the configuration was ignored (a bad NOTIFY_SOCKET or WATCHDOG_USEC)."""
        if raw is not None:
            try:
                self.address = parse_notify_address(raw)
            except ValueError as exc:
                self.error = str(exc)
        self.watchdog_usec: int | None = None
        if usec is not None:
            try:
                value = int(usec)
                if value <= 0:
                    raise ValueError
            except ValueError:
                self.error = f"WATCHDOG_USEC={usec!r} is not a positive integer; watchdog off"
            else:
                if wpid is None or wpid.strip() == str(os.getpid()):
                    self.watchdog_usec = value
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC`` (None = off)."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE``) as one datagram; False when not configured
        or the socket is gone (systemd restarted: the next call tries again)."""
        if self.address is None or not lines:
            return False
        for line in lines:
            if "=" not in line or "\n" in line:
                raise ValueError(f"notify line {line!r} is not one KEY=VALUE line")
        payload = "\n".join(lines).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self.address)
        except OSError:
            self.close()  # e.g. ENOENT/ECONNREFUSED while systemd restarts: retry next call
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (after the state is restored), with an optional ``STATUS=``."""
        return self.notify("READY=1", *self._status(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the supervisor is alive and within its restart policy."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """``STATUS=text`` (one line; newlines become spaces)."""
        return self.notify(*self._status(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (an orderly shutdown began)."""
        return self.notify("STOPPING=1", *self._status(status))

    @staticmethod
    def _status(text: str | None) -> list[str]:
        if text is None:
            return []
        return ["STATUS=" + " ".join(text.splitlines())]

    def close(self) -> None:
        """Close the sending socket (a later call opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return (
            f"SdNotifier(address={self.address!r}, watchdog_interval_s={self.watchdog_interval_s})"
        )
