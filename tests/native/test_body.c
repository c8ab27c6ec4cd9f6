/* A native cycle body (mxrc.h ABI) used by the tests, compiled with cffi in
 * API mode. ctx->user points at 8 uint64 counters owned by the test:
 *   [0] calls  [1] last cycle  [2] wakes reported before the release (must stay 0)
 *   [3] ABI/size mismatches    [4] fail (return 5) on this cycle (0: never)
 *   [5] request_stop on this cycle (0: never)  [6] state seen (MXRC_STATE_*)
 *   [7] cycles seen with slot != cycle % every
 */
#include "mxrc.h"

int mxrc_test_body(const mxrc_cycle_ctx* ctx) {
  uint64_t* c = (uint64_t*)ctx->user;
  c[0] += 1;
  c[1] = ctx->cycle;
  if (ctx->api->now_ns() < ctx->release_ns || ctx->wake_ns < ctx->release_ns) c[2] += 1;
  if (ctx->abi_version != MXRC_ABI_VERSION || ctx->size != sizeof(mxrc_cycle_ctx) ||
      ctx->api->abi_version != MXRC_ABI_VERSION || !MXRC_API_HAS(ctx->api, request_stop)) {
    c[3] += 1;
  }
  c[6] = (uint64_t)ctx->api->state(ctx);
  if (ctx->slot != ctx->cycle % ctx->every) c[7] += 1;
  if (c[5] != 0 && ctx->cycle == c[5]) ctx->api->request_stop(ctx);
  if (c[4] != 0 && ctx->cycle == c[4]) return 5;
  return 0;
}
