"""What a supervised RT process gets back after a restart, and its own checkpoints.

``mxrc supervise`` runs the application's entry point in the RT process. An
entry point with three parameters, ``function(segment, config, recovery)``,
receives a :class:`Recovery`; one with two keeps working (its data store is
resumed all the same, and the supervisor's checkpoints hold the data store and
the executive's state only).

Before the entry point runs, the data store is already resumed (valid live
slots kept, the rest from the newest checkpoint, :func:`resume_datastore`).
The entry point then puts back what only it can hold, and lets this process
write complete checkpoints::

    def main(segment, config, recovery):
        report = recovery.restore(eventbus=bus, restore_hook=app.load)  # before start
        tasks = list(report.tasks) or [new_task()]
        executive = Executive.from_config(config, body, segment=segment)
        executive.start()
        with recovery.checkpointing(executive, tasks=lambda: tasks, eventbus=bus,
                                    save_hook=app.save):
            executive.wait()

Why the RT process writes them: the tasks, the EventBus queue and the
application's state are Python objects of this process; the supervisor cannot
see them. Its own periodic checkpoints carry those parts forward from the
newest checkpoint an RT process wrote (``writer="rt"``), so whichever file is
newest, a restart finds them.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mxrc.errors import MxrcError
from mxrc.ha._checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    CheckpointWriter,
    RestoreReport,
    ResumeReport,
    capture,
    restore,
    resume_datastore,
)

if TYPE_CHECKING:
    from mxrc.bus import DataStore, EventBus, Segment
    from mxrc.config import MxrcConfig
    from mxrc.rt import Executive
    from mxrc.tasks import Task

__all__ = ["Recovery", "accepts_recovery"]


def accepts_recovery(fn: Callable[..., object]) -> bool:
    """Whether an entry point takes a third positional argument (the :class:`Recovery`)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the two-argument form
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return variadic or len(positional) >= 3


