"""Checkpoints: atomic, checksummed, bit-exact snapshots of an instance's state.

A checkpoint holds the executive's state (RtState, cycle count, generation),
Task/Sequence/Action states (:meth:`mxrc.tasks.Task.to_dict`), a consistent
data store snapshot (taken by the cycle thread at a cycle boundary), the
EventBus queue (pending events as 256-byte records) and the application's
own state (optional save/restore hooks). Files are named
``ckpt-<epoch:08d>-<sequence:012d>.json`` and ordered by (epoch, sequence),
never by mtime; they are written atomically (temp file in the same
directory, fsync, rename, fsync of the directory) and carry a sha256 over the
canonical body, so a torn or corrupt file is detected, named in a warning
and skipped. Floats are stored as the hex of their IEEE-754 bits (NaN
payloads, infinities and -0.0 survive), arrays as base64 of raw
little-endian bytes.

See ``docs/checkpoints.md``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mxrc.errors import MxrcError
from mxrc.rt._placement import pid_alive

if TYPE_CHECKING:
    from mxrc.bus import DataStore, Event, EventBus, Segment
    from mxrc.ha._health import CheckpointInfo
    from mxrc.rt import Executive
    from mxrc.rt._state import RtState
    from mxrc.tasks import Task

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SCHEMA_VERSION",
    "DEFAULT_KEEP",
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointNewerError",
    "CheckpointStore",
    "CheckpointWriter",
    "RestoreReport",
    "ResumeReport",
    "SlotImage",
    "capture",
    "checkpoint_name",
    "decode_value",
    "encode_value",
    "restore",
    "resume_datastore",
    "writer_for_segment",
]

_log = logging.getLogger("mxrc.ha.checkpoint")

CHECKPOINT_FORMAT = "mxrc-checkpoint"
CHECKPOINT_SCHEMA_VERSION = 1
"""Version of the file format; :meth:`CheckpointStore.load` refuses others."""
DEFAULT_KEEP = 10
"""Checkpoints kept by default (config ``failover_policy.json`` ``rt.checkpoint_keep``)."""

_NAME_RE = re.compile(r"^ckpt-(\d{8})-(\d{12})\.json$")
_TMP_RE = re.compile(r"^\.ckpt-\d{8}-\d{12}\.json\.(\d+)\.tmp$")
_EPOCH_MAX = 10**8 - 1
_SEQ_MAX = 10**12 - 1

# A test hook: called with a stage name ("written", "synced", "renamed") while a
# file is being published. The SIGKILL tests slow these stages down.
_write_hook: Callable[[str], None] | None = None


class CheckpointError(MxrcError):
    """A checkpoint could not be captured, written or restored."""


class CheckpointCorruptError(CheckpointError, ValueError):
    """A checkpoint file is torn, corrupt, of another schema version or misnamed."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"checkpoint {self.path}: {reason}")


class CheckpointNewerError(CheckpointCorruptError):
    """A checkpoint written by a newer mxrc (a higher ``schema_version``): not read, but
    never removed by retention, so a downgrade followed by an upgrade loses nothing."""

    def __init__(self, path: Path | str, schema_version: int) -> None:
        self.schema_version = schema_version
        super().__init__(
            path,
            f"written by a newer mxrc (schema_version {schema_version}; this mxrc reads "
            f"{CHECKPOINT_SCHEMA_VERSION}): not used, kept",
        )


# ---------------------------------------------------------------- bit-exact values


def _f64_hex(value: float) -> str:
    return struct.pack(">d", value).hex()


