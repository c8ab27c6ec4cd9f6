"""W3C trace context: traceparent / tracestate / baggage, the 25-byte carrier, current context."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from helpers import run_child
from hypothesis import given
from hypothesis import strategies as st

from mxrc import tracecontext as tc
from mxrc.tracecontext import (
    CARRIER_SIZE,
    NO_CARRIER,
    Baggage,
    BaggageEntry,
    TraceContext,
    TraceContextError,
    TraceState,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{SPAN}-01"


@pytest.fixture(autouse=True)
def _zero_counters() -> Iterator[None]:
    tc.reset_malformed_counts()
    yield
    tc.reset_malformed_counts()


@pytest.fixture(params=["opentelemetry", "contextvars"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test against both homes of the current context."""
    before = tc.backend()
    assert tc.set_backend(request.param) == request.param
    yield request.param
    tc.set_backend(before)


# ------------------------------------------------------------------------------- traceparent


@pytest.mark.parametrize("flags", ["00", "01", "02", "03", "09", "80", "ff"])
def test_traceparent_any_flags_accepted_and_carried(flags: str) -> None:
    ctx = tc.parse_traceparent(f"00-{TRACE}-{SPAN}-{flags}", strict=True)
    assert ctx.trace_id == bytes.fromhex(TRACE)
    assert ctx.span_id == bytes.fromhex(SPAN)
    assert ctx.flags == int(flags, 16)
    assert ctx.sampled == bool(int(flags, 16) & 1)
    assert ctx.traceparent == f"00-{TRACE}-{SPAN}-{flags}"
    assert ctx.remote


def test_traceparent_surrounding_whitespace_is_ignored() -> None:
    assert tc.parse_traceparent(f" \t{TP} ", strict=True).traceparent == TP


def test_future_version_parses_first_four_fields_and_formats_as_00() -> None:
    ctx = tc.parse_traceparent(f"cc-{TRACE}-{SPAN}-09-what-the-future-holds", strict=True)
    assert ctx.traceparent == f"00-{TRACE}-{SPAN}-09"
    assert tc.parse_traceparent(f"01-{TRACE}-{SPAN}-01", strict=True).traceparent == TP


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"ff-{TRACE}-{SPAN}-01", "version ff"),
        (f"00-{TRACE}-{SPAN}-01-extra", "fields after the flags"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace id is all zeros"),
        (f"00-{TRACE}-{'0' * 16}-01", "span id is all zeros"),
        (f"00-{TRACE.upper()}-{SPAN}-01", "lowercase hex"),
        (f"00-{TRACE}-{SPAN}-0", "malformed"),
        (f"00-{TRACE[:-1]}-{SPAN}-01", "malformed"),
        (f"00-{TRACE}-{SPAN}01", "malformed"),
        (f"cc-{TRACE}-{SPAN}-01x", "malformed"),  # flags must end or be followed by "-"
        (f"0-{TRACE}-{SPAN}-01", "does not start with a version"),
        ("", "does not start with a version"),
        ("garbage", "does not start with a version"),
        (TP + "-" * 600, "characters long"),
    ],
)
def test_malformed_traceparent_strict_raises_clearly(value: str, why: str) -> None:
    with pytest.raises(TraceContextError, match=why) as info:
        tc.parse_traceparent(value, strict=True)
    assert isinstance(info.value, ValueError)
    assert tc.malformed_counts()["traceparent"] == 0


def test_malformed_traceparent_lenient_restarts_the_trace_and_counts() -> None:
    bad = [f"ff-{TRACE}-{SPAN}-01", "garbage", f"00-{'0' * 32}-{SPAN}-01", None]
    seen = set()
    for value in bad:
        ctx = tc.parse_traceparent(value)
        assert ctx.trace_id != bytes.fromhex(TRACE)
        assert ctx.flags == tc.FLAG_RANDOM_TRACE_ID | tc.FLAG_SAMPLED
        assert not ctx.remote
        seen.add(ctx.trace_id)
    assert len(seen) == len(bad)  # each restart is a new random trace
    assert tc.malformed_counts() == {
        "traceparent": len(bad),
        "tracestate": 0,
        "baggage": 0,
        "carrier": 0,
    }
    tc.parse_traceparent(TP)
    assert tc.malformed_counts()["traceparent"] == len(bad)


