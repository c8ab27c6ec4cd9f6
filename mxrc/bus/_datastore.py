"""The data store: typed slots with per-slot versions, readable from every tier.

A :class:`DataStore` lives in a memory region: the instance segment's data
store region (:meth:`DataStore.from_segment`), a private buffer
(:meth:`DataStore.private`), or any writable buffer such as an ``mmap`` of a
file in ``/dev/shm`` (:meth:`DataStore.open`). Its format is the C++
``mxrc::DataStore`` (``csrc/include/mxrc/datastore.hpp``); the cycle thread
reaches the same slots through the ``ds_*`` entries of the C function table.

Readers copy values out and never see a torn value; a writer may hold a slot
for a zero-copy numpy view inside :meth:`DataStore.write_scope`. See
``docs/datastore.md``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import numbers
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mxrc._native import _core
from mxrc.errors import MxrcError, SegmentError

if TYPE_CHECKING:
    from mxrc._core.datastore import SnapshotDict, StatsDict

__all__ = [
    "DEFAULT_MAX_SLOTS",
    "DEFAULT_TIMEOUT",
    "ChangeToken",
    "DataStore",
    "DataStoreBusyError",
    "DataStoreError",
    "DataStoreFormatError",
    "DataStoreSnapshot",
    "DataStoreWatcher",
    "DefinitionError",
    "DsKind",
    "SlotInfo",
    "SlotValueError",
    "SnapshotResult",
    "SnapshotTimeoutError",
    "TornReadError",
    "UnknownSlotError",
]

_log = logging.getLogger("mxrc.bus.datastore")
_ds = _core.datastore

DEFAULT_MAX_SLOTS = 256
"""Slots of a data store opened over a zero-filled region (``rt.bus.datastore_slots``)."""

DEFAULT_TIMEOUT = 0.02
"""Seconds a non-RT read or write waits for another writer before it raises."""

NAME_MAX: int = _ds.NAME_MAX
"""Longest slot name in bytes (printable ASCII without spaces)."""

Value = int | float | bool | str | npt.NDArray[np.float64]
"""What a slot holds, as Python sees it."""


# --- errors (raised by the core as well: the names are looked up by _core) ---


class DataStoreError(MxrcError):
    """Base class of the data store's errors."""


class DataStoreFormatError(DataStoreError, SegmentError):
    """The region is not a data store, has another format version, is too small or corrupt."""


class DefinitionError(DataStoreError, ValueError):
    """A bad slot name, type or capacity; a conflicting definition; a full table or arena."""


class UnknownSlotError(DataStoreError, KeyError):
    """No slot of that name (or index)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SlotValueError(DataStoreError, ValueError):
    """A value of the wrong type or size for its slot."""


class DataStoreBusyError(DataStoreError, BlockingIOError):
    """Another writer held the slot for longer than the timeout (EBUSY)."""


class TornReadError(DataStoreError, BlockingIOError):
    """A reader kept seeing a write in progress until its timeout (EAGAIN).

    A writer that died mid-write leaves its slot so; :meth:`DataStore.repair`
    releases it.
    """


class SnapshotTimeoutError(DataStoreError, TimeoutError):
    """No cycle thread serviced a snapshot request in time."""


class DsKind(enum.IntEnum):
    """Slot value types: the ``MXRC_DS_*`` values of ``mxrc.h``."""

    INT64 = 1
    FLOAT64 = 2
    BOOL = 3
    STRING = 4
    """UTF-8 text of at most ``capacity`` bytes."""
    F64ARRAY = 5
    """float64[n], n <= ``capacity``."""


_KIND_NAMES: dict[str, DsKind] = {
    "int64": DsKind.INT64,
    "int": DsKind.INT64,
    "float64": DsKind.FLOAT64,
    "float": DsKind.FLOAT64,
    "bool": DsKind.BOOL,
    "string": DsKind.STRING,
    "str": DsKind.STRING,
    "f64array": DsKind.F64ARRAY,
    "array": DsKind.F64ARRAY,
}
_KIND_TYPES: dict[type, DsKind] = {
    int: DsKind.INT64,
    float: DsKind.FLOAT64,
    bool: DsKind.BOOL,
    str: DsKind.STRING,
}

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _as_int(value: object) -> int | None:
    """``value`` as an int when it is an integer (not a bool), else None."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _kind_of(kind: object) -> DsKind:
    if isinstance(kind, DsKind):
        return kind
    if isinstance(kind, str) and kind.lower() in _KIND_NAMES:
        return _KIND_NAMES[kind.lower()]
    if isinstance(kind, type) and kind in _KIND_TYPES:
        return _KIND_TYPES[kind]
    number = _as_int(kind)
    if number is not None and number in {k.value for k in DsKind}:
        return DsKind(number)
    raise DefinitionError(
        f"unknown data store kind {kind!r}: expected a DsKind, one of "
        f"{sorted(_KIND_NAMES)} or int/float/bool/str"
    )