def encode_value(value: object, *, _where: str = "value") -> Any:
    """A JSON-safe, bit-exact form of ``value`` (:func:`decode_value` inverts it).

    None, bool, int and str stay as they are; a float (and a numpy float64)
    becomes ``{"$f64": "<16 hex digits of its IEEE-754 bits>"}``; another numpy
    float or complex scalar (float16, float32, longdouble, complex64, ...)
    ``{"$scalar": {dtype, data}}``, which decodes as the same numpy scalar type
    (bit-exact); bytes become
    ``{"$bytes": base64}``; a numpy array ``{"$ndarray": {dtype, shape,
    data}}`` (raw little-endian bytes, base64); lists and tuples lists;
    dicts with str keys dicts (``{"$dict": ...}`` when a key starts with
    ``$``). Anything else raises CheckpointError naming where it was.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float):  # np.float64 is one
        return {"$f64": _f64_hex(value)}
    if isinstance(value, (np.floating, np.complexfloating)):
        # float(value) would round a longdouble and lose the dtype of a float32
        return {"$scalar": _array_fields(np.asarray(value), shape=False)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise CheckpointError(
                f"{_where}: a numpy array of dtype {value.dtype} cannot be stored in a checkpoint "
                f"(expected a numeric or bool dtype)"
            )
        return {"$ndarray": _array_fields(value, shape=True)}
    if isinstance(value, (list, tuple)):
        return [encode_value(v, _where=f"{_where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(
                    f"{_where}: dict keys must be str to be stored in a checkpoint, got "
                    f"{type(k).__name__} {k!r:.40}"
                )
            out[k] = encode_value(v, _where=f"{_where}[{k!r}]")
        if any(k.startswith("$") for k in out):
            return {"$dict": out}
        return out
    raise CheckpointError(
        f"{_where}: a {type(value).__name__} cannot be stored in a checkpoint (expected None, "
        f"bool, int, float, str, bytes, a numpy array, or lists/dicts of these)"
    )


def _array_fields(value: np.ndarray[Any, Any], *, shape: bool) -> dict[str, Any]:
    """dtype (little-endian), shape when asked, raw bytes in base64."""
    le = value.astype(value.dtype.newbyteorder("<"), copy=False)
    fields: dict[str, Any] = {"dtype": le.dtype.str}
    if shape:
        fields["shape"] = list(value.shape)
    fields["data"] = base64.b64encode(np.ascontiguousarray(le).tobytes()).decode("ascii")
    return fields


def decode_value(data: Any, *, _where: str = "value") -> Any:
    """Invert :func:`encode_value`; raises ValueError for a malformed encoding."""
    if data is None or isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, float):
        raise ValueError(f"{_where}: a bare JSON number with a fraction (floats are $f64)")
    if isinstance(data, list):
        return [decode_value(v, _where=f"{_where}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, dict):
        raise ValueError(f"{_where}: unexpected JSON {type(data).__name__}")
    if len(data) == 1:
        ((tag, inner),) = data.items()
        if tag == "$f64":
            if not isinstance(inner, str) or not re.fullmatch(r"[0-9a-f]{16}", inner):
                raise ValueError(f"{_where}: $f64 needs 16 lowercase hex digits, got {inner!r:.40}")
            return float(struct.unpack(">d", bytes.fromhex(inner))[0])
        if tag == "$bytes":
            return _b64(inner, _where)
        if tag == "$ndarray":
            return _decode_ndarray(inner, _where)
        if tag == "$scalar":
            if not isinstance(inner, dict) or set(inner) != {"dtype", "data"}:
                raise ValueError(f"{_where}: $scalar needs exactly dtype and data")
            return _decode_ndarray({**inner, "shape": []}, _where)[()]
        if tag == "$dict":
            if not isinstance(inner, dict):
                raise ValueError(f"{_where}: $dict needs an object")
            return {k: decode_value(v, _where=f"{_where}[{k!r}]") for k, v in inner.items()}
        if tag.startswith("$"):
            raise ValueError(f"{_where}: unknown tag {tag!r}")
    for k in data:
        if k.startswith("$"):
            raise ValueError(f"{_where}: key {k!r} starting with $ outside a $dict")
    return {k: decode_value(v, _where=f"{_where}[{k!r}]") for k, v in data.items()}


def _b64(inner: object, where: str) -> bytes:
    if not isinstance(inner, str):
        raise ValueError(f"{where}: base64 text expected")
    try:
        return base64.b64decode(inner.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{where}: bad base64: {exc}") from None


def _decode_ndarray(inner: object, where: str) -> np.ndarray[Any, Any]:
    if not isinstance(inner, dict) or set(inner) != {"dtype", "shape", "data"}:
        raise ValueError(f"{where}: $ndarray needs exactly dtype, shape and data")
    try:
        dtype = np.dtype(inner["dtype"])
    except TypeError as exc:
        raise ValueError(f"{where}: bad dtype {inner['dtype']!r}: {exc}") from None
    if dtype.kind not in "biufc":
        raise ValueError(f"{where}: dtype {dtype} is not numeric")
    shape = inner["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"{where}: shape must be a list of non-negative ints")
    raw = _b64(inner["data"], where)
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != count * dtype.itemsize:
        raise ValueError(
            f"{where}: {len(raw)} bytes of data for shape {shape} of {dtype} "
            f"(expected {count * dtype.itemsize})"
        )
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


# ---------------------------------------------------------------- the checkpoint


@dataclasses.dataclass(frozen=True, eq=False)
class SlotImage:
    """One data store slot as stored in a checkpoint."""

    name: str
    kind: str
    """``int64``, ``float64``, ``bool``, ``string`` or ``f64array`` (lowercase DsKind names)."""
    capacity: int
    version: int
    value: Any
    """None when the slot was torn (mid-write) in the snapshot."""


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded (validated) or just written checkpoint (compared by identity)."""

    epoch: int
    sequence: int
    created_ns: int
    """CLOCK_REALTIME (``time.time_ns``) when it was captured."""
    reason: str
    """Why it was written: ``periodic``, ``INIT->READY``, ``RUNNING->SAFE_MODE``, ..."""
    executive: dict[str, Any] | None
    """``{name, state, cycles, generation}`` (state: an RtState name), plus
    ``safe_mode_reasons`` when captured from an executive, or None."""
    datastore: dict[str, SlotImage] | None
    """The data store snapshot by slot name, or None."""
    datastore_cycle: int | None
    """The cycle boundary the snapshot was taken at (None: read directly, no cycle thread)."""
    tasks: tuple[Any, ...]
    """``Task.to_dict()`` of every task."""
    events: tuple[bytes, ...]
    """Pending EventBus events as 256-byte ``mxrc_event`` records (critical first)."""
    app_state: Any
    has_app_state: bool
    path: Path | None
    size_bytes: int
    writer: str | None = None
    """``"rt"``: written by the RT process (tasks, events and application state are its
    own); ``"supervisor"``: those parts are carried from :attr:`carried_from`; None: unknown."""
    carried_from: str | None = None
    """The checkpoint (file name) tasks, events and application state were carried from."""

    @property
    def name(self) -> str:
        """The file name, ``ckpt-<epoch:08d>-<sequence:012d>.json``."""
        return checkpoint_name(self.epoch, self.sequence)

    @property
    def age_seconds(self) -> float:
        """Seconds since it was captured (wall clock)."""
        return max(0.0, (time.time_ns() - self.created_ns) / 1e9)

    def task_objects(self) -> list[Task]:
        """The tasks rebuilt with :func:`mxrc.tasks.from_dict` (publishing nothing)."""
        from mxrc.tasks import Task

        return [Task.from_dict(d) for d in self.tasks]

    def event_objects(self) -> list[Event]:
        """The pending events decoded (:meth:`mxrc.bus.Event.from_record`)."""
        from mxrc.bus import Event

        return [Event.from_record(r) for r in self.events]