def test_tracestate_is_ignored_when_traceparent_is_malformed() -> None:
    ctx = TraceContext.from_traceparent("garbage", "congo=t61rcWkgMzE")
    assert not ctx.tracestate


@given(
    st.binary(min_size=16, max_size=16).filter(any),
    st.binary(min_size=8, max_size=8).filter(any),
    st.integers(0, 255),
)
def test_traceparent_and_carrier_round_trip(trace_id: bytes, span_id: bytes, flags: int) -> None:
    ctx = TraceContext(trace_id, span_id, flags)
    assert tc.parse_traceparent(ctx.traceparent, strict=True) == ctx
    assert TraceContext.from_carrier(ctx.to_carrier(), strict=True) == ctx


def test_constructor_validates() -> None:
    with pytest.raises(TraceContextError, match="16 bytes"):
        TraceContext(b"\x01" * 15, b"\x01" * 8)
    with pytest.raises(TraceContextError, match="8 bytes"):
        TraceContext(b"\x01" * 16, b"\x01" * 9)
    with pytest.raises(TraceContextError, match="trace_id is all zeros"):
        TraceContext(bytes(16), b"\x01" * 8)
    with pytest.raises(TraceContextError, match="span_id is all zeros"):
        TraceContext(b"\x01" * 16, bytes(8))
    with pytest.raises(TraceContextError, match=r"0\.\.255"):
        TraceContext(b"\x01" * 16, b"\x01" * 8, 256)


def test_new_root_child_and_sampled() -> None:
    root = TraceContext.new_root()
    assert root.flags == 0x03 and root.sampled
    assert TraceContext.new_root(sampled=False).flags == 0x02
    parent = tc.parse_traceparent(f"00-{TRACE}-{SPAN}-85", strict=True)
    child = parent.child()
    assert child.trace_id == parent.trace_id
    assert child.span_id != parent.span_id
    assert child.flags == 0x85 and not child.remote
    assert parent.child(sampled=False).flags == 0x84  # only bit 0 changes
    assert parent.child(sampled=True).flags == 0x85
    assert repr(parent) == f"TraceContext('00-{TRACE}-{SPAN}-85', remote=True)"
    assert str(parent) == parent.traceparent


# ------------------------------------------------------------------------------- carrier


def test_carrier_layout_is_trace_span_flags() -> None:
    ctx = tc.parse_traceparent(f"00-{TRACE}-{SPAN}-03", strict=True)
    carrier = ctx.to_carrier()
    assert len(carrier) == CARRIER_SIZE == 25
    assert carrier == bytes.fromhex(TRACE) + bytes.fromhex(SPAN) + b"\x03"
    back = TraceContext.from_carrier(bytearray(carrier))
    assert back == ctx and back is not None and back.remote
    assert TraceContext.from_carrier(memoryview(carrier)) == ctx


def test_carrier_drops_tracestate() -> None:
    ctx = TraceContext.from_traceparent(TP, "congo=t61rcWkgMzE", strict=True)
    back = TraceContext.from_carrier(ctx.to_carrier())
    assert back is not None and not back.tracestate and back.traceparent == TP


def test_all_zero_trace_id_carrier_is_no_context() -> None:
    assert TraceContext.from_carrier(NO_CARRIER) is None
    assert TraceContext.from_carrier(bytes(16) + b"\x01" * 9, strict=True) is None
    assert tc.carrier_of(None) == NO_CARRIER
    assert tc.malformed_counts()["carrier"] == 0


def test_carrier_with_trace_id_but_zero_span_id() -> None:
    bad = b"\x01" * 16 + bytes(8) + b"\x01"
    assert TraceContext.from_carrier(bad) is None
    assert tc.malformed_counts()["carrier"] == 1
    with pytest.raises(TraceContextError, match="all-zero span id"):
        TraceContext.from_carrier(bad, strict=True)


@pytest.mark.parametrize("size", [0, 24, 26, 32])
def test_carrier_of_wrong_size_always_raises(size: int) -> None:
    with pytest.raises(TraceContextError, match="25 bytes"):
        TraceContext.from_carrier(b"\x01" * size)


