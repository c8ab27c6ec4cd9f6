"""Live re-configuration of a running cycle thread: CPU affinity and scheduling (SC-015).

Everything here runs *outside* the cycle thread. ``sched_setaffinity`` and
``sched_setscheduler`` take a thread id, so the caller of
:meth:`Executive.reconfigure <mxrc.rt.Executive.reconfigure>` (or a
:class:`ConfigWatcher` thread) re-pins the cycle thread while it keeps
cycling; the kernel moves it at its next wake-up. The cycle thread never
polls for, parses or applies a change itself.

A change is checked completely before anything is applied (CPUs against the
allowed set, policy and priority range), applied affinity first, then policy
and priority; when the second step fails the first is undone, so a refused
change leaves the thread exactly as it was.

Not live: the memory policy (``set_mempolicy`` acts on the calling thread
only, so only the cycle thread could change its own), SCHED_DEADLINE (the
kernel refuses it for a pinned thread), the thread name, isolation mode and
fallbacks. A :class:`ConfigWatcher` says so in its log when such keys change.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mxrc.errors import ConfigError, CpuNotAllowedError, UnsupportedError
from mxrc.rt._affinity import get_thread_affinity, set_thread_affinity, validate_cpus
from mxrc.rt._cpulist import format_cpulist
from mxrc.rt._sched import SchedPolicy, get_scheduler, priority_range, set_scheduler
from mxrc.rt._state import RtState

if TYPE_CHECKING:
    from mxrc.config import MxrcConfig
    from mxrc.rt._executive import Executive

__all__ = [
    "DEFAULT_WATCH_INTERVAL_S",
    "LIVE_KEYS",
    "WATCHED_FILES",
    "ConfigWatcher",
    "LiveSettings",
    "ReconfigEvent",
    "ReconfigResult",
    "read_live_settings",
    "reconfigure_thread",
]

_log = logging.getLogger("mxrc.rt.reconfig")

DEFAULT_WATCH_INTERVAL_S = 0.5
"""Seconds between two looks at the watched files (a change is acted on after it
has been seen unchanged on two looks, so a half-written file is not read)."""

WATCHED_FILES = ("cpu_affinity.json", "numa_binding.json")
"""Files a :class:`ConfigWatcher` looks at: the first is applied live, the second
is validated and reported as taking effect at the next start."""

LIVE_KEYS = ("rt.cpu_cores", "rt.policy", "rt.priority")
"""Keys of ``cpu_affinity.json`` applied to a running cycle thread."""

# One change at a time (API calls and watchers of every executive): a change
# reads the current settings, applies, and may roll back.
_apply_lock = threading.Lock()


@dataclass(frozen=True)
class LiveSettings:
    """A thread's CPU affinity and scheduling as the kernel reports them."""

    cpus: frozenset[int]
    policy: str
    """Kernel name, e.g. ``"SCHED_FIFO"``."""
    priority: int

    def describe(self) -> str:
        """``"CPUs 1, SCHED_FIFO 40"``."""
        return f"CPUs {format_cpulist(self.cpus)}, {self.policy} {self.priority}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"cpus": [..], "policy": .., "priority": ..}``."""
        return {"cpus": sorted(self.cpus), "policy": self.policy, "priority": self.priority}


@dataclass(frozen=True)
class ReconfigResult:
    """Settings of the thread before and after a change (equal when nothing changed)."""

    tid: int
    before: LiveSettings
    after: LiveSettings

    @property
    def changed(self) -> bool:
        """True when the change altered anything."""
        return self.before != self.after


def read_live_settings(tid: int) -> LiveSettings:
    """CPU affinity, policy and priority of thread ``tid`` right now.

    Availability: Linux.
    """
    params = get_scheduler(tid)
    return LiveSettings(get_thread_affinity(tid), params.policy.value, params.priority)


