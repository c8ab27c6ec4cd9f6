// Clock synchronisation state (read-only adjtimex).
#pragma once

namespace mxrc {

struct ClockSyncStatus {
  bool synchronized = false;  // state != TIME_ERROR and STA_UNSYNC clear
  int state = 0;              // TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT, TIME_ERROR
  int status = 0;             // STA_* bits
  long maxerror_us = 0;       // maximum error
  long esterror_us = 0;       // estimated error
  long offset_ns = 0;         // current offset (converted to ns)
  double frequency_ppm = 0;   // frequency offset
  int tai_offset_s = 0;       // TAI - UTC
};

const char* clock_state_name(int state) noexcept;

// ntp_adjtime with modes = 0: reads, never changes the clock, needs no
// privilege. Throws SystemError (adjtimex).
ClockSyncStatus sync_status();

}  // namespace mxrc