def test_carrier_size_matches_the_c_header(project_root: object) -> None:
    from pathlib import Path

    header = (Path(str(project_root)) / "mxrc" / "include" / "mxrc.h").read_text()
    assert "#define MXRC_CARRIER_SIZE 25" in header


# ------------------------------------------------------------------------------- tracestate


def test_tracestate_parse_format_and_mutation() -> None:
    ts = TraceState.parse(" rojo=00f067aa0ba902b7 ,\t, congo=t61rcWkgMzE,", strict=True)
    assert ts.items_list() == [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
    assert ts.to_header() == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    updated = ts.set("congo", "ucfJifl5GOE")
    assert updated.to_header() == "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7"
    assert updated.delete("rojo").to_header() == "congo=ucfJifl5GOE"
    assert ts.delete("absent") is ts
    assert ts == TraceState.parse(ts.to_header())
    assert TraceState.parse(["a=1", "b=2"]).to_header() == "a=1,b=2"  # several header fields
    assert TraceState.parse("") == TraceState() and not TraceState.parse(" , ")


def test_tracestate_keys_and_values() -> None:
    ok = TraceState.parse(
        "a=1,a_-*/z9=x,1tenant@sys=v,t@s_-*/=v,k=with space inside,k2= leading", strict=True
    )
    assert ok["1tenant@sys"] == "v" and ok["k"] == "with space inside" and ok["k2"] == " leading"
    # trailing spaces are optional whitespace, not part of the value
    assert TraceState.parse("k=trail  ", strict=True)["k"] == "trail"
    for bad in ("Upper=1", "1digitfirst=1", "k=", "k=a,b", "k=x=y", "t@1sys=v", "k=\x7f"):
        with pytest.raises(TraceContextError):
            TraceState.parse(bad, strict=True)
    with pytest.raises(TraceContextError, match="key"):
        TraceState().set("Bad", "v")
    with pytest.raises(TraceContextError, match="value"):
        TraceState().set("k", "a,b")


def test_tracestate_lenient_drops_bad_members_and_duplicates_and_counts() -> None:
    ts = TraceState.parse("a=1,BAD=2,b=2,a=3,nokey")
    assert ts.items_list() == [("a", "1"), ("b", "2")]  # the first (most recent) a wins
    assert tc.malformed_counts()["tracestate"] == 1
    with pytest.raises(TraceContextError, match="appears twice"):
        TraceState.parse("a=1,a=2", strict=True)
    with pytest.raises(TraceContextError, match="twice"):
        TraceState([("a", "1"), ("a", "2")])


def test_tracestate_at_most_32_members() -> None:
    header = ",".join(f"k{i}=v{i}" for i in range(40))
    ts = TraceState.parse(header)
    assert len(ts) == 32 and next(iter(ts)) == "k0"
    assert tc.malformed_counts()["tracestate"] == 1
    with pytest.raises(TraceContextError, match="more than 32"):
        TraceState.parse(header, strict=True)
    full = TraceState.parse(",".join(f"k{i}=v" for i in range(32)), strict=True)
    grown = full.set("new", "v")
    assert len(grown) == 32 and next(iter(grown)) == "new" and "k31" not in grown


def test_tracestate_agrees_with_opentelemetry() -> None:
    from opentelemetry.trace import TraceState as OtelTraceState

    for header in ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "1t@s=x,a=b c", "a=1"):
        ours = TraceState.parse(header, strict=True)
        theirs = OtelTraceState.from_header([header])
        assert list(theirs.items()) == ours.items_list()
        assert theirs.to_header() == ours.to_header()


# ------------------------------------------------------------------------------- baggage


def test_baggage_spec_example() -> None:
    header = (
        "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"
    )
    bag = Baggage.parse(header, strict=True)
    assert dict(bag) == {"key1": "value1", "key2": "value2", "key3": "value3"}
    assert bag.entry("key1").properties == (("property1", None), ("property2", None))
    assert bag.entry("key3").properties == (("propertyKey", "propertyValue"),)
    assert bag.to_header() == (
        "key1=value1;property1;property2,key2=value2,key3=value3;propertyKey=propertyValue"
    )
    assert Baggage.parse(bag.to_header(), strict=True) == bag


