// mxrc._core.clock: clock synchronisation state.
#include "mxrc/clock.hpp"

#include <pybind11/pybind11.h>

#include "register.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

void register_clock(py::module_& m) {
  m.def(
      "sync_status",
      [] {
        const ClockSyncStatus s = sync_status();
        py::dict d;
        d["synchronized"] = s.synchronized;
        d["state"] = s.state;
        d["state_name"] = clock_state_name(s.state);
        d["status"] = s.status;
        d["maxerror_us"] = s.maxerror_us;
        d["esterror_us"] = s.esterror_us;
        d["offset_ns"] = s.offset_ns;
        d["frequency_ppm"] = s.frequency_ppm;
        d["tai_offset_s"] = s.tai_offset_s;
        return d;
      },
      "Clock state from adjtimex/ntp_adjtime (modes = 0, read only).");
}

}  // namespace mxrc::bindings
