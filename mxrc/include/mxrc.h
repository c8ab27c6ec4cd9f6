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
 * APPEND members (data store, log, span and event entries go into the
 * reserved space or after it); a body compiled against an older header keeps
 * working. Before using a member added after version 1, check
 * `ctx->api->size >= offsetof(mxrc_api, member) + sizeof(ctx->api->member)`
 * (MXRC_API_HAS below).
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

#define MXRC_ABI_VERSION 1u

/* RT states (values of mxrc.rt.RtState). */
#define MXRC_STATE_INIT 0
#define MXRC_STATE_READY 1
#define MXRC_STATE_RUNNING 2
#define MXRC_STATE_PAUSED 3
#define MXRC_STATE_SAFE_MODE 4
#define MXRC_STATE_ERROR 5
#define MXRC_STATE_SHUTDOWN 6

struct mxrc_cycle_ctx;

/* Function table handed to every body. All entries are safe to call from
 * the cycle thread: no allocation, no lock, no system call except
 * clock_gettime. */
typedef struct mxrc_api {
  uint32_t abi_version; /* MXRC_ABI_VERSION of the core that filled it */
  uint32_t size;        /* sizeof(mxrc_api) of the core that filled it */
  /* CLOCK_MONOTONIC now, in ns (the clock of every *_ns field). */
  int64_t (*now_ns)(void);
  /* The executive's current state (MXRC_STATE_*). */
  int32_t (*state)(const struct mxrc_cycle_ctx* ctx);
  /* Ask for SAFE_MODE from the next cycle on (0 = accepted). */
  int32_t (*request_safe_mode)(const struct mxrc_cycle_ctx* ctx);
  /* Ask the executive to stop after this cycle (0 = accepted). */
  int32_t (*request_stop)(const struct mxrc_cycle_ctx* ctx);
  /* Reserved for later versions (data store, log, span, event entries). */
  void (*reserved[28])(void);
} mxrc_api;

typedef struct mxrc_cycle_ctx {
  uint32_t abi_version; /* MXRC_ABI_VERSION of the core */
  uint32_t size;        /* sizeof(mxrc_cycle_ctx) of the core */
  uint64_t cycle;       /* release index k (release = start + k * period + phase) */
  uint32_t slot;        /* this action's slot: cycle % every */
  uint32_t every;       /* the action runs every `every` base cycles */
  int64_t release_ns;   /* scheduled release of this cycle (CLOCK_MONOTONIC) */
  int64_t wake_ns;      /* when the cycle thread actually woke */
  int64_t deadline_ns;  /* absolute deadline: release_ns + the executive's deadline */
  int64_t period_ns;    /* base period */
  void* user;           /* the user_data given with the body */
  const mxrc_api* api;  /* never NULL */
  void* executive;      /* opaque; pass ctx to the api functions */
  uint64_t reserved[8];
} mxrc_cycle_ctx;

typedef int (*mxrc_body_fn)(const mxrc_cycle_ctx* ctx);

/* True when the table handed over has member `m` (it may be older or newer
 * than this header). */
#define MXRC_API_HAS(api, m) \
  ((api)->size >= offsetof(mxrc_api, m) + sizeof(((const mxrc_api*)0)->m))

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MXRC_H */
