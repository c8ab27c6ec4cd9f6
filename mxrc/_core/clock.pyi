"""mxrc._core.clock: clock synchronisation state."""

from typing import TypedDict, type_check_only

@type_check_only
class SyncStatus(TypedDict):
    synchronized: bool
    state: int
    state_name: str
    status: int
    maxerror_us: int
    esterror_us: int
    offset_ns: int
    frequency_ppm: float
    tai_offset_s: int

def sync_status() -> SyncStatus: ...