def checkpoint_name(epoch: int, sequence: int) -> str:
    """The file name of checkpoint (epoch, sequence)."""
    if not 0 <= epoch <= _EPOCH_MAX or not 0 <= sequence <= _SEQ_MAX:
        raise CheckpointError(
            f"epoch must be 0..{_EPOCH_MAX} and sequence 0..{_SEQ_MAX}, got {epoch}, {sequence}"
        )
    return f"ckpt-{epoch:08d}-{sequence:012d}.json"


# ---------------------------------------------------------------- capture


def _rt_state_name(state: object) -> str:
    name = getattr(state, "name", None)
    return str(name) if name is not None else str(state)


def capture(
    *,
    datastore: DataStore | None = None,
    executive: Executive | None = None,
    segment: Segment | None = None,
    stats_name: str | None = None,
    tasks: Iterable[Task] = (),
    eventbus: EventBus | None = None,
    save_hook: Callable[[], object] | None = None,
    datastore_mode: Literal["snapshot", "read", "auto"] = "snapshot",
    snapshot_timeout: float = 1.0,
    writer: str | None = None,
) -> dict[str, Any]:
    """Collect the state a checkpoint holds; pass the result to :meth:`CheckpointStore.write`.

    ``datastore`` (default: the executive's): a consistent snapshot taken by
    the cycle thread at a cycle boundary (``datastore_mode="snapshot"``;
    SnapshotTimeoutError when no cycle thread services it within
    ``snapshot_timeout``), or ``"read"``: each slot read directly, for when
    no cycle thread runs (the RT process is dead or not started); ``"auto"``:
    a snapshot, else (timed out) a direct read.
    ``executive``: its state, cycle count and name; without one, the stats
    block ``stats_name`` of ``segment`` gives them (the agent/supervisor
    side). ``segment``: the generation and epoch. ``tasks``: their
    ``to_dict()``. ``eventbus``: its pending events. ``save_hook()``: the
    application's state (encodable by :func:`encode_value`). ``writer``: who
    wrote it, ``"rt"`` (the RT process, which sees tasks, events and the
    application's state) or ``"supervisor"``.
    """
    content: dict[str, Any] = {"created_ns": time.time_ns(), "writer": writer}
    ex: dict[str, Any] | None = None
    if executive is not None:
        ex = {
            "name": executive.name,
            "state": _rt_state_name(executive.state),
            "cycles": int(executive.cycles),
            "generation": None,
            "safe_mode_reasons": sorted(executive.safe_mode_reasons),
        }
        if datastore is None:
            datastore = executive.datastore
    elif segment is not None:
        try:
            st = segment.stats(stats_name)
        except LookupError:
            st = None
        if st is not None:
            ex = {
                "name": st.name,
                "state": _rt_state_name(st.state),
                "cycles": int(st.cycle_count),
                "generation": None,
            }
    if segment is not None:
        header = segment.header
        content["epoch"] = int(header["epoch"])
        if ex is None:
            ex = {"name": None, "state": None, "cycles": None, "generation": None}
        ex["generation"] = int(header["generation"])
    content["executive"] = ex
    content["datastore"] = (
        None
        if datastore is None
        else _capture_datastore(datastore, datastore_mode, snapshot_timeout)
    )
    content["tasks"] = [encode_value(t.to_dict(), _where="task") for t in tasks]
    content["events"] = [] if eventbus is None else _capture_events(eventbus)
    if save_hook is not None:
        content["app"] = {"state": encode_value(save_hook(), _where="save_hook()")}
    else:
        content["app"] = None
    return content


def _capture_datastore(
    ds: DataStore, mode: Literal["snapshot", "read", "auto"], timeout: float
) -> dict[str, Any]:
    values: dict[str, Any]
    versions: dict[str, int]
    cycle: int | None
    if mode == "auto":
        from mxrc.bus import SnapshotTimeoutError

        try:
            return _capture_datastore(ds, "snapshot", timeout)
        except SnapshotTimeoutError:
            _log.info("no cycle thread took the data store snapshot: reading the slots directly")
            mode = "read"
    if mode == "snapshot":
        snap = ds.snapshot(timeout=timeout)
        values, versions, cycle = dict(snap.values), dict(snap.versions), snap.cycle
    elif mode == "read":
        values, versions, cycle = {}, {}, None
        for n in ds.names():
            try:
                v, ver = ds.read_versioned(n, timeout=timeout)
            except BlockingIOError:  # TornReadError: held by a (dead?) writer
                v, ver = None, ds.version(n)
            values[n] = v
            versions[n] = ver
    else:
        raise ValueError(f"datastore_mode must be 'snapshot', 'read' or 'auto', got {mode!r}")
    slots = []
    for n, v in values.items():
        info = ds.info(n)
        slots.append(
            {
                "name": n,
                "kind": info.kind.name.lower(),
                "capacity": info.capacity,
                "version": int(versions.get(n, 0)),
                "value": encode_value(v, _where=f"data store slot {n!r}"),
            }
        )
    return {"cycle": cycle, "slots": slots}


def _capture_events(bus: EventBus) -> list[dict[str, Any]]:
    return [
        {"record": base64.b64encode(ev.to_record()).decode("ascii")} for ev in bus.pending_events()
    ]


# ---------------------------------------------------------------- the store


