/*
 * mxrc.h: the C ABI of a native cycle body (tier 2).
 *
 * A native body is a C function compiled into a shared object (cffi API
 * mode, Cython `nogil`, numba `cfunc`, plain C):
 *
 *     int body(const mxrc_cycle_ctx* ctx);   // 0 = ok, anything else = error
 *
 * It is called on the cycle thread without the GIL, once per cycle in its
 * slot. Python extensions load with RTLD_LOCAL, so a body cannot link against
 * mxrc's own extension: everything it may call is in the function table
 * `ctx->api`.
 *
 * Versioning: both structs start with (abi_version, size). Later versions only
 * add members, in the reserved space or after it, so a body compiled against
 * an older header keeps working and the struct sizes stay the same while the
 * reserved space lasts. A member taken from the reserved space is NULL in an
 * older core's table although the size covers it: before using a member
 * added after version 1, check the version the core filled in,
 * MXRC_API_VERSION_AT_LEAST(ctx->api, 2) (members appended after the
 * reserved space may also be checked by size, MXRC_API_HAS).
 *
 *   version 1: now_ns, state, request_safe_mode, request_stop
 *   version 2: clock_ns, sim_advance (the simulated clock)
 *
 * Clocks: every *_ns time in ctx is on the executive's clock, which is
 * CLOCK_MONOTONIC, or a virtual clock starting at 0 for an executive created
 * with clock="simulated" (the body consumes virtual time with sim_advance).
 * Read it with api->clock_ns(ctx); api->now_ns() is always CLOCK_MONOTONIC.
 *
 * Rules for a body: do not block, do not allocate, do not take locks, do not
 * do I/O; return promptly. Everything in `ctx` is valid only during the call.
 */
#ifndef MXRC_H
#define MXRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MXRC_ABI_VERSION 3u

/* RT states (values of mxrc.rt.RtState). */
#define MXRC_STATE_INIT 0
#define MXRC_STATE_READY 1
#define MXRC_STATE_RUNNING 2
#define MXRC_STATE_PAUSED 3
#define MXRC_STATE_SAFE_MODE 4
#define MXRC_STATE_ERROR 5
#define MXRC_STATE_SHUTDOWN 6

struct mxrc_cycle_ctx;

/* Data store value types (version 3). */
#define MXRC_DS_INT64 1
#define MXRC_DS_FLOAT64 2
#define MXRC_DS_BOOL 3
#define MXRC_DS_STRING 4   /* UTF-8, at most the slot's capacity in bytes */
#define MXRC_DS_F64ARRAY 5 /* float64[capacity] */

/* Event priorities (version 3): admission, not order. LOW is dropped when its
 * ring is 80 % full, NORMAL at 90 %, HIGH only when full; CRITICAL goes to its
 * own ring, whose overflow sets a sticky flag (health UNHEALTHY). */
#define MXRC_PRIO_CRITICAL 0
#define MXRC_PRIO_HIGH 1
#define MXRC_PRIO_NORMAL 2
#define MXRC_PRIO_LOW 3

#define MXRC_EVENT_TYPE_MAX 32   /* bytes, NUL-padded (a name, not NUL-terminated when full) */
#define MXRC_EVENT_TARGET_MAX 32 /* bytes, NUL-padded */
#define MXRC_EVENT_PAYLOAD_MAX 136
#define MXRC_CARRIER_SIZE 25 /* trace id (16) + span id (8) + W3C trace flags (1) */
/* mxrc_event.flags bit 0: the payload is UTF-8 JSON (the other bits are
 * reserved, 0). Set it when you write JSON into the payload; readers decode
 * the payload as JSON only then, otherwise they treat it as raw bytes. */
#define MXRC_EVENT_FLAG_JSON 0x01u

/* An event as it travels through the rings: exactly 256 bytes. A carrier of
 * all zero trace id means "no trace context". */
typedef struct mxrc_event {
  uint64_t id;          /* unique per producer (set by the bus when 0) */
  int64_t timestamp_ns; /* CLOCK_MONOTONIC (set by the bus when 0) */
  uint8_t priority;     /* MXRC_PRIO_* */
  uint8_t flags;        /* reserved, 0 */
  uint16_t payload_len; /* bytes used in payload */
  uint32_t reserved;    /* 0 */
  char type[MXRC_EVENT_TYPE_MAX];
  char target_id[MXRC_EVENT_TARGET_MAX];
  uint8_t carrier[MXRC_CARRIER_SIZE];
  uint8_t carrier_pad[7]; /* 0 */
  uint8_t payload[MXRC_EVENT_PAYLOAD_MAX];
} mxrc_event;

/* Function table handed to every body. All entries are safe to call from
 * the cycle thread: no allocation, no lock, no system call except
 * clock_gettime. */
