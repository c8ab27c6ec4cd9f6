/* A native cycle body using the bus entries of the C table (ABI version 3),
 * compiled with cffi in API mode by tests/test_executive_bus.py.
 *
 * ctx->user points at 16 int64 counters owned by the test:
 *   [0] calls
 *   [1] ds_find("pos")    [2] ds_find("gain")   [3] ds_find("count")
 *   [4] ds_find("vec")    [5] ds_find("missing") (must be -ENOENT)
 *   [6] last rc of ds_write_f64(pos)   [7] last rc of ds_read(vec)
 *   [8] commands polled                [9] echoes dropped (ENOSPC)
 *   [10] last rc of publish_event (tick) [11] table entries missing (must be 0)
 *   [12] last rc of poll_event (0 or EAGAIN)
 *   [13] last rc of ds_read_f64(gain)  [14] bytes of vec read (len_out)
 *   [15] events published every N cycles (N = 0: never)
 *
 * Every cycle: pos = gain * cycle (FLOAT64), count = calls (INT64),
 * sum = the sum of vec's elements (FLOAT64, written with ds_write);
 * every counters[15] cycles a "body.tick" event (payload: the cycle as 8
 * bytes); every command polled is echoed as "body.echo" with the command's
 * payload, carrier and priority, its type as the target id.
 */
#include <errno.h>
#include <string.h>

#include "mxrc.h"

static void set_name(char* dst, size_t cap, const char* src) {
  size_t i = 0;
  for (; src[i] != '\0' && i < cap; ++i) dst[i] = src[i];
  for (; i < cap; ++i) dst[i] = '\0';
}

int mxrc_bus_body(const mxrc_cycle_ctx* ctx) {
  int64_t* c = (int64_t*)ctx->user;
  const mxrc_api* api = ctx->api;
  if (!MXRC_API_VERSION_AT_LEAST(api, 3) || api->ds_find == NULL || api->ds_read == NULL ||
      api->ds_write == NULL || api->ds_read_f64 == NULL || api->ds_write_f64 == NULL ||
      api->ds_read_i64 == NULL || api->ds_write_i64 == NULL || api->publish_event == NULL ||
      api->poll_event == NULL) {
    c[11] += 1;
    return 0;
  }
  if (c[0] == 0) {
    /* look the slots up once, keep the indices */
    c[1] = api->ds_find(ctx, "pos");
    c[2] = api->ds_find(ctx, "gain");
    c[3] = api->ds_find(ctx, "count");
    c[4] = api->ds_find(ctx, "vec");
    c[5] = api->ds_find(ctx, "missing");
  }
  c[0] += 1;

  double gain = 0.0;
  c[13] = api->ds_read_f64(ctx, (int32_t)c[2], &gain);
  c[6] = api->ds_write_f64(ctx, (int32_t)c[1], gain * (double)ctx->cycle);
  (void)api->ds_write_i64(ctx, (int32_t)c[3], c[0]);

  double vec[8];
  uint32_t len = 0;
  uint64_t version = 0;
  c[7] = api->ds_read(ctx, (int32_t)c[4], vec, sizeof vec, &len, &version);
  c[14] = len;
  if (c[7] == 0) {
    double sum = 0.0;
    for (uint32_t i = 0; i < len / 8; ++i) sum += vec[i];
    int32_t sum_index = api->ds_find(ctx, "sum"); /* a scan: fine for a test */
    if (sum_index >= 0) (void)api->ds_write(ctx, sum_index, &sum, sizeof sum);
  }

  if (c[15] > 0 && ctx->cycle % (uint64_t)c[15] == 0) {
    mxrc_event ev;
    memset(&ev, 0, sizeof ev); /* id and timestamp 0: the executive fills them */
    ev.priority = MXRC_PRIO_NORMAL;
    set_name(ev.type, sizeof ev.type, "body.tick");
    ev.payload_len = 8;
    memcpy(ev.payload, &ctx->cycle, 8);
    c[10] = api->publish_event(ctx, &ev);
  }

  mxrc_event cmd;
  int32_t rc;
  while ((rc = api->poll_event(ctx, &cmd)) == 0) {
    c[8] += 1;
    mxrc_event echo;
    memset(&echo, 0, sizeof echo);
    echo.priority = cmd.priority;
    echo.flags = cmd.flags;
    set_name(echo.type, sizeof echo.type, "body.echo");
    memcpy(echo.target_id, cmd.type, sizeof echo.target_id);
    memcpy(echo.carrier, cmd.carrier, sizeof echo.carrier);
    echo.payload_len =
        cmd.payload_len <= MXRC_EVENT_PAYLOAD_MAX ? cmd.payload_len : MXRC_EVENT_PAYLOAD_MAX;
    memcpy(echo.payload, cmd.payload, echo.payload_len);
    if (api->publish_event(ctx, &echo) == ENOSPC) c[9] += 1;
  }
  c[12] = rc;
  return 0;
}
