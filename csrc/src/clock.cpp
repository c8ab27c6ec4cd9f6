#include "mxrc/clock.hpp"

#include <sys/timex.h>

#include <cerrno>

#include "mxrc/error.hpp"

namespace mxrc {

const char* clock_state_name(int state) noexcept {
  switch (state) {
    case TIME_OK:
      return "TIME_OK";
    case TIME_INS:
      return "TIME_INS";
    case TIME_DEL:
      return "TIME_DEL";
    case TIME_OOP:
      return "TIME_OOP";
    case TIME_WAIT:
      return "TIME_WAIT";
    case TIME_ERROR:
      return "TIME_ERROR";
    default:
      return "UNKNOWN";
  }
}

ClockSyncStatus sync_status() {
  timex tx{};
  tx.modes = 0;  // read only
  const int state = ::ntp_adjtime(&tx);
  if (state < 0) throw SystemError(errno, "adjtimex", "cannot read the clock state");
  ClockSyncStatus out;
  out.state = state;
  out.status = tx.status;
  out.synchronized = state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0;
  out.maxerror_us = tx.maxerror;
  out.esterror_us = tx.esterror;
  out.offset_ns = (tx.status & STA_NANO) != 0 ? tx.offset : tx.offset * 1000L;
  out.frequency_ppm = static_cast<double>(tx.freq) / 65536.0;
  out.tai_offset_s = tx.tai;
  return out;
}

}  // namespace mxrc