class Recovery:
    """State recovery of one RT process of a supervised instance.

    ``directory``: the checkpoint directory (``mxrc supervise
    --checkpoint-dir``); None, or ``failover_policy.json``
    ``rt.enable_state_recovery`` false: nothing is restored from files and
    :meth:`checkpointing` writes nothing. ``restarted``: this process replaces
    one that died (its segment generation was bumped).
    """

    def __init__(
        self,
        segment: Segment,
        config: MxrcConfig,
        directory: str | Path | None,
        *,
        restarted: bool = False,
        err: TextIO | None = None,
    ) -> None:
        self.segment = segment
        self.config = config
        self.restarted = restarted
        self._err = err if err is not None else sys.stderr
        self._prefix = f"mxrc rt ({segment.instance}):"
        role = config.failover_policy.rt
        self.store: CheckpointStore | None = None
        if directory is not None and role.enable_state_recovery:
            try:
                self.store = CheckpointStore(directory, keep=role.checkpoint_keep)
            except MxrcError as exc:  # the process still runs, without state recovery
                self._say(f"warning: no state recovery: {exc}")
        self.checkpoint: Checkpoint | None = None
        """The newest valid checkpoint when this process started (None: none, or no store)."""
        self.datastore_report: ResumeReport | None = None
        """Where each data store slot came from (:meth:`resume_datastore`)."""
        self._restored = False

    def _say(self, message: str) -> None:
        print(f"{self._prefix} {message}", file=self._err, flush=True)

    def load(self) -> Checkpoint | None:
        """Load the newest valid checkpoint (corrupt files are named and skipped)."""
        if self.store is None:
            return None
        try:
            self.checkpoint = self.store.load_newest()
        except (MxrcError, OSError) as exc:
            self._say(f"cannot read the checkpoints in {self.store.directory}: {exc}")
            self.checkpoint = None
        return self.checkpoint

    def resume_datastore(self) -> ResumeReport | None:
        """Crash continuity of the segment's data store: valid live slots stay, the rest
        come from :attr:`checkpoint`; reported in one line. None without a data store."""
        from mxrc.bus import DataStore

        try:
            ds = DataStore.from_segment(self.segment)
        except MxrcError:
            return None  # the segment was created without a data store
        try:
            self.datastore_report = resume_datastore(ds, self.checkpoint)
        except (MxrcError, OSError) as exc:
            self._say(f"cannot resume the data store: {exc}")
            return None
        r = self.datastore_report
        source = (
            "no checkpoint" if self.checkpoint is None else f"checkpoint {self.checkpoint.name}"
        )
        self._say(
            f"data store resumed: {len(r.live)} slots live, {len(r.from_checkpoint)} from "
            f"{source}, {len(r.unresolved)} unresolved"
        )
        return r

    @property
    def safe_mode_at_checkpoint(self) -> bool:
        """The checkpoint was taken in SAFE_MODE for a reason a restart does not clear.

        Only "agent" (a stale agent heartbeat) is left out: the new executive's
        agent watchdog finds that out again from the live heartbeat, and leaves
        SAFE_MODE by itself once the agent beats, which a restored "requested" would not.
        """
        ex = None if self.checkpoint is None else self.checkpoint.executive
        if not ex or ex.get("state") != "SAFE_MODE":
            return False
        reasons = ex.get("safe_mode_reasons")
        return not isinstance(reasons, list) or set(reasons) != {"agent"}

    def restore(
        self,
        *,
        eventbus: EventBus | None = None,
        restore_hook: Callable[[Any], object] | None = None,
    ) -> RestoreReport:
        """Put back what the data store does not hold: tasks (in the report, rebuilt), the
        EventBus queue (re-published into ``eventbus``) and the application's state
        (``restore_hook(state)``). Call it once, before the executive starts.
        CheckpointError naming the file when that fails (e.g. the hook raised)."""
        if self._restored:
            raise RuntimeError("Recovery.restore() was already called in this process")
        self._restored = True
        if self.checkpoint is None:
            return RestoreReport((), (), 0, (), False, False)
        # No data store here: resume_datastore() already kept the newer live slots.
        try:
            report = restore(self.checkpoint, eventbus=eventbus, restore_hook=restore_hook)
        except Exception as exc:  # name the file: the operator may have to move it aside
            raise CheckpointError(
                f"restoring {self.checkpoint.path or self.checkpoint.name} failed: {exc!r}"
            ) from exc
        self._say(
            f"restored from {self.checkpoint.name}: {len(report.tasks)} tasks, "
            f"{report.events} events, application state "
            f"{'yes' if report.app_restored else 'no'}"
        )
        return report

    @contextlib.contextmanager
    def checkpointing(
        self,
        executive: Executive,
        *,
        tasks: Callable[[], Iterable[Task]] | None = None,
        eventbus: EventBus | None = None,
        save_hook: Callable[[], object] | None = None,
        datastore: DataStore | None = None,
    ) -> Iterator[CheckpointWriter | None]:
        """Write this process's checkpoints while the block runs (the executive started).

        A checkpoint taken in SAFE_MODE (:attr:`safe_mode_at_checkpoint`) puts the
        executive back into SAFE_MODE first: a crash must not be a way out of a
        safe state. Then a checkpoint at once (``started``), periodically
        (``rt.checkpoint_interval_sec``), on the :attr:`CheckpointWriter.TRIGGERS`
        (RUNNING→SAFE_MODE, SAFE_MODE→RUNNING, ...) and a last one when the block
        ends (``stopped``), while the executive still runs. Yields the writer (None without a
        store). The writer is a normal Python thread: for a Python-tier body
        its capture takes GIL time from the cycle thread (``docs/checkpoints.md``).
        """
        if self.safe_mode_at_checkpoint:
            executive.enter_safe_mode()
            self._say("the checkpoint was taken in SAFE_MODE: the executive stays in SAFE_MODE")
        if self.store is None:
            yield None
            return
        ds = datastore if datastore is not None else executive.datastore

        def capture_fn() -> dict[str, Any]:
            return capture(
                executive=executive,
                datastore=ds,
                segment=self.segment,
                tasks=() if tasks is None else tasks(),
                eventbus=eventbus,
                save_hook=save_hook,
                datastore_mode="auto",
                snapshot_timeout=0.5,
                writer="rt",
            )

        writer = CheckpointWriter(
            self.store,
            capture_fn,
            interval_s=float(self.config.failover_policy.rt.checkpoint_interval_sec),
            state_source=lambda: executive.state,
        )
        writer.start()
        # At once, so the application's first changes are kept; on the writer's thread,
        # not delaying the caller.
        writer.request("started")
        try:
            yield writer
        finally:
            writer.stop()
            try:
                writer.write_now("stopped")
            except Exception as exc:  # reported; stopping goes on
                self._say(f"warning: the last checkpoint failed: {exc}")
