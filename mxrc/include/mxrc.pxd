# Cython declarations of mxrc.h (the C ABI of a native cycle body).
#
#     from mxrc cimport mxrc_cycle_ctx       # with include_path=[mxrc.get_include()]
#     cdef int body(const mxrc_cycle_ctx* ctx) noexcept nogil:
#         return 0
#
# Build with include_dirs=[mxrc.get_include()] so the C compiler finds mxrc.h.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef extern from "mxrc.h" nogil:
    unsigned int MXRC_ABI_VERSION
    int MXRC_STATE_INIT
    int MXRC_STATE_READY
    int MXRC_STATE_RUNNING
    int MXRC_STATE_PAUSED
    int MXRC_STATE_SAFE_MODE
    int MXRC_STATE_ERROR
    int MXRC_STATE_SHUTDOWN

    ctypedef struct mxrc_api:
        uint32_t abi_version
        uint32_t size
        int64_t (*now_ns)() noexcept nogil
        int32_t (*state)(const mxrc_cycle_ctx* ctx) noexcept nogil
        int32_t (*request_safe_mode)(const mxrc_cycle_ctx* ctx) noexcept nogil
        int32_t (*request_stop)(const mxrc_cycle_ctx* ctx) noexcept nogil
        # version 2: check MXRC_API_VERSION_AT_LEAST(ctx.api, 2) before use
        int64_t (*clock_ns)(const mxrc_cycle_ctx* ctx) noexcept nogil
        int32_t (*sim_advance)(const mxrc_cycle_ctx* ctx, int64_t ns) noexcept nogil

    ctypedef struct mxrc_cycle_ctx:
        uint32_t abi_version
        uint32_t size
        uint64_t cycle
        uint32_t slot
        uint32_t every
        int64_t release_ns
        int64_t wake_ns
        int64_t deadline_ns
        int64_t period_ns
        void* user
        const mxrc_api* api
        void* executive

    ctypedef int (*mxrc_body_fn)(const mxrc_cycle_ctx* ctx) noexcept nogil

    bint MXRC_API_VERSION_AT_LEAST(const mxrc_api* api, unsigned int v)