def test_baggage_percent_encoding() -> None:
    bag = Baggage.parse("userId=alice,serverNode=DF%2028,isProduction=false", strict=True)
    assert bag["serverNode"] == "DF 28"
    assert Baggage.parse("a=1+1", strict=True)["a"] == "1+1"  # '+' is a plus, not a space
    assert Baggage.parse("a=x=y", strict=True)["a"] == "x=y"  # '=' may appear in a value
    assert Baggage.parse("a=%FF%C3%A9", strict=True)["a"] == "\ufffdé"  # bad UTF-8 -> U+FFFD
    text = 'a b,c;d%é+\\"\n'
    header = Baggage({"k": text}).to_header()
    assert header == "k=a%20b%2Cc%3Bd%25%C3%A9+%5C%22%0A"
    assert Baggage.parse(header, strict=True)["k"] == text


@given(
    st.dictionaries(st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True), st.text(), max_size=8)
)
def test_baggage_round_trip(values: dict[str, str]) -> None:
    bag = Baggage(values)
    assert Baggage.parse(bag.to_header(), strict=True) == bag
    assert dict(Baggage.parse(bag.to_header())) == values


def test_baggage_lenient_and_strict() -> None:
    bag = Baggage.parse("good=1,bad key=2,noequals,k=bad value,k2=v;bad prop=1,dup=1,dup=2")
    assert dict(bag) == {"good": "1", "dup": "2"}  # the last duplicate wins
    assert tc.malformed_counts()["baggage"] == 1
    for header in ("bad key=2", "noequals", "k=a b", "k=v;bad prop", "d=1,d=2", 'k="q"'):
        with pytest.raises(TraceContextError):
            Baggage.parse(header, strict=True)


def test_baggage_limits() -> None:
    header = ",".join(f"k{i}=v" for i in range(200))
    bag = Baggage.parse(header)
    assert len(bag) == tc.BAGGAGE_MAX_MEMBERS == 180
    assert tc.malformed_counts()["baggage"] == 1
    with pytest.raises(TraceContextError, match="more than 180"):
        Baggage.parse(header, strict=True)
    big = ",".join(f"k{i}={'x' * 1000}" for i in range(10))
    assert len(Baggage.parse(big)) == 8  # 8 members of 1003 bytes fit in 8192
    wide = Baggage({f"k{i}": "x" * 1000 for i in range(10)})
    assert len(wide.to_header().encode()) <= tc.BAGGAGE_MAX_BYTES
    with pytest.raises(TraceContextError, match="at most 180"):
        Baggage({f"k{i}": "v" for i in range(181)})


def test_baggage_mapping_api() -> None:
    bag = Baggage().set("a", "1").set("b", "2", [("p", None), ("q", "r")])
    assert list(bag) == ["a", "b"] and bag["b"] == "2"
    assert bag.entry("b") == BaggageEntry("2", (("p", None), ("q", "r")))
    assert bag.to_header() == "a=1,b=2;p;q=r"
    assert bag.set("a", "3").to_header() == "a=3,b=2;p;q=r"  # updated in place
    assert dict(bag.delete("a")) == {"b": "2"} and bag.delete("zz") is bag
    with pytest.raises(TraceContextError, match="token"):
        Baggage({"bad key": "v"})
    with pytest.raises(TraceContextError, match="property"):
        Baggage().set("k", "v", [("bad key", None)])


# ------------------------------------------------------------------------------- extract / inject


def test_extract_all_three_headers_any_case_and_lists() -> None:
    got = tc.extract(
        {
            "TraceParent": TP,
            "tracestate": ["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"],
            "BAGGAGE": ["a=1", "b=2;p"],
        },
        strict=True,
    )
    assert got.context is not None and got.context.traceparent == TP and got.context.remote
    assert got.context.tracestate.to_header() == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    assert dict(got.baggage) == {"a": "1", "b": "2"}


def test_extract_without_or_with_bad_traceparent() -> None:
    nothing = tc.extract({"other": "x", "baggage": "a=1"})
    assert nothing.context is None and dict(nothing.baggage) == {"a": "1"}
    assert tc.malformed_counts()["traceparent"] == 0
    restarted = tc.extract({"traceparent": "junk", "tracestate": "a=1"})
    assert restarted.context is not None and not restarted.context.tracestate
    assert tc.malformed_counts()["traceparent"] == 1
    twice = tc.extract({"traceparent": [TP, TP]})
    assert twice.context is not None and twice.context.traceparent != TP
    with pytest.raises(TraceContextError):
        tc.extract({"traceparent": "junk"}, strict=True)


