# Cython declarations of mxrc.h (the C ABI of a native cycle body).
#
#     from mxrc cimport mxrc_cycle_ctx       # with include_path=[mxrc.get_include()]
#     cdef int body(const mxrc_cycle_ctx* ctx) noexcept nogil:
#         return 0
#
# Build with include_dirs=[mxrc.get_include()] so the C compiler finds mxrc.h.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdint cimport uint8_t, uint16_t  # events

cdef extern from "mxrc.h" nogil:
    unsigned int MXRC_ABI_VERSION
    int MXRC_STATE_INIT
    int MXRC_STATE_READY
    int MXRC_STATE_RUNNING
    int MXRC_STATE_PAUSED
    int MXRC_STATE_SAFE_MODE
    int MXRC_STATE_ERROR
    int MXRC_STATE_SHUTDOWN

    # --- data store (version 3): slot value types
    int MXRC_DS_INT64
    int MXRC_DS_FLOAT64
    int MXRC_DS_BOOL
    int MXRC_DS_STRING
    int MXRC_DS_F64ARRAY
    # --- end data store

    # --- events (version 3): priorities decide admission, not order
    int MXRC_PRIO_CRITICAL
    int MXRC_PRIO_HIGH
    int MXRC_PRIO_NORMAL
    int MXRC_PRIO_LOW
    int MXRC_EVENT_TYPE_MAX
    int MXRC_EVENT_TARGET_MAX
    int MXRC_EVENT_PAYLOAD_MAX
    int MXRC_CARRIER_SIZE
    unsigned int MXRC_EVENT_FLAG_JSON

    ctypedef struct mxrc_event:
        uint64_t id
        int64_t timestamp_ns
        uint8_t priority
        uint8_t flags
        uint16_t payload_len
        uint32_t reserved
        char type[32]
        char target_id[32]
        uint8_t carrier[25]
        uint8_t carrier_pad[7]
        uint8_t payload[136]
    # --- end events

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
        # version 3, data store: check MXRC_API_VERSION_AT_LEAST(ctx.api, 3) before use
        int32_t (*ds_find)(const mxrc_cycle_ctx* ctx, const char* name) noexcept nogil
        int32_t (*ds_read)(const mxrc_cycle_ctx* ctx, int32_t index, void* out, uint32_t cap,
                           uint32_t* len_out, uint64_t* version_out) noexcept nogil
        int32_t (*ds_write)(const mxrc_cycle_ctx* ctx, int32_t index, const void* value,
                            uint32_t len) noexcept nogil
        int32_t (*ds_read_f64)(const mxrc_cycle_ctx* ctx, int32_t index, double* out) noexcept nogil
        int32_t (*ds_write_f64)(const mxrc_cycle_ctx* ctx, int32_t index, double value) noexcept nogil
        int32_t (*ds_read_i64)(const mxrc_cycle_ctx* ctx, int32_t index, int64_t* out) noexcept nogil
        int32_t (*ds_write_i64)(const mxrc_cycle_ctx* ctx, int32_t index, int64_t value) noexcept nogil
        # --- end data store
        # version 3, events: check MXRC_API_VERSION_AT_LEAST(ctx.api, 3) before use
        int32_t (*publish_event)(const mxrc_cycle_ctx* ctx, const mxrc_event* event) noexcept nogil
        int32_t (*poll_event)(const mxrc_cycle_ctx* ctx, mxrc_event* out) noexcept nogil

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