def _resolve(
    current: LiveSettings,
    cpus: Iterable[int] | None,
    policy: SchedPolicy | str | None,
    priority: int | None,
) -> LiveSettings:
    """The settings asked for, checked completely (nothing is applied here)."""
    wanted_cpus = current.cpus if cpus is None else validate_cpus(cpus)
    current_pol = SchedPolicy.parse(current.policy)
    pol = current_pol if policy is None else SchedPolicy.parse(policy)
    if SchedPolicy.DEADLINE in (pol, current_pol) and (
        pol is not current_pol or priority is not None or wanted_cpus != current.cpus
    ):
        raise UnsupportedError(
            "SCHED_DEADLINE cannot be changed live: the kernel refuses it for a pinned thread "
            "and its reservation is admitted at start; change the configuration and restart"
        )
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError(f"priority must be int, got {priority!r}")
    if priority is not None:
        prio = priority
    elif pol is current_pol or (pol.is_realtime and current_pol.is_realtime):
        prio = current.priority
    elif pol.is_realtime:
        lo, hi = priority_range(pol)
        raise ValueError(f"switching to {pol.value} needs a priority ({lo}..{hi})")
    else:
        prio = 0
    if pol is not SchedPolicy.DEADLINE:
        lo, hi = priority_range(pol)
        if not lo <= prio <= hi:
            raise ValueError(
                f"priority {prio} is out of range for {pol.value}: valid priorities are {lo}..{hi}"
            )
    return LiveSettings(wanted_cpus, pol.value, prio)


def reconfigure_thread(
    tid: int,
    *,
    cpus: Collection[int] | None = None,
    policy: SchedPolicy | str | None = None,
    priority: int | None = None,
) -> ReconfigResult:
    """Re-pin and/or re-prioritise thread ``tid`` (another thread, e.g. a running cycle thread).

    ``None`` keeps a setting. ``cpus`` are validated against the allowed set
    (:func:`~mxrc.rt.validate_cpus`); ``priority`` against the policy's range;
    switching to SCHED_FIFO/RR from another policy needs a ``priority``;
    switching to a non-RT policy without one gives priority 0. Raises
    CpuNotAllowedError, ValueError, TypeError, UnsupportedError (SCHED_DEADLINE
    is not changed live) before anything is applied, and PrivilegeError or
    OSError when the kernel refuses; a refused scheduling change undoes the
    affinity change, so the thread keeps its old settings.

    Availability: Linux; another user's thread and SCHED_FIFO/RR need CAP_SYS_NICE.
    """
    with _apply_lock:
        before = read_live_settings(tid)
        wanted = _resolve(before, cpus, policy, priority)
        repinned = False
        if wanted.cpus != before.cpus:
            set_thread_affinity(wanted.cpus, tid, validate=False)  # validated in _resolve
            repinned = True
        if (wanted.policy, wanted.priority) != (before.policy, before.priority):
            try:
                set_scheduler(wanted.policy, wanted.priority, tid)
            except BaseException:
                if repinned:
                    set_thread_affinity(before.cpus, tid, validate=False)
                raise
        return ReconfigResult(tid, before, read_live_settings(tid))


# ---------------------------------------------------------------- watching a config directory


EventKind = Literal["applied", "unchanged", "rejected", "not_live"]


@dataclass(frozen=True)
class ReconfigEvent:
    """What a :class:`ConfigWatcher` did about one change of a watched file.

    ``kind``: "applied" (the cycle thread now runs with ``after``),
    "unchanged" (valid, and the live settings already matched), "rejected"
    (``error`` says why; the thread keeps ``before``) or "not_live" (valid,
    but nothing in it can be applied to a running thread: it takes effect at
    the next start). ``message`` is the line that was logged.
    """

    kind: EventKind
    file: str
    message: str
    before: LiveSettings | None = None
    after: LiveSettings | None = None
    error: BaseException | None = None


_Fingerprint = tuple[int, int, int] | None  # (inode, size, mtime_ns); None = no file


def _fingerprint(path: str) -> _Fingerprint:
    try:
        st = os.stat(path)
    except OSError:  # missing, or the directory is gone: load_config says which
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _rt_not_live(old: MxrcConfig | None, new: MxrcConfig) -> list[str]:
    """Keys of the rt role's cpu_affinity that changed but cannot be applied live."""
    if old is None:
        return []
    a, b = old.cpu_affinity.rt, new.cpu_affinity.rt
    keys = ("thread_name", "isolation_mode", "is_exclusive", "deadline", "fallback")
    return [f"rt.{k}" for k in keys if getattr(a, k) != getattr(b, k)]


