"""mxrc._core.numa: NUMA memory policy system calls."""

from collections.abc import Sequence

from typing_extensions import Buffer

MPOL_DEFAULT: int
MPOL_PREFERRED: int
MPOL_BIND: int
MPOL_INTERLEAVE: int
MPOL_LOCAL: int
MPOL_PREFERRED_MANY: int
MPOL_WEIGHTED_INTERLEAVE: int
MPOL_F_STATIC_NODES: int
MPOL_F_RELATIVE_NODES: int
MPOL_MF_STRICT: int
MPOL_MF_MOVE: int
MPOL_MF_MOVE_ALL: int

def allowed_nodes() -> list[int]: ...
def set_mempolicy(mode: int, nodes: Sequence[int], flags: int = 0) -> None: ...
def get_mempolicy() -> tuple[int, int, list[int]]: ...
def get_mempolicy_at(buffer: Buffer) -> tuple[int, int, list[int]]: ...
def node_of(buffer: Buffer) -> int: ...
def mbind(
    buffer: Buffer,
    mode: int,
    nodes: Sequence[int],
    flags: int = 0,
    whole_pages: bool = False,
) -> None: ...
def migrate_pages(pid: int, from_nodes: Sequence[int], to_nodes: Sequence[int]) -> int: ...
