"""numba support for native cycle bodies: the ``mxrc_cycle_ctx`` record and the function table.

A numba ``@cfunc(BODY_SIGNATURE)`` is a native body (tier 2): compiled machine
code called on the cycle thread without the GIL. numba cannot turn an integer
into a pointer or call a C function pointer by itself; this module adds the
few intrinsics a body needs for that (``as_pointer`` and the ``ctx->api``
entries), so a body reads its context as a record and its user data as an
array::

    import numpy as np
    from numba import carray, cfunc
    import mxrc
    from mxrc.numba import BODY_SIGNATURE, as_pointer, context, request_stop

    @cfunc(BODY_SIGNATURE)
    def body(ctx_ptr):
        ctx = context(ctx_ptr)                      # cycle, release_ns, period_ns, user, ...
        out = carray(as_pointer(ctx.user, np.float64), 2)
        out[0] += 1.0
        if ctx.cycle == 999:
            request_stop(ctx_ptr)
        return 0                                    # non-zero: a body error

    data = np.zeros(2)                              # keep it alive while the loop runs
    mxrc.Executive(mxrc.NativeBody(body.address, data.ctypes.data, verified=True)).run(1000)

Importing this module imports numba (an optional dependency: ``pip install numba``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import errors
from numba.extending import intrinsic

__all__ = [
    "API",
    "BODY_SIGNATURE",
    "CTX",
    "as_pointer",
    "clock_ns",
    "context",
    "now_ns",
    "request_safe_mode",
    "request_stop",
    "sim_advance",
    "state",
]

CTX = types.Record.make_c_struct(
    [
        ("abi_version", types.uint32),
        ("size", types.uint32),
        ("cycle", types.uint64),
        ("slot", types.uint32),
        ("every", types.uint32),
        ("release_ns", types.int64),
        ("wake_ns", types.int64),
        ("deadline_ns", types.int64),
        ("period_ns", types.int64),
        ("user", types.uintp),  # void*: turn it into a typed pointer with as_pointer
        ("api", types.uintp),  # const mxrc_api*: use the functions below
        ("executive", types.uintp),
        ("reserved", types.NestedArray(types.uint64, (8,))),
    ]
)
"""``mxrc_cycle_ctx`` (mxrc.h) as a numba record; pointer members are ``uintp``."""

API = types.Record.make_c_struct(
    [
        ("abi_version", types.uint32),
        ("size", types.uint32),
        ("now_ns", types.uintp),
        ("state", types.uintp),
        ("request_safe_mode", types.uintp),
        ("request_stop", types.uintp),
        ("clock_ns", types.uintp),  # version 2
        ("sim_advance", types.uintp),  # version 2
    ]
)
"""The leading members of ``mxrc_api`` (mxrc.h) as a numba record; entries are addresses."""

BODY_SIGNATURE = types.int32(types.CPointer(CTX))
"""``int body(const mxrc_cycle_ctx*)``: the signature to give ``numba.cfunc``."""

_ENOTSUP = 95  # Linux errno, returned by sim_advance on a core older than ABI version 2


def _pointee(dtype: Any) -> Any:
    """The numba type a typed pointer points to, from what a jitted caller passed."""
    if isinstance(dtype, (types.NumberClass, types.DType)):
        return dtype.dtype
    if isinstance(dtype, types.TypeRef):  # a numba type or record given as a global
        return dtype.instance_type
    raise errors.TypingError(
        f"as_pointer: dtype must be a numpy scalar type or a numba record type, got {dtype}"
    )


@intrinsic  # type: ignore[untyped-decorator]
def as_pointer(typingctx: Any, address: Any, dtype: Any) -> Any:
    """``(dtype*)address``: a typed pointer, for ``numba.carray(ptr, shape)``.

    ``address``: an integer such as ``ctx.user``; ``dtype``: a numpy scalar
    type (``np.float64``) or a numba record type (read a record through
    ``carray(ptr, 1)[0]``: numba cannot copy one out with ``ptr[0]``).
    """
    if not isinstance(address, types.Integer):
        raise errors.TypingError(f"as_pointer: address must be an integer, got {address}")
    sig = types.CPointer(_pointee(dtype))(address, dtype)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


def _fn_pointer(builder: Any, address: Any, ret: ir.Type, params: list[ir.Type]) -> Any:
    return builder.inttoptr(address, ir.FunctionType(ret, params).as_pointer())


@intrinsic  # type: ignore[untyped-decorator]
def _call_void_i64(typingctx: Any, fn: Any) -> Any:
    sig = types.int64(types.uintp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.call(_fn_pointer(builder, args[0], ir.IntType(64), []), [])

    return sig, codegen


@intrinsic  # type: ignore[untyped-decorator]
def _call_ctx_i32(typingctx: Any, fn: Any, ctx_ptr: Any) -> Any:
    sig = types.int32(types.uintp, ctx_ptr)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ctx_t = context.get_value_type(signature.args[1])
        return builder.call(_fn_pointer(builder, args[0], ir.IntType(32), [ctx_t]), [args[1]])

    return sig, codegen


@intrinsic  # type: ignore[untyped-decorator]
def _call_ctx_i64(typingctx: Any, fn: Any, ctx_ptr: Any) -> Any:
    sig = types.int64(types.uintp, ctx_ptr)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ctx_t = context.get_value_type(signature.args[1])
        return builder.call(_fn_pointer(builder, args[0], ir.IntType(64), [ctx_t]), [args[1]])

    return sig, codegen


@intrinsic  # type: ignore[untyped-decorator]
def _call_ctx_i64_i32(typingctx: Any, fn: Any, ctx_ptr: Any, value: Any) -> Any:
    sig = types.int32(types.uintp, ctx_ptr, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ctx_t = context.get_value_type(signature.args[1])
        fn_ptr = _fn_pointer(builder, args[0], ir.IntType(32), [ctx_t, ir.IntType(64)])
        return builder.call(fn_ptr, [args[1], args[2]])

    return sig, codegen


@njit(inline="always")  # type: ignore[untyped-decorator]
def context(ctx_ptr: Any) -> Any:
    """The ``mxrc_cycle_ctx`` behind the body's argument, as a record (``ctx.cycle``, ...).

    (``ctx_ptr[0]`` would copy the record by value, which numba cannot lower.)
    """
    return carray(ctx_ptr, 1)[0]


@njit(inline="always")  # type: ignore[untyped-decorator]
def _api(ctx_ptr: Any) -> Any:
    return carray(as_pointer(carray(ctx_ptr, 1)[0].api, API), 1)[0]


@njit(inline="always")  # type: ignore[untyped-decorator]
def now_ns(ctx_ptr: Any) -> Any:
    """``ctx->api->now_ns()``: CLOCK_MONOTONIC now (ns), whatever the executive's clock."""
    return _call_void_i64(_api(ctx_ptr).now_ns)


