"""W3C trace context for mxrc: headers, the 25-byte RT carrier, and the current context.

- :class:`TraceContext`: trace id, span id, W3C trace flags and ``tracestate``;
  ``traceparent`` parse/format (:func:`parse_traceparent`) and the 25-byte
  binary carrier of the RT path (:meth:`TraceContext.to_carrier`,
  :meth:`TraceContext.from_carrier`).
- :class:`TraceState` and :class:`Baggage`: the ``tracestate`` and ``baggage``
  headers (non-RT side only).
- :func:`extract` / :func:`inject`: all three headers to and from a header map.
- :func:`current`, :func:`use`, :func:`current_baggage`, :func:`use_baggage`:
  the context of the running thread or asyncio task, kept in
  ``opentelemetry.context`` when opentelemetry-api is installed (so OpenTelemetry
  spans and mxrc see the same parent) and in a :mod:`contextvars` variable
  otherwise.

Parsing is lenient by default: malformed input never raises; a malformed
``traceparent`` restarts the trace (new random ids) and every malformed header
is counted (:func:`malformed_counts`, for metrics). ``strict=True`` raises
:class:`TraceContextError` (a ``ValueError``) naming what was wrong instead.

See ``docs/trace-context.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from mxrc.errors import MxrcError

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

__all__ = [
    "BAGGAGE_MAX_BYTES",
    "BAGGAGE_MAX_MEMBERS",
    "CARRIER_SIZE",
    "FLAG_RANDOM_TRACE_ID",
    "FLAG_SAMPLED",
    "NO_CARRIER",
    "TRACESTATE_MAX_MEMBERS",
    "Baggage",
    "BaggageEntry",
    "ContextToken",
    "Propagated",
    "TraceContext",
    "TraceContextError",
    "TraceState",
    "attach",
    "attach_baggage",
    "backend",
    "carrier_of",
    "child_or_root",
    "current",
    "current_baggage",
    "current_carrier",
    "detach",
    "extract",
    "inject",
    "malformed_counts",
    "parse_traceparent",
    "reset_malformed_counts",
    "set_backend",
    "use",
    "use_baggage",
    "use_carrier",
]

CARRIER_SIZE = 25
"""Bytes of the RT-path carrier: trace id (16) + span id (8) + W3C trace flags (1).

