# cython: language_level=3
# A native cycle body written in Cython against the shipped mxrc.pxd: it runs
# without the GIL. ctx.user points at 4 uint64 counters:
#   [0] calls  [1] last cycle  [2] wakes before the release  [3] ABI mismatches
from libc.stdint cimport uint64_t, uintptr_t

from mxrc cimport MXRC_ABI_VERSION, mxrc_cycle_ctx


cdef int body(const mxrc_cycle_ctx* ctx) noexcept nogil:
    cdef uint64_t* c = <uint64_t*>ctx.user
    c[0] += 1
    c[1] = ctx.cycle
    if ctx.api.now_ns() < ctx.release_ns:
        c[2] += 1
    if ctx.abi_version != MXRC_ABI_VERSION or ctx.size != sizeof(mxrc_cycle_ctx):
        c[3] += 1
    return 0


def address():
    """The address of body(), for mxrc.NativeBody."""
    return <uintptr_t>&body