@njit(inline="always")  # type: ignore[untyped-decorator]
def state(ctx_ptr: Any) -> Any:
    """``ctx->api->state(ctx)``: the executive's state (``mxrc.rt.RtState`` values)."""
    return _call_ctx_i32(_api(ctx_ptr).state, ctx_ptr)


@njit(inline="always")  # type: ignore[untyped-decorator]
def request_safe_mode(ctx_ptr: Any) -> Any:
    """``ctx->api->request_safe_mode(ctx)``: SAFE_MODE from the next cycle on (0 = accepted)."""
    return _call_ctx_i32(_api(ctx_ptr).request_safe_mode, ctx_ptr)


@njit(inline="always")  # type: ignore[untyped-decorator]
def request_stop(ctx_ptr: Any) -> Any:
    """``ctx->api->request_stop(ctx)``: stop after this cycle (0 = accepted)."""
    return _call_ctx_i32(_api(ctx_ptr).request_stop, ctx_ptr)


@njit(inline="always")  # type: ignore[untyped-decorator]
def clock_ns(ctx_ptr: Any) -> Any:
    """``ctx->api->clock_ns(ctx)``: the executive's clock (virtual when simulated); -1 on a
    core older than ABI version 2."""
    api = _api(ctx_ptr)
    if api.abi_version < 2:
        return np.int64(-1)
    return _call_ctx_i64(api.clock_ns, ctx_ptr)


@njit(inline="always")  # type: ignore[untyped-decorator]
def sim_advance(ctx_ptr: Any, ns: Any) -> Any:
    """``ctx->api->sim_advance(ctx, ns)``: consume ``ns`` of virtual time (simulated clock).

    0 = ok; EINVAL (22) for ns < 0; ENOTSUP (95) on a real clock or a core
    older than ABI version 2.
    """
    api = _api(ctx_ptr)
    if api.abi_version < 2:
        return np.int32(_ENOTSUP)
    return _call_ctx_i64_i32(api.sim_advance, ctx_ptr, np.int64(ns))
