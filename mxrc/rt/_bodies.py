"""Cycle bodies: what an :class:`~mxrc.rt.Executive` accepts, and how each kind is classified.

Three tiers (ARCHITECTURE §3):

- **native**: a C function ``int body(const mxrc_cycle_ctx*)`` (``mxrc.h``) in a
  shared object, called on the cycle thread without the GIL. Given as
  :class:`NativeBody` (an address), a cffi function pointer
  (``ffi.addressof(lib, "body")``), a ctypes function pointer of a C function, or
  a numba ``cfunc``, or a ``PyCapsule`` named ``"mxrc.body"`` holding an
  ``mxrc_body_fn`` (how a C/C++ program or extension hands over its body; the
  capsule's context, if set, becomes ``ctx->user``). Raw addresses are checked
  with ``dladdr``: one that lies in no loaded shared object is not a compiled
  function.
- **Python**: any other callable, called as ``body(ctx)`` with the GIL taken per call.
- A ctypes ``CFUNCTYPE`` or cffi ``ffi.callback`` made from a *Python* function is
  refused: it takes the GIL (and, for ctypes, a fresh thread state) on every call,
  so it is a Python body in disguise, only slower.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mxrc._native import _core
from mxrc.errors import NotNativeError

__all__ = [
    "CAPSULE_NAME",
    "BodySpec",
    "BuiltinBody",
    "NativeBody",
    "NotNativeError",
    "classify_body",
]


@dataclass(frozen=True)
class NativeBody:
    """A native cycle body: the address of ``int body(const mxrc_cycle_ctx*)``.

    ``user_data`` is handed to the body as ``ctx->user`` (an integer, e.g. the
    address of a buffer the caller keeps alive). ``verified`` skips the
    ``dladdr`` check (JIT compilers such as numba place code outside any shared
    object); leave it False for addresses from compiled extensions.
    """

    address: int
    user_data: int = 0
    verified: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.address, int) or self.address <= 0:
            raise ValueError(f"NativeBody address must be a positive int, got {self.address!r}")
        if not isinstance(self.user_data, int) or self.user_data < 0:
            raise ValueError(f"user_data must be an int >= 0, got {self.user_data!r}")


BUILTIN_KINDS = ("noop", "sleep_ns", "fail_at", "fail_every")


@dataclass(frozen=True)
class BuiltinBody:
    """A C++ (tier 1) body compiled into mxrc's core, for tests and benchmarks.

    ``kind``: "noop"; "sleep_ns" (sleeps ``arg`` ns: a slow body that does not
    burn the CPU; on a simulated clock it consumes ``arg`` virtual ns instead);
    "fail_at" (returns error 7 on cycle ``arg``); "fail_every" (returns 7 on
    every cycle that is a multiple of ``arg``).
    """

    kind: str = "noop"
    arg: int = 0

    def __post_init__(self) -> None:
        if self.kind not in BUILTIN_KINDS:
            raise ValueError(f"builtin body kind must be one of {BUILTIN_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class BodySpec:
    """A classified body: ``kind`` "python" (``fn``), "native" (``address``,
    ``user_data``) or "builtin" (``builtin``). ``keepalive``: the object the
    address came from (a capsule), referenced for as long as the spec is."""

    kind: Literal["python", "native", "builtin"]
    fn: Callable[..., Any] | None = None
    address: int = 0
    user_data: int = 0
    description: str = ""
    builtin: BuiltinBody | None = None
    keepalive: object = None


#: Name a PyCapsule holding an ``mxrc_body_fn`` must carry.
CAPSULE_NAME = "mxrc.body"


@functools.cache
def _capsule_api() -> tuple[Any, Any, Any]:
    """(GetName, GetPointer, GetContext) of the running interpreter's C API.

    Own prototypes over ``ctypes.pythonapi`` (whose shared attributes others
    may set): that also works inside a program that embeds Python, as long as
    the program exports libpython's symbols (as it must for extension modules).
    """
    api = ctypes.pythonapi
    obj, p, cstr = ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p
    get_name = ctypes.PYFUNCTYPE(cstr, obj)(("PyCapsule_GetName", api))
    get_pointer = ctypes.PYFUNCTYPE(p, obj, cstr)(("PyCapsule_GetPointer", api))
    get_context = ctypes.PYFUNCTYPE(p, obj)(("PyCapsule_GetContext", api))
    return get_name, get_pointer, get_context


def _is_capsule(obj: object) -> bool:
    return type(obj).__name__ == "PyCapsule" and type(obj).__module__ == "builtins"


def _from_capsule(capsule: object, user_data: int) -> BodySpec:
    get_name, get_pointer, get_context = _capsule_api()
    raw_name = get_name(capsule)
    name = raw_name.decode(errors="replace") if raw_name is not None else None
    if name != CAPSULE_NAME:
        raise TypeError(
            f"a capsule handed over as a cycle body must be named {CAPSULE_NAME!r} and hold an "
            f"mxrc_body_fn (int body(const mxrc_cycle_ctx*)); got a capsule named {name!r}"
        )
    address = get_pointer(capsule, CAPSULE_NAME.encode()) or 0
    context = get_context(capsule) or 0
    if context and user_data:
        raise ValueError(
            "the capsule carries its own user data (its context); do not pass user_data as well"
        )
    # The capsule is the C side's explicit statement that this is an
    # mxrc_body_fn: trusted like a numba cfunc (JIT code may lie outside any
    # shared object); dladdr only names it.
    where = _core.cycle.dladdr(address)
    desc = "native capsule " + (
        f"{where[1] or hex(address)} in {where[0]}" if where is not None else hex(address)
    )
    return BodySpec(
        "native",
        address=address,
        user_data=context or user_data,
        description=desc,
        keepalive=capsule,
    )


def _check_address(address: int, what: str) -> str:
    where = _core.cycle.dladdr(address)
    if where is None:
        raise NotNativeError(
            f"{what} at {address:#x} is not inside any loaded shared object, so it is not a "
            "compiled function: a ctypes CFUNCTYPE or cffi ffi.callback made from a Python "
            "function lands here (it takes the GIL on every call). Pass the Python function "
            "itself (Python tier) or compile the body (cffi API mode, Cython nogil, numba cfunc)"
        )
    path, symbol = where
    if "libffi" in path.rsplit("/", 1)[-1]:
        raise NotNativeError(
            f"{what} at {address:#x} is a libffi closure trampoline ({path}): a callback made "
            "from a Python function, not a native body"
        )
    return f"{symbol or hex(address)} in {path}"


def _is_ctypes_python_callback(obj: Any) -> bool:
    objects = getattr(obj, "_objects", None)
    if not isinstance(objects, dict):
        return False
    return any(type(v).__name__ == "CThunkObject" for v in objects.values())


def classify_body(body: object, user_data: int = 0) -> BodySpec:
    """Decide the tier of ``body`` or raise.

    Raises :class:`NotNativeError` (a TypeError) for a C-callable wrapper of a
    Python function, TypeError for something that is neither callable nor a
    function pointer.
    """
    if isinstance(body, BuiltinBody):
        return BodySpec("builtin", builtin=body, description=f"builtin {body.kind}({body.arg})")

    if isinstance(body, NativeBody):
        desc = "native (verified by caller)"
        if not body.verified:
            desc = "native " + _check_address(body.address, "NativeBody address")
        return BodySpec("native", address=body.address, user_data=body.user_data, description=desc)

    # ctypes function pointers (CFUNCTYPE instances, CDLL functions).
    if isinstance(body, ctypes._CFuncPtr):  # type: ignore[attr-defined]
        if _is_ctypes_python_callback(body):
            raise NotNativeError(
                "a ctypes CFUNCTYPE wrapping a Python function is not a native body: it takes "
                "the GIL and a new thread state on every call. Pass the Python function itself "
                "(Python tier) or compile the body (cffi API mode, Cython nogil, numba cfunc)"
            )
        address = ctypes.cast(body, ctypes.c_void_p).value or 0
        desc = _check_address(address, "ctypes function pointer")
        return BodySpec("native", address=address, user_data=user_data, description=desc)

    # cffi cdata function pointers.
    if type(body).__module__ == "_cffi_backend":
        if "calling <" in repr(body):
            raise NotNativeError(
                "a cffi ffi.callback wrapping a Python function is not a native body: it takes "
                "the GIL on every call. Pass the Python function itself (Python tier), or "
                "compile the body in cffi API mode and pass ffi.addressof(lib, 'body')"
            )
        # cffi is not a dependency of mxrc: whoever made this cdata has it.
        ffi: Any = importlib.import_module("cffi").FFI()
        try:
            kind = ffi.typeof(body).kind
        except TypeError as exc:
            raise TypeError(f"cffi object {body!r} is not a function pointer") from exc
        if kind != "function":
            raise TypeError(
                f"cffi object {body!r} is a {kind}, not a function pointer; for an API-mode "
                "function pass ffi.addressof(lib, 'body')"
            )
        address = int(ffi.cast("uintptr_t", body))
        desc = _check_address(address, "cffi function pointer")
        return BodySpec("native", address=address, user_data=user_data, description=desc)

    if _is_capsule(body):
        return _from_capsule(body, user_data)

    # numba cfunc: JIT code lives outside any shared object; trust its type.
    if type(body).__module__.startswith("numba") and isinstance(
        getattr(body, "address", None), int
    ):
        address = int(body.address)  # type: ignore[attr-defined]
        return BodySpec(
            "native", address=address, user_data=user_data, description="native numba cfunc"
        )

    if isinstance(body, int) and not isinstance(body, bool):
        return classify_body(NativeBody(body, user_data))

    if callable(body):
        if user_data:
            raise ValueError("user_data is for native bodies; a Python body closes over its data")
        name = getattr(body, "__qualname__", None) or type(body).__name__
        return BodySpec("python", fn=body, description=f"python {name}")

    raise TypeError(
        f"a cycle body must be a Python callable, a NativeBody, a cffi/ctypes C function pointer, "
        f"a numba cfunc or a capsule named {CAPSULE_NAME!r}; got {type(body).__name__}"
    )
