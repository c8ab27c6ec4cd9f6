"""The node's health HTTP server: ``/health``, ``/health/ready``, ``/health/live``,
``/health/details`` and ``/metrics``, run by the agent.

One selector loop on one thread serves every connection: sockets are
non-blocking, a request is answered once its header is complete, and a
connection that sends nothing is closed after ``idle_timeout_s``, one that
sent part of a request then is answered 408 (400 when the client half-closes
before its header ends), so slow or idle clients cannot starve the others. One
request per connection (``Connection: close``). The listen backlog is 1024
(``socketserver``'s default of 5 drops clients under load). Health reports are
computed at most every ``cache_s`` and the metrics text likewise, so a flood
of requests costs the agent little. See ``docs/health.md``.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mxrc.errors import ConfigError
from mxrc.ha._health import HaProvider, HealthMonitor, HealthReport

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from mxrc.bus import Segment
    from mxrc.config import MxrcConfig

__all__ = [
    "DEFAULT_BACKLOG",
    "HaCollector",
    "HealthServer",
    "health_server_from_config",
    "read_secret_file",
]

_log = logging.getLogger("mxrc.ha.http")

DEFAULT_BACKLOG = 1024
"""Listen backlog of the health server (capped by ``net.core.somaxconn``)."""
_MAX_HEADER = 8192
_RECV = 4096
_ROUTES = ("/health", "/health/ready", "/health/live", "/health/details", "/metrics")
_PROTECTED = frozenset({"/health/details", "/metrics"})
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    503: "Service Unavailable",
}


def read_secret_file(path: str | os.PathLike[str], *, what: str = "bearer token") -> str:
    """The secret held in ``path`` (surrounding whitespace stripped).

    Raises ConfigError naming the file when it cannot be read, is empty, is
    readable or writable by group or others (fix: ``chmod 600 FILE``), or is
    owned by someone other than this user or root (who could change it).
    """
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the {what} file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{name}: the {what} file must be a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{name}: the {what} file is accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); it holds a secret: run `chmod 600 {name}`"
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"{name}: the {what} file is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.geteuid()}) or root, who could change it: run `chown {os.geteuid()} {name}`"
        )
    try:
        with open(name, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read the {what} file: {exc}") from None
    if not secret or any(c.isspace() for c in secret):
        raise ConfigError(
            f"{name}: the {what} file must hold one token (no spaces), found "
            f"{'nothing' if not secret else 'whitespace inside'}"
        )
    return secret


def token_file_path(config: MxrcConfig) -> Path | None:
    """``health_server.bearer_token_file`` (relative: to the config directory), or None."""
    name = config.failover_policy.health_server.bearer_token_file
    if name is None:
        return None
    path = Path(name)
    if not path.is_absolute() and config.directory is not None:
        path = Path(config.directory) / path
    return path


class HaCollector:
    """``prometheus_client`` collector of the HA series: ``mxrc_process_health_status``
    (0 STOPPED 1 STARTING 2 HEALTHY 3 DEGRADED 4 UNHEALTHY 5 STOPPING),
    ``mxrc_process_restart_count_total`` and, when a checkpoint exists,
    ``mxrc_failover_checkpoint_age_seconds`` and ``mxrc_failover_checkpoint_size_bytes``.
    Label ``process`` (default ``"rt"``, as :class:`~mxrc.metrics.RtCollector`)."""

    def __init__(self, server: HealthServer, *, process: str = "rt") -> None:
        self._server = server
        self._process = process

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        report = self._server.report()
        label = [self._process]
        status = GaugeMetricFamily(
            "mxrc_process_health_status",
            "Health of the RT process: 0 STOPPED, 1 STARTING, 2 HEALTHY, 3 DEGRADED, "
            "4 UNHEALTHY, 5 STOPPING",
            labels=["process"],
        )
        status.add_metric(label, report.status.code)
        yield status
        restarts = CounterMetricFamily(
            "mxrc_process_restart_count",
            "RT process restarts by the supervisor",
            labels=["process"],
        )
        restarts.add_metric(label, report.restart_count)
        yield restarts
        ckpt = report.checkpoint
        age = GaugeMetricFamily(
            "mxrc_failover_checkpoint_age_seconds",
            "Age of the newest checkpoint, seconds",
            labels=["process"],
        )
        size = GaugeMetricFamily(
            "mxrc_failover_checkpoint_size_bytes",
            "Size of the newest checkpoint, bytes",
            labels=["process"],
        )
        if ckpt is not None:
            age.add_metric(label, max(0.0, time.time() - ckpt.created_unix))
            size.add_metric(label, ckpt.size_bytes)
        yield age
        yield size


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None


@dataclass(frozen=True)
class _Response:
    code: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(code: int, body: object, *headers: tuple[str, str]) -> _Response:
    return _Response(code, json.dumps(body, separators=(",", ":")).encode(), headers=headers)


class HealthServer:
    """Serves the health endpoints of ``monitor`` (a :class:`~mxrc.ha.HealthMonitor`).

    ``host``/``port``: where to listen (default 127.0.0.1:8080; port 0 = any
    free port, see :attr:`port`). ``registry``: the ``prometheus_client``
    registry rendered by ``/metrics`` (default: a new one with an
    :class:`~mxrc.metrics.RtCollector` over the monitor's segment, an
    :class:`HaCollector`, and a :class:`~mxrc.metrics.BusCollector` over
    ``bus`` when given). ``token``: a bearer token required on
    ``/health/details`` and ``/metrics`` (401 without it). ``idle_timeout_s``:
    a connection whose request is not complete by then is closed (answered 408
    when it sent part of one).
    ``sample_interval_s``: how often the miss-rate window is fed between
    requests (default ``failover_policy.json``
    ``rt.health_check_interval_ms``). ``cache_s``: reuse of a health report
    or metrics text between requests.

    :meth:`start` binds (OSError when the port is taken) and starts the
    thread; :meth:`close` stops it. Use as a context manager. :attr:`failure`
    says when the serving thread died (the agent then exits to be restarted).
    """

    def __init__(
        self,
        monitor: HealthMonitor,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        config: MxrcConfig | None = None,
        registry: CollectorRegistry | None = None,
        bus: object | None = None,
        token: str | None = None,
        idle_timeout_s: float = 5.0,
        sample_interval_s: float | None = None,
        cache_s: float = 0.05,
        max_connections: int = 4096,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        if not isinstance(monitor, HealthMonitor):
            raise TypeError(
                f"monitor must be an mxrc.ha.HealthMonitor, got {type(monitor).__name__}"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"port must be an int within 0..65535 (0 = any free port), got {port!r}"
            )
        if token is not None and (
            not isinstance(token, str) or not token or any(c.isspace() for c in token)
        ):
            raise ValueError("token must be a non-empty string without whitespace, or None")
        for what, value in (("idle_timeout_s", idle_timeout_s), ("cache_s", cache_s)):
            if not value >= 0 or (what == "idle_timeout_s" and not value > 0):
                raise ValueError(f"{what} must be > 0 seconds, got {value!r}")
        if sample_interval_s is None:
            sample_interval_s = (
                1.0 if config is None else config.failover_policy.rt.health_check_interval_ms / 1e3
            )
        if not sample_interval_s > 0:
            raise ValueError(f"sample_interval_s must be > 0 seconds, got {sample_interval_s!r}")
        if backlog < 1 or max_connections < 1:
            raise ValueError("backlog and max_connections must be >= 1")
        self.monitor = monitor
        self._host = host
        self._port = port
        self._token = token
        self._idle_timeout_s = float(idle_timeout_s)
        self._sample_interval_s = float(sample_interval_s)
        self._cache_s = float(cache_s)
        self._max_connections = max_connections
        self._backlog = backlog
        if registry is None:
            from prometheus_client import CollectorRegistry

            from mxrc.metrics import BusCollector, RtCollector

            registry = CollectorRegistry(auto_describe=False)
            registry.register(RtCollector(monitor.segment, config=config))
            registry.register(HaCollector(self))
            if bus is not None:
                registry.register(BusCollector(bus, process="agent"))
        self.registry = registry
        self._lock = threading.Lock()
        self._report: tuple[float, HealthReport] | None = None
        self._metrics: tuple[float, bytes] | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._conns: dict[int, _Conn] = {}
        self.requests = 0
        """Requests answered (any status)."""
        self.errors = 0
        """Requests whose handler raised (answered 503 with the error)."""
        self._accept_errors = 0
        self._loop_error: str | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (after :meth:`start`)."""
        if self._sock is None:
            return (self._host, self._port)
        host, port = self._sock.getsockname()[:2]
        return (str(host), int(port))

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def token_required(self) -> bool:
        return self._token is not None

    @property
    def failure(self) -> str | None:
        """Why the serving thread ended although :meth:`close` was not called (nothing is
        served any more); None while it serves, before :meth:`start` and after :meth:`close`."""
        thread = self._thread
        if thread is None or thread.is_alive() or self._stop.is_set():
            return None
        return (
            f"the health server's serving loop on {self.url} failed "
            f"({self._loop_error or 'its thread ended'}); nothing serves /health and /metrics"
        )

    def start(self) -> HealthServer:
        """Bind, listen and start serving on a thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("the health server was already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self._host, self._port))
            except OSError as exc:
                hint = (
                    " (in use: another instance's agent? set MXRC_HTTP_PORT)"
                    if (exc.errno == errno.EADDRINUSE)
                    else ""
                )
                raise OSError(
                    exc.errno,
                    f"health server cannot bind {self._host}:{self._port}: {exc.strerror}{hint}",
                ) from None
            sock.listen(self._backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="mxrc-health-http", daemon=True)
        self._thread.start()
        _log.info("health server listening on %s", self.url)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and close every connection. Idempotent."""
        self._stop.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            for c in list(self._conns.values()):
                with contextlib.suppress(OSError):
                    c.sock.close()
            self._conns.clear()
            if self._sock is not None:
                self._sock.close()
            for s in self._wake or ():
                s.close()

    def __enter__(self) -> HealthServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ reports

    def report(self) -> HealthReport:
        """The current health report (reused for ``cache_s``)."""
        now = time.monotonic()
        with self._lock:
            if self._report is not None and now - self._report[0] < self._cache_s:
                return self._report[1]
        report = self.monitor.evaluate()
        with self._lock:
            self._report = (time.monotonic(), report)
        return report

    def _metrics_text(self) -> bytes:
        from prometheus_client import generate_latest

        now = time.monotonic()
        with self._lock:
            if self._metrics is not None and now - self._metrics[0] < self._cache_s:
                return self._metrics[1]
        text = generate_latest(self.registry)
        with self._lock:
            self._metrics = (time.monotonic(), text)
        return text

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        assert self._sock is not None and self._wake is not None
        wake_r = self._wake[0]
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(wake_r, selectors.EVENT_READ, None)
        next_sample = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + self._sample_interval_s
                    try:
                        self.monitor.sample()
                    except Exception:
                        _log.exception("health server: sampling the segment failed")
                timeout = max(0.0, min(next_sample - now, 0.25))
                for key, mask in sel.select(timeout):
                    if key.fileobj is self._sock:
                        self._accept(sel)
                    elif key.fileobj is wake_r:
                        with contextlib.suppress(OSError):
                            wake_r.recv(64)
                    else:
                        conn = self._conns.get(key.fd)
                        if conn is None:
                            continue
                        if mask & selectors.EVENT_READ:
                            self._read(sel, conn)
                        elif mask & selectors.EVENT_WRITE:
                            self._write(sel, conn)
                self._expire(sel, time.monotonic())
        except Exception as exc:
            self._loop_error = f"{type(exc).__name__}: {exc}"
            _log.exception("health server: the serving loop failed; it stops")
        finally:
            for c in list(self._conns.values()):
                self._drop(sel, c)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._sock is not None
        for _ in range(256):
            try:
                sock, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: keep serving the others
                self._accept_errors += 1
                if self._accept_errors <= 3 or self._accept_errors % 1000 == 0:
                    _log.warning(
                        "health server: accept failed (%d times): %s", self._accept_errors, exc
                    )
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed_oldest(sel)
                return
            if len(self._conns) >= self._max_connections:
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + self._idle_timeout_s)
            self._conns[sock.fileno()] = conn
            sel.register(sock, selectors.EVENT_READ, None)

    def _shed_oldest(self, sel: selectors.BaseSelector) -> None:
        """Out of file descriptors: close the connection idle the longest (still reading)."""
        waiting = [c for c in self._conns.values() if c.out is None]
        if waiting:
            self._drop(sel, min(waiting, key=lambda c: c.deadline))

    def _drop(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(conn.sock)
            self._conns.pop(fd, None)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            if conn.out is None and conn.inbuf:  # part of a request: say what is missing
                self._respond(sel, conn, _incomplete(408, conn, f"in {self._idle_timeout_s:g} s"))
            else:  # sent nothing, or a response the client does not read: close silently
                self._drop(sel, conn)

    def _read(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, conn)
            return
        if not data:
            if conn.inbuf:  # half-closed in the middle of its header: answer, then close
                self._respond(sel, conn, _incomplete(400, conn, "before the client closed"))
            else:
                self._drop(sel, conn)
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > _MAX_HEADER:
                self._respond(
                    sel, conn, _bad_request(f"request header larger than {_MAX_HEADER} bytes")
                )
            return
        try:
            response = self._handle(bytes(conn.inbuf[:end]))
        except Exception as exc:
            self.errors += 1
            _log.exception("health server: handling a request failed")
            response = _json(
                503, {"error": "Service Unavailable", "message": f"{type(exc).__name__}: {exc}"}
            )
        self._respond(sel, conn, response)

    def _respond(self, sel: selectors.BaseSelector, conn: _Conn, r: _Response) -> None:
        self.requests += 1
        head = [
            f"HTTP/1.1 {r.code} {_REASONS.get(r.code, 'Error')}",
            f"Content-Type: {r.content_type}",
            f"Content-Length: {len(r.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in r.headers),
        ]
        conn.out = memoryview(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body)
        conn.deadline = time.monotonic() + self._idle_timeout_s
        sel.modify(conn.sock, selectors.EVENT_WRITE, None)
        self._write(sel, conn)

    def _write(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self._drop(sel, conn)

    # ------------------------------------------------------------ requests

    def _handle(self, raw: bytes) -> _Response:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return _bad_request("undecodable request")
        lines = text.replace("\r\n", "\n").split("\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return _bad_request("request line must be METHOD TARGET HTTP/1.x")
        method, target, version = parts
        if not method or not set(method) <= _TOKEN_CHARS:
            return _bad_request("invalid method")
        if not version.startswith("HTTP/1.") or version not in ("HTTP/1.0", "HTTP/1.1"):
            return _bad_request(f"unsupported protocol version {version[:20]!r} (HTTP/1.x)")
        if not target.startswith("/") or any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
            return _bad_request("request target must be an absolute path")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or not set(name) <= _TOKEN_CHARS:
                return _bad_request("malformed header line")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if path not in _ROUTES:
            return _json(404, {"error": "Not Found", "path": path[:256]})
        if method != "GET":
            return _json(
                405, {"error": "Method Not Allowed", "method": method[:32]}, ("Allow", "GET")
            )
        if path in _PROTECTED and self._token is not None:
            given = headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), self._token.encode()
            ):
                return _json(
                    401,
                    {"error": "Unauthorized", "message": "a valid bearer token is required"},
                    ("WWW-Authenticate", 'Bearer realm="mxrc"'),
                )
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            return _Response(200, self._metrics_text(), CONTENT_TYPE_LATEST)
        report = self.report()
        m = self.monitor
        if path == "/health":
            return _json(200 if report.status.serving else 503, m.health_body(report))
        if path == "/health/ready":
            ready, body = m.ready_body(report)
            return _json(200 if ready else 503, body)
        if path == "/health/live":
            alive, body = m.live_body(report)
            return _json(200 if alive else 503, body)
        return _json(200, m.details_body(report))


def _bad_request(message: str) -> _Response:
    return _json(400, {"error": "Bad Request", "message": message})


def _incomplete(code: int, conn: _Conn, when: str) -> _Response:
    """400 or 408 for a request whose header did not end ``when``."""
    got = len(conn.inbuf)
    message = (
        f"incomplete request header: {got} byte{'s' if got != 1 else ''} {when}, expected "
        "a request line and headers ending with an empty line (CRLF CRLF)"
    )
    return _json(code, {"error": _REASONS[code], "message": message})


def health_server_from_config(
    segment: Segment,
    config: MxrcConfig,
    *,
    port: int | None = None,
    bus: object | None = None,
    provider: HaProvider | None = None,
) -> HealthServer:
    """A (not yet started) :class:`HealthServer` for ``segment`` as ``config`` says.

    ``failover_policy.json`` ``health_server``: ``host``, ``port`` (already
    overridden by ``MXRC_HTTP_PORT`` in a loaded config; ``port`` here beats
    both) and ``bearer_token_file`` (relative: to the config directory; read
    with :func:`read_secret_file`, ConfigError when others may read it).
    """
    hs = config.failover_policy.health_server
    path = token_file_path(config)
    token = None if path is None else read_secret_file(path)
    monitor = HealthMonitor(segment, config=config, provider=provider)
    return HealthServer(
        monitor,
        host=hs.host,
        port=hs.port if port is None else port,
        config=config,
        bus=bus,
        token=token,
    )