class ConfigWatcher:
    """Watches a config directory and applies ``cpu_affinity.json`` to a running executive.

    A thread (``mxrc-cfgwatch``, not real-time) stats the watched files every
    ``interval_s`` and acts on a change once it has been seen unchanged on two
    consecutive looks (an editor's half-written file is not read), so a change
    is applied within about ``2 × interval_s`` (plus the cost of validating).
    On a change of ``cpu_affinity.json`` the whole directory is loaded and
    validated exactly as at start (:func:`~mxrc.config.load_config`, with the
    ``MXRC_*`` overrides of ``environ``, which still beat the file), and the
    ``rt`` role's CPUs (``cpu_cores``; null = automatic placement), policy and
    priority are applied to the cycle thread with
    :func:`reconfigure_thread`. An invalid change (malformed JSON, schema
    error, CPU not allowed, SCHED_DEADLINE) is rejected: a
    :class:`~mxrc.errors.ConfigError` is logged (logger ``mxrc.rt.reconfig``)
    and the thread keeps its settings; the next edit is tried again. A
    change of ``numa_binding.json`` is validated and logged as taking effect
    at the next start.

    ``on_event`` is called (on the watcher thread) with a
    :class:`ReconfigEvent` for every change acted on. The thread ends by
    itself when the executive's cycle thread has ended.
    """

    def __init__(
        self,
        executive: Executive,
        directory: str | os.PathLike[str] | None = None,
        *,
        interval_s: float = DEFAULT_WATCH_INTERVAL_S,
        environ: Mapping[str, str] | None = None,
        on_event: Callable[[ReconfigEvent], object] | None = None,
    ) -> None:
        from mxrc._env import config_dir_from_env
        from mxrc.config import load_config

        if directory is None:
            directory = config_dir_from_env(os.environ if environ is None else environ)
            if directory is None:
                raise ValueError("no config directory to watch: pass one or set MXRC_CONFIG_DIR")
        path = Path(directory)
        if not path.is_dir():
            raise ValueError(f"{path}: not a directory (expected the config directory to watch)")
        if executive.tid is None:
            raise RuntimeError(
                f"executive {executive.name!r} is not started: start it, then watch its config"
            )
        if executive.clock == "simulated":
            raise UnsupportedError(
                f"executive {executive.name!r} runs on the simulated clock, which applies no "
                "affinity or scheduling; live changes apply to real-clock executives only"
            )
        if not 0.01 <= interval_s <= 60:
            raise ValueError(f"interval_s must be within 0.01..60 seconds, got {interval_s}")
        self._executive = executive
        self._directory = path
        self._interval_s = float(interval_s)
        self._environ = environ
        self._on_event = on_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, _Fingerprint] = {}
        self._pending: dict[str, _Fingerprint] = {}
        self._content: dict[str, bytes | None] = {}
        # plain strings: the look runs twice a second next to a Python body (GIL)
        self._paths = {name: str(path / name) for name in WATCHED_FILES}
        for name, file in self._paths.items():
            self._seen[name] = _fingerprint(file)
            self._content[name] = _read_bytes(file)
        self._accepted: MxrcConfig | None
        try:
            self._accepted = load_config(path, environ=environ)
        except ConfigError:
            self._accepted = None  # the first valid edit becomes the reference
        self.applied = 0
        """Changes applied to the cycle thread so far."""
        self.rejected = 0
        """Changes rejected so far."""
        self.last_event: ReconfigEvent | None = None

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def running(self) -> bool:
        """True while the watcher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ thread

    def start(self) -> ConfigWatcher:
        """Start the watcher thread (daemon); returns self."""
        if self._thread is not None:
            raise RuntimeError("a ConfigWatcher starts once")
        self._thread = threading.Thread(target=self._loop, name="mxrc-cfgwatch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop the watcher thread; False when it did not end within ``timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> ConfigWatcher:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _executive_ended(self) -> bool:
        return self._executive.state in (RtState.SHUTDOWN, RtState.ERROR)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._executive_ended():
                break
            try:
                self.poll()
            except Exception:  # never let a surprise end the watching silently
                _log.exception("config watcher of %s failed; still watching", self._directory)

    # ------------------------------------------------------------ one look

    def poll(self) -> list[ReconfigEvent]:
        """Look at the watched files once and act on settled changes; the events (may be empty).

        Called by the watcher thread; callable directly (e.g. from a test) when
        the thread is not started.
        """
        events: list[ReconfigEvent] = []
        for name, file in self._paths.items():
            fp = _fingerprint(file)
            if fp == self._seen[name]:
                self._pending.pop(name, None)
                continue
            if self._pending.get(name, ()) != fp:
                self._pending[name] = fp  # seen changing: look again next time
                continue
            del self._pending[name]
            self._seen[name] = fp
            content = _read_bytes(file)
            if content == self._content[name]:
                continue  # touched or rewritten with the same bytes
            self._content[name] = content
            events.append(self._act(name))
        return events

    def _act(self, name: str) -> ReconfigEvent:
        from mxrc.config import load_config

        path = str(self._directory / name)
        try:
            cfg = load_config(self._directory, environ=self._environ)
        except ConfigError as exc:
            return self._reject(name, exc)
        if name != "cpu_affinity.json":
            self._accepted = cfg
            return self._emit(
                ReconfigEvent(
                    "not_live",
                    path,
                    f"{path} changed and is valid; the memory policy is set by the cycle thread "
                    "itself at start (set_mempolicy acts on the calling thread only), so the "
                    "change takes effect at the next start",
                ),
                logging.WARNING,
            )
        tid = self._executive.tid
        if tid is None or self._executive_ended():
            return self._reject(name, RuntimeError("the executive's cycle thread has ended"))
        try:
            cpus, policy, priority = _wanted_from_config(cfg, path)
            result = reconfigure_thread(tid, cpus=cpus, policy=policy, priority=priority)
        except CpuNotAllowedError as exc:
            return self._reject(
                name,
                ConfigError(
                    str(exc),
                    file=path,
                    key_path="rt.cpu_cores",
                    expected="CPUs in the allowed set " + (format_cpulist(exc.allowed) or "none"),
                    found=exc.core,
                ),
            )
        except (ValueError, TypeError, UnsupportedError) as exc:
            error = exc if isinstance(exc, ConfigError) else ConfigError(str(exc), file=path)
            return self._reject(name, error)
        except OSError as exc:  # PrivilegeError (EPERM), ESRCH, ...
            return self._reject(name, exc)
        notes = _env_notes(cfg) + [
            f"{key} changed but is not applied live (next start)"
            for key in _rt_not_live(self._accepted, cfg)
        ]
        self._accepted = cfg
        suffix = "".join(f"; {note}" for note in notes)
        who = f"executive {self._executive.name!r} (cycle thread {tid})"
        if not result.changed:
            return self._emit(
                ReconfigEvent(
                    "unchanged",
                    path,
                    f"{path} changed; {who} already runs with {result.after.describe()}{suffix}",
                    result.before,
                    result.after,
                ),
                logging.WARNING if notes else logging.INFO,
            )
        self.applied += 1
        return self._emit(
            ReconfigEvent(
                "applied",
                path,
                f"{path} changed: {who} now runs with {result.after.describe()} "
                f"(was {result.before.describe()}){suffix}",
                result.before,
                result.after,
            ),
            logging.WARNING if notes else logging.INFO,
        )

    def _reject(self, name: str, error: BaseException) -> ReconfigEvent:
        self.rejected += 1
        before: LiveSettings | None = None
        tid = self._executive.tid
        if tid is not None and not self._executive_ended():
            try:
                before = read_live_settings(tid)
            except OSError:
                before = None
        keeping = f"; keeping {before.describe()}" if before is not None else ""
        path = str(self._directory / name)
        return self._emit(
            ReconfigEvent(
                "rejected",
                path,
                f"rejected the change of {path}: {type(error).__name__}: {error}{keeping}",
                before,
                before,
                error,
            ),
            logging.ERROR,
        )

    def _emit(self, event: ReconfigEvent, level: int) -> ReconfigEvent:
        _log.log(level, "%s", event.message)
        self.last_event = event
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                _log.exception("on_event callback of the config watcher failed")
        return event


def _wanted_from_config(cfg: MxrcConfig, path: str) -> tuple[frozenset[int], str, int | None]:
    """CPUs, policy and priority the rt role asks for (automatic placement resolved)."""
    from mxrc.config import effective_cpu_cores
    from mxrc.rt._affinity import allowed_cpus

    rt = cfg.cpu_affinity.rt
    if rt.policy == "SCHED_DEADLINE":
        raise ConfigError(
            "SCHED_DEADLINE cannot be applied to a running cycle thread",
            file=path,
            key_path="rt.policy",
            expected="SCHED_FIFO, SCHED_RR or SCHED_OTHER for a live change",
            found=rt.policy,
            hint="restart the RT process to switch to SCHED_DEADLINE",
        )
    return effective_cpu_cores(rt, allowed_cpus()), rt.policy, rt.priority


def _env_notes(cfg: MxrcConfig) -> list[str]:
    keys = {"MXRC_RT_CPU_CORES": "rt.cpu_cores", "MXRC_RT_PRIORITY": "rt.priority"}
    return [f"{var} overrides {keys[var]} of the file" for var in cfg.env_overrides if var in keys]