The W3C version is implied (``00``). An all-zero trace id means "no context".
Same as ``MXRC_CARRIER_SIZE`` in ``mxrc.h``.
"""

NO_CARRIER = bytes(CARRIER_SIZE)
"""The carrier of "no trace context" (all zero)."""

FLAG_SAMPLED = 0x01
"""Trace flags bit 0: the caller may have recorded trace data."""

FLAG_RANDOM_TRACE_ID = 0x02
"""Trace flags bit 1 (W3C Trace Context Level 2): the trace id is random."""

TRACESTATE_MAX_MEMBERS = 32
BAGGAGE_MAX_MEMBERS = 180
BAGGAGE_MAX_BYTES = 8192
TRACEPARENT_MAX_LENGTH = 512
TRACESTATE_MAX_LENGTH = 8192

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_VERSION_RE = re.compile(r"[0-9a-f]{2}-")
# tracestate keys and values, W3C Trace Context (Level 1 Recommendation), as
# opentelemetry-api validates them: a simple key, or tenant@system.
_TS_KEY_RE = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
)
_TS_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
# baggage: key = RFC 7230 token; value = *baggage-octet (percent-encoded UTF-8)
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAGGAGE_VALUE_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# characters left as they are when percent-encoding a baggage value: every
# baggage-octet except "%" (quote() keeps letters, digits and "_.-~" anyway)
_BAGGAGE_SAFE = "".join(
    chr(c)
    for c in range(0x21, 0x7F)
    if chr(c) not in '"%,;\\' and not chr(c).isalnum() and chr(c) not in "_.-~"
)
_OWS = " \t"


class TraceContextError(MxrcError, ValueError):
    """A ``traceparent``, ``tracestate``, ``baggage`` or carrier is malformed (strict API)."""


# --------------------------------------------------------------------------- counters

_COUNTER_NAMES = ("traceparent", "tracestate", "baggage", "carrier")
_counts_lock = threading.Lock()
_counts: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)


def _count(what: str) -> None:
    with _counts_lock:
        _counts[what] += 1


def malformed_counts() -> dict[str, int]:
    """How many malformed inputs the lenient API met, by kind (process-wide).

    Keys: ``traceparent`` (each one restarted the trace), ``tracestate`` and
    ``baggage`` (headers of which at least one member was dropped) and
    ``carrier`` (binary carriers with a trace id but no valid span id).
    """
    with _counts_lock:
        return dict(_counts)


def reset_malformed_counts() -> None:
    """Zero the counters of :func:`malformed_counts` (tests)."""
    with _counts_lock:
        for key in _counts:
            _counts[key] = 0


# --------------------------------------------------------------------------- tracestate


def _check_ts_member(key: str, value: str) -> None:
    if not isinstance(key, str) or _TS_KEY_RE.fullmatch(key) is None:
        raise TraceContextError(
            f"tracestate key {key!r} is invalid: expected a lowercase letter then up to 255 of "
            "a-z 0-9 _ - * /, or tenant@system (tenant ≤ 241, system ≤ 14 such characters)"
        )
    if not isinstance(value, str) or _TS_VALUE_RE.fullmatch(value) is None:
        raise TraceContextError(
            f"tracestate value {value!r} of key {key!r} is invalid: expected 1 to 256 printable "
            "ASCII characters without ',' or '=', not ending in a space"
        )


class TraceState(Mapping[str, str]):
    """An immutable, ordered ``tracestate`` list: vendor key → opaque value.

    The leftmost entry is the most recent. :meth:`set` moves (or adds) an entry
    to the front, as the W3C mutation rules require; at most
    :data:`TRACESTATE_MAX_MEMBERS` entries (the oldest ones drop off).
    """

    __slots__ = ("_entries", "_index")

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        items = tuple(entries)
        if len(items) > TRACESTATE_MAX_MEMBERS:
            raise TraceContextError(
                f"tracestate has {len(items)} entries: at most {TRACESTATE_MAX_MEMBERS} allowed"
            )
        index: dict[str, str] = {}
        for key, value in items:
            _check_ts_member(key, value)
            if key in index:
                raise TraceContextError(f"tracestate key {key!r} appears twice: keys are unique")
            index[key] = value
        self._entries = items
        self._index = index

    @classmethod
    def parse(cls, header: str | Sequence[str] | None, *, strict: bool = False) -> TraceState:
        """Parse one ``tracestate`` header value, or several (combined with ``,``).

        Empty members and surrounding spaces/tabs are allowed. Lenient (default):
        invalid members are dropped, a duplicate key keeps its first (leftmost,
        most recent) entry, members past 32 and headers longer than 8192
        characters are dropped; a header that lost anything is counted in
        :func:`malformed_counts`. ``strict=True`` raises :class:`TraceContextError`.
        """
        if header is None:
            return _EMPTY_TRACESTATE
        text = header if isinstance(header, str) else ",".join(header)
        problem: str | None = None
        entries: dict[str, str] = {}
        if len(text) > TRACESTATE_MAX_LENGTH:
            problem = f"tracestate is {len(text)} characters long: at most {TRACESTATE_MAX_LENGTH}"
        else:
            for raw in text.split(","):
                member = raw.strip(_OWS)
                if not member:
                    continue
                key, sep, value = member.partition("=")
                if not sep:
                    problem = problem or f"tracestate member {member!r} has no '='"
                    continue
                try:
                    _check_ts_member(key, value)
                except TraceContextError as err:
                    problem = problem or str(err)
                    continue
                if key in entries:
                    problem = problem or f"tracestate key {key!r} appears twice"
                    continue
                if len(entries) == TRACESTATE_MAX_MEMBERS:
                    problem = problem or (
                        f"tracestate has more than {TRACESTATE_MAX_MEMBERS} entries"
                    )
                    continue
                entries[key] = value
        if problem is not None:
            if strict:
                raise TraceContextError(problem)
            _count("tracestate")
        if not entries:
            return _EMPTY_TRACESTATE
        return cls(entries.items())

    def to_header(self) -> str:
        """The ``tracestate`` header value (``""`` when empty: then send no header)."""
        return ",".join(f"{k}={v}" for k, v in self._entries)

    def set(self, key: str, value: str) -> TraceState:
        """A copy with ``key=value`` as the first (most recent) entry."""
        _check_ts_member(key, value)
        rest = [(k, v) for k, v in self._entries if k != key]
        return TraceState([(key, value), *rest[: TRACESTATE_MAX_MEMBERS - 1]])

    def delete(self, key: str) -> TraceState:
        """A copy without ``key`` (the same object when it is absent)."""
        if key not in self._index:
            return self
        return TraceState((k, v) for k, v in self._entries if k != key)

    def items_list(self) -> list[tuple[str, str]]:
        """The entries in header order."""
        return list(self._entries)

    def __getitem__(self, key: str) -> str:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TraceState):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._entries)

    def __repr__(self) -> str:
        return f"TraceState({self.to_header()!r})"


_EMPTY_TRACESTATE = TraceState()


# --------------------------------------------------------------------------- baggage


def _encode_baggage_value(value: str) -> str:
    return urllib.parse.quote(value, safe=_BAGGAGE_SAFE, encoding="utf-8", errors="strict")


def _decode_baggage_value(value: str) -> str:
    # invalid UTF-8 sequences become U+FFFD, as the W3C Baggage spec requires
    return urllib.parse.unquote(value, encoding="utf-8", errors="replace")


def _check_property(prop: tuple[str, str | None]) -> tuple[str, str | None]:
    key, value = prop
    if not isinstance(key, str) or _TOKEN_RE.fullmatch(key) is None:
        raise TraceContextError(
            f"baggage property key {key!r} is invalid: expected an RFC 7230 token "
            "(letters, digits and !#$%&'*+-.^_`|~)"
        )
    if value is not None and (
        not isinstance(value, str) or _BAGGAGE_VALUE_RE.fullmatch(value) is None
    ):
        raise TraceContextError(
            f"baggage property value {value!r} of {key!r} is invalid: expected printable "
            "ASCII without spaces, '\"', ',', ';' or '\\' (percent-encode the rest)"
        )
    return (key, value)


@dataclass(frozen=True, slots=True)
class BaggageEntry:
    """One baggage list-member: the decoded value and its properties.

    ``properties`` are kept exactly as received (their meaning is opaque to the
    W3C spec): ``(key, value)`` pairs, ``value`` ``None`` for a bare key.
    """

    value: str
    properties: tuple[tuple[str, str | None], ...] = ()

    def to_member(self, key: str) -> str:
        text = f"{key}={_encode_baggage_value(self.value)}"
        for pkey, pvalue in self.properties:
            text += f";{pkey}" if pvalue is None else f";{pkey}={pvalue}"
        return text


class Baggage(Mapping[str, str]):
    """Immutable W3C baggage: key → decoded value, with per-entry properties kept.

    Values are any Unicode text; they are percent-encoded (UTF-8) on the wire.
    Keys are RFC 7230 tokens. At most :data:`BAGGAGE_MAX_MEMBERS` entries.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, str | BaggageEntry] | None = None) -> None:
        checked: dict[str, BaggageEntry] = {}
        for key, value in (entries or {}).items():
            checked[key] = self._checked(key, value)
        if len(checked) > BAGGAGE_MAX_MEMBERS:
            raise TraceContextError(
                f"baggage has {len(checked)} entries: at most {BAGGAGE_MAX_MEMBERS} allowed"
            )
        self._entries = checked

    @staticmethod
    def _checked(key: str, value: str | BaggageEntry) -> BaggageEntry:
        if not isinstance(key, str) or _TOKEN_RE.fullmatch(key) is None:
            raise TraceContextError(
                f"baggage key {key!r} is invalid: expected an RFC 7230 token "
                "(letters, digits and !#$%&'*+-.^_`|~)"
            )
        if isinstance(value, str):
            return BaggageEntry(value)
        if not isinstance(value, BaggageEntry) or not isinstance(value.value, str):
            raise TraceContextError(
                f"baggage value of {key!r} must be a str or a BaggageEntry, "
                f"not {type(value).__name__}"
            )
        return BaggageEntry(value.value, tuple(_check_property(p) for p in value.properties))

    @classmethod
    def parse(cls, header: str | Sequence[str] | None, *, strict: bool = False) -> Baggage:
        """Parse one ``baggage`` header value, or several (combined with ``,``).

        Values are percent-decoded (invalid UTF-8 becomes U+FFFD; ``+`` stays a
        plus). Lenient (default): invalid members are dropped, members past 180
        or past 8192 bytes are dropped, and for a duplicate key the last value
        wins (at the first one's position); a header that lost anything is
        counted in :func:`malformed_counts`. ``strict=True`` raises
        :class:`TraceContextError` instead (a duplicate key too).
        """
        if header is None:
            return _EMPTY_BAGGAGE
        text = header if isinstance(header, str) else ",".join(header)
        problem: str | None = None
        entries: dict[str, BaggageEntry] = {}
        size = 0
        for raw in text.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            try:
                key, entry = cls._parse_member(member)
            except TraceContextError as err:
                problem = problem or str(err)
                continue
            if key in entries:
                problem = problem or f"baggage key {key!r} appears twice"
                if strict:
                    break
            elif len(entries) == BAGGAGE_MAX_MEMBERS:
                problem = problem or f"baggage has more than {BAGGAGE_MAX_MEMBERS} entries"
                continue
            size += len(member.encode()) + (1 if size else 0)
            if size > BAGGAGE_MAX_BYTES:
                problem = problem or f"baggage is longer than {BAGGAGE_MAX_BYTES} bytes"
                break
            entries[key] = entry
        if problem is not None:
            if strict:
                raise TraceContextError(problem)
            _count("baggage")
        if not entries:
            return _EMPTY_BAGGAGE
        result = cls.__new__(cls)
        result._entries = entries
        return result

    @staticmethod
    def _parse_member(member: str) -> tuple[str, BaggageEntry]:
        head, *props = member.split(";")
        key, sep, value = head.partition("=")
        key = key.strip(_OWS)
        value = value.strip(_OWS)
        if not sep:
            raise TraceContextError(f"baggage member {member!r} has no '='")
        if _TOKEN_RE.fullmatch(key) is None:
            raise TraceContextError(
                f"baggage key {key!r} in {member!r} is invalid: expected an RFC 7230 token"
            )
        if _BAGGAGE_VALUE_RE.fullmatch(value) is None:
            raise TraceContextError(
                f"baggage value {value!r} of {key!r} is invalid: expected percent-encoded "
                "printable ASCII without spaces, '\"', ',', ';' or '\\'"
            )
        properties: list[tuple[str, str | None]] = []
        for raw in props:
            pkey, psep, pvalue = raw.partition("=")
            pkey = pkey.strip(_OWS)
            if not pkey and not psep:
                continue  # "k=v;" or "k=v; ;p": an empty property
            properties.append(_check_property((pkey, pvalue.strip(_OWS) if psep else None)))
        return key, BaggageEntry(_decode_baggage_value(value), tuple(properties))

    def to_header(self) -> str:
        """The ``baggage`` header value (``""`` when empty).

        Entries that would take the header past 8192 bytes are left out.
        """
        members: list[str] = []
        size = 0
        for key, entry in self._entries.items():
            member = entry.to_member(key)
            grown = size + len(member) + (1 if members else 0)
            if grown > BAGGAGE_MAX_BYTES:
                break
            members.append(member)
            size = grown
        return ",".join(members)

    def entry(self, key: str) -> BaggageEntry:
        """The value and properties of ``key`` (``KeyError`` when absent)."""
        return self._entries[key]

    def set(
        self, key: str, value: str, properties: Iterable[tuple[str, str | None]] = ()
    ) -> Baggage:
        """A copy with ``key`` set (kept in place when present, else added last)."""
        entries: dict[str, str | BaggageEntry] = dict(self._entries)
        entries[key] = BaggageEntry(value, tuple(properties))
        return Baggage(entries)

    def delete(self, key: str) -> Baggage:
        """A copy without ``key`` (the same object when it is absent)."""
        if key not in self._entries:
            return self
        return Baggage({k: e for k, e in self._entries.items() if k != key})

    def __getitem__(self, key: str) -> str:
        return self._entries[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Baggage):
            return list(self._entries.items()) == list(other._entries.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __repr__(self) -> str:
        return f"Baggage({self.to_header()!r})"


_EMPTY_BAGGAGE = Baggage()


# --------------------------------------------------------------------------- TraceContext


def _random_id(size: int) -> bytes:
    while True:
        value = os.urandom(size)
        if any(value):
            return value


@dataclass(frozen=True, slots=True, repr=False)
class TraceContext:
    """The trace context of one span: what ``traceparent`` (+ ``tracestate``) carries.

    ``trace_id`` (16 bytes) and ``span_id`` (8 bytes) are never all zero;
    ``flags`` is the W3C trace-flags byte: bit 0 is *sampled*, every other bit
    is carried unchanged. ``remote`` tells a context that came from another
    process (a header or a carrier); it does not take part in equality.
    """

    trace_id: bytes
    span_id: bytes
    flags: int = 0
    tracestate: TraceState = field(default=_EMPTY_TRACESTATE)
    remote: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.trace_id, bytes) or len(self.trace_id) != 16:
            raise TraceContextError(
                f"trace_id must be 16 bytes, got {self.trace_id!r}"
                " (use bytes.fromhex() for a 32-digit hex id)"
            )
        if not isinstance(self.span_id, bytes) or len(self.span_id) != 8:
            raise TraceContextError(
                f"span_id must be 8 bytes, got {self.span_id!r}"
                " (use bytes.fromhex() for a 16-digit hex id)"
            )
        if not any(self.trace_id):
            raise TraceContextError("trace_id is all zeros: an all-zero trace id is invalid")
        if not any(self.span_id):
            raise TraceContextError("span_id is all zeros: an all-zero span id is invalid")
        if not isinstance(self.flags, int) or not 0 <= self.flags <= 0xFF:
            raise TraceContextError(f"flags must be an int in 0..255, got {self.flags!r}")
        if not isinstance(self.tracestate, TraceState):
            raise TraceContextError(
                f"tracestate must be a TraceState, not {type(self.tracestate).__name__}"
            )

    # ------------------------------------------------------------------ construction

    @classmethod
    def new_root(cls, *, sampled: bool = True) -> TraceContext:
        """A new trace: random trace and span ids, flags ``random-trace-id`` (+ ``sampled``)."""
        flags = FLAG_RANDOM_TRACE_ID | (FLAG_SAMPLED if sampled else 0)
        return cls(_random_id(16), _random_id(8), flags)

    def child(self, *, sampled: bool | None = None) -> TraceContext:
        """A context for a new span in the same trace: new span id, same flags and tracestate.

        ``sampled`` changes bit 0 only (the other flag bits are carried).
        """
        flags = self.flags
        if sampled is not None:
            flags = (flags | FLAG_SAMPLED) if sampled else (flags & ~FLAG_SAMPLED)
        return TraceContext(self.trace_id, _random_id(8), flags, self.tracestate)

    def with_tracestate(self, tracestate: TraceState) -> TraceContext:
        """A copy with another ``tracestate``."""
        return TraceContext(self.trace_id, self.span_id, self.flags, tracestate, self.remote)

    # ------------------------------------------------------------------ views

    @property
    def sampled(self) -> bool:
        """Trace flags bit 0."""
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()

    @property
    def span_id_hex(self) -> str:
        return self.span_id.hex()

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header value (always version ``00``)."""
        return f"00-{self.trace_id.hex()}-{self.span_id.hex()}-{self.flags:02x}"

    def __str__(self) -> str:
        return self.traceparent

    def __repr__(self) -> str:
        extra = f", tracestate={self.tracestate.to_header()!r}" if self.tracestate else ""
        remote = ", remote=True" if self.remote else ""
        return f"TraceContext({self.traceparent!r}{extra}{remote})"

    # ------------------------------------------------------------------ headers

    @classmethod
    def from_traceparent(
        cls,
        traceparent: str | None,
        tracestate: str | Sequence[str] | None = None,
        *,
        strict: bool = False,
    ) -> TraceContext:
        """Parse ``traceparent`` (+ ``tracestate``) into a remote context.

        Lenient (default): a malformed ``traceparent`` gives a new trace
        (:meth:`new_root`, counted in :func:`malformed_counts`) and its
        ``tracestate`` is ignored, as the spec requires. ``strict=True`` raises
        :class:`TraceContextError` naming the bad field.
        """
        try:
            ctx = _parse_traceparent(traceparent)
        except TraceContextError:
            if strict:
                raise
            _count("traceparent")
            return cls.new_root()
        if tracestate is not None:
            ts = TraceState.parse(tracestate, strict=strict)
            if ts:
                ctx = TraceContext(ctx.trace_id, ctx.span_id, ctx.flags, ts, remote=True)
        return ctx

    # ------------------------------------------------------------------ RT carrier

    def to_carrier(self) -> bytes:
        """The 25-byte carrier: trace id, span id, flags (``tracestate`` is not carried)."""
        return self.trace_id + self.span_id + bytes((self.flags,))

    @classmethod
    def from_carrier(
        cls, data: bytes | bytearray | memoryview, *, strict: bool = False
    ) -> TraceContext | None:
        """The context in a 25-byte carrier, or ``None`` for "no context" (trace id all zero).

        A carrier with a trace id but an all-zero span id is malformed: lenient
        gives ``None`` and counts it, ``strict=True`` raises. A length other
        than 25 always raises :class:`TraceContextError`.
        """
        raw = bytes(data)
        if len(raw) != CARRIER_SIZE:
            raise TraceContextError(
                f"a trace carrier is {CARRIER_SIZE} bytes (trace id 16, span id 8, flags 1), "
                f"got {len(raw)}"
            )
        trace_id = raw[:16]
        if not any(trace_id):
            return None
        span_id = raw[16:24]
        if not any(span_id):
            if strict:
                raise TraceContextError(
                    f"trace carrier {raw.hex()} has trace id {trace_id.hex()} but an all-zero "
                    "span id"
                )
            _count("carrier")
            return None
        return cls(trace_id, span_id, raw[24], remote=True)

    # ------------------------------------------------------------------ OpenTelemetry

    def to_otel(self) -> SpanContext:
        """This context as an ``opentelemetry.trace.SpanContext`` (needs opentelemetry-api)."""
        from opentelemetry.trace import SpanContext
        from opentelemetry.trace import TraceFlags as OtelFlags
        from opentelemetry.trace import TraceState as OtelTraceState

        return SpanContext(
            trace_id=int.from_bytes(self.trace_id, "big"),
            span_id=int.from_bytes(self.span_id, "big"),
            is_remote=self.remote,
            trace_flags=OtelFlags(self.flags),
            trace_state=OtelTraceState(self.tracestate.items_list()),
        )

    @classmethod
    def from_otel(cls, span_context: SpanContext) -> TraceContext | None:
        """The context of an OpenTelemetry ``SpanContext``; ``None`` when it is invalid."""
        if not span_context.is_valid:
            return None
        return cls(
            span_context.trace_id.to_bytes(16, "big"),
            span_context.span_id.to_bytes(8, "big"),
            int(span_context.trace_flags) & 0xFF,
            TraceState(span_context.trace_state.items())
            if span_context.trace_state
            else (_EMPTY_TRACESTATE),
            remote=span_context.is_remote,
        )


def _parse_traceparent(value: str | None) -> TraceContext:
    if value is None:
        raise TraceContextError("traceparent is missing")
    if not isinstance(value, str):
        raise TraceContextError(f"traceparent must be a str, not {type(value).__name__}")
    text = value.strip(_OWS)
    if len(text) > TRACEPARENT_MAX_LENGTH:
        raise TraceContextError(
            f"traceparent is {len(text)} characters long: at most {TRACEPARENT_MAX_LENGTH}"
        )
    if _VERSION_RE.match(text) is None:
        raise TraceContextError(
            f"traceparent {text!r} does not start with a version: expected 2 lowercase hex "
            "digits and '-' (e.g. '00-<32 hex trace id>-<16 hex span id>-<2 hex flags>')"
        )
    version = text[:2]
    if version == "ff":
        raise TraceContextError(f"traceparent {text!r} has version ff, which is forbidden")
    match = _TRACEPARENT_RE.fullmatch(text)
    if match is None:
        raise TraceContextError(
            f"traceparent {text!r} is malformed: expected "
            "'<2 hex version>-<32 hex trace id>-<16 hex span id>-<2 hex flags>', lowercase hex"
        )
    _, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "00" and rest is not None:
        raise TraceContextError(
            f"traceparent {text!r} has fields after the flags: version 00 has exactly four"
        )
    if trace_hex == "0" * 32:
        raise TraceContextError(f"traceparent {text!r}: the trace id is all zeros (invalid)")
    if span_hex == "0" * 16:
        raise TraceContextError(f"traceparent {text!r}: the span id is all zeros (invalid)")
    return TraceContext(
        bytes.fromhex(trace_hex), bytes.fromhex(span_hex), int(flags_hex, 16), remote=True
    )


def parse_traceparent(value: str | None, *, strict: bool = False) -> TraceContext:
    """Parse a ``traceparent`` header value: see :meth:`TraceContext.from_traceparent`.

    Versions other than ``00`` and ``ff`` are parsed by their first four
    fields (anything after the flags is ignored) and formatted back as ``00``.
    """
    return TraceContext.from_traceparent(value, strict=strict)


def carrier_of(ctx: TraceContext | None) -> bytes:
    """The 25-byte carrier of ``ctx``; :data:`NO_CARRIER` for ``None``."""
    return NO_CARRIER if ctx is None else ctx.to_carrier()


# --------------------------------------------------------------------------- header maps


class Propagated(NamedTuple):
    """What :func:`extract` found: the context (``None`` without ``traceparent``) and baggage."""

    context: TraceContext | None
    baggage: Baggage


def _header(headers: Mapping[str, Any], name: str) -> list[str] | None:
    found: list[str] = []
    hit = False
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            hit = True
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, bytes):
                found.append(value.decode("latin-1"))
            elif isinstance(value, Iterable):
                found.extend(v if isinstance(v, str) else str(v) for v in value)
    return found if hit else None


def extract(headers: Mapping[str, Any], *, strict: bool = False) -> Propagated:
    """Read ``traceparent``, ``tracestate`` and ``baggage`` from a header map.

    Header names match in any case; a value may be a str or a list of str
    (several header fields). Without ``traceparent`` the context is ``None``.
    Lenient (default): a malformed ``traceparent`` restarts the trace (new ids,
    counted) and its ``tracestate`` is ignored; a malformed ``baggage`` loses only
    its bad members. ``strict=True`` raises :class:`TraceContextError`.
    """
    parents = _header(headers, "traceparent")
    context: TraceContext | None = None
    if parents is not None:
        if len(parents) != 1:
            # several traceparent fields cannot be combined: malformed
            combined = ",".join(parents)
            context = TraceContext.from_traceparent(combined, strict=strict)
        else:
            context = TraceContext.from_traceparent(
                parents[0], _header(headers, "tracestate"), strict=strict
            )
    baggage = Baggage.parse(_header(headers, "baggage"), strict=strict)
    return Propagated(context, baggage)


class _Keep:
    pass


_KEEP: Any = _Keep()


def inject(
    headers: MutableMapping[str, str],
    context: TraceContext | None = _KEEP,
    baggage: Baggage | None = _KEEP,
) -> MutableMapping[str, str]:
    """Write ``traceparent`` (+ ``tracestate``, ``baggage`` when not empty) into ``headers``.

    ``context`` and ``baggage`` default to the current ones; ``None`` (or empty)
    writes nothing for them. Returns ``headers``.
    """
    ctx = current() if context is _KEEP else context
    bag = current_baggage() if baggage is _KEEP else baggage
    if ctx is not None:
        headers["traceparent"] = ctx.traceparent
        if ctx.tracestate:
            headers["tracestate"] = ctx.tracestate.to_header()
    if bag:
        text = bag.to_header()
        if text:
            headers["baggage"] = text
    return headers


# --------------------------------------------------------------------------- current context


class _Backend(Protocol):
    name: str

    def get(self) -> TraceContext | None: ...

    def get_baggage(self) -> Baggage: ...

    def attach(self, ctx: TraceContext | None) -> object: ...

    def attach_baggage(self, baggage: Baggage) -> object: ...

    def detach(self, token: object) -> None: ...


class _ContextVarsBackend:
    """The fallback: two ContextVars (per thread, copied into each asyncio task)."""

    name = "contextvars"

    def __init__(self) -> None:
        self._ctx: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
            "mxrc_trace_context", default=None
        )
        self._bag: contextvars.ContextVar[Baggage] = contextvars.ContextVar(
            "mxrc_baggage", default=_EMPTY_BAGGAGE
        )

    def get(self) -> TraceContext | None:
        return self._ctx.get()

    def get_baggage(self) -> Baggage:
        return self._bag.get()

    def attach(self, ctx: TraceContext | None) -> object:
        return (self._ctx, self._ctx.set(ctx))

    def attach_baggage(self, baggage: Baggage) -> object:
        return (self._bag, self._bag.set(baggage))

    def detach(self, token: object) -> None:
        var: contextvars.ContextVar[Any]
        tok: contextvars.Token[Any]
        var, tok = token  # type: ignore[misc]
        var.reset(tok)


class _OtelBackend:
    """``opentelemetry.context``: the current span is the context, baggage is OTel baggage.

    mxrc's context is stored as a ``NonRecordingSpan`` of its ``SpanContext`` so
    that OpenTelemetry instrumentation parents its spans on it; a span started
    through OpenTelemetry is mxrc's current context in turn. mxrc's
    :class:`Baggage` is stored next to OTel's baggage (name → value) so that
    properties survive while OTel's view stays the same.
    """

    name = "opentelemetry"

    def __init__(self) -> None:
        from opentelemetry import baggage as otel_baggage
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace

        self._context = otel_context
        self._trace = otel_trace
        self._baggage = otel_baggage
        self._bag_key = otel_context.create_key("mxrc-baggage")

        class MxrcSpan(otel_trace.NonRecordingSpan):
            """A non-recording span remembering the mxrc context it was made from."""

            def __init__(self, ctx: TraceContext) -> None:
                super().__init__(ctx.to_otel())
                self.mxrc_context = ctx

        self._span_type = MxrcSpan

    def get(self) -> TraceContext | None:
        span = self._trace.get_current_span()
        if isinstance(span, self._span_type):
            ctx: TraceContext = span.mxrc_context
            return ctx
        return TraceContext.from_otel(span.get_span_context())

    def get_baggage(self) -> Baggage:
        entries = self._baggage.get_all()
        ours = self._context.get_value(self._bag_key)
        if (
            isinstance(ours, Baggage)
            and len(ours) == len(entries)
            and all(entries.get(k) == v for k, v in ours.items())
        ):
            return ours
        if not entries:
            return _EMPTY_BAGGAGE
        values: dict[str, str | BaggageEntry] = {}
        for key, value in entries.items():
            if _TOKEN_RE.fullmatch(key) is not None:
                values[key] = BaggageEntry(str(value))
        return Baggage(values)

    def attach(self, ctx: TraceContext | None) -> object:
        span = self._trace.INVALID_SPAN if ctx is None else self._span_type(ctx)
        return self._context.attach(self._trace.set_span_in_context(span))

    def attach_baggage(self, baggage: Baggage) -> object:
        otel_ctx = self._baggage.clear()
        for key, value in baggage.items():
            otel_ctx = self._baggage.set_baggage(key, value, otel_ctx)
        otel_ctx = self._context.set_value(self._bag_key, baggage, otel_ctx)
        return self._context.attach(otel_ctx)

    def detach(self, token: object) -> None:
        self._context.detach(token)  # type: ignore[arg-type]


def _make_backend(name: str) -> _Backend:
    if name == "auto":
        try:
            return _OtelBackend()
        except ImportError:
            return _ContextVarsBackend()
    if name == "opentelemetry":
        try:
            return _OtelBackend()
        except ImportError as err:
            raise TraceContextError(
                "the opentelemetry backend needs opentelemetry-api: pip install 'mxrc[otel]'"
            ) from err
    if name == "contextvars":
        return _ContextVarsBackend()
    raise TraceContextError(
        f"unknown trace-context backend {name!r}: expected 'auto', 'opentelemetry' or 'contextvars'"
    )


_backend: _Backend | None = None
_backend_lock = threading.Lock()


def _get_backend() -> _Backend:
    global _backend  # noqa: PLW0603 - one process-wide backend, chosen once
    backend_ = _backend
    if backend_ is None:
        with _backend_lock:
            if _backend is None:
                _backend = _make_backend(os.environ.get("MXRC_TRACE_CONTEXT", "auto"))
            backend_ = _backend
    return backend_


def backend() -> str:
    """Where the current context lives: ``"opentelemetry"`` or ``"contextvars"``."""
    return _get_backend().name


def set_backend(name: str) -> str:
    """Choose where the current context lives: ``"auto"``, ``"opentelemetry"``, ``"contextvars"``.

    ``auto`` (the default, or ``$MXRC_TRACE_CONTEXT``) uses opentelemetry-api
    when it is installed. Call it at start-up: contexts attached through the
    previous backend are not carried over. Returns the backend now in use.
    """
    global _backend  # noqa: PLW0603 - one process-wide backend
    made = _make_backend(name)
    with _backend_lock:
        _backend = made
    return made.name


@dataclass(frozen=True, slots=True)
class ContextToken:
    """What :func:`attach` returns; hand it to :func:`detach`."""

    _backend: _Backend
    _token: object


def current() -> TraceContext | None:
    """The trace context of the running thread / asyncio task (``None`` when there is none)."""
    return _get_backend().get()


def current_baggage() -> Baggage:
    """The baggage of the running thread / asyncio task (empty when there is none)."""
    return _get_backend().get_baggage()


def attach(ctx: TraceContext | None) -> ContextToken:
    """Make ``ctx`` current until :func:`detach` (prefer :func:`use`)."""
    b = _get_backend()
    return ContextToken(b, b.attach(ctx))


def attach_baggage(baggage: Baggage) -> ContextToken:
    """Make ``baggage`` current until :func:`detach` (prefer :func:`use_baggage`)."""
    b = _get_backend()
    return ContextToken(b, b.attach_baggage(baggage))


def detach(token: ContextToken) -> None:
    """Restore what was current before the :func:`attach` that returned ``token``."""
    token._backend.detach(token._token)


@contextlib.contextmanager
def use(ctx: TraceContext | None) -> Iterator[TraceContext | None]:
    """``with use(ctx):`` — ``ctx`` is the current context inside the block (``None`` clears)."""
    token = attach(ctx)
    try:
        yield ctx
    finally:
        detach(token)


@contextlib.contextmanager
def use_baggage(baggage: Baggage) -> Iterator[Baggage]:
    """``with use_baggage(b):`` — ``b`` is the current baggage inside the block."""
    token = attach_baggage(baggage)
    try:
        yield baggage
    finally:
        detach(token)


def child_or_root(*, sampled: bool = True) -> TraceContext:
    """A context for a new span: a child of the current context, or a new root.

    ``sampled`` applies only to a new root (a child keeps its parent's flags).
    """
    parent = current()
    return parent.child() if parent is not None else TraceContext.new_root(sampled=sampled)


def current_carrier() -> bytes | None:
    """The current context as a 25-byte carrier, or ``None`` when there is none.

    What an event published now carries (the EventBus calls it).
    """
    ctx = current()
    return None if ctx is None else ctx.to_carrier()


def use_carrier(
    carrier: bytes | bytearray | memoryview | None,
) -> contextlib.AbstractContextManager[TraceContext | None]:
    """``with use_carrier(c):`` — the carrier's context is current inside the block.

    A ``None`` or all-zero carrier makes "no context" current (so a handler does
    not inherit whatever its thread had). The EventBus runs handlers in it.
    """
    ctx = None if carrier is None else TraceContext.from_carrier(carrier)
    return use(ctx)
