"""mxrc._core.bus: shared-memory segment, stats blocks, histograms."""

from typing import Any, TypedDict, type_check_only

import numpy as np
import numpy.typing as npt

LAYOUT_VERSION: int
MAGIC: int
DEFAULT_MAX_STATS: int
STATS_NAME_MAX: int
BUCKET_COUNT: int
MAX_TRACKABLE_NS: int
GIL_CONTENDED_NS: int
STATS_BLOCK_SIZE: int

@type_check_only
class HistogramDict(TypedDict):
    count: int
    sum: int
    min: int
    max: int
    overflow: int
    buckets: npt.NDArray[np.uint64]

@type_check_only
class SnapshotDict(TypedDict):
    name: str
    tid: int
    state: int
    period_ns: int
    deadline_ns: int
    start_ns: int
    heartbeat_ns: int
    skipped_release_count: int
    body_error_count: int
    minor_faults: int
    involuntary_ctx_switches: int
    cycle_count: int
    deadline_miss_count: int
    consecutive_misses: int
    max_consecutive_misses: int
    gil_contended_cycles: int
    wake_latency_n: int
    wake_latency_mean_ns: float
    wake_latency_m2: float
    wake_latency: HistogramDict
    body_start_latency: HistogramDict
    exec_time: HistogramDict
    gil_wait: HistogramDict
    torn: bool
    retries: int

@type_check_only
class HeaderDict(TypedDict):
    magic: int
    layout_version: int
    header_size: int
    total_size: int
    generation: int
    epoch: int
    created_realtime_ns: int
    wallclock_offset_ns: int
    owner_pid: int
    max_stats: int
    stats_offset: int
    stats_slot_size: int

@type_check_only
class SlotDict(TypedDict):
    index: int
    state: str
    name: str
    claimer_pid: int
    claim_count: int

def bucket_index(v: int) -> int: ...
def bucket_lower(i: int) -> int: ...
def bucket_upper(i: int) -> int: ...
def bucket_bounds() -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...

class Histogram:
    def __init__(self) -> None: ...
    def record(self, v: int) -> None: ...
    def record_many(self, values: Any) -> None: ...
    def reset(self) -> None: ...
    def snapshot(self) -> HistogramDict: ...

class StatsSlot:
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> int: ...
    @property
    def heartbeat_ns(self) -> int: ...
    @property
    def address(self) -> int: ...
    def read(self, max_retries: int = 64) -> SnapshotDict: ...

def private_stats(name: str) -> StatsSlot: ...

class Segment:
    @staticmethod
    def create(instance: str, max_stats: int = 8) -> Segment: ...
    @staticmethod
    def attach(instance: str) -> Segment: ...
    @staticmethod
    def remove(instance: str, force: bool = False) -> bool: ...
    @staticmethod
    def unlink(instance: str, force: bool = False) -> bool: ...
    @staticmethod
    def path(instance: str) -> str: ...
    @staticmethod
    def validate_instance_name(instance: str) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def is_owner(self) -> bool: ...
    @property
    def instance(self) -> str: ...
    def header(self) -> HeaderDict: ...
    def owner_alive(self) -> bool: ...
    def refresh_wallclock_offset(self) -> None: ...
    def bump_generation(self) -> int: ...
    def claim_stats(self, name: str) -> StatsSlot: ...
    def slots(self) -> list[SlotDict]: ...
    def stats_slot(self, name: str) -> StatsSlot | None: ...

class _TestWriter:
    def join(self) -> None: ...
    @property
    def done(self) -> bool: ...

def _start_test_writer(slot: StatsSlot, n: int, pause_ns: int = 0) -> _TestWriter: ...
def _check_test_writer(slot: StatsSlot, reads: int, max_retries: int = 64) -> dict[str, int]: ...

class _StatsWriter:
    def __init__(self, slot: StatsSlot) -> None: ...
    def begin(self, period_ns: int, deadline_ns: int, tid: int, start_ns: int) -> None: ...
    def record(
        self,
        release_ns: int,
        wake_ns: int,
        body_start_ns: int,
        body_end_ns: int,
        gil_wait_ns: int = -1,
        deadline_missed: bool = False,
    ) -> None: ...
    def heartbeat(self, now_ns: int) -> None: ...
    def set_state(self, state: int) -> None: ...
    def add_skipped_releases(self, n: int) -> None: ...
    def add_body_error(self) -> None: ...
    def sample_rusage(self) -> None: ...