class CheckpointStore:
    """A directory of checkpoints: atomic writes, validation, retention.

    ``keep``: the newest N valid checkpoints kept after each write (config
    ``rt.checkpoint_keep``; :meth:`prune`). ``epoch``: the default epoch of new checkpoints
    (a write takes the segment's epoch when its content has one). The
    directory is created (mode 0750) when missing. Several processes may
    write into one directory: a lock file serialises sequence allocation.
    """

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = DEFAULT_KEEP) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1 (checkpoints), got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        try:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create the checkpoint directory {self.directory}: {exc.strerror}"
            ) from None
        if not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is not a directory")
        self.last_written: Checkpoint | None = None
        """The checkpoint this store wrote last (None before the first write)."""
        self._lock = threading.Lock()
        self._info_lock = threading.Lock()
        self._info_cache: tuple[tuple[object, ...], CheckpointInfo | None] | None = None
        # name -> (identity of the file, its status): files under a checkpoint name are
        # immutable (atomic rename), so each is validated once per store for write/prune.
        self._status_cache: dict[str, tuple[tuple[int, int, int], _Status]] = {}

    # --- listing ---

    def entries(self) -> list[tuple[int, int, Path]]:
        """``(epoch, sequence, path)`` of every file named like a checkpoint, oldest first."""
        out = []
        with os.scandir(self.directory) as it:
            for e in it:
                m = _NAME_RE.match(e.name)
                if m:
                    out.append((int(m.group(1)), int(m.group(2)), Path(e.path)))
        out.sort()
        return out

    def last_checkpoint(self) -> CheckpointInfo | None:
        """The newest valid checkpoint as :class:`mxrc.ha.CheckpointInfo`, or None.

        For the health server (``HaProvider.last_checkpoint``): cheap when
        this store wrote the newest file or nothing changed since the last
        call (cached by name, mtime and size); otherwise it validates files
        newest first like :meth:`load_newest`. Thread-safe.
        """
        from mxrc.ha._health import CheckpointInfo

        entries = self.entries()
        if not entries:
            return None
        path = entries[-1][2]
        try:
            st = path.stat()
        except OSError:
            return None
        # All names: a corrupt file that sorts newest would otherwise pin a stale answer.
        key = (tuple(p.name for _e, _s, p in entries), st.st_mtime_ns, st.st_size)
        with self._info_lock:
            if self._info_cache is not None and self._info_cache[0] == key:
                return self._info_cache[1]
        last = self.last_written
        cp = last if last is not None and last.path == path else self.load_newest()
        info = (
            None
            if cp is None or cp.path is None
            else CheckpointInfo(str(cp.path), cp.created_ns / 1e9, cp.size_bytes)
        )
        with self._info_lock:
            self._info_cache = (key, info)
        return info

    # --- loading ---

    def load(self, path: str | os.PathLike[str]) -> Checkpoint:
        """Read and validate one file; CheckpointCorruptError names it and what is wrong."""
        return _load(Path(path))

    def load_newest(self) -> Checkpoint | None:
        """The newest valid checkpoint by (epoch, sequence), or None.

        Each torn or corrupt file on the way is named in a warning on
        ``mxrc.ha.checkpoint`` and skipped.
        """
        for checkpoint in self.iter_valid():
            return checkpoint
        return None

    def iter_valid(self) -> Iterator[Checkpoint]:
        """Valid checkpoints, newest first (corrupt ones are logged and skipped)."""
        for _e, _s, path in reversed(self.entries()):
            try:
                yield _load(path)
            except FileNotFoundError:
                continue  # pruned meanwhile
            except CheckpointCorruptError as exc:
                _log.warning("skipping %s", exc)

    # --- writing ---

    def write(
        self, content: Mapping[str, Any], *, reason: str = "manual", epoch: int | None = None
    ) -> Checkpoint:
        """Write ``content`` (from :func:`capture`) atomically as the next checkpoint.

        The epoch is ``epoch``, else the content's (the segment's), else 0; a
        write with an epoch older than the newest checkpoint's (valid, or
        written by a newer mxrc; corrupt files do not count) is refused (a
        fenced old primary). The sequence is one past the largest in any
        checkpoint name. Then :meth:`prune` applies retention. An OSError (a
        full disk, ...) becomes a CheckpointError naming the file; the older
        checkpoints stay.
        """
        ep = epoch if epoch is not None else int(content.get("epoch", 0) or 0)
        with self._lock, self._dir_lock():
            try:
                entries = self.entries()
            except OSError as exc:
                raise _io_error(
                    f"cannot list the checkpoint directory {self.directory}", exc
                ) from exc
            self._check_epoch_fence(ep, entries)
            seq = self._next_sequence(entries)
            body = {
                "epoch": ep,
                "sequence": seq,
                "created_ns": int(content.get("created_ns") or time.time_ns()),
                "reason": str(reason),
                "executive": encode_value(content.get("executive"), _where="executive"),
                "datastore": content.get("datastore"),
                "tasks": list(content.get("tasks", [])),
                "events": list(content.get("events", [])),
                "app": content.get("app"),
                "writer": content.get("writer"),
                "carried_from": content.get("carried_from"),
            }
            try:
                canonical = _canonical(body)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint content is not JSON-safe (build it with capture()): {exc}"
                ) from None
            doc = {
                "format": CHECKPOINT_FORMAT,
                "schema_version": CHECKPOINT_SCHEMA_VERSION,
                "sha256": hashlib.sha256(canonical).hexdigest(),
                "body": body,
            }
            data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
            path = self.directory / checkpoint_name(ep, seq)
            self._publish(path, data)
            checkpoint = _parse(path, data)
            self._remember(path, "valid")
            self.last_written = checkpoint
            self._prune_locked()
        return checkpoint

    def _check_epoch_fence(self, epoch: int, entries: list[tuple[int, int, Path]]) -> None:
        """Refuse an epoch older than the newest checkpoint a real mxrc wrote (a fenced old
        primary); corrupt files do not count: their names were never validated."""
        for e, _s, path in reversed(entries):
            if self._status(path) == "corrupt":
                continue
            if epoch < e:
                raise CheckpointError(
                    f"checkpoint epoch {epoch} is older than the newest checkpoint's epoch {e} "
                    f"({path}): refused (a newer primary writes here)"
                )
            return

    def _next_sequence(self, entries: list[tuple[int, int, Path]]) -> int:
        """One past the largest sequence of any name (corrupt or not), so names stay unique
        and the new file is the newest of its epoch."""
        if not entries:
            return 1
        top_seq, top_path = max((s, p) for _e, s, p in entries)
        if top_seq >= _SEQ_MAX:
            raise CheckpointError(
                f"no checkpoint sequence is left after {top_path} (sequence {top_seq}, the "
                f"largest a name holds is {_SEQ_MAX}): move that file aside (it is corrupt or "
                f"was not written by mxrc) so that checkpoints go on"
            )
        return top_seq + 1

    def _publish(self, path: Path, data: bytes) -> None:
        """Temp file, fsync, rename, fsync of the directory. An OSError (a full disk, ...)
        becomes a CheckpointError naming the file; the temp file is removed and the older
        checkpoints are untouched."""
        tmp = self.directory / f".{path.name}.{os.getpid()}.tmp"
        try:
            self._write_synced(tmp, data)
            os.rename(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _io_error(f"cannot write checkpoint {path}", exc) from exc
        if _write_hook is not None:
            _write_hook("renamed")
        try:
            self._fsync_dir()
        except OSError as exc:
            raise _io_error(
                f"checkpoint {path} was written, but syncing its directory failed "
                f"(it may not survive a power loss)",
                exc,
            ) from exc

    @staticmethod
    def _write_synced(tmp: Path, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if _write_hook is not None:
                _write_hook("written")
            os.fsync(fd)
            if _write_hook is not None:
                _write_hook("synced")
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            os.close(fd)

    def _fsync_dir(self) -> None:
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        lock = self.directory / ".lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise _io_error(f"cannot open the checkpoint lock file {lock}", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def prune(self) -> list[Path]:
        """Apply retention and remove dead writers' temp files; returns the removed paths.

        Only checkpoints valid for this mxrc count toward ``keep``: the newest
        ``keep`` of them stay, older valid ones go. A corrupt file goes once it is
        older than the oldest valid file kept; a newer one stays for inspection
        until newer valid checkpoints push it out (with no valid checkpoint,
        nothing goes). A file written by a newer mxrc (:class:`CheckpointNewerError`)
        is never removed. A file that cannot be removed is logged and left.
        """
        with self._lock, self._dir_lock():
            return self._prune_locked()

    def _doomed(self) -> list[Path]:
        """The checkpoint files retention removes now (see :meth:`prune`), oldest first."""
        entries = self.entries()
        status = {path: self._status(path) for _e, _s, path in entries}
        valid = [path for _e, _s, path in entries if status[path] == "valid"]
        if not valid:
            return []
        oldest_kept = valid[-self.keep :][0]
        doomed = []
        for _e, _s, path in entries:  # oldest first, up to the oldest valid file kept
            if path == oldest_kept:
                break
            if status[path] != "newer":
                doomed.append(path)
        return doomed

    def _prune_locked(self) -> list[Path]:
        removed: list[Path] = []
        try:
            doomed = self._doomed()
            with os.scandir(self.directory) as it:
                doomed += [
                    Path(e.path)
                    for e in it
                    if (m := _TMP_RE.match(e.name)) and not pid_alive(int(m.group(1)))
                ]
        except OSError as exc:
            _log.warning("checkpoint retention skipped: cannot list %s: %s", self.directory, exc)
            return removed
        return [path for path in doomed if self._unlink(path)]

    def _unlink(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:  # a checkpoint was written; failing retention must not undo it
            _log.warning("checkpoint retention cannot remove %s: %s", path, exc.strerror)
            return False
        self._status_cache.pop(path.name, None)
        return True

    # --- validation status of files (for the fence, the sequence and retention) ---

    def _status(self, path: Path) -> _Status:
        """``valid`` (this schema), ``newer`` (a newer mxrc's) or ``corrupt``; cached by the
        file's identity. A file that vanished meanwhile counts as corrupt (nothing to keep)."""
        try:
            st = path.stat()
        except OSError:
            return "corrupt"
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._status_cache.get(path.name)
        if cached is not None and cached[0] == ident:
            return cached[1]
        status: _Status
        try:
            _load(path)
        except CheckpointNewerError:
            status = "newer"
        except (CheckpointCorruptError, FileNotFoundError):
            status = "corrupt"
        else:
            status = "valid"
        self._status_cache[path.name] = (ident, status)
        return status

    def _remember(self, path: Path, status: _Status) -> None:
        with contextlib.suppress(OSError):
            st = path.stat()
            self._status_cache[path.name] = ((st.st_ino, st.st_mtime_ns, st.st_size), status)

    def __repr__(self) -> str:
        return f"<CheckpointStore {self.directory} keep={self.keep}>"


_Status = Literal["valid", "newer", "corrupt"]


def _io_error(what: str, exc: OSError) -> CheckpointError:
    """``what: <strerror> (<ERRNO>)``, e.g. ``...: No space left on device (ENOSPC)``."""
    code = errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")
    text = exc.strerror or os.strerror(exc.errno or 0)
    return CheckpointError(f"{what}: {text} ({code}); the older checkpoints are kept")


def _load(path: Path) -> Checkpoint:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CheckpointCorruptError(path, f"cannot be read: {exc.strerror}") from None
    return _parse(path, data)


def _parse(path: Path, data: bytes) -> Checkpoint:
    """Validate and decode one file; CheckpointCorruptError (or CheckpointNewerError)."""
    try:
        return _parse_unguarded(path, data)
    except (RecursionError, MemoryError) as exc:
        # json.loads, _canonical and decode_value recurse per nesting level: a hostile or
        # garbled file must be named and skipped like any corrupt one, not escape.
        raise CheckpointCorruptError(
            path,
            f"nested too deeply or too large to read ({type(exc).__name__}); "
            f"not a checkpoint this mxrc writes",
        ) from None


def _parse_unguarded(path: Path, data: bytes) -> Checkpoint:
    def bad(reason: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(path, reason)

    m = _NAME_RE.match(path.name)
    if not m:
        raise bad("the name is not ckpt-<epoch:08d>-<sequence:012d>.json")
    if not data:
        raise bad("empty file (torn write)")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not valid JSON (torn or corrupt): {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise bad(f"not an mxrc checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    version = doc.get("schema_version")
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version > CHECKPOINT_SCHEMA_VERSION
    ):
        raise CheckpointNewerError(path, version)
    if version != CHECKPOINT_SCHEMA_VERSION:
        raise bad(
            f"schema_version {version!r}; this mxrc reads schema_version "
            f"{CHECKPOINT_SCHEMA_VERSION}"
        )
    body = doc.get("body")
    if not isinstance(body, dict):
        raise bad("no body object")
    try:
        digest = hashlib.sha256(_canonical(body)).hexdigest()
    except (TypeError, ValueError) as exc:
        raise bad(f"body is not canonical JSON: {exc}") from None
    if digest != doc.get("sha256"):
        raise bad(
            f"sha256 mismatch (file says {doc.get('sha256')!r:.20}, body hashes {digest:.16}…)"
        )
    epoch, seq = int(m.group(1)), int(m.group(2))
    if body.get("epoch") != epoch or body.get("sequence") != seq:
        raise bad(
            f"body says epoch {body.get('epoch')!r}, sequence {body.get('sequence')!r}; "
            f"the name says {epoch}, {seq}"
        )
    try:
        created = body["created_ns"]
        reason = body["reason"]
        if not isinstance(created, int) or not isinstance(reason, str):
            raise ValueError("created_ns must be an int and reason a str")
        executive = decode_value(body.get("executive"), _where="executive")
        if executive is not None and not isinstance(executive, dict):
            raise ValueError("executive must be an object or null")
        ds_body = body.get("datastore")
        slots: dict[str, SlotImage] | None = None
        ds_cycle: int | None = None
        if ds_body is not None:
            ds_cycle = ds_body["cycle"]
            if ds_cycle is not None and (
                isinstance(ds_cycle, bool) or not isinstance(ds_cycle, int)
            ):
                raise ValueError("datastore.cycle must be an int or null")
            slots = {}
            for s in ds_body["slots"]:
                img = SlotImage(
                    name=str(s["name"]),
                    kind=str(s["kind"]),
                    capacity=int(s["capacity"]),
                    version=int(s["version"]),
                    value=decode_value(s["value"], _where=f"slot {s['name']!r}"),
                )
                slots[img.name] = img
        tasks = tuple(decode_value(t, _where="task") for t in body["tasks"])
        if not all(isinstance(t, dict) for t in tasks):
            raise ValueError("tasks must be objects")
        events = tuple(_b64(e["record"], "event") for e in body["events"])
        app = body.get("app")
        has_app = isinstance(app, dict)
        if app is not None and not has_app:
            raise ValueError("app must be an object or null")
        app_state = decode_value(app["state"], _where="app") if isinstance(app, dict) else None
        writer = body.get("writer")
        carried = body.get("carried_from")
        if not all(v is None or isinstance(v, str) for v in (writer, carried)):
            raise ValueError("writer and carried_from must be strings or null")
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"malformed body: {exc}") from None
    return Checkpoint(
        epoch=epoch,
        sequence=seq,
        created_ns=created,
        reason=reason,
        executive=executive,
        datastore=slots,
        datastore_cycle=ds_cycle,
        tasks=tasks,
        events=events,
        app_state=app_state,
        has_app_state=has_app,
        path=path,
        size_bytes=len(data),
        writer=writer,
        carried_from=carried,
    )


# ---------------------------------------------------------------- restore


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore` put back."""

    slots: tuple[str, ...]
    """Data store slots written from the checkpoint."""
    skipped_slots: tuple[str, ...]
    """Slots not written (torn in the checkpoint, or failed: see the log)."""
    events: int
    """Events re-published into the EventBus (admitted)."""
    tasks: tuple[Task, ...]
    app_restored: bool
    safe_mode: bool
    """The executive was put into SAFE_MODE because the checkpoint was taken in it."""


def _write_slot(ds: DataStore, img: SlotImage, define: bool) -> None:
    if define:
        cap = img.capacity if img.kind in ("string", "f64array") else None
        ds.define(img.name, img.kind, cap)
    if img.version != 0:  # never written in the checkpoint: defining it is all
        ds.write(img.name, img.value, timeout=1.0)


def restore(
    checkpoint: Checkpoint,
    *,
    executive: Executive | None = None,
    datastore: DataStore | None = None,
    eventbus: EventBus | None = None,
    restore_hook: Callable[[Any], object] | None = None,
    define: bool = True,
) -> RestoreReport:
    """Put a checkpoint's state back.

    Every data store slot of the checkpoint is written into ``datastore``
    (default: the executive's), defining missing slots when ``define``;
    torn slots are skipped. Pending events are re-published into
    ``eventbus`` (ids and timestamps kept). ``restore_hook(app_state)``
    gets the application's state when the checkpoint has one. With a
    running ``executive`` whose checkpoint state was SAFE_MODE, SAFE_MODE is
    entered again. The tasks are rebuilt (:attr:`RestoreReport.tasks`).
    For a restarted RT process prefer :func:`resume_datastore`, which keeps
    the slots the live data store still holds.
    """
    if datastore is None and executive is not None:
        datastore = executive.datastore
    written: list[str] = []
    skipped: list[str] = []
    if datastore is not None and checkpoint.datastore:
        for img in checkpoint.datastore.values():
            if img.value is None:
                skipped.append(img.name)
                continue
            try:
                _write_slot(datastore, img, define)
            except MxrcError as exc:
                _log.warning("restore of data store slot %r failed: %s", img.name, exc)
                skipped.append(img.name)
            else:
                written.append(img.name)
    admitted = 0
    if eventbus is not None:
        for ev in checkpoint.event_objects():
            admitted += bool(eventbus.publish(ev))
    tasks = tuple(checkpoint.task_objects())
    app = False
    if restore_hook is not None and checkpoint.has_app_state:
        restore_hook(checkpoint.app_state)
        app = True
    safe = False
    ex_state = (checkpoint.executive or {}).get("state")
    if executive is not None and ex_state == "SAFE_MODE":
        with contextlib.suppress(RuntimeError):
            executive.enter_safe_mode()
            safe = True
    return RestoreReport(tuple(written), tuple(skipped), admitted, tasks, app, safe)


@dataclasses.dataclass(frozen=True)
class ResumeReport:
    """Where each slot's value came from after :func:`resume_datastore`."""

    live: tuple[str, ...]
    """Kept the live value (version even and non-zero)."""
    from_checkpoint: tuple[str, ...]
    """Written from the checkpoint (never written, mid-write or undefined in the live store)."""
    unresolved: tuple[str, ...]
    """Neither: the live slot is not valid and the checkpoint has no usable value."""


def resume_datastore(
    live: DataStore,
    checkpoint: Checkpoint | None,
    *,
    repair_grace_s: float = 0.05,
    define: bool = True,
) -> ResumeReport:
    """Crash continuity: keep valid live slots, take the rest from the checkpoint.

    A live slot is valid when it is defined and its version is even and
    non-zero (written at least once, no write in progress). A slot left
    mid-write (odd version) by the dead process is released with
    :meth:`DataStore.repair` (after ``repair_grace_s``) and rewritten from the
    checkpoint. Slots only in the checkpoint are defined (``define``) and
    written. ``checkpoint`` None: only the classification.
    """
    live_names = set(live.names())
    images = {} if checkpoint is None or checkpoint.datastore is None else checkpoint.datastore
    kept: list[str] = []
    need: list[str] = []
    for name in sorted(live_names | set(images)):
        version = live.version(name) if name in live_names else 0
        if version and not version & 1:
            kept.append(name)
        else:
            need.append(name)
    if any(n in live_names and live.version(n) & 1 for n in need):
        live.repair(repair_grace_s)
    restored: list[str] = []
    unresolved: list[str] = []
    for name in need:
        img = images.get(name)
        if img is None or img.value is None:
            unresolved.append(name)
            continue
        try:
            _write_slot(live, img, define or name in live_names)
        except MxrcError as exc:
            _log.warning("resume of data store slot %r from the checkpoint failed: %s", name, exc)
            unresolved.append(name)
        else:
            restored.append(name)
    return ResumeReport(tuple(kept), tuple(restored), tuple(unresolved))


# ---------------------------------------------------------------- the writer


class CheckpointWriter:
    """Writes checkpoints periodically and on state transitions, on its own thread.

    ``capture_fn()`` returns the content (usually a closure over
    :func:`capture`); ``interval_s`` (config ``rt.checkpoint_interval_sec``;
    0 = not periodic). ``state_source()`` (e.g. ``lambda:
    segment.stats().state``) is polled every ``poll_s``: a transition
    INIT→READY, RUNNING→SAFE_MODE or SAFE_MODE→RUNNING writes a checkpoint at once,
    and so does INIT→RUNNING (or RUNNING first seen with no state before: reason
    ``... (started)``), since READY usually lasts microseconds, far below ``poll_s``.
    :meth:`request` asks for one from any thread. Runs in the supervisor, the
    agent or a normal thread of the RT process, never on the cycle thread. A
    failed capture or write is logged and counted (:attr:`errors`); the writer
    goes on.
    """

    TRIGGERS: frozenset[tuple[str | None, str]] = frozenset(
        {
            ("INIT", "READY"),
            ("INIT", "RUNNING"),
            (None, "READY"),
            (None, "RUNNING"),
            ("RUNNING", "SAFE_MODE"),
            ("SAFE_MODE", "RUNNING"),
        }
    )
    """Upstream's two (INIT→READY, RUNNING→SAFE_MODE), and leaving SAFE_MODE: else a crash
    soon after would restore SAFE_MODE from the last checkpoint
    (:meth:`mxrc.ha.Recovery.checkpointing`). The start is also seen as INIT→RUNNING
    or from no state (None: the stats block not claimed yet) to READY/RUNNING, because
    the loop passes READY within microseconds and the state is polled."""

    def __init__(
        self,
        store: CheckpointStore,
        capture_fn: Callable[[], Mapping[str, Any]],
        *,
        interval_s: float,
        state_source: Callable[[], RtState | str | None] | None = None,
        poll_s: float = 0.05,
    ) -> None:
        if not interval_s >= 0:
            raise ValueError(
                f"interval_s must be >= 0 seconds (0 = not periodic), got {interval_s!r}"
            )
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0 seconds, got {poll_s!r}")
        self.store = store
        self._capture = capture_fn
        self.interval_s = float(interval_s)
        self._state_source = state_source
        self._poll_s = float(poll_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requests: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_state: str | None = None
        self.written = 0
        """Checkpoints written."""
        self.errors = 0
        """Captures or writes that failed (logged)."""
        self.last: Checkpoint | None = None

    def start(self) -> CheckpointWriter:
        """Start the thread (daemon, ``mxrc-checkpoint``); returns self."""
        if self._thread is not None:
            raise RuntimeError("CheckpointWriter already started")
        self._last_state = self._read_state()
        self._thread = threading.Thread(target=self._run, name="mxrc-checkpoint", daemon=True)
        self._thread.start()
        return self

    def request(self, reason: str = "requested") -> None:
        """Ask for a checkpoint now (from any thread)."""
        with self._lock:
            self._requests.append(reason)
        self._wake.set()

    def write_now(self, reason: str = "manual") -> Checkpoint:
        """Capture and write on the calling thread; raises on failure."""
        content = self._capture()
        checkpoint = self.store.write(content, reason=reason)
        with self._lock:
            self.written += 1
            self.last = checkpoint
        return checkpoint

    def _read_state(self) -> str | None:
        if self._state_source is None:
            return None
        try:
            s = self._state_source()
        except Exception as exc:
            _log.debug("checkpoint state source failed: %r", exc)
            return None
        return None if s is None else _rt_state_name(s)

    def _attempt(self, reason: str) -> None:
        try:
            self.write_now(reason)
        except Exception as exc:
            with self._lock:
                self.errors += 1
            _log.warning("checkpoint (%s) failed: %s", reason, exc)

    def _run(self) -> None:
        next_periodic = time.monotonic() + self.interval_s if self.interval_s else None
        while not self._stop.is_set():
            timeout = self._poll_s if self._state_source is not None else None
            if next_periodic is not None:
                left = max(0.0, next_periodic - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                break
            reasons: list[str] = []
            with self._lock:
                reasons, self._requests = self._requests, []
            state = self._read_state()
            if state is not None:
                if (self._last_state, state) in self.TRIGGERS:
                    reasons.append(_transition_reason(self._last_state, state))
                self._last_state = state
            if next_periodic is not None and time.monotonic() >= next_periodic:
                reasons.append("periodic")
                next_periodic = time.monotonic() + self.interval_s
            if reasons:
                self._attempt(",".join(dict.fromkeys(reasons)))

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait for it (a write in progress completes). Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> CheckpointWriter:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _transition_reason(old: str | None, new: str) -> str:
    """``INIT->READY``, ``RUNNING->SAFE_MODE``; a start that skipped READY (or was first
    seen in it) says so: ``INIT->RUNNING (started)``, ``no state->READY (started)``."""
    reason = f"{old or 'no state'}->{new}"
    if old is None or (old == "INIT" and new == "RUNNING"):
        reason += " (started)"
    return reason


def writer_for_segment(
    segment: Segment,
    directory: str | os.PathLike[str],
    *,
    interval_s: float,
    keep: int = DEFAULT_KEEP,
    stats_name: str | None = None,
    save_hook: Callable[[], object] | None = None,
    tasks: Callable[[], Iterable[Task]] | None = None,
    eventbus: EventBus | None = None,
    snapshot_timeout: float = 0.5,
    poll_s: float = 0.05,
) -> CheckpointWriter:
    """A :class:`CheckpointWriter` for an instance segment (the supervisor's or agent's side).

    Checkpoints go to ``directory`` (newest ``keep`` kept; config
    ``rt.checkpoint_keep``) every ``interval_s`` (``rt.checkpoint_interval_sec``)
    and on the :attr:`CheckpointWriter.TRIGGERS` of the stats block ``stats_name``.
    The data store is the segment's (none when it was created without one),
    snapshotted by the RT process's cycle thread, or read directly when no
    cycle thread answers within ``snapshot_timeout`` (the RT process is dead
    or stopped). Tasks, events and application state that this side does not
    have (``tasks``, ``eventbus``, ``save_hook`` None) are carried from the
    newest checkpoint the RT process wrote (:class:`mxrc.ha.Recovery`), so
    the newest file always holds them. Not started: call ``start()``.
    """
    from mxrc.bus import DataStore

    try:
        ds: DataStore | None = DataStore.from_segment(segment)
    except MxrcError:
        ds = None

    def state() -> RtState | None:
        try:
            return segment.stats(stats_name).state
        except LookupError:
            return None

    store = CheckpointStore(directory, keep=keep)
    own_parts = tasks is not None or eventbus is not None or save_hook is not None

    def capture_fn() -> dict[str, Any]:
        content = capture(
            datastore=ds,
            segment=segment,
            stats_name=stats_name,
            tasks=() if tasks is None else tasks(),
            eventbus=eventbus,
            save_hook=save_hook,
            datastore_mode="auto",
            snapshot_timeout=snapshot_timeout,
            writer="supervisor",
        )
        if not own_parts:
            _carry_rt_parts(store, content)
        return content

    return CheckpointWriter(
        store,
        capture_fn,
        interval_s=interval_s,
        state_source=state,
        poll_s=poll_s,
    )


def _carry_rt_parts(store: CheckpointStore, content: dict[str, Any]) -> None:
    """Copy tasks, events and application state (and, both in SAFE_MODE, its reasons) from
    the newest checkpoint an RT process wrote (``writer == "rt"``) into ``content``;
    nothing when there is none."""
    for cp in store.iter_valid():
        if cp.writer != "rt":
            continue
        content["tasks"] = [encode_value(t, _where="task") for t in cp.tasks]
        content["events"] = [{"record": base64.b64encode(r).decode("ascii")} for r in cp.events]
        content["app"] = (
            {"state": encode_value(cp.app_state, _where="app")} if cp.has_app_state else None
        )
        content["carried_from"] = cp.name
        ex, rt_ex = content.get("executive"), cp.executive
        if ex and rt_ex and ex.get("state") == "SAFE_MODE" == rt_ex.get("state"):
            # the stats block has no reasons; the RT process's checkpoint has them
            ex["safe_mode_reasons"] = rt_ex.get("safe_mode_reasons")
        return