def test_inject_explicit_and_current(backend: str) -> None:
    ctx = TraceContext.from_traceparent(TP, "a=1", strict=True)
    bag = Baggage({"user": "al ice"})
    assert tc.inject({}, ctx, bag) == {
        "traceparent": TP,
        "tracestate": "a=1",
        "baggage": "user=al%20ice",
    }
    assert tc.inject({}) == {}
    with tc.use(ctx), tc.use_baggage(bag):
        assert tc.inject({}) == {"traceparent": TP, "tracestate": "a=1", "baggage": "user=al%20ice"}
        assert tc.inject({}, None, None) == {}
    headers = tc.inject({}, ctx, bag)
    assert tc.extract(headers) == tc.Propagated(ctx, bag)


def test_headers_interoperate_with_opentelemetry_propagators() -> None:
    from opentelemetry import baggage as otel_baggage
    from opentelemetry import trace
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContext.from_traceparent(f"00-{TRACE}-{SPAN}-03", "congo=t61rcWkgMzE", strict=True)
    headers = tc.inject({}, ctx, Baggage({"user": "alice"}))
    otel_ctx = TraceContextTextMapPropagator().extract(headers)
    otel_ctx = W3CBaggagePropagator().extract(headers, otel_ctx)
    span_ctx = trace.get_current_span(otel_ctx).get_span_context()
    assert TraceContext.from_otel(span_ctx) == ctx
    assert otel_baggage.get_all(otel_ctx) == {"user": "alice"}

    out: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(out, otel_ctx)
    assert tc.extract(out, strict=True).context == ctx


# ------------------------------------------------------------------------------- OpenTelemetry


def test_spancontext_maps_both_ways() -> None:
    from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext, TraceFlags
    from opentelemetry.trace import TraceState as OtelTraceState

    ctx = TraceContext.from_traceparent(f"00-{TRACE}-{SPAN}-fd", "a=1,b=2", strict=True)
    otel = ctx.to_otel()
    assert otel.trace_id == int(TRACE, 16) and otel.span_id == int(SPAN, 16)
    assert otel.trace_flags == 0xFD and otel.trace_flags.sampled and otel.is_remote
    assert otel.trace_state.to_header() == "a=1,b=2"
    assert TraceContext.from_otel(otel) == ctx
    local = SpanContext(
        1, 2, is_remote=False, trace_flags=TraceFlags(1), trace_state=OtelTraceState()
    )
    mapped = TraceContext.from_otel(local)
    assert mapped is not None and mapped.trace_id == b"\0" * 15 + b"\1" and not mapped.remote
    assert TraceContext.from_otel(INVALID_SPAN_CONTEXT) is None


# ------------------------------------------------------------------------------- current context


def test_use_nests_and_restores(backend: str) -> None:
    assert tc.current() is None
    a = TraceContext.new_root()
    b = a.child()
    with tc.use(a):
        assert tc.current() == a
        with tc.use(b):
            assert tc.current() == b
            with tc.use(None):
                assert tc.current() is None
            assert tc.current() == b
        assert tc.current() == a
    assert tc.current() is None
    token = tc.attach(a)
    assert tc.current() == a
    tc.detach(token)
    assert tc.current() is None


def test_baggage_nests_and_restores(backend: str) -> None:
    assert tc.current_baggage() == Baggage()
    bag = Baggage().set("k", "v", [("p", None)])
    with tc.use_baggage(bag):
        assert tc.current_baggage() == bag
        assert tc.current_baggage().entry("k").properties == (("p", None),)
        with tc.use_baggage(Baggage()):
            assert not tc.current_baggage()
        assert tc.current_baggage() == bag
    assert not tc.current_baggage()


def test_context_is_per_thread(backend: str) -> None:
    mine = TraceContext.new_root()
    seen: dict[str, object] = {}

    def other() -> None:
        seen["before"] = tc.current()
        theirs = TraceContext.new_root()
        with tc.use(theirs):
            seen["inside"] = tc.current() == theirs
            ready.set()
            go.wait(5)
        seen["after"] = tc.current()

    ready = threading.Event()
    go = threading.Event()
    with tc.use(mine):
        thread = threading.Thread(target=other)
        thread.start()
        assert ready.wait(5)
        assert tc.current() == mine  # the other thread's context does not leak here
        go.set()
        thread.join(5)
    assert seen == {"before": None, "inside": True, "after": None}


