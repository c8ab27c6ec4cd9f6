// Python handles on the segment's rings (part of mxrc._core.bus).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "mxrc/ring.hpp"

namespace mxrc::bindings {

// One ring plus what keeps its memory mapped. Registered as
// mxrc._core.bus.Ring.
struct PyRing {
  std::shared_ptr<void> keepalive;
  mxrc::SpscRing ring;
  std::string name;
};

// One cycle thread's ring set plus what keeps it mapped. Registered as
// mxrc._core.bus.RingSet.
struct PyRingSet {
  std::shared_ptr<void> keepalive;
  mxrc::RingSet set;
};

// Registers Ring, RingSet, their constants and the test-only stress helpers.
void register_rings(pybind11::module_& m);

}  // namespace mxrc::bindings
