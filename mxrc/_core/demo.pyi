"""mxrc._core.demo: the demo control task of `mxrc run` (native body)."""

from typing import Any

STATE_SIZE: int

def axis_step(state: Any, steps: int = 1) -> None: ...
def native_axis_body_address() -> int: ...