def test_context_is_per_asyncio_task(backend: str) -> None:
    async def worker(ctx: TraceContext, gate: asyncio.Event) -> bool:
        with tc.use(ctx):
            await gate.wait()  # the other task sets its own context meanwhile
            return tc.current() == ctx

    async def main() -> list[bool]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(worker(TraceContext.new_root(), gate)) for _ in range(4)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
        results.append(tc.current() is None)
        return results

    parent = TraceContext.new_root()

    async def inherits() -> bool:
        return tc.current() == parent

    async def inherit_main() -> bool:
        with tc.use(parent):
            return await asyncio.create_task(inherits())

    assert all(asyncio.run(main()))
    assert asyncio.run(inherit_main())  # a task starts with its creator's context


def test_child_or_root_and_carriers(backend: str) -> None:
    root = tc.child_or_root()
    assert root.sampled and tc.child_or_root(sampled=False).flags == 0x02
    assert tc.current_carrier() is None
    with tc.use(root):
        child = tc.child_or_root()
        assert child.trace_id == root.trace_id and child.span_id != root.span_id
        assert tc.current_carrier() == root.to_carrier()
    with tc.use_carrier(root.to_carrier()) as active:
        assert active == root and tc.current() == root
        with tc.use_carrier(NO_CARRIER):
            assert tc.current() is None
    assert tc.current() is None


def test_opentelemetry_backend_shares_the_current_span() -> None:
    from opentelemetry import baggage as otel_baggage
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan

    before = tc.backend()
    tc.set_backend("opentelemetry")
    try:
        ctx = TraceContext.from_traceparent(TP, "a=1", strict=True)
        with tc.use(ctx):  # OpenTelemetry sees mxrc's context as the parent
            span_ctx = trace.get_current_span().get_span_context()
            assert TraceContext.from_otel(span_ctx) == ctx
        theirs = TraceContext.new_root().to_otel()
        with trace.use_span(NonRecordingSpan(theirs)):  # and mxrc sees OpenTelemetry's
            assert tc.current() == TraceContext.from_otel(theirs)
        token = otel_context.attach(otel_baggage.set_baggage("user", "bob"))
        try:
            assert dict(tc.current_baggage()) == {"user": "bob"}
        finally:
            otel_context.detach(token)
        with tc.use_baggage(Baggage({"k": "v"})):
            assert otel_baggage.get_all() == {"k": "v"}
    finally:
        tc.set_backend(before)


def test_backend_selection() -> None:
    before = tc.backend()
    try:
        assert tc.set_backend("auto") == "opentelemetry"  # installed with the test extra
        assert tc.set_backend("contextvars") == "contextvars"
        assert tc.backend() == "contextvars"
        with pytest.raises(TraceContextError, match="unknown trace-context backend"):
            tc.set_backend("bogus")
    finally:
        tc.set_backend(before)


def test_fallback_without_opentelemetry_installed() -> None:
    """With opentelemetry not importable, auto falls back to contextvars and still works."""
    result = run_child(
        """
        import json, sys
        sys.modules["opentelemetry"] = None  # import opentelemetry -> ImportError
        from mxrc import tracecontext as tc
        ctx = tc.TraceContext.new_root()
        with tc.use(ctx):
            inside = tc.current() == ctx
        try:
            tc.set_backend("opentelemetry")
            refused = ""
        except ValueError as err:
            refused = str(err)
        print(json.dumps({"backend": tc.backend(), "inside": inside, "after": tc.current(),
                          "refused": refused}))
        """
    )
    assert result["backend"] == "contextvars" and result["inside"] is True
    assert result["after"] is None
    assert "pip install 'mxrc[otel]'" in str(result["refused"])


def test_backend_from_environment() -> None:
    result = run_child(
        """
        import json, os
        os.environ["MXRC_TRACE_CONTEXT"] = "contextvars"
        from mxrc import tracecontext as tc
        print(json.dumps({"backend": tc.backend()}))
        """
    )
    assert result == {"backend": "contextvars"}
