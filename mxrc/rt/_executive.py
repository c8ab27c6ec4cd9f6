"""The real-time executive: a C++ cycle thread running native or Python bodies.

The cycle thread is C++ (``mxrc::Executive``): it applies the thread setup of
ARCHITECTURE §5 (memory policy, mlock, stack prefault, affinity, policy and
priority, timer slack 1 ns) before its first cycle, runs the init hooks, then
releases its actions at ``start + k·period`` with
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` and writes a stats block
(:mod:`mxrc.bus`) every cycle. This module is the Python face of it.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mxrc._native import _core
from mxrc.errors import BodyError
from mxrc.rt._bodies import BodySpec, classify_body
from mxrc.rt._setup import ThreadSetup, _failure, _validate
from mxrc.rt._state import RtState

if TYPE_CHECKING:
    from mxrc.bus import DataStore, Event, RingSet
    from mxrc.config import MxrcConfig
    from mxrc.rt._perf import CycleStats, PerfMonitor
    from mxrc.rt._reconfig import ConfigWatcher, LiveSettings, ReconfigEvent

__all__ = [
    "Clock",
    "ErrorPolicy",
    "Executive",
    "OverrunPolicy",
]

_log = logging.getLogger("mxrc.rt")

OverrunPolicy = Literal["skip", "run_late"]
ErrorPolicy = Literal["stop", "safe_mode", "continue"]
_OVERRUN = {"skip": 0, "run_late": 1}
_ON_ERROR = {"stop": 0, "safe_mode": 1, "continue": 2}
Clock = Literal["monotonic", "simulated"]
_CLOCK = {"monotonic": 0, "simulated": 1}

#: Seconds stop() and the interpreter-exit hook wait for a cycle thread.
DEFAULT_STOP_TIMEOUT_S = 5.0

SafeModeReason = Literal["requested", "body_error", "agent"]
_SAFE_REASONS: tuple[tuple[int, SafeModeReason], ...] = (
    (_core.cycle.SAFE_REASON_REQUESTED, "requested"),
    (_core.cycle.SAFE_REASON_BODY_ERROR, "body_error"),
    (_core.cycle.SAFE_REASON_AGENT, "agent"),
)


# --- what a Python body's ctx.publish / ctx.poll_event call (through the core) ---


def _ctx_event_record(
    type: str, payload: object, priority: object, target_id: str, carrier: object
) -> bytes:
    """The 256-byte record of ``ctx.publish(...)`` (id and timestamp left 0: the core sets them).

    ``priority``: a :class:`~mxrc.bus.Priority`, its name ("NORMAL", any case) or 0..3.
    ``carrier`` None: the current trace context of the cycle thread, if any.
    """
    from mxrc.bus._events import Event, EventError, Priority, current_carrier

    if isinstance(priority, str):
        try:
            priority = Priority[priority.upper()]
        except KeyError:
            raise EventError(
                f"event priority must be one of CRITICAL, HIGH, NORMAL, LOW (or 0..3), "
                f"got {priority!r}"
            ) from None
    if carrier is None:
        carrier = current_carrier()
    return Event(
        type,
        payload,
        priority=priority,  # type: ignore[arg-type]  # checked by Event
        target_id=target_id,
        carrier=carrier,  # type: ignore[arg-type]  # checked by Event
    ).to_record()


def _ctx_event_from_record(record: bytes) -> Event:
    """``ctx.poll_event()``: an agent->RT record as an :class:`~mxrc.bus.Event`."""
    from mxrc.bus._events import Event

    return Event.from_record(record)


@dataclass(frozen=True)
class _Action:
    spec: BodySpec
    every: int
    offset: int
    name: str


# --- process-wide bookkeeping: gc control and joining at interpreter exit ---

_registry_lock = threading.Lock()
_live: weakref.WeakSet[Executive] = weakref.WeakSet()


class _GcControl:
    """gc.freeze() + gc.disable() while any Python-tier executive runs; restored by the last.

    The last one also unfreezes (the frozen objects become collectable again),
    unless the application had frozen objects itself before: then its freeze
    stays as it was.
    """

    holders = 0
    was_enabled = True
    was_frozen = False

    @classmethod
    def acquire(cls) -> None:
        with _registry_lock:
            if cls.holders == 0:
                cls.was_enabled = gc.isenabled()
                cls.was_frozen = gc.get_freeze_count() > 0
                gc.collect()
                gc.freeze()
                gc.disable()
            cls.holders += 1

    @classmethod
    def release(cls) -> None:
        with _registry_lock:
            cls.holders -= 1
            if cls.holders == 0:
                if not cls.was_frozen:
                    gc.unfreeze()
                if cls.was_enabled:
                    gc.enable()


class _SwitchIntervalControl:
    """Shortens the interpreter's GIL switch interval while Python-tier executives run.

    A thread waiting for the GIL asks the holder to drop it only after
    ``sys.getswitchinterval()`` (5 ms by default): with any other busy Python
    thread, every Python body would start ~5 ms late. Measured here
    (docs/performance.md): 100 µs brings body starts back to ~0.1 ms late. The
    shortest interval asked for applies; the original is restored by the last.
    """

    requests: ClassVar[list[float]] = []
    original = 0.0

    @classmethod
    def acquire(cls, interval_s: float) -> None:
        with _registry_lock:
            if not cls.requests:
                cls.original = sys.getswitchinterval()
            cls.requests.append(interval_s)
            sys.setswitchinterval(min([*cls.requests, cls.original]))

    @classmethod
    def release(cls, interval_s: float) -> None:
        with _registry_lock:
            cls.requests.remove(interval_s)
            sys.setswitchinterval(min([*cls.requests, cls.original]))


@atexit.register
def _stop_all_at_exit() -> None:
    # Runs before the interpreter finalizes: a cycle thread that still holds a
    # Python thread state must be joined while the GIL can still be taken.
    for ex in list(_live):
        try:
            ex.stop(timeout=DEFAULT_STOP_TIMEOUT_S)
        except BaseException:  # pragma: no cover - best effort at exit
            _log.exception("stopping executive %r at exit failed", ex.name)


class Executive:
    """A cycle thread running one or more bodies every period.

    ``body``: a Python callable ``body(ctx)``, a :class:`~mxrc.rt.NativeBody`,
    a cffi/ctypes C function pointer or a numba ``cfunc`` (see
    :mod:`mxrc.rt._bodies`); more with :meth:`add_action`. Timing:
    ``period_us``, ``deadline_us`` (default = period; a cycle whose body ends
    later is a deadline miss), ``overrun`` "skip" (after an overrun jump to the
    next future release and count the skipped ones) or "run_late".
    Thread setup (applied by the cycle thread to itself before its first
    cycle, ARCHITECTURE §5 order): ``memory_policy``/``memory_nodes``,
    ``lock_memory`` (``mlockall``, process-wide), ``prefault_stack_kb``,
    ``cpus``, ``policy``/``priority`` (``sched_deadline=(runtime_ns,
    deadline_ns, period_ns)`` for SCHED_DEADLINE), timer slack 1 ns.
    ``allow_sched_other_fallback``: a refused SCHED_FIFO/RR is a logged warning
    instead of an error. ``on_error`` "stop" (state ERROR; :meth:`run` and
    :meth:`wait` raise :class:`~mxrc.errors.BodyError`), "safe_mode" (the
    ``safe_mode_body`` runs instead) or "continue" (counted only).
    Stats go to ``segment.claim_stats(name)`` with a segment, else to a
    private block.

    The bus (``docs/executive.md``, "The bus from a body"): with a
    ``segment`` the executive also gets its stats slot's ring set
    (:attr:`rings`: bodies publish events to the agent and poll its
    commands) and the segment's data store (:attr:`datastore`, unless
    ``datastore`` names another one; a private
    :meth:`~mxrc.bus.DataStore.private` store works without a segment). A
    pending data store snapshot is taken at every cycle boundary.
    ``agent_timeout_ms`` (needs ``segment``; None or 0 = off; off on a
    simulated clock): when the agent's heartbeat in the segment is older than
    that, the executive enters SAFE_MODE (reason "agent") and leaves it when a
    fresh beat arrives, unless SAFE_MODE was also asked for otherwise
    (:attr:`safe_mode_reasons`).

    ``freeze_gc``: with a Python body, ``gc.freeze()`` at start and
    automatic collection disabled while running (restored after).
    ``gil_switch_interval_us``: with a Python body, the interpreter's GIL
    switch interval while running (default 100 µs instead of Python's 5 ms, so
    a busy Python thread delays a body by ~0.1 ms, not ~5 ms; ``None`` leaves
    it alone; restored after).

    ``clock``: "monotonic" (default) or "simulated": a virtual clock from 0
    on which every release happens at once and only the bodies consume time
    (``ctx.sim_advance(ns)``), so runs are deterministic and much faster than
    real time. The thread setup, ``freeze_gc`` and the switch interval are not
    applied then (docs/simulated-clock.md).

    One-shot: an Executive runs once (start → stop); make a new one to run again.

    Availability: Linux. SCHED_FIFO/RR and mlock need CAP_SYS_NICE /
    CAP_IPC_LOCK or matching rlimits.
    """

    def __init__(
        self,
        body: object = None,
        *,
        period_us: float = 1000,
        deadline_us: float | None = None,
        name: str = "main",
        cpus: Collection[int] | None = None,
        policy: str | None = None,
        priority: int = 0,
        lock_memory: bool = False,
        prefault_stack_kb: int = 0,
        memory_policy: str | None = None,
        memory_nodes: Collection[int] = (),
        overrun: OverrunPolicy = "skip",
        on_error: ErrorPolicy = "stop",
        clock: Clock = "monotonic",
        safe_mode_body: object = None,
        allow_sched_other_fallback: bool = False,
        segment: Any = None,
        datastore: DataStore | None = None,
        agent_timeout_ms: float | None = None,
        freeze_gc: bool = True,
        gil_switch_interval_us: float | None = 100.0,
        thread_name: str | None = None,
        sched_deadline: tuple[int, int, int] | None = None,
        strict_memory_policy: bool = True,
    ) -> None:
        period_ns = round(period_us * 1000)
        if period_ns <= 0:
            raise ValueError(f"period_us must be > 0, got {period_us}")
        deadline_ns = period_ns if deadline_us is None else round(deadline_us * 1000)
        if deadline_ns <= 0:
            raise ValueError(f"deadline_us must be > 0, got {deadline_us}")
        if overrun not in _OVERRUN:
            raise ValueError(f"overrun must be one of {sorted(_OVERRUN)}, got {overrun!r}")
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {sorted(_ON_ERROR)}, got {on_error!r}")
        if clock not in _CLOCK:
            raise ValueError(f"clock must be one of {sorted(_CLOCK)}, got {clock!r}")
        if prefault_stack_kb < 0:
            raise ValueError(f"prefault_stack_kb must be >= 0, got {prefault_stack_kb}")
        if thread_name is not None and len(thread_name.encode()) > 15:
            raise ValueError(f"thread_name is at most 15 bytes, got {thread_name!r}")
        agent_timeout_ns = self._check_agent_timeout(agent_timeout_ms, segment)
        self._name = name
        self._period_ns = period_ns
        self._deadline_ns = deadline_ns
        self._overrun = overrun
        self._on_error = on_error
        self._clock: Clock = clock
        self._freeze_gc = freeze_gc
        if gil_switch_interval_us is not None and not 1.0 <= gil_switch_interval_us <= 1e6:
            raise ValueError(
                f"gil_switch_interval_us must be within 1..1000000 (or None), "
                f"got {gil_switch_interval_us}"
            )
        self._switch_interval_s = (
            None if gil_switch_interval_us is None else gil_switch_interval_us / 1e6
        )
        self._switch_finalizer: weakref.finalize[[float], Executive] | None = None
        self._thread_name = thread_name or ""
        self._strict_memory_policy = strict_memory_policy
        dl = sched_deadline or (0, 0, 0)
        self._setup = ThreadSetup(
            memory_policy=memory_policy,
            memory_nodes=tuple(memory_nodes),
            lock_memory=lock_memory,
            prefault_stack_bytes=prefault_stack_kb * 1024,
            cpus=None if cpus is None else tuple(cpus),
            policy=policy,
            priority=priority,
            deadline_runtime_ns=dl[0],
            deadline_ns=dl[1],
            deadline_period_ns=dl[2],
            timer_slack_ns=1,
            allow_sched_other_fallback=allow_sched_other_fallback,
        )
        self._setup_kwargs = _validate(self._setup)  # fail early on bad settings
        self._actions: list[_Action] = []
        self._init_hooks: list[Callable[[], object]] = []
        self._safe: BodySpec | None = None
        self._segment = segment
        self._agent_timeout_ns = agent_timeout_ns
        self._datastore = self._bus_datastore(segment, datastore)
        if segment is not None:
            self._slot = segment.claim_stats(name)
        else:
            self._slot = _core.bus.private_stats(name)
        self._core: Any = None
        self._stop_after = 0
        self._gc_held = False
        self._gc_finalizer: weakref.finalize[[], Executive] | None = None
        self._stopped = False
        self.sched_fallback = False
        """True when the RT policy was refused and the thread runs on its previous policy."""
        if body is not None:
            self.add_action(body)
        if safe_mode_body is not None:
            self._safe = classify_body(safe_mode_body)

    @staticmethod
    def _check_agent_timeout(agent_timeout_ms: float | None, segment: Any) -> int:
        if agent_timeout_ms is None:
            return 0
        if isinstance(agent_timeout_ms, bool) or not isinstance(agent_timeout_ms, int | float):
            raise TypeError(
                f"agent_timeout_ms must be a number of ms or None, got {agent_timeout_ms!r}"
            )
        if not agent_timeout_ms >= 0 or agent_timeout_ms == float("inf"):
            raise ValueError(
                f"agent_timeout_ms must be a finite number >= 0 (0 or None = off), "
                f"got {agent_timeout_ms}"
            )
        ns = round(agent_timeout_ms * 1e6)
        if ns > 0 and segment is None:
            raise ValueError(
                "agent_timeout_ms needs segment=: the agent's heartbeat lives in the instance "
                "segment (pass segment=..., or agent_timeout_ms=None)"
            )
        return ns

    @staticmethod
    def _bus_datastore(segment: Any, datastore: DataStore | None) -> DataStore | None:
        if datastore is None and segment is None:
            return None  # a private stats block: no bus (and no import of mxrc.bus)
        from mxrc.bus._datastore import DataStore

        if datastore is not None:
            if not isinstance(datastore, DataStore):
                raise TypeError(
                    f"datastore must be an mxrc.bus.DataStore or None, got "
                    f"{type(datastore).__name__}"
                )
            return datastore
        if segment is None:
            return None
        core_segment = getattr(segment, "_core_segment", segment)
        if not int(core_segment.header().get("datastore_bytes", 0) or 0):
            return None  # created without a data store (datastore_bytes=0)
        return DataStore.from_segment(segment)

    # ------------------------------------------------------------ configuration

    @classmethod
    def from_config(
        cls,
        config: MxrcConfig | str | os.PathLike[str] | None = None,
        body: object = None,
        *,
        segment: Any = None,
        **overrides: Any,
    ) -> Executive:
        """An executive set up from the ``rt`` role of a configuration.

        ``config``: an :class:`~mxrc.config.MxrcConfig`, a config directory, or
        None (``MXRC_CONFIG_DIR`` or defaults). Maps ``cpu_affinity.rt``
        (cores via :func:`~mxrc.config.effective_cpu_cores`, policy, priority,
        thread name, ``fallback.allow_sched_other``), ``numa_binding.rt``
        (memory policy and nodes, ``strict_binding``, ``memory_allocation``)
        and ``perf_monitor.rt`` (``cycle_time_us``, ``deadline_us``,
        ``overrun_policy``); with a ``segment``, ``failover_policy.rt``
        ``agent_heartbeat_timeout_ms`` becomes ``agent_timeout_ms`` (the agent
        watchdog; without a segment it stays off). Keyword ``overrides`` win
        (same names as the constructor; ``agent_timeout_ms=None`` turns the
        watchdog off).
        """
        from mxrc.config import MxrcConfig, effective_cpu_cores, load_config
        from mxrc.rt._affinity import allowed_cpus
        from mxrc.rt._mempolicy import allowed_memory_nodes

        cfg = config if isinstance(config, MxrcConfig) else load_config(config)
        cpu = cfg.cpu_affinity.rt
        numa = cfg.numa_binding.rt
        perf = cfg.perf_monitor.rt
        kwargs: dict[str, Any] = {
            "period_us": perf.cycle_time_us,
            "deadline_us": perf.deadline_us,
            "overrun": perf.overrun_policy,
            "policy": cpu.policy,
            "priority": cpu.priority,
            "thread_name": cpu.thread_name,
            "allow_sched_other_fallback": cpu.fallback.allow_sched_other,
            "lock_memory": numa.memory_allocation.lock_memory,
            "prefault_stack_kb": numa.memory_allocation.prefault_stack_kb,
            "strict_memory_policy": numa.strict_binding,
        }
        if cpu.policy == "SCHED_DEADLINE":
            if cpu.deadline is not None:
                d = cpu.deadline
                kwargs["sched_deadline"] = (
                    d.runtime_us * 1000,
                    d.deadline_us * 1000,
                    d.period_us * 1000,
                )
            if cpu.cpu_cores is not None:
                kwargs["cpus"] = sorted(cpu.cpu_cores)  # refused with UnsupportedError
        else:
            kwargs["cpus"] = sorted(effective_cpu_cores(cpu, allowed_cpus()))
        policy = numa.memory_policy
        kwargs["memory_policy"] = policy
        if policy in ("PREFERRED", "BIND"):
            kwargs["memory_nodes"] = (numa.numa_node,)
        elif policy == "INTERLEAVE":
            kwargs["memory_nodes"] = tuple(numa.interleave_nodes) or tuple(
                sorted(allowed_memory_nodes())
            )
        if segment is not None:
            kwargs["agent_timeout_ms"] = cfg.failover_policy.rt.agent_heartbeat_timeout_ms
        kwargs.update(overrides)
        return cls(body, segment=segment, **kwargs)

    def add_action(
        self, body: object, every: int = 1, offset: int = 0, name: str | None = None
    ) -> None:
        """Add a body that runs on cycles ``k`` with ``k % every == offset``.

        Actions of one cycle run in registration order (upstream's minor/major
        cycle: ``every`` is the action's period in base periods, ``offset`` its
        slot). Only before :meth:`start`.
        """
        self._require_not_started("add_action")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if not isinstance(offset, int) or not 0 <= offset < every:
            raise ValueError(f"offset must be an int in 0..{every - 1}, got {offset!r}")
        spec = classify_body(body)
        self._actions.append(_Action(spec, every, offset, name or spec.description))

    def add_init_hook(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on the cycle thread after its setup, before the first cycle.

        A hook that raises fails :meth:`start` with that exception.
        """
        self._require_not_started("add_init_hook")
        if not callable(fn):
            raise TypeError("an init hook must be callable")
        self._init_hooks.append(fn)

    # ------------------------------------------------------------ lifecycle

    def start(self, cycles: int | None = None) -> None:
        """Start the cycle thread; return once it is READY and cycling.

        ``cycles``: stop by itself after that many cycles (``wait()`` then
        returns when they are done); None runs until :meth:`stop`. Raises
        PrivilegeError / ThreadSetupError when a setup step fails (nothing runs
        then), or the exception of a failed init hook.
        """
        self._require_not_started("start")
        if cycles is not None:
            if not isinstance(cycles, int) or cycles < 1:
                raise ValueError(f"cycles must be an int >= 1 or None, got {cycles!r}")
            self._stop_after = cycles
        if not self._actions:
            raise ValueError("an executive needs at least one body (body= or add_action)")
        # GIL and collector measures protect real time only: a simulated clock
        # neither records the GIL wait nor sees a collection's pause.
        python_tier = self._python_tier() and self._clock == "monotonic"
        if python_tier:
            self._warn_other_threads()
        if python_tier and self._freeze_gc:
            _GcControl.acquire()
            self._gc_held = True
            # an executive dropped without stop() still gives collection back
            self._gc_finalizer = weakref.finalize(self, _GcControl.release)
        if python_tier and self._switch_interval_s is not None:
            _SwitchIntervalControl.acquire(self._switch_interval_s)
            self._switch_finalizer = weakref.finalize(
                self, _SwitchIntervalControl.release, self._switch_interval_s
            )
        try:
            self._start_core(self._setup, self._setup_kwargs)
        except BaseException:
            self._release_gc()
            raise
        with _registry_lock:
            _live.add(self)

    def _start_core(self, setup: ThreadSetup, kwargs: dict[str, Any]) -> None:
        core = self._make_core(kwargs)
        self._core = core
        step, syscall, code, sched_fallback, _hook = core.start()
        if code == 0 and not step:
            self.sched_fallback = bool(sched_fallback)
            if sched_fallback:
                _log.warning(
                    "executive %r: %s priority %d refused (EPERM); running on the thread's "
                    "current policy (allow_sched_other_fallback)",
                    self._name,
                    setup.policy,
                    setup.priority,
                )
            return
        if step == "memory_policy" and not self._strict_memory_policy:
            _log.warning(
                "executive %r: memory policy %s failed (%s); continuing without it "
                "(strict_binding false)",
                self._name,
                setup.memory_policy,
                os.strerror(code),
            )
            relaxed = ThreadSetup(
                **{
                    **{f: getattr(setup, f) for f in setup.__dataclass_fields__},
                    "memory_policy": None,
                    "memory_nodes": (),
                }
            )
            self._start_core(relaxed, _validate(relaxed))
            return
        raise _failure(setup, step, syscall, code, setup.steps())

    def _make_core(self, kwargs: dict[str, Any]) -> Any:
        kw = dict(kwargs)
        kw.pop("prefault_buffers", None)
        core = _core.cycle.Executive(
            self._slot,
            name=self._name,
            period_ns=self._period_ns,
            deadline_ns=self._deadline_ns,
            overrun=_OVERRUN[self._overrun],
            on_error=_ON_ERROR[self._on_error],
            thread_name=self._thread_name,
            allow_sched_fallback=self._setup.allow_sched_other_fallback,
            clock=_CLOCK[self._clock],
            rings=self._slot.rings,
            datastore=None if self._datastore is None else self._datastore._core_store,
            agent_segment=self._segment if self._agent_timeout_ns else None,
            agent_timeout_ns=self._agent_timeout_ns,
            **kw,
        )
        for action in self._actions:
            spec = action.spec
            if spec.kind == "python":
                assert spec.fn is not None
                core.add_python_action(spec.fn, every=action.every, offset=action.offset)
            elif spec.kind == "builtin":
                assert spec.builtin is not None
                core.add_builtin_action(
                    spec.builtin.kind, spec.builtin.arg, every=action.every, offset=action.offset
                )
            else:
                core.add_native_action(
                    spec.address, user_data=spec.user_data, every=action.every, offset=action.offset
                )
        if self._safe is not None:
            if self._safe.kind == "python":
                assert self._safe.fn is not None
                core.set_safe_mode_python(self._safe.fn)
            elif self._safe.kind == "builtin":
                raise ValueError("a builtin body cannot be the safe-mode body")
            else:
                core.set_safe_mode_native(self._safe.address, user_data=self._safe.user_data)
        for hook in self._init_hooks:
            core.add_init_hook(hook)
        if self._stop_after:
            core.stop_after(self._stop_after)
        return core

    def run(self, cycles: int) -> CycleStats:
        """Start, run exactly ``cycles`` cycles, stop; return the stats.

        The calling thread waits with the GIL released and handles signals:
        Ctrl-C stops the executive and raises KeyboardInterrupt. Raises
        BodyError when a body failed under ``on_error="stop"``.
        """
        if not isinstance(cycles, int) or cycles < 1:
            raise ValueError(f"cycles must be an int >= 1, got {cycles!r}")
        self._require_not_started("run")
        self.start(cycles)
        try:
            self._core.wait(None, None)
        except BaseException:
            self.stop()
            raise
        self._finish()
        self._raise_body_error()
        return self.stats()

    def wait(self, cycles: int | None = None, timeout: float | None = None) -> bool:
        """Wait until ``cycles`` cycles ran in total (or the thread ended); False on timeout.

        ``cycles`` counts loop iterations since start, paused ones included
        (:attr:`cycles`); None waits for the thread to end.

        Releases the GIL and handles signals (KeyboardInterrupt stops the
        executive and propagates). Raises BodyError when a body failed under
        ``on_error="stop"``.
        """
        core = self._require_started("wait")
        try:
            done = bool(core.wait(cycles, timeout))
        except BaseException:
            self.stop()
            raise
        if core.finished:
            self._finish()
            self._raise_body_error()
        return done

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the cycle thread (SHUTDOWN) and join it; False when it did not end in time.

        Stopping is prompt: a sleeping cycle thread notices within 10 ms; a
        running body finishes its cycle first.
        """
        core = self._core
        if core is None:
            return True
        core.request_stop()
        try:
            ended = bool(core.join(timeout))
        except KeyboardInterrupt:
            ended = bool(core.join(timeout))
            if ended:
                self._finish()
            raise
        if ended:
            self._finish()
        return ended

    def _finish(self) -> None:
        if self._stopped:
            return
        core = self._core
        if core is not None and core.finished and core.join(0.0):
            self._stopped = True
            self._release_gc()
            with _registry_lock:
                _live.discard(self)

    def _release_gc(self) -> None:
        if self._switch_finalizer is not None:
            self._switch_finalizer()  # runs _SwitchIntervalControl.release once
        if self._gc_held:
            self._gc_held = False
            if self._gc_finalizer is not None:
                self._gc_finalizer()  # runs _GcControl.release once

    def _raise_body_error(self) -> None:
        core = self._core
        if core is None or self._on_error != "stop" or core.body_errors == 0:
            return
        cause = core.first_error
        cycle = int(core.first_error_cycle)
        if cause is not None:
            raise BodyError(
                f"executive {self._name!r}: body raised {type(cause).__name__}: {cause} in "
                f"cycle {cycle}; stopped (on_error='stop')",
                cycle=cycle,
            ) from cause
        code = int(core.first_error_code)
        raise BodyError(
            f"executive {self._name!r}: body returned error {code} in cycle {cycle}; stopped "
            "(on_error='stop')",
            cycle=cycle,
            code=code,
        )

    def __enter__(self) -> Executive:
        if self._core is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ control

    def pause(self) -> None:
        """RUNNING → PAUSED at the next cycle boundary.

        The thread keeps waking and heart-beating; no body runs.
        """
        self._require_started("pause").pause()

    def resume(self) -> None:
        """PAUSED → RUNNING at the next cycle boundary."""
        self._require_started("resume").resume()

    def enter_safe_mode(self) -> None:
        """→ SAFE_MODE at the next cycle boundary: the safe-mode body (if any) runs instead."""
        self._require_started("enter_safe_mode").enter_safe_mode()

    def exit_safe_mode(self) -> None:
        """Leave SAFE_MODE at the next cycle boundary (back to RUNNING, or PAUSED if it was).

        Drops the reasons "requested" and "body_error"; while the agent
        watchdog still holds it ("agent" in :attr:`safe_mode_reasons`) the
        executive stays in SAFE_MODE until the agent beats again.
        """
        self._require_started("exit_safe_mode").exit_safe_mode()

    def adjust_phase(self, delta_ns: int) -> None:
        """Shift every following release by ``delta_ns`` (e.g. to follow an external clock)."""
        self._require_started("adjust_phase").adjust_phase(int(delta_ns))

    # ------------------------------------------------------------ live re-configuration
    # (mxrc/rt/_reconfig.py; done from the calling thread, never on the cycle thread)

    def live_settings(self) -> LiveSettings:
        """The cycle thread's CPUs, policy and priority as the kernel reports them now."""
        from mxrc.rt._reconfig import read_live_settings

        return read_live_settings(self._running_tid("live_settings", changes=False))

    def set_affinity(self, cpus: Collection[int]) -> LiveSettings:
        """Re-pin the running cycle thread to ``cpus`` without stopping it; the new settings.

        Same checks and errors as :meth:`reconfigure`.
        """
        return self.reconfigure(cpus=cpus)

    def reconfigure(
        self,
        *,
        cpus: Collection[int] | None = None,
        policy: str | None = None,
        priority: int | None = None,
    ) -> LiveSettings:
        """Change the running cycle thread's CPUs, policy and/or priority; the new settings.

        ``None`` keeps a setting. Applied from the calling thread with
        ``sched_setaffinity``/``sched_setscheduler`` on the cycle thread's tid:
        the loop keeps cycling and moves at its next wake-up. Everything is
        checked before anything changes (CpuNotAllowedError, ValueError for a
        priority outside the policy's range, UnsupportedError for
        SCHED_DEADLINE); when the kernel refuses (PrivilegeError, OSError) the
        thread keeps its old settings. See :func:`mxrc.rt.reconfigure_thread`.
        """
        from mxrc.rt._reconfig import reconfigure_thread

        tid = self._running_tid("reconfigure")
        result = reconfigure_thread(tid, cpus=cpus, policy=policy, priority=priority)
        if result.changed:
            _log.info(
                "executive %r: cycle thread %d now runs with %s (was %s)",
                self._name,
                tid,
                result.after.describe(),
                result.before.describe(),
            )
        return result.after

    def watch_config(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        interval_s: float | None = None,
        on_event: Callable[[ReconfigEvent], object] | None = None,
    ) -> ConfigWatcher:
        """Apply later changes of ``directory``'s ``cpu_affinity.json`` to the running loop.

        Starts and returns a :class:`~mxrc.rt.ConfigWatcher` (a non-RT thread
        that polls the file; it ends with the cycle thread, or call its
        ``stop()``). ``directory`` None: ``MXRC_CONFIG_DIR``. An invalid change
        is rejected with a logged ConfigError and the old settings stay.
        """
        from mxrc.rt._reconfig import DEFAULT_WATCH_INTERVAL_S, ConfigWatcher

        self._running_tid("watch_config")
        interval = DEFAULT_WATCH_INTERVAL_S if interval_s is None else interval_s
        return ConfigWatcher(self, directory, interval_s=interval, on_event=on_event).start()

    def _running_tid(self, what: str, *, changes: bool = True) -> int:
        core = self._require_started(what)
        tid = int(core.tid)
        if tid == 0 or core.finished:
            raise RuntimeError(f"{what}: the cycle thread of executive {self._name!r} has ended")
        if changes and self.clock == "simulated":
            from mxrc.errors import UnsupportedError

            # the loop runs flat out without thread setup: SCHED_FIFO would starve the CPU
            raise UnsupportedError(
                f"{what}: executive {self._name!r} runs on the simulated clock, which applies "
                "no affinity or scheduling; live changes apply to real-clock executives only"
            )
        return tid

    # ------------------------------------------------------------ state

    @property
    def name(self) -> str:
        return self._name

    @property
    def period_ns(self) -> int:
        return self._period_ns

    @property
    def deadline_ns(self) -> int:
        return self._deadline_ns

    @property
    def clock(self) -> Clock:
        """The clock the loop runs on: "monotonic", or "simulated" (virtual ns from 0)."""
        return self._clock

    @property
    def state(self) -> RtState:
        """INIT before start, then READY, RUNNING, PAUSED, SAFE_MODE, ERROR or SHUTDOWN."""
        if self._core is None:
            return RtState.INIT
        return RtState(self._core.state)

    @property
    def tid(self) -> int | None:
        """Kernel thread id of the cycle thread (None before start)."""
        if self._core is None:
            return None
        return int(self._core.tid) or None

    @property
    def cycles(self) -> int:
        """Loop iterations so far (also while PAUSED)."""
        return 0 if self._core is None else int(self._core.iterations)

    @property
    def body_error(self) -> BaseException | None:
        """The first exception a Python body raised, or None."""
        return None if self._core is None else self._core.first_error

    @property
    def stats_slot(self) -> Any:
        """The stats block this executive writes (``_core.bus.StatsSlot``)."""
        return self._slot

    @property
    def rings(self) -> RingSet | None:
        """The ring set of this executive's stats slot (None without a segment).

        The cycle thread is the producer of its log, span, event and critical
        rings and the consumer of its command ring: from other threads only
        read counters, pop the RT->agent rings and push the command ring (what
        the agent does).
        """
        from mxrc.bus._rings import RingSet

        return RingSet.of(self._slot)

    @property
    def datastore(self) -> DataStore | None:
        """The data store the bodies reach (the segment's, or the one passed; else None)."""
        return self._datastore

    @property
    def agent_timeout_ms(self) -> float | None:
        """The agent watchdog's timeout, ms (None = off)."""
        return self._agent_timeout_ns / 1e6 if self._agent_timeout_ns else None

    @property
    def agent_watchdog(self) -> bool:
        """True when the agent watchdog is on (a timeout, a segment, a real clock)."""
        return bool(self._agent_timeout_ns) and self._clock == "monotonic"

    @property
    def safe_mode_reasons(self) -> frozenset[SafeModeReason]:
        """Why the executive is in SAFE_MODE: "requested", "body_error", "agent" (empty otherwise).

        It leaves SAFE_MODE only when no reason is left: :meth:`exit_safe_mode`
        drops "requested" and "body_error", a fresh agent heartbeat drops "agent".
        """
        if self._core is None:
            return frozenset()
        bits = int(self._core.safe_mode_reasons)
        return frozenset(name for bit, name in _SAFE_REASONS if bits & bit)

    def stats(self) -> CycleStats:
        """A consistent snapshot of this executive's stats block."""
        from mxrc.rt._perf import read_stats

        return read_stats(self._slot)

    def perf(self) -> PerfMonitor:
        """A :class:`~mxrc.rt.PerfMonitor` over this executive's stats."""
        from mxrc.rt._perf import PerfMonitor

        return PerfMonitor(self._slot)

    def __repr__(self) -> str:
        return (
            f"<Executive {self._name!r} period={self._period_ns / 1000:g}us "
            f"state={self.state.name} actions={len(self._actions)}>"
        )

    # ------------------------------------------------------------ helpers

    def _python_tier(self) -> bool:
        return (
            any(a.spec.kind == "python" for a in self._actions)
            or (self._safe is not None and self._safe.kind == "python")
            or bool(self._init_hooks)
        )

    def _warn_other_threads(self) -> None:
        me = threading.current_thread()
        others = [
            t.name
            for t in threading.enumerate()
            if t is not me and t.is_alive() and not isinstance(t, threading._DummyThread)
        ]
        with _registry_lock:
            others += [f"executive {ex.name!r}" for ex in _live if ex._python_tier()]
        if others:
            _log.warning(
                "executive %r runs a Python body while other Python threads are alive (%s): "
                "while any of them runs Python code the body waits for the GIL (up to the "
                "switch interval, %.0f ms). Keep the RT process free of other Python threads",
                self._name,
                ", ".join(others),
                1000 * __import__("sys").getswitchinterval(),
            )

    def _require_not_started(self, what: str) -> None:
        if self._core is not None or self._stopped:
            raise RuntimeError(f"{what}: executive {self._name!r} was already started (one-shot)")

    def _require_started(self, what: str) -> Any:
        if self._core is None:
            raise RuntimeError(f"{what}: executive {self._name!r} is not started")
        return self._core