typedef struct mxrc_api {
  uint32_t abi_version; /* MXRC_ABI_VERSION of the core that filled it */
  uint32_t size;        /* sizeof(mxrc_api) of the core that filled it */
  /* CLOCK_MONOTONIC now, in ns, whatever the executive's clock (version 1). */
  int64_t (*now_ns)(void);
  /* The executive's current state (MXRC_STATE_*). */
  int32_t (*state)(const struct mxrc_cycle_ctx* ctx);
  /* Ask for SAFE_MODE from the next cycle on (0 = accepted). */
  int32_t (*request_safe_mode)(const struct mxrc_cycle_ctx* ctx);
  /* Ask the executive to stop after this cycle (0 = accepted). */
  int32_t (*request_stop)(const struct mxrc_cycle_ctx* ctx);
  /* --- version 2 (check MXRC_API_VERSION_AT_LEAST(api, 2)) --- */
  /* The executive's clock now, in ns: the virtual time of a simulated
   * executive, CLOCK_MONOTONIC otherwise; -1 for a NULL ctx. */
  int64_t (*clock_ns)(const struct mxrc_cycle_ctx* ctx);
  /* Simulated clock: the body consumed `ns` of virtual time (the clock moves
   * forward by ns; the body's end, deadline misses and overruns follow).
   * 0 = ok; EINVAL for ns < 0, a NULL ctx or an overflow; ENOTSUP on a real
   * clock (so sim_advance(ctx, 0) == 0 tells a simulated executive). Call it
   * from the body only. */
  int32_t (*sim_advance)(const struct mxrc_cycle_ctx* ctx, int64_t ns);
  /* --- version 3 (check MXRC_API_VERSION_AT_LEAST(api, 3)) ---
   * Data store: typed slots in the instance's segment, looked up once by name
   * (do it in the first cycle and keep the index). Return values: 0 ok;
   * ENOENT no such slot / no data store; EINVAL bad index, type or size;
   * EBUSY another writer holds the slot right now (the RT side never waits:
   * retry next cycle); EAGAIN a reader kept seeing a write in progress. */
  int32_t (*ds_find)(const struct mxrc_cycle_ctx* ctx,
                     const char* name); /* index >= 0, or -ENOENT */
  /* Copies the value out (at most cap bytes; arrays: 8 bytes per element);
   * *len_out = bytes of the value, *version_out = the slot's version (either
   * may be NULL). */
  int32_t (*ds_read)(const struct mxrc_cycle_ctx* ctx, int32_t index, void* out, uint32_t cap,
                     uint32_t* len_out, uint64_t* version_out);
  /* Replaces the value (len bytes: 8 for INT64/FLOAT64, 1 for BOOL, <= capacity
   * for STRING, 8 * n for F64ARRAY with n <= capacity). */
  int32_t (*ds_write)(const struct mxrc_cycle_ctx* ctx, int32_t index, const void* value,
                      uint32_t len);
  int32_t (*ds_read_f64)(const struct mxrc_cycle_ctx* ctx, int32_t index, double* out);
  int32_t (*ds_write_f64)(const struct mxrc_cycle_ctx* ctx, int32_t index, double value);
  int32_t (*ds_read_i64)(const struct mxrc_cycle_ctx* ctx, int32_t index, int64_t* out);
  int32_t (*ds_write_i64)(const struct mxrc_cycle_ctx* ctx, int32_t index, int64_t value);
  /* Events: copies *event into this cycle thread's RT->agent ring (CRITICAL:
   * the critical ring). 0 queued; ENOSPC dropped by admission (counted);
   * ENOENT no rings (a private stats block); EINVAL bad priority or sizes. */
  int32_t (*publish_event)(const struct mxrc_cycle_ctx* ctx, const mxrc_event* event);
  /* Takes the next agent->RT event or command, if any: 0 one copied to *out,
   * EAGAIN none waiting, ENOENT no rings. */
  int32_t (*poll_event)(const struct mxrc_cycle_ctx* ctx, mxrc_event* out);
  /* Reserved for later versions (log and span records). */
  void (*reserved[17])(void);
} mxrc_api;

typedef struct mxrc_cycle_ctx {
  uint32_t abi_version; /* MXRC_ABI_VERSION of the core */
  uint32_t size;        /* sizeof(mxrc_cycle_ctx) of the core */
  uint64_t cycle;       /* release index k (release = start + k * period + phase) */
  uint32_t slot;        /* this action's slot: cycle % every */
  uint32_t every;       /* the action runs every `every` base cycles */
  int64_t release_ns;   /* scheduled release of this cycle (the executive's clock) */
  int64_t wake_ns;      /* when the cycle thread actually woke */
  int64_t deadline_ns;  /* absolute deadline: release_ns + the executive's deadline */
  int64_t period_ns;    /* base period */
  void* user;           /* the user_data given with the body */
  const mxrc_api* api;  /* never NULL */
  void* executive;      /* opaque; pass ctx to the api functions */
  uint64_t reserved[8];
} mxrc_cycle_ctx;

typedef int (*mxrc_body_fn)(const mxrc_cycle_ctx* ctx);

/* True when the core that filled the table implements ABI version `v` or
 * later: the check for members taken from the reserved space (version 2 on). */
#define MXRC_API_VERSION_AT_LEAST(api, v) ((api)->abi_version >= (uint32_t)(v))

/* True when the table handed over is large enough to hold member `m` (it may
 * be older or newer than this header). Says nothing about members in the
 * reserved space: use MXRC_API_VERSION_AT_LEAST for those. */
#define MXRC_API_HAS(api, m) \
  ((api)->size >= offsetof(mxrc_api, m) + sizeof(((const mxrc_api*)0)->m))

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MXRC_H */