class SnapshotResult(enum.IntEnum):
    """What :meth:`DataStore.service_snapshot` did at a cycle boundary."""

    IDLE = 0
    """No request was pending."""
    TAKEN = 1
    POSTPONED = 2
    """A slot was being written: it tries again at the next boundary."""
    BUSY = 3
    """Another thread was servicing a snapshot."""


@dataclass(frozen=True)
class SlotInfo:
    """A slot's definition (fixed once defined)."""

    index: int
    name: str
    kind: DsKind
    capacity: int
    """Bytes for STRING, elements for F64ARRAY, 1 otherwise."""


@dataclass(frozen=True)
class ChangeToken:
    """Where :meth:`DataStore.changed_since` left off (opaque)."""

    counter: int
    versions: tuple[int, ...]


@dataclass(frozen=True)
class DataStoreSnapshot:
    """Every slot's value as of one cycle boundary."""

    token: int
    """The request this snapshot answers (>= the token of :meth:`DataStore.request_snapshot`)."""
    cycle: int
    """The cycle boundary it was taken at (the ``cycle`` given to ``service_snapshot``)."""
    taken_ns: int
    """CLOCK_MONOTONIC (or the executive's clock) when it was taken."""
    values: dict[str, Value | None]
    """By slot name; None for a torn slot."""
    versions: dict[str, int]
    torn: tuple[str, ...]
    """Slots that stayed mid-write through every postponement (see docs/datastore.md)."""


def _array_ok(value: object) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "__array__")


class DataStore:
    """Typed slots with per-slot versions in a memory region.

    Build one with :meth:`private`, :meth:`open`, :meth:`format`,
    :meth:`attach` or :meth:`from_segment`. Reading and writing take a slot
    name: ``ds["pos"]``, ``ds.write("pos", value)``. Slots are defined once
    (:meth:`define`) and never removed. ``timeout`` is how long non-RT reads
    and writes wait for another writer before raising.

    Thread-safe; several processes may open the same region.
    """

    __slots__ = ("_core_store", "_held", "_slots", "timeout")

    def __init__(self, core_store: _core.datastore.DataStore, *, timeout: float = DEFAULT_TIMEOUT):
        """Wrap a ``_core.datastore.DataStore``; use the class methods."""
        self._core_store = core_store
        self._slots: dict[str, SlotInfo] = {}
        self._held: dict[int, int] = {}  # slot index -> thread id of a write_scope
        self.timeout = float(timeout)

    # --- construction ---

    @staticmethod
    def region_bytes(max_slots: int, arena_bytes: int) -> int:
        """Bytes a region needs for ``max_slots`` slots and ``arena_bytes`` of values."""
        return _ds.region_bytes(max_slots, arena_bytes)

    @staticmethod
    def arena_bytes_for(region_bytes: int, max_slots: int) -> int:
        """Bytes of values a region of ``region_bytes`` holds with ``max_slots`` slots."""
        return _ds.arena_bytes_for(region_bytes, max_slots)

    @classmethod
    def private(
        cls, *, max_slots: int = 64, arena_bytes: int = 16384, timeout: float = DEFAULT_TIMEOUT
    ) -> DataStore:
        """A data store in this process's memory (no segment)."""
        return cls(_ds.DataStore.private(max_slots, arena_bytes), timeout=timeout)

    @classmethod
    def open(
        cls, buffer: Any, *, max_slots: int = DEFAULT_MAX_SLOTS, timeout: float = DEFAULT_TIMEOUT
    ) -> DataStore:
        """Attach to the data store in ``buffer``, or format it when it is zero-filled.

        ``buffer``: any writable, 8-byte aligned buffer (``mmap.mmap``, a
        numpy array, a segment region); it stays referenced while the store is
        used. The arena takes what the slot table leaves. Processes opening
        the same zeroed region at once agree on one format. Raises
        DataStoreFormatError for a region holding something else.
        """
        return cls(_ds.DataStore.from_buffer(buffer, "open", max_slots), timeout=timeout)

    @classmethod
    def format(
        cls,
        buffer: Any,
        *,
        max_slots: int = DEFAULT_MAX_SLOTS,
        arena_bytes: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> DataStore:
        """Format ``buffer`` (erasing it): ``arena_bytes`` of values, 0 = all that fits.

        Nobody else may be using the region.
        """
        return cls(
            _ds.DataStore.from_buffer(buffer, "format", max_slots, arena_bytes), timeout=timeout
        )

    @classmethod
    def attach(cls, buffer: Any, *, timeout: float = DEFAULT_TIMEOUT) -> DataStore:
        """The data store some process formatted in ``buffer``; DataStoreFormatError otherwise."""
        return cls(_ds.DataStore.from_buffer(buffer, "attach"), timeout=timeout)

    @classmethod
    def from_segment(
        cls,
        segment: Any,
        *,
        max_slots: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> DataStore:
        """The data store in an instance segment's data store region (formatted on first use).

        ``segment``: a :class:`mxrc.bus.Segment` (owner or attached).
        ``max_slots`` (for the first user, who formats the zero-filled
        region) defaults to the ``datastore_slots`` the segment was created
        with. The region stays mapped while the store is used, even after the
        segment is closed. Raises SegmentError when the segment has no data
        store region.
        """
        core_segment = getattr(segment, "_core_segment", segment)
        get_region = getattr(core_segment, "datastore_region", None)
        if get_region is None:
            raise SegmentError(f"{segment!r} has no data store region (a layout v1 segment?)")
        region = get_region()
        if len(region) == 0:
            raise SegmentError(f"{segment!r} was created without a data store (datastore_bytes 0)")
        if max_slots is None:
            hint = int(core_segment.header().get("datastore_slots", 0) or 0)
            max_slots = hint if hint > 0 else DEFAULT_MAX_SLOTS
        return cls.open(region, max_slots=max_slots, timeout=timeout)

    # --- definitions ---

    def define(self, name: str, kind: DsKind | str | type, capacity: int | None = None) -> SlotInfo:
        """Define slot ``name`` (or return it when already defined the same way).

        ``kind``: a :class:`DsKind`, ``"int64"``/``"float64"``/``"bool"``/
        ``"string"``/``"f64array"`` or ``int``/``float``/``bool``/``str``.
        ``capacity``: bytes of a STRING or elements of an F64ARRAY (required
        for those), 1 or None for the scalars. Not for the cycle thread.

        Raises DefinitionError for a bad name (1..31 bytes of printable ASCII,
        no spaces), a conflicting definition, or a full table or arena.
        """
        k = _kind_of(kind)
        if capacity is None:
            if k in (DsKind.STRING, DsKind.F64ARRAY):
                raise DefinitionError(
                    f"data store slot {name!r}: a {k.name.lower()} needs a capacity "
                    f"({'bytes' if k is DsKind.STRING else 'elements'})"
                )
            capacity = 1
        cap = _as_int(capacity)
        if cap is None:
            raise DefinitionError(f"data store slot {name!r}: capacity must be an int")
        if not 0 <= cap <= 0xFFFFFFFF:
            raise DefinitionError(
                f"data store slot {name!r}: capacity {capacity} outside 0..2**32-1"
            )
        if not isinstance(name, str):
            raise DefinitionError(f"data store slot name must be a str, got {name!r}")
        try:
            encoded = name.encode("ascii")
        except UnicodeEncodeError:
            raise DefinitionError(
                f"data store slot name {name!r}: only printable ASCII without spaces is allowed"
            ) from None
        index = self._core_store.define(encoded.decode(), int(k), cap)
        return self._info(index)

    def _info(self, index: int) -> SlotInfo:
        d = self._core_store.info(index)
        info = SlotInfo(index, d["name"], DsKind(d["type"]), d["capacity"])
        self._slots[info.name] = info
        return info

    def _lookup(self, name: str) -> SlotInfo:
        info = self._slots.get(name)
        if info is not None:
            return info
        index = self._core_store.find(name) if isinstance(name, str) else -1
        if index < 0:
            known = self.names()
            shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise UnknownSlotError(f"no data store slot named {name!r}; defined: {shown or 'none'}")
        return self._info(index)

    def info(self, name: str) -> SlotInfo:
        """The definition of slot ``name``; UnknownSlotError if there is none."""
        return self._lookup(name)

    def names(self) -> list[str]:
        """Every defined slot's name, in definition order (also those other processes define)."""
        n = self._core_store.slot_count
        by_index = {i.index: i.name for i in self._slots.values()}
        return [by_index[i] if i in by_index else self._info(i).name for i in range(n)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._slots or self._core_store.find(name) >= 0

    def __len__(self) -> int:
        return self._core_store.slot_count

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # --- values ---

    def _check_not_held(self, info: SlotInfo) -> None:
        if self._held.get(info.index) == threading.get_ident():
            raise DataStoreBusyError(
                f"data store slot {info.name!r} is held by a write_scope of this thread: "
                "use the view inside the scope"
            )

    def read(self, name: str, *, timeout: float | None = None) -> Value:
        """A copy of slot ``name``'s value (``ds[name]``).

        int, float, bool, str, or a new float64 array. Raises
        UnknownSlotError, or TornReadError when a write stayed in progress for
        ``timeout`` seconds (default :attr:`timeout`).
        """
        return self.read_versioned(name, timeout=timeout)[0]

    def read_versioned(self, name: str, *, timeout: float | None = None) -> tuple[Value, int]:
        """``(value, version)``: the copy and the version it was copied at."""
        info = self._lookup(name)
        self._check_not_held(info)
        value, version = self._core_store.read(
            info.index, self.timeout if timeout is None else timeout
        )
        return value, version

    def read_into(
        self, name: str, out: npt.NDArray[np.float64], *, timeout: float | None = None
    ) -> int:
        """Copy an f64array slot into ``out`` (C-contiguous float64) without allocating.

        Copies min(length, out.size) elements; returns the value's length in
        elements (more than out.size: truncated).
        """
        info = self._lookup(name)
        self._check_not_held(info)
        if not isinstance(out, np.ndarray) or out.dtype != np.float64:
            raise SlotValueError(f"read_into({name!r}): out must be a float64 numpy array")
        if not out.flags.c_contiguous:
            raise SlotValueError(f"read_into({name!r}): out must be C-contiguous")
        n, _ = self._core_store.read_into(
            info.index, out.reshape(-1), self.timeout if timeout is None else timeout
        )
        return n

    def __getitem__(self, name: str) -> Value:
        return self.read(name)

    def write(self, name: str, value: object, *, timeout: float | None = None) -> None:
        """Replace slot ``name``'s value (``ds[name] = value``).

        INT64 takes an int in int64 range, FLOAT64 a real number, BOOL a bool,
        STRING a str (UTF-8, at most ``capacity`` bytes), F64ARRAY a 1-D
        sequence of at most ``capacity`` floats (the length is part of the
        value). Raises SlotValueError for anything else, DataStoreBusyError
        when another writer held the slot for ``timeout`` seconds.
        """
        info = self._lookup(name)
        self._check_not_held(info)
        t = self.timeout if timeout is None else timeout
        core = self._core_store
        kind = info.kind
        if kind is DsKind.FLOAT64 and type(value) is float:  # the common case, without ABCs
            core.write_f64(info.index, value, t)
        elif kind is DsKind.INT64:
            v = _as_int(value)
            if v is None:
                raise self._value_error(info, value, "an int")
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise SlotValueError(f"data store slot {name!r} (int64): {v} is out of range")
            core.write_i64(info.index, v, t)
        elif kind is DsKind.FLOAT64:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise self._value_error(info, value, "a real number")
            core.write_f64(info.index, float(value), t)
        elif kind is DsKind.BOOL:
            if not isinstance(value, (bool, np.bool_)):
                raise self._value_error(info, value, "a bool")
            core.write_bool(info.index, bool(value), t)
        elif kind is DsKind.STRING:
            if not isinstance(value, str):
                raise self._value_error(info, value, "a str")
            data = value.encode("utf-8")
            if len(data) > info.capacity:
                raise SlotValueError(
                    f"data store slot {name!r} holds at most {info.capacity} bytes of UTF-8; "
                    f"got {len(data)}"
                )
            core.write_bytes(info.index, data, t)
        else:
            if isinstance(value, (str, bytes)) or not _array_ok(value):
                raise self._value_error(info, value, "a 1-D sequence of floats")
            try:
                arr = np.ascontiguousarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise SlotValueError(
                    f"data store slot {name!r} (f64array): cannot convert the value to float64: "
                    f"{exc}"
                ) from None
            if arr.ndim != 1:
                raise SlotValueError(
                    f"data store slot {name!r} (f64array): expected a 1-D array, got shape "
                    f"{arr.shape}"
                )
            if arr.size > info.capacity:
                raise SlotValueError(
                    f"data store slot {name!r} holds at most {info.capacity} float64s; "
                    f"got {arr.size}"
                )
            core.write_array(info.index, arr, t)

    @staticmethod
    def _value_error(info: SlotInfo, value: object, expected: str) -> SlotValueError:
        return SlotValueError(
            f"data store slot {info.name!r} ({info.kind.name.lower()}) takes {expected}, "
            f"got {type(value).__name__} {value!r:.60}"
        )

    def __setitem__(self, name: str, value: object) -> None:
        self.write(name, value)

    @contextlib.contextmanager
    def write_scope(
        self, name: str, length: int | None = None, *, timeout: float | None = None
    ) -> Iterator[npt.NDArray[np.float64]]:
        """Hold slot ``name`` and write it in place through a zero-copy float64 view.

        ::

            with ds.write_scope("pos") as arr:
                arr[:] = controller.output()

        For an f64array (``length`` elements, default: its current length;
        the new value has that length) or a float64 (one element). While the
        scope is open, the slot's version is odd: readers wait (or raise
        TornReadError after their timeout), other writers get EBUSY. The view
        is valid only inside the scope: it is made read-only when the scope
        ends, and views derived from it must not be kept. Leaving the scope,
        also by an exception, publishes whatever the view holds (version + 2).
        """
        info = self._lookup(name)
        self._check_not_held(info)
        if info.kind not in (DsKind.F64ARRAY, DsKind.FLOAT64):
            raise SlotValueError(
                f"write_scope({name!r}): a zero-copy float64 view needs a float64 or f64array "
                f"slot, not {info.kind.name.lower()}"
            )
        want = None if length is None else _as_int(length)
        if length is not None and (want is None or not 0 <= want <= info.capacity):
            raise SlotValueError(
                f"write_scope({name!r}): length must be 0..{info.capacity}, got {length!r}"
            )
        core = self._core_store
        core.acquire(info.index, self.timeout if timeout is None else timeout)
        try:
            if info.kind is DsKind.FLOAT64:
                n = 1
            elif want is None:
                n = core.info(info.index)["len"] // 8  # stable: we hold the slot
            else:
                n = want
            view = core.view(info.index, n)
        except BaseException:
            core.release(info.index, 0 if info.kind is DsKind.F64ARRAY else 8)
            raise
        self._held[info.index] = threading.get_ident()
        try:
            yield view
        finally:
            view.flags.writeable = False
            del self._held[info.index]
            core.release(info.index, n * 8)

    def version(self, name: str) -> int:
        """Slot ``name``'s version: even, +2 per completed write, 0 = never written.

        Odd while a writer holds it.
        """
        return self._core_store.version(self._lookup(name).index)

    def read_all(self, *, timeout: float | None = None) -> dict[str, Value]:
        """Every slot's value by name (each a consistent copy; not one instant: see snapshot)."""
        return {n: self.read(n, timeout=timeout) for n in self.names()}

    # --- change notification (non-RT) ---

    @property
    def change_counter(self) -> int:
        """+1 per completed write to any slot."""
        return self._core_store.change_counter

    def changed_since(self, token: ChangeToken | None = None) -> tuple[list[str], ChangeToken]:
        """``(names, new_token)``: slots written since ``token`` was handed out.

        Without a token: every slot written at least once. Pass the returned
        token to the next call; a write in progress counts once it completes.
        """
        counter = self._core_store.change_counter  # before the versions: nothing is missed
        n = self._core_store.slot_count
        if token is not None and counter == token.counter and n == len(token.versions):
            return [], token
        raw = self._core_store.versions()
        stable = tuple(int(v) - (int(v) & 1) for v in raw)  # mid-write: the last completed
        names = self.names()
        if token is None:
            changed = [names[i] for i, v in enumerate(stable) if v > 0 and i < len(names)]
        else:
            old = token.versions
            changed = [
                names[i]
                for i, v in enumerate(stable)
                if i < len(names) and v != (old[i] if i < len(old) else 0)
            ]
        return changed, ChangeToken(counter, stable)

    def watch(
        self, callback: Callable[[list[str]], object], interval_s: float = 0.05
    ) -> DataStoreWatcher:
        """Call ``callback(names)`` from a daemon thread whenever slots were written.

        Polls every ``interval_s`` seconds (non-RT only); changes from the
        moment of the call are reported. Stop it with ``.stop()`` or use it as
        a context manager. A raising callback is logged and counted, the
        watcher goes on.
        """
        return DataStoreWatcher(self, callback, interval_s)

    # --- snapshot at a cycle boundary ---

    def request_snapshot(self) -> int:
        """Ask the cycle thread for a snapshot; returns the request's token (non-RT)."""
        return self._core_store.request_snapshot()

    def service_snapshot(self, cycle: int, now_ns: int | None = None) -> SnapshotResult:
        """At a cycle boundary: take a pending snapshot (what the cycle thread calls).

        Copies every slot into the region's snapshot area without allocating.
        The executive calls it between cycles; call it yourself only from the
        thread that writes the cycle's slots.
        """
        return SnapshotResult(
            self._core_store.service_snapshot(cycle, -1 if now_ns is None else now_ns)
        )

    def read_snapshot(self, token: int | None = None, *, timeout: float = 1.0) -> DataStoreSnapshot:
        """The snapshot answering request ``token`` (default: the latest one), waiting for it.

        Raises SnapshotTimeoutError when none arrives within ``timeout``
        seconds (is a cycle thread calling service_snapshot?).
        """
        want = 1 if token is None else int(token)
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            d = self._core_store.read_snapshot(want)
            if d is not None:
                return self._snapshot_of(d)
            if time.monotonic() >= deadline:
                raise SnapshotTimeoutError(
                    f"data store snapshot request {want} was not serviced within {timeout} s: "
                    f"no cycle thread calls service_snapshot() on this data store (is an "
                    f"executive running on it?)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def last_snapshot(self) -> DataStoreSnapshot | None:
        """The most recent snapshot, or None if none was taken yet."""
        d = self._core_store.read_snapshot(1)
        return None if d is None else self._snapshot_of(d)

    def snapshot(self, *, timeout: float = 1.0) -> DataStoreSnapshot:
        """Request a snapshot and wait for it (:meth:`request_snapshot` + :meth:`read_snapshot`)."""
        return self.read_snapshot(self.request_snapshot(), timeout=timeout)

    @staticmethod
    def _snapshot_of(d: SnapshotDict) -> DataStoreSnapshot:
        return DataStoreSnapshot(
            token=d["token"],
            cycle=d["cycle"],
            taken_ns=d["taken_ns"],
            values=dict(d["values"]),
            versions=dict(d["versions"]),
            torn=tuple(d["torn"]),
        )

    # --- maintenance ---

    def repair(self, grace_s: float = 0.1) -> list[str]:
        """Release slots left mid-write by a dead process; returns their names.

        A slot qualifies when its version stayed the same odd value for
        ``grace_s`` seconds and its last writer's process no longer exists.
        Its value is whatever the dead writer left: rewrite it.
        """
        names = self.names()
        return [names[i] for i in self._core_store.repair(grace_s)]

    def stats(self) -> StatsDict:
        """Sizes and counters: region_bytes, max_slots, slot_count, arena (used) bytes, ..."""
        return self._core_store.stats()

    @property
    def max_slots(self) -> int:
        """Slots the region was formatted for."""
        return self._core_store.max_slots

    @property
    def address(self) -> int:
        """Address of the C++ ``mxrc::DataStore`` view (for the C table's ds_* functions)."""
        return self._core_store.address

    def __repr__(self) -> str:
        s = self._core_store.stats()
        return (
            f"<DataStore {s['slot_count']}/{s['max_slots']} slots, "
            f"{s['arena_used_bytes']}/{s['arena_bytes']} bytes used>"
        )


class DataStoreWatcher:
    """A daemon thread polling :meth:`DataStore.changed_since` (see :meth:`DataStore.watch`)."""

    def __init__(
        self, store: DataStore, callback: Callable[[list[str]], object], interval_s: float
    ) -> None:
        """Start watching ``store``; prefer :meth:`DataStore.watch`."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._store = store
        self._callback = callback
        self._interval = float(interval_s)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._token: ChangeToken = store.changed_since()[1]
        self.polls = 0
        """Polls so far."""
        self.notifications = 0
        """Callbacks made."""
        self.errors = 0
        """Callbacks that raised (logged on ``mxrc.bus.datastore``)."""
        self._thread = threading.Thread(target=self._run, name="mxrc-datastore-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def poll(self) -> list[str]:
        """Check once now (the thread does this every interval); returns the names reported."""
        with self._lock:
            names, self._token = self._store.changed_since(self._token)
            self.polls += 1
            if names:
                self.notifications += 1
                try:
                    self._callback(names)
                except Exception:
                    self.errors += 1
                    _log.exception("data store watch callback failed for %s", names)
        return names

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait for it. Idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> DataStoreWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
